"""Tests of common/quality.py (FID, KID, Inception features, the cached meter) and of the
`python -m common.evaluate` command, all offline: InceptionV3 runs on random weights."""

import json
import math
import re
import shutil
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from common import evaluate, quality
from conftest import FASHION_SAMPLE, QUICK_FASHION_BATCH, QUICK_IMAGES, run_forked, run_main

# --- FID on Gaussians with a known answer -------------------------------------------------


def test_fid_of_identical_feature_sets_is_zero():
    features = np.random.default_rng(0).normal(size=(500, 8))
    assert quality.fid(features, features) == pytest.approx(0.0, abs=1e-6)


def test_fid_of_diagonal_gaussians_matches_the_closed_form():
    # Commuting (diagonal) covariances: FID = |m1 - m2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    rng = np.random.default_rng(1)
    mean_a, mean_b = np.array([0.0, 1.0, -1.0, 2.0, 0.5]), np.array([1.0, 1.0, 0.0, 0.0, 0.5])
    variance_a = np.array([1.0, 4.0, 0.25, 1.0, 2.0])
    variance_b = np.array([1.0, 1.0, 1.0, 9.0, 0.5])
    a = rng.normal(mean_a, np.sqrt(variance_a), size=(100_000, 5))
    b = rng.normal(mean_b, np.sqrt(variance_b), size=(100_000, 5))
    expected = (np.sum((mean_a - mean_b) ** 2)
                + np.sum((np.sqrt(variance_a) - np.sqrt(variance_b)) ** 2))
    assert expected == pytest.approx(11.75)  # 6 from the means, 5.75 from the spreads.
    assert quality.fid(a, b) == pytest.approx(expected, abs=0.15)


def test_fid_of_non_commuting_covariances_matches_the_closed_form():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    dimensions = 6
    factor_a, factor_b = rng.normal(size=(2, dimensions, dimensions))
    covariance_a = factor_a @ factor_a.T / dimensions + 0.5 * np.eye(dimensions)
    covariance_b = factor_b @ factor_b.T / dimensions + 0.2 * np.eye(dimensions)
    assert not np.allclose(covariance_a @ covariance_b, covariance_b @ covariance_a)
    mean_a, mean_b = rng.normal(size=(2, dimensions))
    a = rng.multivariate_normal(mean_a, covariance_a, size=20000)
    b = rng.multivariate_normal(mean_b, covariance_b, size=20000)
    # tr((A^1/2 B A^1/2)^1/2), computed by scipy's matrix square root, not by metrics.py.
    root_a = np.real(linalg.sqrtm(covariance_a))
    cross = np.real(np.trace(linalg.sqrtm(root_a @ covariance_b @ root_a)))
    expected = (np.sum((mean_a - mean_b) ** 2) + np.trace(covariance_a)
                + np.trace(covariance_b) - 2 * cross)
    assert quality.fid(a, b) == pytest.approx(expected, abs=0.05 * max(expected, 1))


# --- KID: unbiased, on 1-D Gaussians --------------------------------------------------------


def cubic_mmd2(mean_a, sd_a, mean_b, sd_b):
    """Population MMD^2 of N(mean_a, sd_a^2) and N(mean_b, sd_b^2) under (xy + 1)^3
    = x^3 y^3 + 3 x^2 y^2 + 3 xy + 1, from their first three moments."""
    def moments(mean, sd):
        return mean, mean ** 2 + sd ** 2, mean ** 3 + 3 * mean * sd ** 2
    (a1, a2, a3), (b1, b2, b3) = moments(mean_a, sd_a), moments(mean_b, sd_b)
    return (a3 - b3) ** 2 + 3 * (a2 - b2) ** 2 + 3 * (a1 - b1) ** 2


def diagonal_excess(sample):
    """E k(x, x) - E k(x, x') for the 1-D cubic kernel: a V-statistic's within-set mean
    over m^2 pairs counts the m diagonal terms, which adds this / m to its expectation."""
    x = sample[:, 0]
    same = np.mean((x ** 2 + 1) ** 3)
    independent = np.mean(x ** 3) ** 2 + 3 * np.mean(x ** 2) ** 2 + 3 * np.mean(x) ** 2 + 1
    return same - independent


