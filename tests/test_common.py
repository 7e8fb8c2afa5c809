"""Unit tests of common/: losses, plotting, run files, progress and metrics."""

import argparse
import math
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf

from common import flags, images, losses, plotting, run, rundir
from common.metrics import (_blur, frechet_distance, laplacian_pyramid, pixel_fid,
                            sliced_wasserstein)
from common.progress import EpochLog, format_row

# --- Losses on logits with known answers ---------------------------------------------------


def test_losses_match_hand_computed_cross_entropy():
    real_logits = tf.constant([[0.0], [2.0]])
    fake_logits = tf.constant([[0.0], [-1.0]])
    # BCE(x, 1) = log(1 + e^-x), BCE(x, 0) = log(1 + e^x).
    expected_real = (math.log(2) + math.log(1 + math.exp(-2))) / 2
    expected_fake = (math.log(2) + math.log(1 + math.exp(-1))) / 2
    d_loss = losses.discriminator_loss(real_logits, fake_logits, 2.0)
    assert float(d_loss) == pytest.approx(expected_real + expected_fake, rel=1e-6)
    g_loss = losses.generator_loss(fake_logits, 2.0)
    assert float(g_loss) == pytest.approx((math.log(2) + math.log(1 + math.e)) / 2, rel=1e-6)


def test_device_shares_of_the_losses_add_up_to_the_whole_batch_mean():
    # Several devices each score a share of the batch and divide by the whole batch's size:
    # the shares must sum to what one device computes on the whole batch (uneven shares too).
    real = tf.constant([[0.5], [-1.0], [2.0], [0.0], [3.0]])
    fake = tf.constant([[-0.5], [1.0], [0.0], [-2.0], [1.5]])
    whole = losses.discriminator_loss(real, fake, 5.0)
    shares = (losses.discriminator_loss(real[:3], fake[:3], 5.0)
              + losses.discriminator_loss(real[3:], fake[3:], 5.0))
    assert float(shares) == pytest.approx(float(whole), rel=1e-6)
    assert float(losses.mean_probability(real[:2], 5.0) + losses.mean_probability(real[2:], 5.0)
                 ) == pytest.approx(float(tf.reduce_mean(tf.sigmoid(real))), rel=1e-6)


def test_global_batch_size_on_one_device_is_the_batch():
    assert float(losses.global_batch_size(tf.zeros([7, 3]))) == 7.0


def test_losses_count_the_batch_from_the_logits_when_not_given():
    real = tf.constant([[0.5], [-1.0], [2.0]])
    fake = tf.constant([[-0.5], [1.0], [0.0]])
    assert float(losses.discriminator_loss(real, fake)) == pytest.approx(
        float(losses.discriminator_loss(real, fake, 3.0)), rel=1e-6)
    assert float(losses.generator_loss(fake)) == pytest.approx(
        float(losses.generator_loss(fake, 3.0)), rel=1e-6)
    assert float(losses.mean_probability(real)) == pytest.approx(
        float(tf.reduce_mean(tf.sigmoid(real))), rel=1e-6)


def test_step_metrics_are_losses_probabilities_real_sign_and_count():
    real = tf.constant([[2.0], [-1.0], [3.0], [0.5]])
    fake = tf.constant([[-2.0], [0.0], [1.0], [-1.0]])
    d_loss, g_loss = losses.discriminator_loss(real, fake), losses.generator_loss(fake)
    metrics = losses.step_metrics(d_loss, g_loss, real, fake).numpy()
    assert metrics.dtype == np.float32 and metrics.shape == (6,)
    np.testing.assert_allclose(metrics, [
        float(d_loss), float(g_loss), float(tf.reduce_mean(tf.sigmoid(real))),
        float(tf.reduce_mean(tf.sigmoid(fake))), (1 - 1 + 1 + 1) / 4, 4.0], rtol=1e-6)


