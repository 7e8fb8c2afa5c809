"""common/metrics.py: the Frechet distance, pixel-FID and the sliced Wasserstein distance."""


import numpy as np
import pytest

from common.metrics import (
    _blur,
    frechet_distance,
    frechet_distance_of_samples,
    laplacian_pyramid,
    pixel_fid,
    sliced_wasserstein,
)


def test_frechet_distance_closed_form():
    # Diagonal covariances: |m1-m2|^2 + sum (sqrt(a) - sqrt(b))^2.
    mean_a, mean_b = np.array([0.0, 1.0]), np.array([3.0, 1.0])
    a, b = np.diag([4.0, 1.0]), np.diag([1.0, 9.0])
    expected = 9.0 + (2 - 1) ** 2 + (1 - 3) ** 2
    assert frechet_distance(mean_a, a, mean_b, b) == pytest.approx(expected)
    assert frechet_distance(mean_a, a, mean_a, a) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("count_a, count_b", [(12, 30), (30, 12), (40, 40), (300, 200)])
def test_frechet_distance_of_samples_is_that_of_their_means_and_covariances(count_a, count_b):
    # Fewer samples than the 64 dimensions (the singular-value route) and more (the
    # covariances'): the same number as from np.cov, for correlated, shifted samples.
    rng = np.random.default_rng(count_a)
    mixing = rng.normal(size=(64, 64))
    a = rng.normal(size=(count_a, 64)) @ mixing
    b = rng.normal(size=(count_b, 64)) @ mixing.T * 0.7 + 0.3
    expected = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0),
                                np.cov(b, rowvar=False))
    assert expected > 1
    assert frechet_distance_of_samples(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance_of_samples(a, a) == pytest.approx(0.0, abs=1e-6 * expected)


def test_pixel_fid_is_small_for_same_data_and_large_for_different():
    rng = np.random.default_rng(0)
    data = np.tanh(rng.normal(size=(3000, 8, 8, 1)) + np.linspace(-1, 1, 64).reshape(8, 8, 1))
    same = pixel_fid(data[:1500], data[1500:])
    shifted = pixel_fid(data[:1500], np.clip(data[1500:] + 0.5, -1, 1))
    assert same < 0.2 and shifted > 20 * same


def blocky_images(count, seed):
    """Random 32x32 colour images of sharp-edged 4x4 blocks, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    blocks = np.tanh(3 * rng.normal(size=(count, 8, 8, 3)))
    return np.repeat(np.repeat(blocks, 4, axis=1), 4, axis=2).astype(np.float32)


def test_laplacian_pyramid_levels_add_back_up_to_the_image():
    images = blocky_images(3, seed=0)
    levels = laplacian_pyramid(images)
    assert [level.shape[1] for level in levels] == [32, 16]
    rebuilt = levels[-1]
    for level in reversed(levels[:-1]):
        rebuilt = level + _blur(np.repeat(np.repeat(rebuilt, 2, axis=1), 2, axis=2))
    np.testing.assert_allclose(rebuilt, images, atol=1e-5)


def test_sliced_wasserstein_sees_lost_detail_where_it_is_lost():
    real, same = blocky_images(120, seed=1), blocky_images(120, seed=2)
    blurred = _blur(_blur(same))
    base, worse = sliced_wasserstein(real, same), sliced_wasserstein(real, blurred)
    assert set(base) == {32, 16, "mean"}
    # Blurring takes the edges out of the finest level first.
    assert worse[32] > 3 * base[32] and worse[32] - base[32] > worse[16] - base[16]
    # Patches are normalised per set: a uniformly brighter copy has the same shapes.
    brighter = sliced_wasserstein(real, same * 0.5 + 0.3)
    assert brighter["mean"] == pytest.approx(base["mean"], rel=0.05)
