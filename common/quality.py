"""Sample quality: FID and KID in InceptionV3's features, FCD and SWD without a download.

    FID  Fréchet Inception Distance: fits a Gaussian to each feature set and measures the
         distance between the two (means and covariances). Biased upward at small N: the
         same generator scores worse from 1,000 images than from 10,000, so compare only
         scores made from the same number of images.
    KID  Kernel Inception Distance: the unbiased estimate of the squared MMD between the
         feature sets under the cubic kernel k(x, y) = (x.y / d + 1)^3, averaged over random
         subsets (mean and standard deviation). Unbiased, so usable at small N too.
    FCD  Fréchet Classifier Distance: FID's distance in the 128 features of a small
         Fashion-MNIST classifier that ships with the repository (common/classifier.py),
         for 28x28 grayscale runs: offline, and made for those images.
    SWD  Sliced Wasserstein distance of image patches (common/metrics.py): what 64px runs
         get when Inception's weights cannot be had.
All are lower-is-better, and 0 (SWD: a small floor) means the two sets look alike.

The Inception features are Keras' `keras.applications.InceptionV3` with its ImageNet
weights, fed 299x299 images in [-1, 1] (bilinear resize, grayscale repeated to three
channels). That makes scores comparable between runs scored here, but not with published
FIDs, which use the TF-slim / pytorch-fid Inception graph with other weights and resizing.

`QualityMeter` (FID, KID), `ClassifierMeter` (FCD) and `SlicedWassersteinMeter` (SWD)
score a generator against a fixed subset of real images, whose features they compute once
and cache in an .npz; `make_meter` is the entry of the scripts and of common.evaluate: it
picks the meters for the images and says in one line which scores they are.
"""

import hashlib
import math
import re
import weakref
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from common.classifier import CLASSIFIER_FILE, IMAGE_SHAPE, load_features
from common.errors import one_line
from common.metrics import frechet_distance_of_samples, sliced_wasserstein
from common.files import atomic_write

INCEPTION_SIZE = 299
FEATURE_LENGTH = 2048
WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
# Below this many images FID is noticeably biased upward (10,000 is the usual minimum).
RELIABLE_COUNT = 10000
# Bump when the way features are computed changes, so old caches are not reused.
FEATURE_VERSION = 1
# The generated images' noise uses the seed pairs (seed, NOISE_STREAM + batch index): fixed,
# so every score of a run sees the same noise, and apart from the scripts' (seed, 0) grid.
NOISE_STREAM = 7919
# SWD's real and generated images per score, at most, and patches per image and level:
# 65,536 patches a level, a score in ~15 s on 2 CPU cores (BENCHMARKS.md, offline scores).
SWD_COUNT = 2048
SWD_PATCHES = 32


class WeightsUnavailable(ValueError):
    """The InceptionV3 weights cannot be downloaded or read; the message says how to fix it."""


# --- InceptionV3 --------------------------------------------------------------------------


def load_inception(weights="imagenet"):
    """InceptionV3 without its classifier, average-pooled to (batch, 2048), in float32.

    `weights` is "imagenet" (Keras downloads them once into ~/.keras/models), None (random
    weights, for tests) or the path of a weights file. Built under a float32 dtype policy
    whatever the global one is (the scripts set mixed_bfloat16 first), which is restored.
    Raises WeightsUnavailable, a ValueError with a one-line message, when the weights
    cannot be had.

    A model with weights from a file (or "imagenet") is built once per process and handed
    out again while the file is unchanged: building it takes seconds, and a notebook that
    trains again, or a resumed run, asks for the same one. Nothing changes its weights.
    """
    key = None
    if weights not in ("imagenet", None):
        weights = str(Path(weights).expanduser())
        if not Path(weights).is_file():
            raise WeightsUnavailable(
                f"InceptionV3 weights file {weights} does not exist; pass --inception-weights "
                f"with the path of {WEIGHTS_FILE}, or 'imagenet' to download them")
        status = Path(weights).stat()
        key = (weights, status.st_size, status.st_mtime_ns)
    elif weights == "imagenet":
        key = ("imagenet",)
    if key is not None and _inception_models.get("key") == key:
        return _inception_models["model"]
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        model = keras.applications.InceptionV3(
            include_top=False, pooling="avg", weights=weights,
            input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3))
    except Exception as error:  # No internet, a proxy, a bad or wrong file: all end here.
        raise WeightsUnavailable(_weights_advice(weights, error)) from None
    finally:
        keras.config.set_dtype_policy(previous)
    if key is not None:  # One kept (about 90 MB): the last asked for.
        _inception_models.update(key=key, model=model)
    return model