@pytest.mark.parametrize("mean_a, sd_a, mean_b, sd_b, tolerance",
                         [(0.5, 0.5, 0.0, 0.5, 0.05), (0.0, 0.5, 0.0, 0.5, 0.02)])
def test_kid_is_unbiased_for_one_dimensional_gaussians(mean_a, sd_a, mean_b, sd_b, tolerance):
    rng = np.random.default_rng(3)
    a = rng.normal(mean_a, sd_a, size=(1_000_000, 1))
    b = rng.normal(mean_b, sd_b, size=(1_000_000, 1))
    size = 10  # Tiny subsets: the biased form would be off by a lot.
    mean, _ = quality.kid(a, b, subset_size=size, subsets=20000, seed=0)
    expected = cubic_mmd2(mean_a, sd_a, mean_b, sd_b)
    assert mean == pytest.approx(expected, abs=tolerance)
    # The biased V-statistic expects `expected + bias`: far outside the tolerance, so this
    # test fails if kid() counted the diagonal.
    bias = (diagonal_excess(a) + diagonal_excess(b)) / size
    assert bias > 5 * tolerance


def test_kid_caps_the_subset_size_and_is_reproducible():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(30, 16)), rng.normal(0.5, size=(40, 16))
    first = quality.kid(a, b, subset_size=1000, subsets=5, seed=7)  # Capped at 30.
    assert first == quality.kid(a, b, subset_size=1000, subsets=5, seed=7)
    assert first[0] > 0 and math.isfinite(first[1])
    with pytest.raises(ValueError, match="at least 2"):
        quality.kid(a[:1], b)


# --- InceptionV3 and its features -----------------------------------------------------------


