"""A small Fashion-MNIST classifier, whose features give FCD, the offline quality score.

FID needs InceptionV3's ImageNet weights, which a machine without internet cannot get, and
which were never meant for 28x28 grayscale clothes. FCD (Fréchet Classifier Distance, as
MNIST GAN papers use a LeNet instead of Inception) is the same Fréchet distance
(common/metrics.py) in the 128 features of this classifier's last hidden layer instead.

The classifier ships with the repository (common/fashion_classifier.keras, ~0.4 MB, with
its test accuracy in fashion_classifier.json beside it). It was made, and can be made
again, by

    python -m common.classifier --data-dir /usr/share/datasets/fashion-mnist

which trains it on the 60,000 training images and measures it on the 10,000 test images
(5 epochs, about 2 minutes on 2 CPU cores). A remade file has other features, so its scores
compare only with scores made with it: the real images' feature cache is keyed on it.
"""

import argparse
import json
import sys
from pathlib import Path

from common.errors import exit_with

CLASSIFIER_FILE = Path(__file__).with_name("fashion_classifier.keras")
FEATURE_LAYER = "features"
IMAGE_SHAPE = (28, 28, 1)
CLASSES = 10


def make_classifier():
    """A four-convolution CNN on [-1, 1] images; its "features" layer is what FCD compares."""
    import keras
    from keras import layers
    return keras.Sequential([
        keras.Input(IMAGE_SHAPE),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),   # 14x14x32
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),   # 7x7x64
        layers.Flatten(),
        layers.Dense(128, activation="relu", name=FEATURE_LAYER),
        layers.Dropout(0.3),  # Keeps the features spread: no single unit decides a class.
        layers.Dense(CLASSES),  # Logits.
    ], name="fashion_classifier")


def read_split(data_dir, split):
    """uint8 images (N, 28, 28, 1) and labels (N,) of "train" or "t10k" from idx files."""
    import gzip

    import numpy as np

    from common.idx import read_idx_images
    folder = Path(data_dir)
    labels_path = folder / f"{split}-labels-idx1-ubyte.gz"
    images = read_idx_images(folder / f"{split}-images-idx3-ubyte.gz")
    labels = np.frombuffer(gzip.decompress(labels_path.read_bytes()), np.uint8, offset=8)
    return images.reshape(-1, *IMAGE_SHAPE), labels


def train(data_dir, path=CLASSIFIER_FILE, epochs=5, seed=0):
    """Train the classifier on `data_dir`'s training split and save it to `path` (and its
    test accuracy to the .json beside it); returns the test accuracy."""
    import keras
    keras.utils.set_random_seed(seed)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")  # A classifier to measure with, not to race.
    try:
        return _train(data_dir, path, epochs, seed)
    finally:
        keras.config.set_dtype_policy(previous)


def _train(data_dir, path, epochs, seed):
    import keras

    from common.files import atomic_write
    train_images, train_labels = read_split(data_dir, "train")
    test_images, test_labels = read_split(data_dir, "t10k")
    model = make_classifier()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(to_model_range(train_images), train_labels, batch_size=128, epochs=epochs,
              verbose=2)
    _, accuracy = model.evaluate(to_model_range(test_images), test_labels, verbose=0)
    bare = keras.models.clone_model(model)  # Uncompiled: no optimizer state in the file.
    bare.set_weights(model.get_weights())
    atomic_write(path, bare.save)
    atomic_write(Path(path).with_suffix(".json"), lambda temporary: Path(temporary).write_text(
        json.dumps({"test_accuracy": round(float(accuracy), 4), "epochs": epochs,
                    "seed": seed, "train_images": len(train_images),
                    "test_images": len(test_images)}, indent=1) + "\n"))
    return float(accuracy)


def to_model_range(images):
    """uint8 [0, 255] images as the float32 [-1, 1] the classifier (and a generator) uses."""
    import numpy as np
    return np.asarray(images, np.float32) / 127.5 - 1.0


def load_features(path=CLASSIFIER_FILE):
    """(model, test accuracy): the classifier cut at its "features" layer, float32 in and out
    whatever the global dtype policy is. ValueError (one line) when the file is unreadable."""
    import keras
    path = Path(path)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")  # The scripts may have set mixed_bfloat16.
    try:
        classifier = keras.saving.load_model(path, compile=False)
        accuracy = json.loads(path.with_suffix(".json").read_text())["test_accuracy"]
    except Exception as error:  # A missing, cut-off or foreign file: all say the same.
        raise ValueError(f"cannot read the FCD classifier {path} ({type(error).__name__}); "
                         f"make it again with python -m common.classifier") from None
    finally:
        keras.config.set_dtype_policy(previous)
    features = keras.Model(classifier.inputs, classifier.get_layer(FEATURE_LAYER).output,
                           name="fashion_features")
    return features, accuracy


def main(argv=None):
    if argv is None:
        argv = [] if "ipykernel" in sys.modules else sys.argv[1:]
    parser = argparse.ArgumentParser(
        prog="python -m common.classifier",
        description="Train the Fashion-MNIST classifier whose features give FCD.")
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist",
                        help="folder of Fashion-MNIST's four idx files (default: %(default)s)")
    parser.add_argument("--out", default=str(CLASSIFIER_FILE),
                        help="where to save it (default: the shipped file, %(default)s)")
    parser.add_argument("--epochs", type=int, default=5, help="(default: %(default)s)")
    args = parser.parse_args([str(value) for value in argv])
    folder = Path(args.data_dir)
    if not (folder / "t10k-labels-idx1-ubyte.gz").is_file():
        exit_with(f"--data-dir {folder} lacks Fashion-MNIST's idx files (train- and t10k-, "
                  f"images and labels, .gz)")
    accuracy = train(folder, args.out, args.epochs)
    print(f"saved {args.out}: {accuracy:.2%} accuracy on the {folder} test images")


if __name__ == "__main__":
    main()