_inception_models = {}  # load_inception's: "key" (weights, file size, time) and "model".


def _weights_advice(weights, error):
    # The download URL is long and says nothing the advice does not: keep the cause instead.
    reason = one_line(re.sub(r"https?://[^\s:]+[^\s]*?(?=:?(\s|$))", "<url>",
                              f"{type(error).__name__}: {error}"))
    if weights == "imagenet":
        return (f"cannot download InceptionV3's ImageNet weights ({reason}); put {WEIGHTS_FILE} "
                f"in ~/.keras/models or pass --inception-weights PATH")
    return (f"cannot load InceptionV3 weights from {weights} ({reason}); pass "
            f"--inception-weights with the path of {WEIGHTS_FILE} (or a file saved by "
            f"InceptionV3's save_weights), or 'imagenet' to download them")


def weights_identity(model):
    """A sha1 of the model's weights: what the real images' feature cache is keyed on, so
    a cache made with other weights (other file, random ones) is never reused."""
    digest = hashlib.sha1()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


# --- Features -----------------------------------------------------------------------------


# One traced feature function per model: tracing InceptionV3 costs seconds, and the meter
# asks for features one generated batch at a time. Weak keys let models be collected.
_feature_functions = weakref.WeakKeyDictionary()


def _feature_function(model):
    function = _feature_functions.get(model)
    if function is None:
        model_reference = weakref.ref(model)  # A strong one would keep the key alive.

        # One signature for every image size and batch: traced once per model.
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def function(images):
            resized = tf.image.resize(images, (INCEPTION_SIZE, INCEPTION_SIZE),
                                      method="bilinear")
            return model_reference()(resized, training=False)
        _feature_functions[model] = function
    return function


def _to_unit_range(images):
    """A batch as float32 in [-1, 1], the range of the generators' tanh and of every
    feature model here (InceptionV3's own preprocessing range)."""
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 127.5 - 1.0
    else:
        images = images.astype(np.float32)
        low, high = float(images.min()), float(images.max())
        if low < -1.5 or high > 1.5:  # Far outside tanh's range: [0, 255] floats, say.
            raise ValueError(f"float images must be in [-1, 1], got values in "
                             f"[{low:.3g}, {high:.3g}]; pass uint8 images in [0, 255] or "
                             f"floats in [-1, 1]")
        images = np.clip(images, -1.0, 1.0)
    return images


def _to_inception_range(images):
    """A batch as float32 RGB in [-1, 1]: grayscale repeated to InceptionV3's 3 channels."""
    images = _to_unit_range(images)
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def inception_features(model, images, batch_size=50):
    """Pooled InceptionV3 features, float32 (N, 2048), of images (N, H, W, C), C 1 or 3.

    Images are uint8 in [0, 255] (a data set) or floats in [-1, 1] (generator output); both
    map to the same [-1, 1] input, resized to 299x299 bilinearly. Processed `batch_size` at
    a time, so only one batch is ever held at 299x299.
    """
    if np.ndim(images) != 4 or np.shape(images)[-1] not in (1, 3):
        raise ValueError(f"images must be (N, height, width, 1 or 3), got shape "
                         f"{np.shape(images)}")
    function = _feature_function(model)
    batches = [np.zeros((0, FEATURE_LENGTH), np.float32)]  # So no images give (0, 2048).
    for start in range(0, len(images), batch_size):
        batch = _to_inception_range(np.asarray(images[start:start + batch_size]))
        batches.append(function(tf.constant(batch)).numpy())
    return np.concatenate(batches).astype(np.float32, copy=False)


# --- The two distances --------------------------------------------------------------------


def _as_features(features, name):
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"{name} must be (N, d) features with N of at least 2, got shape "
                         f"{features.shape}")
    return features


