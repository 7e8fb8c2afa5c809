"""Sample-quality statistics that need no downloaded weights.

`frechet_distance` is the distance behind FID; `pixel_fid` applies it to the leading
principal components of raw pixels, a cheap offline stand-in for Inception features
that still sees both what images look like on average and how they vary.
`sliced_wasserstein` compares small patches at several scales (Progressive GAN's SWD), so
it sees edges and textures that the few leading components of pixel_fid miss.
"""

import numpy as np


def frechet_distance(mean_a, covariance_a, mean_b, covariance_b):
    """Fréchet distance between Gaussians N(mean_a, covariance_a) and N(mean_b, covariance_b):

        |mean_a - mean_b|^2 + tr(A) + tr(B) - 2 tr((A^1/2 B A^1/2)^1/2)

    The trace of the matrix square root is computed from the eigenvalues of the symmetric
    product A^1/2 B A^1/2, which needs only numpy and stays real for PSD inputs.
    """
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    covariance_a = np.atleast_2d(np.asarray(covariance_a, np.float64))
    covariance_b = np.atleast_2d(np.asarray(covariance_b, np.float64))
    root_a = _psd_sqrt(covariance_a)
    cross = np.linalg.eigvalsh(root_a @ covariance_b @ root_a)
    trace_sqrt = np.sqrt(np.clip(cross, 0, None)).sum()
    difference = mean_a - mean_b
    value = difference @ difference + np.trace(covariance_a) + np.trace(covariance_b) - 2 * trace_sqrt
    return float(max(value, 0.0))


def frechet_distance_of_samples(samples_a, samples_b):
    """frechet_distance of the Gaussians fitted to two (N, d) sample sets (their means and
    np.cov covariances), without forming a d x d matrix when there are fewer samples than
    dimensions: with X and Y the centred samples scaled by 1/sqrt(N - 1), the covariances
    are X'X and Y'Y, and tr((A^1/2 B A^1/2)^1/2) is the sum of the singular values of Y X'
    (the same non-zero eigenvalues). 100 samples of 2,048 features: a (100, 100) SVD for a
    (2048, 2048) eigendecomposition."""
    samples_a = np.asarray(samples_a, np.float64)
    samples_b = np.asarray(samples_b, np.float64)
    mean_a, mean_b = samples_a.mean(axis=0), samples_b.mean(axis=0)
    if min(len(samples_a), len(samples_b)) >= samples_a.shape[1]:
        return frechet_distance(mean_a, np.cov(samples_a, rowvar=False),
                                mean_b, np.cov(samples_b, rowvar=False))
    scaled_a = (samples_a - mean_a) / np.sqrt(len(samples_a) - 1)
    scaled_b = (samples_b - mean_b) / np.sqrt(len(samples_b) - 1)
    trace_sqrt = np.linalg.svd(scaled_b @ scaled_a.T, compute_uv=False).sum()
    difference = mean_a - mean_b
    value = (difference @ difference + np.sum(scaled_a ** 2) + np.sum(scaled_b ** 2)
             - 2 * trace_sqrt)
    return float(max(value, 0.0))


def _psd_sqrt(matrix):
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def pixel_fid(real, generated, components=20):
    """Fréchet distance of generated to real images in the real images' top principal
    components of pixel space. Images are (N, ...) arrays in [-1, 1]; lower is better,
    and two samples of the same data score near 0."""
    real = np.asarray(real, np.float64).reshape(len(real), -1)
    generated = np.asarray(generated, np.float64).reshape(len(generated), -1)
    center = real.mean(axis=0)
    _, _, directions = np.linalg.svd(real - center, full_matrices=False)
    basis = directions[:components].T
    return frechet_distance_of_samples((real - center) @ basis, (generated - center) @ basis)


_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0  # The pyramid's 5-tap blur.


