"""The progress GIF: which epochs it shows (gif_frames) and ProgressGif's cheap rewrites."""

import builtins
import os

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from common import gif as gif_module, plotting
from common.gif import ProgressGif, gif_frames

# --- gif_frames ----------------------------------------------------------------------------


# Mean absolute error per channel a 256-colour palette may cost on smooth_image (whose
# gradients hold over 1000 colours; about 4 measured).
PALETTE_TOLERANCE = 6.0


def gaps(shown, epochs):
    positions = [epochs.index(epoch) for epoch in shown]
    return np.diff(positions)


@pytest.mark.parametrize("max_frames", [2, 3, 5, 10, 100])
def test_gif_frames_keeps_at_most_max_first_and_newest_evenly_spread(max_frames):
    for count in range(1, 450):
        for every in (1, 5):
            epochs = list(range(every, every * count + 1, every))  # --sample-every 1 and 5.
            shown = gif_frames(epochs, max_frames)
            assert len(shown) <= max_frames, (count, shown)
            assert shown == sorted(set(shown)) and set(shown) <= set(epochs)
            assert shown[0] == epochs[0] and shown[-1] == epochs[-1]
            if count <= max_frames:
                assert shown == epochs  # Fewer samples than frames: every one is shown.
            elif len(shown) > 2:
                steps = gaps(shown, epochs)
                assert steps.max() <= 2 * steps.min(), (count, max_frames, steps)
                # It uses the room it has: at least about half of max_frames.
                assert len(shown) >= max_frames // 2, (count, max_frames, len(shown))


def test_gif_frames_with_few_epochs_keeps_all_and_with_none_is_empty():
    assert gif_frames([], 100) == []
    assert gif_frames([7], 100) == [7]
    assert gif_frames([3, 1, 2], 100) == [1, 2, 3]
    assert len(gif_frames(range(1, 101), 100)) == 100
    assert len(gif_frames(range(1, 102), 100)) < 100


def test_gif_frames_is_deterministic_and_stable_as_the_run_grows():
    epochs = list(range(1, 401))
    assert gif_frames(epochs, 100) == gif_frames(list(epochs), 100) == gif_frames(
        reversed(epochs), 100)
    assert gif_frames(epochs, 100)[:3] == [1, 9, 17]  # Stride 8 at 400 samples.
    history = [gif_frames(epochs[:count], 10) for count in range(1, 301)]
    for earlier, shown in enumerate(history):
        if len(shown) < 2:
            continue
        # Frames up to the one before the newest never come back once they left, and
        # none appear there that were not shown before: the GIF does not jump around.
        settled = {epoch for epoch in shown if epoch <= shown[-2]}
        for later in history[earlier + 1 :]:
            assert {epoch for epoch in later if epoch <= shown[-2]} <= settled


def test_gif_frames_needs_room_for_first_and_newest():
    with pytest.raises(ValueError, match="max_frames"):
        gif_frames([1, 2, 3], 1)
    with pytest.raises(ValueError, match="max_frames"):
        ProgressGif("x.gif", max_frames=0)


# --- ProgressGif ---------------------------------------------------------------------------