def test_losses_stay_finite_for_confident_logits():
    # The seeds' sigmoid-then-log form gives log(0) = -inf here; logits do not.
    huge = tf.constant([[100.0]])
    assert float(losses.discriminator_loss(huge, -huge, 1.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.generator_loss(-huge, 1.0)) == pytest.approx(100.0, rel=1e-6)


def test_losses_accept_bfloat16_logits_and_return_float32():
    logits = tf.constant([[1.0]], dtype=tf.bfloat16)
    assert losses.generator_loss(logits, 1.0).dtype == tf.float32


def test_mean_probability_is_mean_sigmoid():
    logits = tf.constant([[0.0], [math.log(3.0)]])
    assert float(losses.mean_probability(logits, 2.0)) == pytest.approx((0.5 + 0.75) / 2)


# --- Plotting ------------------------------------------------------------------------------


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
        path = rundir.sample_path(tmp_path, epoch)
        plotting.save_image_grid(np.full((4, 6, 6, 1), value), path)
        paths.append(path)
    assert iio.imread(paths[0]).shape == (2 * 8 + 2, 2 * 8 + 2)
    assert rundir.sample_paths(tmp_path, 2) == paths[:2]
    gif = tmp_path / "progress.gif"
    plotting.write_gif(rundir.sample_paths(tmp_path, 3), gif)
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] == 3
    assert frames[0].mean() < frames[2].mean()  # In order: dark first, bright last.
    plotting.write_gif(paths[:1], gif)  # A single frame is a valid GIF too.
    assert iio.imread(gif, index=None).shape[0] == 1


def test_gif_sees_a_sample_written_again(tmp_path):
    path = rundir.sample_path(tmp_path, 1)
    plotting.save_image_grid(np.full((1, 4, 4, 1), -1.0), path)
    plotting.write_gif([path], tmp_path / "a.gif")
    plotting.save_image_grid(np.full((1, 4, 4, 1), 1.0), path)  # A resumed epoch's sample.
    plotting.write_gif([path], tmp_path / "a.gif")
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


# --- Run files -----------------------------------------------------------------------------


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("old")

    def broken(temporary):
        with open(temporary, "w") as file:
            file.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        rundir.atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]  # No temporary left.


def _parser():
    parser = argparse.ArgumentParser(prog="demo")
    run.Run.add_arguments(parser, "demo", epochs=5, batch_size=128, lr=2e-4, latent_dim=100)
    return parser


def test_parse_args_reports_explicit_flags():
    args, explicit = flags.parse_args(_parser(), ["--epochs", "7", "--batch-size", "128"])
    assert args.epochs == 7 and args.lr == 2e-4 and args.out_dir.endswith("demo")
    assert explicit == {"epochs", "batch_size"}  # Typed flags count even at their default.


