"""common/plotting.py: sample grids and the curves (and a GIF of grids, the two together)."""


import imageio.v3 as iio
import numpy as np
import pytest

from common import files, plotting
from common.gif import write_gif


def test_image_grid_places_each_image_and_maps_range():
    images = np.stack([np.full((4, 5, 1), value) for value in (-1.0, 0.0, 1.0)])
    grid = plotting.image_grid(images, padding=1)
    assert grid.shape == (2 * 5 + 1, 2 * 6 + 1)  # 2x2 cells for 3 images, grayscale.
    assert grid[1, 1] == 0 and grid[1, 7] == 128 and grid[6, 1] == 255
    assert grid[6, 7] == 255  # The empty fourth cell stays white.


def test_image_grid_color_and_shape_error():
    grid = plotting.image_grid(np.zeros((64, 8, 8, 3)))
    assert grid.shape == (8 * 10 + 2, 8 * 10 + 2, 3)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        plotting.image_grid(np.zeros((8, 8)))


def test_save_image_grid_and_gif_round_trip(tmp_path):
    paths = []
    for epoch, value in enumerate((-1.0, 0.0, 1.0), start=1):
        path = files.sample_path(tmp_path, epoch)
        plotting.save_image_grid(np.full((4, 6, 6, 1), value), path)
        paths.append(path)
    assert iio.imread(paths[0]).shape == (2 * 8 + 2, 2 * 8 + 2)
    assert files.sample_paths(tmp_path, 2) == paths[:2]
    gif = tmp_path / "progress.gif"
    write_gif(files.sample_paths(tmp_path, 3), gif)
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] == 3
    assert frames[0].mean() < frames[2].mean()  # In order: dark first, bright last.
    write_gif(paths[:1], gif)  # A single frame is a valid GIF too.
    assert iio.imread(gif, index=None).shape[0] == 1


def test_gif_sees_a_sample_written_again(tmp_path):
    path = files.sample_path(tmp_path, 1)
    plotting.save_image_grid(np.full((1, 4, 4, 1), -1.0), path)
    write_gif([path], tmp_path / "a.gif")
    plotting.save_image_grid(np.full((1, 4, 4, 1), 1.0), path)  # A resumed epoch's sample.
    write_gif([path], tmp_path / "a.gif")
    assert iio.imread(tmp_path / "a.gif", index=None)[0].min() > 200


def test_plots_are_pngs(tmp_path):
    history = [{"epoch": e, "d_loss": 1.0 / e, "g_loss": 2.0, "d_real": 0.7, "d_fake": 0.3}
               for e in (1, 2, 3)]
    plotting.plot_losses(history, tmp_path / "losses.png")
    plotting.plot_d_probs(history[:1], tmp_path / "d_probs.png")
    for name in ("losses.png", "d_probs.png"):
        picture = iio.imread(tmp_path / name)
        assert picture.ndim == 3 and picture.shape[0] > 100
        assert picture.std() > 10  # Something is drawn, not a blank canvas.


def test_d_probs_draws_the_samples_diversity_where_the_history_has_it(tmp_path):
    history = [{"epoch": e, "d_loss": 1.0, "g_loss": 2.0, "d_real": 0.7, "d_fake": 0.3}
               for e in (1, 2, 3)]
    plotting.plot_d_probs(history, tmp_path / "without.png")
    plotting.plot_d_probs([{**row, "diversity": 1.4} for row in history],
                          tmp_path / "with.png")
    def green(name):  # tab:green, the diversity line's colour: (44, 160, 44).
        picture = iio.imread(tmp_path / name)[..., :3].astype(int)
        return int((np.abs(picture - (44, 160, 44)).sum(axis=-1) < 40).sum())
    assert green("without.png") == 0 and green("with.png") > 100