def _blur(images):
    """(N, H, W, C) blurred with the binomial filter along height and width (edges mirrored)."""
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    height, width = images.shape[1:3]
    rows = sum(weight * padded[:, index:index + height] for index, weight in enumerate(_BINOMIAL))
    return sum(weight * rows[:, :, index:index + width] for index, weight in enumerate(_BINOMIAL))


def laplacian_pyramid(images, smallest=16):
    """Band-pass levels of (N, H, W, C) images, finest first, down to `smallest` pixels a
    side: each level is the image minus its blurred, half-size copy brought back up; the
    last is the blurred image itself at `smallest`. [64, 32, 16] sides for 64px images."""
    levels, current = [], np.asarray(images, np.float32)
    while current.shape[1] > smallest:
        smaller = _blur(current)[:, ::2, ::2]
        larger = np.repeat(np.repeat(smaller, 2, axis=1), 2, axis=2)
        levels.append(current - _blur(larger))
        current = smaller
    return levels + [current]


def _patches(level, per_image, size, rng):
    """`per_image` random size x size patches of each image, flattened and then normalised
    per channel over the whole set (so the distance is about shape, not overall colour)."""
    count, height, width, channels = level.shape
    top = rng.integers(0, height - size + 1, (count, per_image))
    left = rng.integers(0, width - size + 1, (count, per_image))
    offsets = np.arange(size)
    rows = (top[..., None, None] + offsets[:, None])             # (N, P, size, 1)
    columns = (left[..., None, None] + offsets[None, :])         # (N, P, 1, size)
    image = np.arange(count)[:, None, None, None]
    patches = level[image, rows, columns]                        # (N, P, size, size, C)
    patches = patches.reshape(-1, size * size, channels)
    patches = patches - patches.mean(axis=(0, 1))
    patches = patches / (patches.std(axis=(0, 1)) + 1e-8)
    return patches.reshape(len(patches), -1)


def sliced_wasserstein(real, generated, patches_per_image=128, patch_size=7,
                       directions=512, seed=0):
    """Multi-scale sliced Wasserstein distance between two image sets (the SWD of Karras
    et al. 2018, "Progressive Growing of GANs"), x 1000 per pyramid level, finest first,
    e.g. {64: 31.4, 32: 25.2, 16: 26.8, "mean": 27.8} for 64px images; lower is better.

    At every level of each set's Laplacian pyramid it takes `patches_per_image` random
    7x7 patches per image and measures how far apart the two clouds of patches are: the
    mean over `directions` random unit vectors of the 1-D Wasserstein distance between the
    patches projected on them. The same number of images is used from both sets (the
    smaller count), so the projections sort into equal-length lists. Images are (N, H, W,
    C) arrays in [-1, 1]. Two samples of the same data score low but not 0 (the random
    patches leave a floor that shrinks with more images); compare runs on equal counts.
    """
    count = min(len(real), len(generated))
    rng = np.random.default_rng(seed)
    real = np.asarray(real, np.float32)[:count]
    generated = np.asarray(generated, np.float32)[:count]
    if real.ndim == 3:
        real, generated = real[..., None], generated[..., None]
    result = {}
    for level_real, level_generated in zip(laplacian_pyramid(real), laplacian_pyramid(generated)):
        a = _patches(level_real, patches_per_image, patch_size, rng)
        b = _patches(level_generated, patches_per_image, patch_size, rng)
        distances = []
        for _ in range(0, directions, 128):  # 128 directions at a time bounds the memory.
            unit = rng.standard_normal((a.shape[1], 128)).astype(np.float32)
            unit /= np.linalg.norm(unit, axis=0, keepdims=True)
            projected_a = np.sort(a @ unit, axis=0)
            projected_b = np.sort(b @ unit, axis=0)
            distances.append(np.abs(projected_a - projected_b).mean())
        result[level_real.shape[1]] = float(np.mean(distances) * 1000)
    result["mean"] = float(np.mean(list(result.values())))
    return result
