"""common/classifier.py: the shipped Fashion-MNIST classifier behind FCD, and the command
that makes it again."""

import json

import numpy as np
import pytest

from common import classifier
from conftest import FASHION_SAMPLE, run_main


def test_the_shipped_classifier_classifies_held_out_images_as_its_json_says():
    """Its features are only worth comparing if it tells clothes apart: on the sample's
    test images (never trained on) it is about as accurate as its recorded test accuracy."""
    import keras
    model = keras.saving.load_model(classifier.CLASSIFIER_FILE, compile=False)
    images, labels = classifier.read_split(FASHION_SAMPLE, "t10k")
    predicted = np.argmax(model.predict(classifier.to_model_range(images), verbose=0), axis=1)
    recorded = json.loads(classifier.CLASSIFIER_FILE.with_suffix(".json").read_text())
    assert recorded["test_accuracy"] >= 0.9 and recorded["train_images"] == 60000
    assert np.mean(predicted == labels) > recorded["test_accuracy"] - 0.05
    features, accuracy = classifier.load_features()
    assert accuracy == recorded["test_accuracy"]
    assert features.output_shape == (None, 128)


def test_a_damaged_classifier_file_is_one_line(tmp_path):
    broken = tmp_path / "fashion_classifier.keras"
    broken.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ValueError, match=r"cannot read the FCD classifier .*python -m "
                                         r"common.classifier"):
        classifier.load_features(broken)


def test_the_command_trains_and_saves_a_classifier_load_features_reads(tmp_path):
    out = tmp_path / "classifier.keras"
    result = run_main("common.classifier", "--data-dir", FASHION_SAMPLE, "--out", out,
                      "--epochs", "1")
    assert f"saved {out}: " in result.stdout
    recorded = json.loads(out.with_suffix(".json").read_text())
    assert recorded["train_images"] == 2000 and 0.1 < recorded["test_accuracy"] <= 1
    features, accuracy = classifier.load_features(out)
    assert accuracy == recorded["test_accuracy"]
    assert features(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 128)


def test_the_command_refuses_a_folder_without_idx_files(tmp_path):
    with pytest.raises(SystemExit, match=r"--data-dir .* lacks Fashion-MNIST's idx files"):
        classifier.main(["--data-dir", tmp_path])