def test_parse_args_ignores_notebook_kernel_argv(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "/tmp/kernel.json"])
    args, explicit = flags.parse_args(_parser())
    assert args.epochs == 5 and explicit == set()


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
    (["--batch-size", "-4"], "argument --batch-size: must be from 1 to 65536, got -4"),
    (["--lr", "0"], "argument --lr: must be a finite number above 0"),
    (["--lr", "nan"], "argument --lr: must be a finite number above 0"),
    (["--epochs", "ten"], "argument --epochs: must be a whole number"),
    (["--checkpoint-every", "2.5"], "argument --checkpoint-every: epochs must be whole"),
    (["--checkpoint-every", "0m"], "argument --checkpoint-every: must be a number of epochs"),
    (["--gif-frames", "1"], "argument --gif-frames: must be from 2 to 10000, got 1"),
    (["--resume", "--overwrite"], "not allowed with argument"),
])
def test_nonsense_flags_exit_with_one_error_line(argv, message, capsys):
    # One line naming the flag and pointing to --help, exit status 2: no usage block.
    with pytest.raises(SystemExit) as exit_info:
        flags.parse_args(_parser(), argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "usage:" not in err, err
    assert message in err and err.rstrip().endswith("(see demo --help)"), err


@pytest.mark.parametrize("text, value", [
    ("3", [3, "epochs"]), ("5m", [5.0, "minutes"]), ("0.5min", [0.5, "minutes"]),
    (" 10 minutes ", [10.0, "minutes"]),
])
def test_checkpoint_every_takes_epochs_or_minutes(text, value):
    args, _ = flags.parse_args(_parser(), ["--checkpoint-every", text])
    assert args.checkpoint_every == value
    assert flags.parse_args(_parser(), [])[0].checkpoint_every == [5.0, "minutes"]


def test_merge_resumed_args_keeps_saved_values_unless_typed():
    args, explicit = flags.parse_args(_parser(), ["--resume", "--epochs", "9"])
    saved = {"epochs": 3, "batch_size": 64, "lr": 1e-3, "latent_dim": 100, "resume": False}
    merged = flags.merge_resumed_args(args, explicit, saved)
    assert (merged.epochs, merged.batch_size, merged.lr, merged.resume) == (9, 64, 1e-3, True)


def test_resume_does_not_take_over_max_steps():
    # --max-steps limits one invocation: a resumed run is not cut short by the last one's.
    args, explicit = flags.parse_args(_parser(), ["--resume"])
    merged = flags.merge_resumed_args(args, explicit, {"max_steps": 1, "epochs": 3})
    assert merged.max_steps is None and merged.epochs == 3
    args, explicit = flags.parse_args(_parser(), ["--resume", "--max-steps", "7"])
    assert flags.merge_resumed_args(args, explicit, {"max_steps": 1}).max_steps == 7


def test_resumed_run_takes_the_machine_flags_typed_now():
    # A run started with --precision float16 on a T4, resumed on a CPU, must not keep it.
    args, explicit = flags.parse_args(_parser(), ["--resume"])
    saved = {"precision": "float16", "jit": "on", "strategy": "mirrored", "batch_size": 64}
    merged = flags.merge_resumed_args(args, explicit, saved)
    assert (merged.precision, merged.jit, merged.strategy) == ("auto", "auto", "auto")
    assert merged.batch_size == 64


def test_a_run_saved_before_augment_probability_resumes_with_what_it_used():
    # Runs saved before --augment-probability existed augmented every image (p = 1).
    args, explicit = flags.parse_args(_parser(), ["--resume"])
    assert args.augment_probability == flags.AUGMENT_PROBABILITY != 1
    old = {"augment": "translation", "epochs": 3}
    assert flags.merge_resumed_args(args, explicit, old).augment_probability == 1.0
    args, explicit = flags.parse_args(_parser(), ["--resume"])
    assert flags.merge_resumed_args(args, explicit, {**old, "augment_probability": 0.25}
                                    ).augment_probability == 0.25
    args, explicit = flags.parse_args(_parser(), ["--resume", "--augment-probability", "0.7"])
    assert flags.merge_resumed_args(args, explicit, old).augment_probability == 0.7


def test_merge_resumed_args_refuses_a_different_model():
    args, explicit = flags.parse_args(_parser(), ["--resume", "--latent-dim", "64"])
    expected = r"--latent-dim 64 does not match the run being resumed \(--latent-dim 100\)"
    with pytest.raises(ValueError, match=expected):
        flags.merge_resumed_args(args, explicit, {"latent_dim": 100})


def test_prepare_out_dir_refuses_a_run_and_changes_nothing(tmp_path):
    (tmp_path / "args.json").write_text("{}")
    before = sorted(tmp_path.iterdir())
    with pytest.raises(ValueError, match="already holds a run .* --resume .* --overwrite"):
        rundir.prepare_out_dir(tmp_path, resume=False, overwrite=False)
    assert sorted(tmp_path.iterdir()) == before
    assert rundir.prepare_out_dir(tmp_path, resume=True, overwrite=False) is True
    assert rundir.prepare_out_dir(tmp_path / "new", resume=True, overwrite=False) is False


def test_prepare_out_dir_unwritable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        rundir.prepare_out_dir(blocker, False, False)
    with pytest.raises(ValueError, match=f"cannot write to --out-dir {blocker}/run"):
        rundir.prepare_out_dir(blocker / "run", False, False)


def test_clear_run_deletes_only_run_outputs(tmp_path):
    for name in ("args.json", "history.csv", "notes.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt-1.index").write_text("x")
    rundir.clear_run(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_history_round_trip_drops_rows_after_checkpoint(tmp_path):
    rows = [{"epoch": e, "d_loss": 1.5, "g_loss": 0.5, "d_real": 0.6, "d_fake": 0.4,
             "images_per_sec": 100.0, "seconds": 2.0} for e in (1, 2, 3)]
    rundir.write_history(tmp_path, rows)
    assert rundir.read_history(tmp_path, 3) == rows
    assert rundir.read_history(tmp_path, 2) == rows[:2]
    assert rundir.read_history(tmp_path / "none", 5) == []


# --- Progress ------------------------------------------------------------------------------


def test_epoch_log_means_and_row(capsys):
    log = EpochLog(epoch=2, epochs=10, steps=2, first_step=5)
    # A step's metrics as common.losses.step_metrics gives them: d_loss, g_loss, D(x),
    # D(G(z)), the mean sign of the real logits, the image count.
    log.add(tf.constant([1.0, 2.0, 0.8, 0.2, 0.5, 128.0]))
    log.add(tf.constant([3.0, 4.0, 0.6, 0.4, -0.5, 72.0]))
    row = log.summary()
    assert row["epoch"] == 2 and row["d_loss"] == 2.0 and row["g_loss"] == 3.0
    assert log.images == 200  # The step's image count rides along with its metrics.
    assert row["d_real"] == pytest.approx(0.7) and row["d_fake"] == pytest.approx(0.3)
    assert row["images_per_sec"] > 0
    line = capsys.readouterr().out.strip()
    assert line == format_row(row, 10)
    assert line.startswith("epoch  2/10 | d_loss 2.0000 | g_loss 3.0000 | D(x) 0.700")


def test_epoch_log_names_the_first_non_finite_step():
    log = EpochLog(epoch=3, epochs=5, steps=10, first_step=21)
    log.add(tf.constant([1.0, 1.0, 0.5, 0.5, 0.0, 8.0]))
    log.add(tf.constant([1.0, float("nan"), 0.5, 0.5, 0.0, 8.0]))
    log.add(tf.constant([float("inf"), 1.0, 0.5, 0.5, 0.0, 8.0]))
    with pytest.raises(FloatingPointError, match=r"epoch 3, step 2 of the epoch \(global step 22\)"):
        log.flush()


def test_stop_on_interrupt_turns_sigint_into_a_request():
    import os
    import signal
    with run.StopOnInterrupt() as interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupt.requested
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --- Metrics -------------------------------------------------------------------------------


def test_frechet_distance_closed_form():
    # Diagonal covariances: |m1-m2|^2 + sum (sqrt(a) - sqrt(b))^2.
    mean_a, mean_b = np.array([0.0, 1.0]), np.array([3.0, 1.0])
    a, b = np.diag([4.0, 1.0]), np.diag([1.0, 9.0])
    expected = 9.0 + (2 - 1) ** 2 + (1 - 3) ** 2
    assert frechet_distance(mean_a, a, mean_b, b) == pytest.approx(expected)
    assert frechet_distance(mean_a, a, mean_a, a) == pytest.approx(0.0, abs=1e-9)


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


def test_parse_args_sees_a_typed_repeatable_flag():
    parser = argparse.ArgumentParser()
    parser.add_argument("--artist", action="append", default=None)
    parser.add_argument("--epochs", type=int, default=3)
    args, explicit = flags.parse_args(parser, ["--artist", "A", "--artist", "B"])
    assert args.artist == ["A", "B"] and explicit == {"artist"}
    args, explicit = flags.parse_args(parser, [])
    assert args.artist is None and explicit == set()


# --- Image folders (common/images.py) -----------------------------------------------------


def save(image, path, **options):
    from PIL import Image
    (Image.fromarray(image) if isinstance(image, np.ndarray) else image).save(path, **options)
    return path


def test_decode_image_crops_the_center_square_and_resizes(tmp_path):
    # A 200x100 picture: red left quarter, green middle half, blue right quarter.
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :50, 0] = image[:, 50:150, 1] = image[:, 150:, 2] = 255
    pixels = images.decode_image(save(image, tmp_path / "wide.png"), 16)
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8
    assert (pixels[..., 1] == 255).all() and (pixels[..., 0] == 0).all()  # Only the middle.
    # crop=0.5 keeps the central 50x50 of a square picture.
    square = np.zeros((100, 100, 3), np.uint8)
    square[25:75, 25:75] = 255
    inner = images.decode_image(save(square, tmp_path / "square.png"), 10, crop=0.5)
    assert (inner == 255).all()


def test_decode_image_turns_every_mode_into_rgb(tmp_path):
    from PIL import Image
    gray = save(Image.new("L", (30, 40), 100), tmp_path / "gray.jpg")
    rgba = save(Image.new("RGBA", (20, 20), (255, 0, 0, 0)), tmp_path / "clear.png")
    palette = save(Image.new("RGB", (9, 9), (0, 0, 255)).convert("P"), tmp_path / "p.gif")
    tiny = save(Image.new("RGB", (1, 1), (10, 200, 30)), tmp_path / "one.bmp")
    webp = save(Image.new("RGB", (33, 17), (200, 200, 0)), tmp_path / "w.webp", lossless=True)
    deep = save(Image.fromarray(np.full((8, 8), 65535, np.uint16)), tmp_path / "deep.png")
    for path, color in [(gray, 100), (rgba, 255), (palette, (0, 0, 255)),
                        (tiny, (10, 200, 30)), (webp, (200, 200, 0)), (deep, 255)]:
        pixels = images.decode_image(path, 8)
        assert pixels.shape == (8, 8, 3), path
        np.testing.assert_allclose(pixels, np.broadcast_to(color, (8, 8, 3)), atol=3,
                                   err_msg=str(path))  # Transparent red lies on white.


def test_decode_image_uses_the_first_gif_frame(tmp_path):
    from PIL import Image
    frames = [Image.new("RGB", (10, 10), color) for color in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert images.decode_image(tmp_path / "a.gif", 4)[..., 0].min() > 240


def test_decode_image_shrinks_big_jpegs_at_reduced_scale_as_well_as_in_full(tmp_path):
    # JPEGs of 2x the target or more are decoded at 1/2..1/8 scale; the result must match
    # a full decode (the same pixels, saved losslessly) followed by the same resize.
    from PIL import Image
    rng = np.random.default_rng(0)
    big = np.kron(rng.integers(0, 256, (16, 16, 3)), np.ones((32, 32, 1))).astype(np.uint8)
    jpeg = save(big, tmp_path / "big.jpg", quality=95)
    with Image.open(jpeg) as image:
        full = save(np.asarray(image.convert("RGB")), tmp_path / "full.png")
    fast, slow = (images.decode_image(path, 16).astype(float) for path in (jpeg, full))
    assert np.abs(fast - slow).mean() < 4


def test_decode_image_refuses_a_decompression_bomb(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 50 * 50)
    path = save(np.zeros((60, 60, 3), np.uint8), tmp_path / "big.png")
    with pytest.raises(ValueError, match="60x60 pixels is more than this loader accepts"):
        images.decode_image(path, 8)


@pytest.mark.parametrize("content", [b"", b"not an image", b"\x89PNG\r\n\x1a\n broken"])
def test_decode_image_raises_for_broken_files(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises((OSError, ValueError)):
        images.decode_image(path, 8)


def test_find_images_searches_nested_folders_and_survives_symlink_loops(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.JPG", "a/b/y.png", "a/b/z.webp", "top.gif", "notes.txt", ".hidden.png",
                 "a/b/noext"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "a" / "b" / "loop").symlink_to(tmp_path)
    found = [path.relative_to(tmp_path).as_posix() for path in images.find_images(tmp_path)]
    assert found == ["a/b/y.png", "a/b/z.webp", "a/x.JPG", "top.gif"]


def test_decode_images_skips_and_keeps_order(tmp_path):
    paths = []
    for index in range(5):
        paths.append(save(np.full((4, 4, 3), index * 50, np.uint8), tmp_path / f"{index}.png"))
    (tmp_path / "1.png").write_bytes(b"")
    pixels, skipped = images.decode_images(paths, 2, workers=3)
    assert [int(image[0, 0, 0]) for image in pixels] == [0, 100, 150, 200]
    assert [path.name for path, _ in skipped] == ["1.png"]
    line = images.describe_skipped(skipped, 5)
    assert line.startswith("skipped 1 of 5 files that are not readable images: ")
    assert str(tmp_path / "1.png") in line
    many = [(f"f{index}", "bad") for index in range(5)]
    assert images.describe_skipped(many, 9).endswith("; and 2 more")