@pytest.fixture(scope="session")
def inception():
    """Random-weights InceptionV3, built as the training scripts do: under a global
    mixed_bfloat16 policy (restored afterwards). `policy_after` is the global policy
    load_inception left behind."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = quality.load_inception(None)
        policy_after = keras.config.dtype_policy().name
    finally:
        keras.config.set_dtype_policy(previous)
    return SimpleNamespace(model=model, policy_after=policy_after)


@pytest.fixture(scope="session")
def weights_file(inception, tmp_path_factory):
    """The random Inception weights saved as a file: what --inception-weights PATH takes."""
    path = tmp_path_factory.mktemp("inception") / "inception.weights.h5"
    inception.model.save_weights(path)
    return path


@pytest.fixture(scope="module")
def real_pixels():
    """Fashion-MNIST sample images, uint8 (N, 28, 28, 1)."""
    from common.idx import read_idx_images
    return read_idx_images(FASHION_SAMPLE / "train-images-idx3-ubyte.gz")


def test_features_of_grayscale_uint8_and_color_float_images(inception):
    rng = np.random.default_rng(5)
    gray = rng.integers(0, 256, size=(3, 28, 28, 1), dtype=np.uint8)
    color = rng.uniform(-1, 1, size=(5, 64, 64, 3)).astype(np.float32)
    for images in (gray, color):
        features = quality.inception_features(inception.model, images, batch_size=2)
        assert features.shape == (len(images), 2048)
        assert np.isfinite(features).all() and features.std() > 0


def test_uint8_images_give_the_features_of_the_same_images_in_minus_one_to_one(
        inception, real_pixels):
    pixels = real_pixels[:4]
    as_floats = pixels.astype(np.float32) / 127.5 - 1.0
    from_uint8 = quality.inception_features(inception.model, pixels)
    np.testing.assert_allclose(quality.inception_features(inception.model, as_floats),
                               from_uint8, rtol=1e-5, atol=1e-7)
    # Another scale (here [0, 1]) is a different input: the test can tell them apart.
    other = quality.inception_features(inception.model, pixels.astype(np.float32) / 255.0)
    assert not np.allclose(other, from_uint8, rtol=1e-3, atol=0)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        quality.inception_features(inception.model, pixels.astype(np.float32))


def test_inception_stays_float32_under_a_global_mixed_bfloat16_policy(inception, real_pixels):
    assert inception.policy_after == "mixed_bfloat16"  # The caller's policy is restored.
    assert {layer.dtype_policy.name for layer in inception.model.layers} == {"float32"}
    # Same weights in a model built under float32 outright: the features agree to float32
    # precision (bfloat16 compute would be off by about 1%).
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        reference = keras.applications.InceptionV3(include_top=False, pooling="avg",
                                                   weights=None, input_shape=(299, 299, 3))
    finally:
        keras.config.set_dtype_policy(previous)
    reference.set_weights(inception.model.get_weights())
    images = real_pixels[:3]
    features = quality.inception_features(inception.model, images)
    expected = quality.inception_features(reference, images)
    assert features.dtype == np.float32
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def one_line_error(call):
    with pytest.raises(ValueError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and 20 < len(message) < 500, message
    return message


def test_missing_weights_file_is_a_one_line_value_error(tmp_path):
    message = one_line_error(lambda: quality.load_inception(tmp_path / "nope.h5"))
    assert "nope.h5 does not exist" in message and "--inception-weights" in message


def test_unreadable_weights_file_is_a_one_line_value_error(tmp_path):
    broken = tmp_path / "broken.weights.h5"
    broken.write_bytes(b"not an h5 file\n" * 100)
    message = one_line_error(lambda: quality.load_inception(broken))
    assert "cannot load InceptionV3 weights from" in message and "broken.weights.h5" in message


def test_a_weights_file_is_loaded_once_until_it_changes(tmp_path, monkeypatch):
    import os
    built = []

    def build(**options):  # Keras' InceptionV3, as load_inception calls it: counted.
        built.append(options["weights"])
        return object()
    monkeypatch.setattr(quality.keras.applications, "InceptionV3", build)
    monkeypatch.setattr(quality, "_inception_models", {})
    path = tmp_path / "inception.weights.h5"
    path.write_bytes(b"weights")
    first = quality.load_inception(path)
    assert quality.load_inception(path) is first and built == [str(path)]  # A resume's ask.
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = quality.load_inception(path)  # Changed on disk: built again.
    assert second is not first and built == [str(path)] * 2
    assert quality.load_inception(path) is second
    assert quality.load_inception(None) is not quality.load_inception(None)  # Random: new.
    assert built == [str(path)] * 2 + [None] * 2


def test_failed_download_is_a_one_line_value_error_and_keeps_the_policy(monkeypatch):
    from keras.src.applications import inception_v3

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example: None -- [Errno -2]\n"
                        "Name or service not known")
    monkeypatch.setattr(inception_v3.file_utils, "get_file", offline)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        message = one_line_error(lambda: quality.load_inception("imagenet"))
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    finally:
        keras.config.set_dtype_policy(previous)
    assert "cannot download" in message and "URL fetch failure" in message
    assert "~/.keras/models" in message and "--inception-weights PATH" in message


def printed_lines(capsys):
    captured = capsys.readouterr()
    return (captured.out + captured.err).strip().splitlines()


def test_make_meter_without_weights_scores_swd_for_color_images_and_says_so(tmp_path, capsys):
    colour = np.random.default_rng(0).integers(0, 256, (20, 64, 64, 3), dtype=np.uint8)
    meter = quality.make_meter(colour, 16, tmp_path, tmp_path / "nope.h5")
    assert meter.columns == ("swd",)
    skipped, named = printed_lines(capsys)
    assert skipped.startswith("FID/KID skipped: ") and "nope.h5" in skipped
    assert skipped.endswith("scoring SWD instead") and named.startswith("scores: SWD")
    assert not list(tmp_path.iterdir())  # SWD keeps no feature cache.
    with pytest.raises(quality.WeightsUnavailable, match="nope.h5"):  # A file the user named.
        quality.make_meter(colour, 16, tmp_path, tmp_path / "nope.h5", required=True)


def test_make_meter_scores_fashion_by_fcd_with_or_without_inception(
        tmp_path, capsys, real_pixels, weights_file):
    meter = quality.make_meter(real_pixels, 16, tmp_path, tmp_path / "nope.h5")
    assert meter.columns == ("fcd",)
    lines = printed_lines(capsys)
    assert lines[-2].endswith("scoring FCD instead")
    assert lines[-1].startswith("scores: FCD") and "% accurate on Fashion-MNIST" in lines[-1]
    assert (tmp_path / "classifier_real.npz").is_file()
    meter = quality.make_meter(real_pixels, 16, tmp_path, weights_file)
    assert meter.columns == ("fcd", "fid", "kid")
    named = printed_lines(capsys)[-1]
    assert named.startswith("scores: FCD") and named.endswith("FID and KID (in ImageNet "
                                                              "InceptionV3's features)")


def real_images_as(images):
    """A stand-in generator that returns real images (in [-1, 1]) whatever its noise."""
    images = np.asarray(images, np.float32) / 127.5 - 1.0
    taken = {"next": 0}

    def generator(noise, training=False):
        start, count = taken["next"], len(noise)
        taken["next"] = (start + count) % len(images)
        return np.take(images, range(start, start + count), axis=0, mode="wrap")
    return generator


def gaussian_noise_images(noise, training=False):
    """A stand-in generator of 28x28 grayscale noise images."""
    return np.clip(np.random.default_rng(len(noise)).normal(0, 0.5, (len(noise), 28, 28, 1)),
                   -1, 1).astype(np.float32)


def test_fcd_scores_held_out_real_images_near_zero_and_noise_far(tmp_path, real_pixels):
    from common.idx import read_idx_images
    held_out = read_idx_images(FASHION_SAMPLE / "t10k-images-idx3-ubyte.gz")
    meter = quality.ClassifierMeter(real_pixels, 500, tmp_path / "classifier_real.npz")

    def sample_noise(count, seed_pair):
        return np.zeros((count, 4), np.float32)
    real = meter.measure(real_images_as(held_out), sample_noise)["fcd"]
    noise = meter.measure(gaussian_noise_images, sample_noise)["fcd"]
    flat = meter.measure(lambda noise, training=False: np.full(
        (len(noise), 28, 28, 1), -1.0, np.float32), sample_noise)["fcd"]
    assert 0 <= real < 0.1 * min(noise, flat), (real, noise, flat)
    # The real features came from the cache file the second time.
    again = quality.ClassifierMeter(real_pixels, 500, tmp_path / "classifier_real.npz")
    np.testing.assert_array_equal(again.real_features, meter.real_features)


def test_swd_scores_real_looking_images_better_than_noise(shapes_folder):
    pixels = shapes_folder[1]
    meter = quality.SlicedWassersteinMeter(pixels[: len(pixels) // 2], 1000)

    def sample_noise(count, seed_pair):
        return np.zeros((count, 4), np.float32)
    same = meter.measure(real_images_as(pixels[len(pixels) // 2:]), sample_noise)["swd"]
    noise = meter.measure(lambda noise, training=False: np.random.default_rng(0).uniform(
        -1, 1, (len(noise), 64, 64, 3)).astype(np.float32), sample_noise)["swd"]
    assert same < 0.5 * noise, (same, noise)
    diverged = meter.measure(lambda noise, training=False: np.full(
        (len(noise), 64, 64, 3), np.nan, np.float32), sample_noise)
    assert math.isnan(diverged["swd"]) and diverged["count"] == meter.count


# --- The meter --------------------------------------------------------------------------------


def tiny_feature_model(seed):
    """A cheap stand-in for InceptionV3 (299x299x3 -> 2048) for the cache tests."""
    initializer = keras.initializers.GlorotUniform(seed=seed)
    return keras.Sequential([keras.Input((299, 299, 3)), keras.layers.AveragePooling2D(13),
                             keras.layers.Flatten(),
                             keras.layers.Dense(2048, kernel_initializer=initializer)])


@pytest.fixture
def count_feature_calls(monkeypatch):
    """Counts the images inception_features is asked for, by caller (meter/generator)."""
    counted = {"images": 0}
    original = quality.inception_features

    def counting(model, images, batch_size=50):
        counted["images"] += len(images)
        return original(model, images, batch_size)
    monkeypatch.setattr(quality, "inception_features", counting)
    return counted


def test_meter_caches_the_real_features_and_recomputes_when_the_key_changes(
        tmp_path, capsys, real_pixels, count_feature_calls):
    model = tiny_feature_model(0)
    cache = tmp_path / "inception_real.npz"

    def meter(images=real_pixels, count=24, feature_model=model):
        before = count_feature_calls["images"]
        made = quality.QualityMeter(images, count, cache, seed=0, model=feature_model)
        return made, count_feature_calls["images"] - before

    first, computed = meter()
    assert computed == 24 and cache.is_file()
    stored = np.load(cache)
    assert stored["features"].dtype == np.float32 and stored["features"].shape == (24, 2048)
    assert int(stored["count"]) == 24
    written = cache.stat().st_mtime_ns

    again, computed = meter()
    assert computed == 0 and cache.stat().st_mtime_ns == written  # Read, not recomputed.
    np.testing.assert_array_equal(again.real_features, first.real_features)

    assert meter(count=16)[1] == 16  # Another N.
    changed = real_pixels.copy()
    changed[np.arange(len(changed)), 14, 14, 0] ^= 1  # One pixel of every image.
    assert meter(images=changed, count=16)[1] == 16  # Other real images.
    assert meter(count=16, feature_model=tiny_feature_model(1))[1] == 16  # Other weights.
    assert meter(count=16, feature_model=tiny_feature_model(1))[1] == 0
    cache.write_bytes(b"truncated")
    assert meter(count=16, feature_model=tiny_feature_model(1))[1] == 16  # Unreadable.

    warnings = [line for line in capsys.readouterr().out.splitlines() if "biased upward" in line]
    assert len(warnings) == 7 and "FID from 24 images" in warnings[0]  # One per meter.


def test_meter_uses_all_real_images_when_there_are_fewer_than_count(tmp_path, capsys,
                                                                   real_pixels):
    meter = quality.QualityMeter(real_pixels[:20], 10000, None, model=tiny_feature_model(0))
    assert meter.count == 20 and meter.real_features.shape == (20, 2048)
    assert "FID from 20 images is biased upward" in capsys.readouterr().out
    # The chosen subset is fixed by the seed, and differs between seeds.
    pick = quality.choose_real(real_pixels, 10, seed=0)
    np.testing.assert_array_equal(pick, quality.choose_real(real_pixels, 10, seed=0))
    assert not np.array_equal(pick, quality.choose_real(real_pixels, 10, seed=1))


def test_meter_no_warning_at_ten_thousand(monkeypatch, capsys):
    # Skip the features: only the warning's threshold is under test here.
    monkeypatch.setattr(quality, "inception_features",
                        lambda model, images, batch_size=50: np.zeros((len(images), 2048)))
    monkeypatch.setattr(quality, "weights_identity", lambda model: "fake")
    images = np.zeros((10000, 2, 2, 1), np.uint8)
    quality.QualityMeter(images, 10000, None, model=object())
    assert "biased upward" not in capsys.readouterr().out


class HeldOutImages:
    """A 'generator' whose samples are real images the meter does not score against."""

    def __init__(self, pixels):
        self.pixels = pixels.astype(np.float32) / 127.5 - 1.0

    def __call__(self, noise, training):
        assert training is False
        noise = np.asarray(noise)
        index = (np.abs(noise[:, 0]) * 1e6).astype(int) % len(self.pixels)
        return self.pixels[index]


class NoiseImages:
    """A 'generator' of noise-like images, a fixed function of its input noise."""

    def __call__(self, noise, training):
        noise = np.asarray(noise)
        projection = np.random.default_rng(0).normal(size=(noise.shape[1], 28 * 28))
        return np.tanh(noise @ projection).reshape(-1, 28, 28, 1).astype(np.float32)


def sample_noise(count, seed):
    import tensorflow as tf
    return tf.random.stateless_normal([count, 16], seed)


def test_meter_scores_real_looking_samples_better_than_noise(inception, real_pixels, tmp_path):
    # InceptionV3 on 299x299 images is most of this test's time: 48 images a set.
    # Real images: the meter's 48 come from the first 1,000, the generator's from the rest.
    meter = quality.QualityMeter(real_pixels[:1000], 48, tmp_path / "cache.npz",
                                 model=inception.model, seed=0, batch_size=24)
    real_like = meter.measure(HeldOutImages(real_pixels[1000:]), sample_noise)
    noise = meter.score(NoiseImages(), sample_noise)
    assert set(noise) == {"fid", "kid"} and real_like["count"] == 48
    assert all(math.isfinite(value) for value in real_like.values())
    assert real_like["fid"] < noise["fid"] / 2
    assert real_like["kid"] < noise["kid"] / 2


def test_meter_draws_the_same_noise_for_every_score(real_pixels):
    meter = quality.QualityMeter(real_pixels[:100], 20, None, model=tiny_feature_model(0),
                                 seed=3, batch_size=8)
    seeds = []

    def recording_noise(count, seed):
        seeds.append((count, tuple(seed)))
        return sample_noise(count, seed)
    first = meter.generated_features(NoiseImages(), recording_noise)
    np.testing.assert_array_equal(meter.generated_features(NoiseImages(), recording_noise), first)
    assert seeds[:3] == seeds[3:] and [count for count, _ in seeds[:3]] == [8, 8, 4]
    assert len({seed for _, seed in seeds[:3]}) == 3 and all(seed[0] == 3 for _, seed in seeds)


def test_meter_reports_nan_for_a_diverged_generator(tmp_path, real_pixels):
    meter = quality.QualityMeter(real_pixels[:8], 8, None, model=tiny_feature_model(0))
    scores = meter.score(lambda noise, training: np.full((len(noise), 28, 28, 1), np.nan,
                                                         np.float32), sample_noise)
    assert math.isnan(scores["fid"]) and math.isnan(scores["kid"])


# --- python -m common.evaluate ----------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion_run(fashion_sample_run, tmp_path_factory):
    """A one-step Fashion-MNIST run on the shipped sample: a copy of conftest's, which other
    test files (maybe in another worker at this moment) copy whole, so this file writes its
    inception_real.npz elsewhere."""
    out = tmp_path_factory.mktemp("evaluate") / "run"
    shutil.copytree(fashion_sample_run, out)
    return out


def run_evaluate(*args, fresh_process=False):
    """`python -m common.evaluate args`: in this process through its main(), or in a
    process of its own where the promise is about the command itself."""
    if not fresh_process:
        return run_main("common.evaluate", *args, check=False)
    return run_forked("-m", "common.evaluate", *args, check=False)


def error_line(result):
    """The one `error: ...` line a refused evaluation prints, and nothing like a traceback."""
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0] == result.stderr.strip().splitlines()[-1], result.stderr
    return errors[0]


def test_evaluate_scores_a_run_offline(fashion_run, weights_file):
    cache = fashion_run / "inception_real.npz"
    cache.unlink(missing_ok=True)
    result = run_evaluate(fashion_run, "--num", "32", "--inception-weights", weights_file,
                          "--batch-size", "16")
    assert result.returncode == 0, result.stdout + result.stderr
    fid_value = float(re.search(r"^FID (\S+)$", result.stdout, re.M).group(1))
    kid_mean, kid_std = map(float, re.search(r"^KID (\S+) ± (\S+)$", result.stdout, re.M).groups())
    fcd_value = float(re.search(r"^FCD (\S+)$", result.stdout, re.M).group(1))
    assert all(math.isfinite(value) for value in (fid_value, kid_mean, kid_std, fcd_value))
    assert fid_value > 0 and fcd_value > 0  # One step of training is far from real images.
    assert re.search(r"^scores: FCD .*, FID and KID", result.stdout, re.M)
    assert "N 32 generated and 32 real images" in result.stdout
    assert str(FASHION_SAMPLE) in result.stdout  # Where the real images came from.
    assert "biased upward" in result.stdout
    assert cache.is_file() and int(np.load(cache)["count"]) == 32


def copy_run(fashion_run, folder, drop=()):
    """A copy of the run's args.json and generator.keras, without the keys in `drop`."""
    folder.mkdir()
    shutil.copy(fashion_run / "generator.keras", folder / "generator.keras")
    saved = json.loads((fashion_run / "args.json").read_text())
    for name in drop:
        saved.pop(name, None)
    (folder / "args.json").write_text(json.dumps(saved))
    return folder