def smooth_image(seed, size=40, channels=3):
    """A smooth random colour image, unlike its neighbours: a GIF palette keeps it close."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (5, 5, channels))
    image = Image.fromarray(coarse.astype(np.uint8).squeeze()).resize((size, size),
                                                                        Image.BILINEAR)
    return np.asarray(image)


def write_samples(folder, epochs, channels=3):
    paths = []
    for epoch in epochs:
        path = folder / "samples" / f"epoch_{epoch:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, smooth_image(epoch, channels=channels))
        paths.append(path)
    return paths


def read_gif(path):
    """(RGB frames as float arrays, durations in ms) of a GIF, read back with Pillow."""
    frames, durations = [], []
    with Image.open(path) as gif:
        for index in range(gif.n_frames):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("RGB"), dtype=np.float64))
            durations.append(gif.info["duration"])
    return frames, durations


def as_rgb(pixels):
    pixels = np.asarray(pixels, dtype=np.float64)
    return np.repeat(pixels[..., None], 3, axis=-1) if pixels.ndim == 2 else pixels


def test_progress_gif_shows_the_chosen_samples_in_order(tmp_path):
    epochs = list(range(1, 24))
    paths = write_samples(tmp_path, epochs)
    gif = ProgressGif(tmp_path / "progress.gif", max_frames=6)
    for epoch, path in zip(epochs, paths):
        gif.add(epoch, path)
        gif.write()
    chosen = gif_frames(epochs, 6)
    assert gif.shown() == chosen and 3 <= len(chosen) <= 6
    frames, _ = read_gif(tmp_path / "progress.gif")
    assert len(frames) == len(chosen)
    assert iio.imread(tmp_path / "progress.gif", index=None).shape[0] == len(chosen)
    sources = {epoch: as_rgb(iio.imread(path)) for epoch, path in zip(epochs, paths)}
    for frame, epoch in zip(frames, chosen):
        assert frame.shape == sources[epoch].shape
        error = np.abs(frame - sources[epoch]).mean()
        assert error < PALETTE_TOLERANCE, (epoch, error)
        nearest = min(sources, key=lambda other: np.abs(frame - sources[other]).mean())
        assert nearest == epoch


def test_progress_gif_accepts_arrays_and_keeps_grayscale_exact(tmp_path):
    gif = ProgressGif(tmp_path / "g.gif")
    grays = [smooth_image(epoch, channels=1)[..., None] for epoch in (1, 2)]  # (H, W, 1)
    for epoch, pixels in zip((1, 2), grays):
        gif.add(epoch, pixels)
    gif.add(3, Image.fromarray(smooth_image(3)))
    gif.write()
    frames, _ = read_gif(tmp_path / "g.gif")
    assert len(frames) == 3
    for frame, pixels in zip(frames, grays):
        assert np.array_equal(frame[..., 0], pixels[..., 0])  # 256 grays fit a palette.
    assert np.abs(frames[2] - smooth_image(3)).mean() < PALETTE_TOLERANCE
    with pytest.raises(ValueError, match="uint8"):
        gif.add(4, np.zeros((4, 4, 3), np.float32))


def test_rebuild_from_disk_gives_the_same_gif_as_adding_one_by_one(tmp_path):
    epochs = list(range(2, 80, 2))  # --sample-every 2
    paths = write_samples(tmp_path, epochs)
    one_by_one = ProgressGif(tmp_path / "a.gif", max_frames=8)
    for epoch, path in zip(epochs, paths):
        one_by_one.add(epoch, iio.imread(path))
        one_by_one.write()
    rebuilt = ProgressGif(tmp_path / "b.gif", max_frames=8).rebuild_from(reversed(paths))
    rebuilt.write()
    assert rebuilt.epochs == epochs and rebuilt.shown() == one_by_one.shown()
    assert (tmp_path / "a.gif").read_bytes() == (tmp_path / "b.gif").read_bytes()
    # A resume that rolled back to epoch 40 shows what is on disk up to there.
    rebuilt.rebuild_from(paths[:20]).write()
    assert len(read_gif(tmp_path / "b.gif")[0]) == len(gif_frames(epochs[:20], 8))


def test_each_frame_is_read_and_quantized_once(tmp_path, monkeypatch):
    encoded = []
    real_encode = gif_module._encode_frame
    monkeypatch.setattr(gif_module, "_encode_frame",
                        lambda image, budget: encoded.append(1) or real_encode(image, budget))
    epochs = list(range(1, 41))
    paths = write_samples(tmp_path, epochs)
    gif = ProgressGif(tmp_path / "progress.gif", max_frames=5)
    for epoch, path in zip(epochs, paths):
        before = len(encoded)
        gif.add(epoch, path)
        gif.write()
        assert len(encoded) - before <= 2  # The new sample (and one that steps back in).
    assert len(encoded) <= len(epochs)
    assert len(gif._frames) + len(gif._sources) <= 5 + 1  # Dropped frames are forgotten.
    # Rebuilding from the same unchanged files, as after every epoch, reads none again.
    before = len(encoded)
    gif.rebuild_from(paths).write()
    assert len(encoded) == before
    # A sample written again (a resumed epoch) is read again.
    os.utime(paths[-1], ns=(0, 0))
    gif.rebuild_from(paths).write()
    assert len(encoded) == before + 1


def test_write_gif_keeps_its_old_call_and_caps_the_frames(tmp_path):
    paths = write_samples(tmp_path, range(1, 131))
    gif_module.write_gif(paths, tmp_path / "progress.gif")
    frames, _ = read_gif(tmp_path / "progress.gif")
    assert len(frames) == len(gif_frames(range(1, 131))) <= 100
    gif_module.write_gif(paths[:3], tmp_path / "progress.gif")
    assert len(read_gif(tmp_path / "progress.gif")[0]) == 3


def test_last_frame_lingers(tmp_path):
    paths = write_samples(tmp_path, range(1, 5))
    gif = ProgressGif(tmp_path / "progress.gif", seconds_per_frame=0.25).rebuild_from(paths)
    gif.write()
    assert read_gif(tmp_path / "progress.gif")[1] == [250, 250, 250, 1000]
    gif.rebuild_from(paths[:1]).write()
    assert read_gif(tmp_path / "progress.gif")[1] == [1000]


def test_a_failed_write_keeps_the_previous_gif_and_leaves_no_temporary_file(tmp_path,
                                                                             monkeypatch):
    paths = write_samples(tmp_path, range(1, 4))
    target = tmp_path / "progress.gif"
    gif = ProgressGif(target).rebuild_from(paths[:2])
    gif.write()
    before = target.read_bytes()
    gif.add(3, paths[2])
    written = []
    real_open = builtins.open

    class FullDisk:  # Takes the first few kilobytes, then the disk is full.
        def __init__(self, file):
            self.file = file

        def write(self, data):
            if sum(written) > 2000:
                raise OSError(28, "No space left on device")
            written.append(len(data))
            return self.file.write(data)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    monkeypatch.setattr(gif_module, "open", lambda *a, **k: FullDisk(real_open(*a, **k)),
                        raising=False)
    with pytest.raises(OSError, match="No space"):
        gif.write()
    assert sum(written) > 2000  # It failed mid-file, not before writing.
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progress.gif", "samples"]
    monkeypatch.undo()
    gif.write()  # Space again: the next write goes through.
    assert len(read_gif(target)[0]) == 3


def test_the_gif_stays_under_its_size_cap_even_for_noise(tmp_path):
    rng = np.random.default_rng(0)
    gif = ProgressGif(tmp_path / "noise.gif", max_frames=6, max_bytes=60_000)
    for epoch in range(1, 13):
        gif.add(epoch, rng.integers(0, 256, (120, 120, 3), dtype=np.uint8))  # 82 KB if uncapped.
    gif.write()
    assert (tmp_path / "noise.gif").stat().st_size <= 60_000
    assert len(read_gif(tmp_path / "noise.gif")[0]) == len(gif_frames(range(1, 13), 6))
    # A smooth frame that fits keeps its full palette: the cap costs nothing then.
    gif = ProgressGif(tmp_path / "smooth.gif", max_frames=6, max_bytes=60_000)
    gif.add(1, smooth_image(1, size=120))
    gif.write()
    frame = read_gif(tmp_path / "smooth.gif")[0][0]
    assert np.abs(frame - smooth_image(1, size=120)).mean() < PALETTE_TOLERANCE


def test_a_fashion_mnist_run_of_400_epochs_stays_small(tmp_path):
    rng = np.random.default_rng(0)
    gif = ProgressGif(tmp_path / "progress.gif")  # The defaults: 100 frames.
    for epoch in range(1, 401):  # 8x8 grids of 28x28 grayscale noise: the worst case.
        gif.add(epoch, plotting.image_grid(rng.uniform(-1, 1, (64, 28, 28, 1))))
    gif.write()
    assert (tmp_path / "progress.gif").stat().st_size < 20_000_000
    assert len(read_gif(tmp_path / "progress.gif")[0]) == len(gif_frames(range(1, 401)))


def test_add_refuses_an_epoch_before_the_newest(tmp_path):
    gif = ProgressGif(tmp_path / "progress.gif")
    gif.add(5, smooth_image(5))
    gif.add(5, smooth_image(6))  # The same epoch again replaces it.
    assert gif.epochs == [5]
    with pytest.raises(ValueError, match="rebuild_from"):
        gif.add(4, smooth_image(4))
    gif.write()
    frame = read_gif(tmp_path / "progress.gif")[0][0]
    assert np.abs(frame - smooth_image(6)).mean() < PALETTE_TOLERANCE


def test_grids_added_without_writing_wait_encoded_not_raw(tmp_path, monkeypatch):
    # A run that writes the GIF now and then holds at most one raw grid, the newest.
    encoded = []
    real_encode = gif_module._encode_frame
    monkeypatch.setattr(gif_module, "_encode_frame",
                        lambda image, budget: encoded.append(1) or real_encode(image, budget))
    gif = ProgressGif(tmp_path / "progress.gif", max_frames=5)
    for epoch in range(1, 41):
        gif.add(epoch, smooth_image(epoch))
        raw = [source for source in gif._sources.values() if isinstance(source, Image.Image)]
        assert len(raw) <= 1
    assert len(encoded) < 40 // 2  # Newest grids that fell off the stride were never encoded.
    gif.write()
    assert len(read_gif(tmp_path / "progress.gif")[0]) == len(gif_frames(range(1, 41), 5))