def fid(features_a, features_b):
    """Fréchet distance between Gaussians fitted to two (N, d) feature sets."""
    features_a = _as_features(features_a, "features_a")
    features_b = _as_features(features_b, "features_b")
    return frechet_distance_of_samples(features_a, features_b)


def _cubic_kernel(x, y):
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _unbiased_mmd2(x, y):
    """Unbiased estimate of MMD^2 from two samples of the same size m: the within-set
    kernel means leave out k(x_i, x_i) (m(m-1) pairs), which the biased form counts."""
    m = len(x)
    within_x, within_y = _cubic_kernel(x, x), _cubic_kernel(y, y)
    within = ((within_x.sum() - np.trace(within_x)) + (within_y.sum() - np.trace(within_y))) \
        / (m * (m - 1))
    return within - 2.0 * _cubic_kernel(x, y).mean()


def kid(features_a, features_b, subset_size=1000, subsets=100, seed=0):
    """Kernel Inception Distance: (mean, std) over `subsets` random subsets of the unbiased
    squared-MMD estimate with kernel (x.y / d + 1)^3. Subsets hold `subset_size` rows of
    each set (fewer when a set is smaller), drawn without replacement."""
    features_a = _as_features(features_a, "features_a")
    features_b = _as_features(features_b, "features_b")
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"feature lengths differ: {features_a.shape[1]} and "
                         f"{features_b.shape[1]}")
    size = min(subset_size, len(features_a), len(features_b))
    if size < 2 or subsets < 1:
        raise ValueError(f"KID needs subsets of at least 2 rows and at least 1 subset, got "
                         f"subset_size {size} and subsets {subsets}")
    rng = np.random.default_rng(seed)
    estimates = np.array([
        _unbiased_mmd2(features_a[rng.choice(len(features_a), size, replace=False)],
                       features_b[rng.choice(len(features_b), size, replace=False)])
        for _ in range(subsets)])
    return float(estimates.mean()), float(estimates.std())


# --- Scoring a generator ------------------------------------------------------------------


def choose_real(real_images, count, seed=0):
    """The real images a meter scores against: all of them when there are at most `count`,
    else a fixed random `count` of them (numpy default_rng(seed)), in file order."""
    if len(real_images) <= count:
        return np.asarray(real_images)
    chosen = np.sort(np.random.default_rng(seed).choice(len(real_images), count, replace=False))
    return np.asarray(real_images[chosen])  # Sorted reads are kinder to a memory map.