def test_evaluate_refuses_bad_runs_in_one_line(fashion_run, tmp_path):
    message = error_line(run_evaluate(tmp_path / "missing", fresh_process=True))
    assert "missing does not exist" in message
    (tmp_path / "empty").mkdir()
    assert "has no generator.keras" in error_line(run_evaluate(tmp_path / "empty"))
    # A run from before args.json recorded where its images came from.
    old = copy_run(fashion_run, tmp_path / "old", drop=["data_source"])
    message = error_line(run_evaluate(old))
    assert "does not say where the run's images came from" in message
    assert "pass --data-dir" in message
    broken = copy_run(fashion_run, tmp_path / "broken")
    (broken / "generator.keras").write_bytes(b"PK\x03\x04 cut short")
    assert "is not a Keras model" in error_line(run_evaluate(broken))


def test_evaluate_refuses_bad_data_and_missing_weights_in_one_line(fashion_run, tmp_path):
    message = error_line(run_evaluate(fashion_run, "--data-dir", tmp_path / "no_data",
                                      "--num", "8"))
    assert "no_data does not exist" in message
    # The run's own data folder gone: the message says it came from args.json.
    moved = copy_run(fashion_run, tmp_path / "moved")
    saved = json.loads((moved / "args.json").read_text())
    saved["data_source"]["idx"] = str(tmp_path / "gone" / "train-images-idx3-ubyte.gz")
    (moved / "args.json").write_text(json.dumps(saved))
    message = error_line(run_evaluate(moved, "--num", "8"))
    assert "gone" in message and "pass --data-dir" in message and "args.json" in message
    message = error_line(run_evaluate(fashion_run, "--num", "8",
                                      "--inception-weights", tmp_path / "nope.h5"))
    assert "nope.h5 does not exist" in message


