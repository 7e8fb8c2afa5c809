"""Sample quality as FID and KID, measured in Keras' ImageNet InceptionV3 feature space.

Both numbers compare the 2048-long pooled InceptionV3 features of generated images with
those of real ones; lower is better and 0 means the two feature sets look alike.

    FID  Fréchet Inception Distance: fits a Gaussian to each feature set and measures the
         distance between the two (means and covariances). Biased upward at small N: the
         same generator scores worse from 1,000 images than from 10,000, so compare only
         scores made from the same number of images.
    KID  Kernel Inception Distance: the unbiased estimate of the squared MMD between the
         feature sets under the cubic kernel k(x, y) = (x.y / d + 1)^3, averaged over random
         subsets (mean and standard deviation). Unbiased, so usable at small N too.

The features are Keras' `keras.applications.InceptionV3` with its ImageNet weights, fed
299x299 images in [-1, 1] (bilinear resize, grayscale repeated to three channels). That
makes scores comparable between runs scored here, but not with published FIDs, which use
the TF-slim / pytorch-fid Inception graph with other weights and resizing.

`QualityMeter` scores a generator against a fixed subset of real images, whose features
it computes once and caches in an .npz; `make_meter` is the training scripts' entry: it
returns None, after one line saying why, when the Inception weights cannot be had.
"""

import hashlib
import math
import re
import weakref
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from common.metrics import frechet_distance
from common.rundir import atomic_write

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
    """
    if weights not in ("imagenet", None):
        weights = str(Path(weights).expanduser())
        if not Path(weights).is_file():
            raise WeightsUnavailable(
                f"InceptionV3 weights file {weights} does not exist; pass --inception-weights "
                f"with the path of {WEIGHTS_FILE}, or 'imagenet' to download them")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        return keras.applications.InceptionV3(
            include_top=False, pooling="avg", weights=weights,
            input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3))
    except Exception as error:  # No internet, a proxy, a bad or wrong file: all end here.
        raise WeightsUnavailable(_weights_advice(weights, error)) from None
    finally:
        keras.config.set_dtype_policy(previous)


def _weights_advice(weights, error):
    # The download URL is long and says nothing the advice does not: keep the cause instead.
    reason = _one_line(re.sub(r"https?://[^\s:]+[^\s]*?(?=:?(\s|$))", "<url>",
                              f"{type(error).__name__}: {error}"))
    if weights == "imagenet":
        return (f"cannot download InceptionV3's ImageNet weights ({reason}); put {WEIGHTS_FILE} "
                f"in ~/.keras/models or pass --inception-weights PATH")
    return (f"cannot load InceptionV3 weights from {weights} ({reason}); pass "
            f"--inception-weights with the path of {WEIGHTS_FILE} (or a file saved by "
            f"InceptionV3's save_weights), or 'imagenet' to download them")


def _one_line(text, limit=200):
    """`text` on one line and at most `limit` characters: error messages can be long."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


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


def _to_inception_range(images):
    """A batch as float32 RGB in [-1, 1], InceptionV3's own preprocessing range."""
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
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images


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
    return frechet_distance(features_a.mean(axis=0), np.cov(features_a, rowvar=False),
                            features_b.mean(axis=0), np.cov(features_b, rowvar=False))


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

    def __init__(self, real_images, count, cache_path, weights="imagenet", seed=0, *,
                 batch_size=50, model=None):
        if len(real_images) < 2 or count < 2:
            raise ValueError(f"FID/KID need at least 2 images, got {len(real_images)} real "
                             f"images and a count of {count}")
        self.model = load_inception(weights) if model is None else model
        self.seed = seed
        self.batch_size = batch_size
        real = choose_real(real_images, count, seed)
        self.count = len(real)
        if self.count < RELIABLE_COUNT:
            print(f"warning: FID from {self.count} images is biased upward (use "
                  f"{RELIABLE_COUNT} or more to compare with other work); compare only "
                  f"scores made with the same N")
        key = {"version": FEATURE_VERSION, "count": self.count,
               "images_sha1": images_identity(real), "weights_sha1": weights_identity(self.model)}
        self.real_features = _read_cache(cache_path, key)
        if self.real_features is None:
            print(f"FID/KID: computing the Inception features of {self.count} real images "
                  f"(once{f'; cached in {cache_path}' if cache_path else ''})", flush=True)
            self.real_features = inception_features(self.model, real, batch_size)
            _write_cache(cache_path, key, self.real_features)

    def generated_features(self, generator, sample_noise):
        """Features of N images of `generator(noise, training=False)`, one batch at a
        time; the noise is `sample_noise(count, seed_pair)` with fixed seed pairs."""
        features = []
        for index, start in enumerate(range(0, self.count, self.batch_size)):
            size = min(self.batch_size, self.count - start)
            noise = sample_noise(size, (self.seed, NOISE_STREAM + index))
            images = tf.cast(generator(noise, training=False), tf.float32).numpy()
            features.append(inception_features(self.model, images, self.batch_size))
        return np.concatenate(features)

    def measure(self, generator, sample_noise):
        """{"fid", "kid", "kid_std", "count"}: `score` with KID's spread and N."""
        generated = self.generated_features(generator, sample_noise)
        if not np.isfinite(generated).all():  # A diverged generator: report, do not crash.
            return {"fid": math.nan, "kid": math.nan, "kid_std": math.nan, "count": self.count}
        kid_mean, kid_std = kid(self.real_features, generated, seed=self.seed)
        return {"fid": fid(self.real_features, generated), "kid": kid_mean, "kid_std": kid_std,
                "count": self.count}

    def score(self, generator, sample_noise):
        """{"fid": float, "kid": float} of `generator` against the real images."""
        scores = self.measure(generator, sample_noise)
        print(f"FID {scores['fid']:.2f} | KID {scores['kid']:.4f} ± {scores['kid_std']:.4f} "
              f"({scores['count']} generated vs {scores['count']} real images)", flush=True)
        return {"fid": scores["fid"], "kid": scores["kid"]}


def _read_cache(path, key):
    """The cached features when `path` holds features made under `key`, else None."""
    if path is None or not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as cache:
            stored = {name: cache[name].item() for name in key}
            features = cache["features"]
    except Exception:  # Unreadable, truncated or from an older layout: just recompute.
        return None
    if stored != key or features.shape != (key["count"], FEATURE_LENGTH):
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


def make_meter(real_images, count, cache_path, weights="imagenet", seed=0, **options):
    """A QualityMeter, or None after one line `FID/KID skipped: <reason>` when InceptionV3's
    weights cannot be had, so training goes on without scores. `options` go to the meter."""
    try:
        return QualityMeter(real_images, count, cache_path, weights, seed, **options)
    except WeightsUnavailable as error:
        print(f"FID/KID skipped: {error}", flush=True)
        return None
