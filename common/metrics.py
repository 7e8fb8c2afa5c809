"""Sample-quality statistics that need no downloaded weights.

`frechet_distance` is the distance behind FID; `pixel_fid` applies it to the leading
principal components of raw pixels, a cheap offline stand-in for Inception features
that still sees both what images look like on average and how they vary.
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
    real_features, generated_features = (real - center) @ basis, (generated - center) @ basis
    return frechet_distance(real_features.mean(axis=0), np.cov(real_features, rowvar=False),
                            generated_features.mean(axis=0),
                            np.cov(generated_features, rowvar=False))