def test_evaluate_offline_scores_fcd_or_swd_and_says_so(fashion_run, straight_run, tmp_path,
                                                       monkeypatch, capsys):
    """Without Inception's weights (no internet): FCD for Fashion-MNIST, SWD for a 64px run."""
    def offline(weights="imagenet"):
        raise quality.WeightsUnavailable("cannot download InceptionV3's ImageNet weights")
    monkeypatch.setattr(quality, "load_inception", offline)
    scores = evaluate.main([copy_run(fashion_run, tmp_path / "fashion"), "--num", "64"])
    printed = capsys.readouterr().out
    assert set(scores) == {"fcd", "count", "source"} and scores["fcd"] > 0
    assert "FID/KID skipped: cannot download" in printed and "\nFCD " in printed
    assert "FID " not in printed.replace("FID/KID", "")
    scores = evaluate.main([copy_run(straight_run("train_faces.py"), tmp_path / "faces"),
                            "--num", "64"])
    printed = capsys.readouterr().out
    assert set(scores) == {"swd", "count", "source"} and scores["swd"] > 0
    assert "scoring SWD instead" in printed and f"\nSWD {scores['swd']:.6g}\n" in printed
    assert scores["count"] == QUICK_IMAGES  # All the run's images: fewer than --num.
    assert f"N {QUICK_IMAGES} generated and {QUICK_IMAGES} real images" in printed