def images_identity(images):
    """A sha1 of the images' shape, dtype and bytes."""
    digest = hashlib.sha1(f"{images.shape} {images.dtype}".encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    return digest.hexdigest()


def generated_images(generator, sample_noise, count, seed, batch_size):
    """`count` images of `generator(noise, training=False)` as float32 batches; the noise is
    `sample_noise(size, seed_pair)` with fixed seed pairs, the same for every score."""
    for index, start in enumerate(range(0, count, batch_size)):
        noise = sample_noise(min(batch_size, count - start), (seed, NOISE_STREAM + index))
        yield tf.cast(generator(noise, training=False), tf.float32).numpy()


class QualityMeter:
    """Scores generators by FID and KID against a fixed set of real images.

    `real_images` is uint8 (M, H, W, C). The meter uses N = min(count, M) of them (a fixed
    random subset, see `choose_real`) and N generated images per score. The real images'
    features are computed here, once, and cached at `cache_path` (an .npz, or None for no
    cache) under a key of N, the chosen images and the Inception weights; a cache with
    another key is recomputed. `model` reuses an InceptionV3 from `load_inception` instead
    of building one from `weights`. Raises WeightsUnavailable (a ValueError) when the
    weights cannot be had.
    """
    distance = "FID"  # The score whose small-N bias the start-up warning is about.
    description = "FID and KID (in ImageNet InceptionV3's features)"
    columns = ("fid", "kid")  # What `score` returns: history.csv's columns.
    names = ("fid", "kid", "kid_std")  # What `measure` returns, with "count".
    feature_length = FEATURE_LENGTH

    def __init__(self, real_images, count, cache_path, weights="imagenet", seed=0, *,
                 batch_size=50, model=None):
        self._check_counts(real_images, count)
        self.model = load_inception(weights) if model is None else model
        self._start(real_images, count, cache_path, seed, batch_size)

    def features(self, images):
        return inception_features(self.model, images, self.batch_size)

    @staticmethod
    def _check_counts(real_images, count):
        if len(real_images) < 2 or count < 2:
            raise ValueError(f"quality scores need at least 2 images, got {len(real_images)} "
                             f"real images and a count of {count}")

    def _start(self, real_images, count, cache_path, seed, batch_size):
        """Choose the real images and read (or compute and cache) their features."""
        self.seed = seed
        self.batch_size = batch_size
        real = choose_real(real_images, count, seed)
        self.count = len(real)
        if self.count < RELIABLE_COUNT:
            print(f"warning: {self.distance} from {self.count} images is biased upward (use "
                  f"{RELIABLE_COUNT} or more to compare with other work); compare only "
                  f"scores made with the same N")
        key = {"version": FEATURE_VERSION, "count": self.count,
               "images_sha1": images_identity(real), "weights_sha1": weights_identity(self.model)}
        self.real_features = _read_cache(cache_path, key, self.feature_length)
        if self.real_features is None:
            print(f"{self.distance}: computing the features of {self.count} real images "
                  f"(once{f'; cached in {cache_path}' if cache_path else ''})", flush=True)
            self.real_features = self.features(real)
            _write_cache(cache_path, key, self.real_features)

    def generated_features(self, generator, sample_noise):
        """Features of N images of `generator`, one batch at a time (see generated_images)."""
        return np.concatenate([self.features(images) for images in generated_images(
            generator, sample_noise, self.count, self.seed, self.batch_size)])

    def distances(self, generated):
        kid_mean, kid_std = kid(self.real_features, generated, seed=self.seed)
        return {"fid": fid(self.real_features, generated), "kid": kid_mean, "kid_std": kid_std}

    def line(self, scores):
        return (f"FID {scores['fid']:.2f} | KID {scores['kid']:.4f} ± {scores['kid_std']:.4f} "
                f"({scores['count']} generated vs {scores['count']} real images)")

    def measure(self, generator, sample_noise):
        """{name: score for name in self.names} and "count", N."""
        generated = self.generated_features(generator, sample_noise)
        if not np.isfinite(generated).all():  # A diverged generator: report, do not crash.
            scores = dict.fromkeys(self.names, math.nan)
        else:
            scores = self.distances(generated)
        return {**scores, "count": self.count}

    def score(self, generator, sample_noise):
        """{column: float} of `generator` against the real images, after one printed line."""
        scores = self.measure(generator, sample_noise)
        print(self.line(scores), flush=True)
        return {name: scores[name] for name in self.columns}


class ClassifierMeter(QualityMeter):
    """Scores 28x28 grayscale generators by FCD: the Fréchet distance in the 128 features of
    the shipped Fashion-MNIST classifier (common/classifier.py), which needs no download.
    Its real features are cached at `cache_path` as the Inception ones are."""
    distance = "FCD"
    columns = names = ("fcd",)
    feature_length = 128

    def __init__(self, real_images, count, cache_path, seed=0, *, batch_size=500,
                 classifier=CLASSIFIER_FILE):
        self._check_counts(real_images, count)
        self.model, accuracy = load_features(classifier)
        self.description = (f"FCD (the Fréchet distance in the features of "
                            f"{Path(classifier).name}, a classifier {accuracy:.1%} accurate "
                            f"on Fashion-MNIST's test images)")
        self.feature_function = tf.function(
            lambda images: self.model(images, training=False),
            input_signature=[tf.TensorSpec([None, *IMAGE_SHAPE], tf.float32)])
        self._start(real_images, count, cache_path, seed, batch_size)

    def features(self, images):
        batches = [np.zeros((0, self.feature_length), np.float32)]
        for start in range(0, len(images), self.batch_size):
            batch = _to_unit_range(np.asarray(images[start:start + self.batch_size]))
            batches.append(self.feature_function(tf.constant(batch)).numpy())
        return np.concatenate(batches)

    def distances(self, generated):
        return {"fcd": fid(self.real_features, generated)}

    def line(self, scores):
        return (f"FCD {scores['fcd']:.3f} ({scores['count']} generated vs {scores['count']} "
                f"real images, Fashion-MNIST classifier features)")


class SlicedWassersteinMeter(QualityMeter):
    """Scores generators by SWD (common/metrics.py: sliced Wasserstein distance of 7x7
    patches at each level of a Laplacian pyramid, x1000, the mean of the levels), which
    needs no download: what 64px runs get when Inception's weights cannot be had. Uses at
    most SWD_COUNT real images and SWD_PATCHES patches of each, which bounds its memory
    and time."""
    distance = "SWD"
    description = "SWD (sliced Wasserstein distance of image patches, x1000)"
    columns = names = ("swd",)

    def __init__(self, real_images, count, seed=0, *, batch_size=250):
        self._check_counts(real_images, count)
        self.seed, self.batch_size = seed, batch_size
        self.real = choose_real(real_images, min(count, SWD_COUNT), seed)
        self.count = len(self.real)
        self.real = self.real.astype(np.float32) / 127.5 - 1.0

    def generated_features(self, generator, sample_noise):
        return np.concatenate(list(generated_images(generator, sample_noise, self.count,
                                                    self.seed, self.batch_size)))

    def distances(self, generated):
        return {"swd": sliced_wasserstein(self.real, generated, patches_per_image=SWD_PATCHES,
                                          seed=self.seed)["mean"]}

    def line(self, scores):
        return (f"SWD {scores['swd']:.2f} ({scores['count']} generated vs {scores['count']} "
                f"real images, x1000, mean of the pyramid levels)")


class Meters:
    """The meters a run or a command scores with, as one: `score` and `measure` merge
    their results, each meter printing its own line."""

    def __init__(self, meters):
        self.meters = list(meters)
        self.columns = tuple(name for meter in self.meters for name in meter.columns)

    def measure(self, generator, sample_noise):
        scores = {}
        for meter in self.meters:
            scores.update(meter.measure(generator, sample_noise))
        return scores

    def score(self, generator, sample_noise):
        scores = {}
        for meter in self.meters:
            scores.update(meter.score(generator, sample_noise))
        return scores


def _read_cache(path, key, length):
    """The cached features when `path` holds features made under `key`, else None."""
    if path is None or not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as cache:
            stored = {name: cache[name].item() for name in key}
            features = cache["features"]
    except Exception:  # Unreadable, truncated or from an older layout: just recompute.
        return None
    if stored != key or features.shape != (key["count"], length):
        return None
    return features


def _write_cache(path, key, features):
    if path is None:
        return
    try:
        atomic_write(path, lambda temporary: np.savez(temporary, features=features, **key))
    except OSError as error:  # Scoring still works; it only costs the recomputation later.
        print(f"warning: cannot write {path} ({error.strerror or error}); the real images' "
              f"features will be recomputed next time")


def make_meter(real_images, count, out_dir, weights="imagenet", seed=0, *,
               required=False, **options):
    """The Meters a run in `out_dir` is scored with, after one line naming the scores:

    - 28x28 grayscale images (Fashion-MNIST's): FCD, in the shipped classifier's features;
    - any images: FID and KID when InceptionV3's weights can be had (`weights`);
    - 64px images without those weights: SWD instead (`FID/KID skipped: <reason>` first).

    The real images' features are cached in `out_dir` (inception_real.npz,
    classifier_real.npz). `required` (an explicitly named weights file) raises
    WeightsUnavailable instead of skipping. `options` go to the Inception meter."""
    out_dir = Path(out_dir)
    meters = []
    if real_images.shape[1:] == IMAGE_SHAPE:
        meters.append(ClassifierMeter(real_images, count, out_dir / "classifier_real.npz",
                                      seed))
    try:
        meters.append(QualityMeter(real_images, count, out_dir / "inception_real.npz",
                                   weights, seed, **options))
    except WeightsUnavailable as error:
        if required:
            raise
        if not meters:
            meters.append(SlicedWassersteinMeter(real_images, count, seed))
        print(f"FID/KID skipped: {error}; scoring {meters[0].distance} instead", flush=True)
    print("scores: " + ", ".join(meter.description for meter in meters), flush=True)
    return Meters(meters)