def test_evaluate_main_is_callable_from_python(fashion_run, tmp_path):
    with pytest.raises(SystemExit) as caught:
        evaluate.main([tmp_path / "missing"])
    assert str(caught.value).startswith("error: ") and "\n" not in str(caught.value)
    old = copy_run(fashion_run, tmp_path / "old", drop=["data_source"])
    with pytest.raises(SystemExit, match="pass --data-dir"):
        evaluate.main([old])
    saved = evaluate.read_run(old)
    images, source = evaluate.read_real_images(saved, FASHION_SAMPLE)  # --data-dir supplies it.
    assert images.shape == (2000, 28, 28, 1)
    assert source == str(FASHION_SAMPLE / "train-images-idx3-ubyte.gz")


def test_evaluate_reads_the_images_args_json_records(shapes_folder, messy_folder):
    """common.evaluate reads what the run recorded in args.json (data_source), with no
    training script: image folders with their size and crop, or an idx file."""
    folder, pixels = shapes_folder
    record = {"folders": [str(folder)], "size": 64, "crop": 1.0, "cache_dir": None}
    images, source = evaluate.read_real_images({"data_source": record})
    assert images.dtype == np.uint8 and images.shape == pixels.shape
    np.testing.assert_array_equal(images, pixels)
    assert str(folder) in source
    # Faces record their crop (the central 140x140 of 178x218): the same files read cropped.
    cropped, _ = evaluate.read_real_images({"data_source": {**record, "crop": 140 / 178}})
    assert cropped.shape == pixels.shape and not np.array_equal(cropped, pixels)
    # Artworks record the artist folders chosen: one artist is fewer images than two.
    root, _, _ = messy_folder
    one, _ = evaluate.read_real_images({"data_source": {
        **record, "folders": [str(root / "Rembrandt")]}})
    both, source = evaluate.read_real_images({"data_source": {
        **record, "folders": [str(root / "Rembrandt"), str(root / "Pablo_Picasso")]}})
    assert one.shape[1:] == (64, 64, 3) and 0 < len(one) < len(both)
    assert source == f"{root / 'Rembrandt'} + {root / 'Pablo_Picasso'}"
    idx = FASHION_SAMPLE / "train-images-idx3-ubyte.gz"
    images, source = evaluate.read_real_images({"data_source": {"idx": str(idx)}})
    assert images.shape == (2000, 28, 28, 1) and source == str(idx)


@pytest.mark.parametrize("script, noise", [("train_fashion_mnist.py", "normal"),
                                           ("train_faces.py", "uniform"),
                                           ("train_animals.py", "normal"),
                                           ("train_artworks.py", "normal")])
def test_every_script_records_its_noise_for_evaluate(script, noise):
    """args.json's "noise" tells common.evaluate (through common.generate's load_generator)
    which noise the generator takes: each script records its own."""
    import importlib
    parser = importlib.import_module(script[:-3]).build_parser()
    assert parser.parse_args([]).noise == noise
    if script == "train_faces.py":
        assert parser.parse_args(["--noise", "normal"]).noise == "normal"


# --- --eval-every in a training run -----------------------------------------------------------


def test_eval_every_scores_epochs_into_history_plot_and_tensorboard(tmp_path, quick_data,
                                                                   weights_file):
    import csv

    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    flags = ("--data-dir", quick_data, "--batch-size", QUICK_FASHION_BATCH, "--out-dir", out,
             "--eval-every", "2", "--eval-count", "16", "--inception-weights", weights_file,
             "--tensorboard")
    result = run_main("train_fashion_mnist.py", *flags, "--epochs", "3")
    assert "FID from 16 images is biased upward" in result.stdout
    assert result.stdout.count("FID: computing the features of 16 real images") == 1
    assert result.stdout.count("FCD: computing the features of 16 real images") == 1
    # Epoch 2 is scored (every 2) and epoch 3 too (the last epoch always is).
    assert len(re.findall(r"^FID [\d.]+ \| KID -?[\d.]+ ± [\d.]+ \(16 generated vs 16 real",
                          result.stdout, re.M)) == 2
    assert len(re.findall(r"^FCD [\d.]+ \(16 generated vs 16 real", result.stdout, re.M)) == 2
    with open(out / "history.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["fid"] != "" for row in rows] == [False, True, True]
    assert all(math.isfinite(float(rows[i][name])) for i in (1, 2)
               for name in ("fcd", "fid", "kid"))
    assert (out / "quality.png").stat().st_size > 0 and (out / "inception_real.npz").is_file()
    assert (out / "classifier_real.npz").is_file()
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    for name in ("fcd", "fid", "kid"):
        logged = events.Tensors(name)
        assert [event.step for event in logged] == [2, 3]
        assert float(tf.make_ndarray(logged[0].tensor_proto)) == pytest.approx(
            float(rows[1][name]), rel=1e-5)
    # A resumed run reuses the cached real features instead of computing them again.
    result = run_main("train_fashion_mnist.py", *flags, "--epochs", "4", "--resume")
    assert "computing the features" not in result.stdout
    with open(out / "history.csv", newline="") as file:
        assert [row["fid"] != "" for row in csv.DictReader(file)] == [False, True, True, True]


def test_eval_every_without_weights_says_so_once_and_scores_fcd(tmp_path, quick_data):
    out = tmp_path / "run"
    result = run_main("train_fashion_mnist.py", "--data-dir", quick_data, "--batch-size",
                        QUICK_FASHION_BATCH, "--out-dir", out,
                        "--epochs", "2", "--eval-every", "1", "--inception-weights",
                        tmp_path / "missing.h5")
    skipped = [line for line in result.stdout.splitlines() if line.startswith("FID/KID skipped")]
    assert len(skipped) == 1 and "missing.h5" in skipped[0]
    assert skipped[0].endswith("scoring FCD instead")
    lines = (out / "history.csv").read_text().splitlines()
    assert lines[0] == ("epoch,d_loss,g_loss,d_real,d_fake,images_per_sec,seconds,diversity,"
                        "images,fcd")
    assert all(math.isfinite(float(line.split(",")[-1])) for line in lines[1:])
    assert (out / "generator.keras").is_file() and (out / "quality.png").stat().st_size > 0
    assert not (out / "inception_real.npz").exists()
