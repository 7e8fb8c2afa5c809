"""common/health.py and the run's health check: D wins, mode collapse and divergence are
seen, warned of with a way back that exists (--resume-from), or stop the run with
--on-collapse stop; a healthy run says nothing."""

import re
import shutil

import numpy as np
import pytest

from common import health
from common.checkpoints import epochs_of_checkpoints
from common.files import read_history, write_history
from conftest import QUICK_FASHION_BATCH, QUICK_IMAGES, QUICK_STEPS, SCRIPTS, STRAIGHT_EPOCHS

# --- The diversity statistic ---------------------------------------------------------------


def test_spread_is_the_rms_pixel_distance_at_a_small_size():
    black, white = np.full((28, 28), -1.0), np.full((28, 28), 1.0)
    assert health.spread(np.stack([black, white])) == pytest.approx(2.0)
    assert health.spread(np.stack([black, black, black])) == 0.0
    # Three images, distances 2, 1 and 1: the mean of the pairs.
    assert health.spread(np.stack([black, white, np.zeros((28, 28))])) == pytest.approx(4 / 3)
    # Fine detail is not variety: a checkerboard and its negative average to the same grey.
    board = np.indices((64, 64, 3)).sum(axis=0) % 2 * 2.0 - 1.0
    assert health.spread(np.stack([board, -board])) == pytest.approx(0.0, abs=1e-9)
    assert health.spread(np.stack([board, -board]), size=64) == pytest.approx(2.0)


def test_diversity_is_about_one_for_real_images_and_zero_for_copies(sample_images):
    reference = health.real_spread(sample_images, seed=0)
    others = sample_images[1000:1064].astype(np.float32) / 127.5 - 1.0
    assert 0.9 < health.diversity(others, reference) < 1.1
    copies = np.repeat(others[:1], 64, axis=0)
    assert health.diversity(copies, reference) == 0.0
    # 64 samples of only k kinds of picture: the fewer kinds, the lower.
    few = [health.diversity(np.repeat(others[:kinds], 64 // kinds, axis=0), reference)
           for kinds in (1, 2, 8, 64)]
    assert few == sorted(few) and few[1] < 0.7 and few[2] < 0.95 * few[3]
    assert health.real_spread(sample_images[:10], count=64) > 0  # Fewer than 64: all used.


def test_no_yardstick_from_one_image_or_copies_of_one(sample_images):
    assert health.real_spread(sample_images[:1]) is None  # No pair to measure.
    assert health.spread(np.zeros((1, 28, 28))) is None
    samples = sample_images[:64].astype(np.float32) / 127.5 - 1.0
    assert health.diversity(samples, None) is None
    same = health.real_spread(np.repeat(sample_images[:1], 64, axis=0))
    assert same < 1e-6 and health.diversity(samples, same) is None  # Not a huge number.


# --- check() on synthetic histories --------------------------------------------------------


def healthy(epoch, **changes):
    """A history row of an even game after warm-up, `changes` applied."""
    rng = np.random.default_rng(epoch)
    return {"epoch": epoch, "d_loss": 1.2 + 0.1 * rng.standard_normal(),
            "g_loss": 1.0 + 0.1 * rng.standard_normal(), "d_real": 0.6, "d_fake": 0.35,
            "images_per_sec": 100.0, "seconds": 1.0, "diversity": 0.9,
            "images": health.WARMUP_IMAGES * epoch, **changes}


def kinds(history):
    return [(kind, since) for kind, since, _ in health.check(history)]


def test_a_healthy_history_is_quiet():
    history = [healthy(epoch) for epoch in range(1, 41)]
    assert all(kinds(history[:end]) == [] for end in range(1, 41))


def test_d_wins_after_win_epochs_in_a_row_and_not_before():
    history = [healthy(epoch) for epoch in range(1, 5)]
    winning = [healthy(epoch, d_real=0.99, d_fake=0.01) for epoch in range(5, 9)]
    assert kinds(history + winning[:health.WIN_EPOCHS - 1]) == []
    assert kinds(history + winning[:health.WIN_EPOCHS]) == [("d_wins", 5)]
    text = health.check(history + winning)[0][2]
    assert text == "D wins: D(x) 0.990 and D(G(z)) 0.010"
    # One even epoch between breaks the streak: it starts again after it.
    broken = history + winning[:2] + [healthy(7)] + [healthy(e, d_real=0.99, d_fake=0.01)
                                                     for e in (8, 9, 10)]
    assert kinds(broken) == [("d_wins", 8)]
    # D(x) high but D(G(z)) not low is not D winning.
    assert kinds(history + [healthy(e, d_real=0.99, d_fake=0.3) for e in range(5, 12)]) == []


def test_nothing_is_judged_during_the_warm_up():
    start = [healthy(epoch, images=health.WARMUP_IMAGES * epoch // 10, d_real=0.99,
                     d_fake=0.01, diversity=0.002) for epoch in range(1, 9)]
    assert kinds(start) == []
    later = start + [healthy(epoch, d_real=0.99, d_fake=0.01) for epoch in range(9, 12)]
    assert kinds(later) == [("d_wins", 9)]
    # A fall to half the best counts from the epoch the best reached SETTLED, warm-up or not:
    # a blob never gets there.
    early = [healthy(epoch, images=100, diversity=value)
             for epoch, value in zip(range(1, 5), (0.5, 0.6, 0.2, 0.2))]
    assert kinds(early) == [("collapse", 3)]


def test_collapse_below_the_floor_or_to_half_the_best():
    history = [healthy(epoch) for epoch in range(1, 6)]
    low = [healthy(epoch, diversity=health.COLLAPSED / 2) for epoch in (6, 7)]
    assert kinds(history + low[:1]) == []
    assert kinds(history + low) == [("collapse", 6)]
    # Once it had reached 1.2, falling to 0.5 is a collapse though 0.5 is above the floor.
    rising = [healthy(epoch, diversity=value) for epoch, value in
              zip(range(1, 6), (0.3, 0.6, 0.9, 1.2, 1.1))]
    fallen = rising + [healthy(6, diversity=0.5), healthy(7, diversity=0.55)]
    assert kinds(fallen) == [("collapse", 6)]
    assert "55% as varied as real images (best 120%)" in health.check(fallen)[0][2]
    # A run that never got far (best 0.3) falling to 0.2 is not: it never settled.
    assert kinds(rising[:1] + [healthy(e, diversity=0.2) for e in (2, 3, 4)]) == []
    # Rows without the column (a history from before the check) are not judged on it.
    assert kinds([{k: v for k, v in healthy(e).items() if k != "diversity"}
                  for e in range(1, 9)]) == []


def test_divergence_is_losses_far_from_where_they_settled_for_epochs():
    history = [healthy(epoch) for epoch in range(1, 8)]
    spike = [healthy(8, d_loss=9.0)]
    assert kinds(history + spike + [healthy(9)]) == []  # One bad epoch is weather.
    gone = [healthy(8, d_loss=9.0), healthy(9, g_loss=40.0)]
    assert kinds(history + gone) == [("divergence", 8)]
    assert "d_loss 1." in health.check(history + gone)[0][2] \
        and "g_loss 40.000" in health.check(history + gone)[0][2]
    # Too few settled epochs to know where the losses settled: not judged yet.
    assert kinds(history[:2] + [healthy(3, d_loss=9.0), healthy(4, d_loss=9.0)]) == []
    # The diverged epochs do not move the yardstick: a long divergence stays one.
    long = history + [healthy(epoch, d_loss=9.0) for epoch in range(8, 20)]
    assert kinds(long) == [("divergence", 8)]


def test_the_check_reads_only_the_history_so_resume_keeps_its_state(tmp_path):
    history = [healthy(epoch) for epoch in range(1, 5)] + [
        healthy(epoch, d_real=0.99, d_fake=0.01, diversity=0.05) for epoch in range(5, 8)]
    write_history(tmp_path, history)
    again = read_history(tmp_path, len(history))  # What a resumed run starts from.
    assert health.check(again) == health.check(history)
    assert kinds(again) == [("d_wins", 5), ("collapse", 5)]


def test_past_warnings_are_every_trouble_check_said_at_some_row():
    history = [healthy(epoch) for epoch in range(1, 5)] + [
        healthy(epoch, diversity=0.05) for epoch in (5, 6)] + [healthy(7)] + [
        healthy(8, diversity=0.05)] + [healthy(epoch) for epoch in (9, 10)]
    assert kinds(history) == []  # Over by the last row,
    assert health.past_warnings(history) == {("collapse", 5)}  # but said at epoch 6;
    assert health.past_warnings(history[:5]) == set()
    # Epoch 8's, back within REJOIN_EPOCHS, is the same trouble; one epoch after longer
    # healthy is a new one, and never said.
    assert health.onsets(history[:8]) == {"collapse": 5}
    later = history + [healthy(epoch) for epoch in range(11, 19)] + [healthy(19, diversity=0.05)]
    assert health.onsets(later) == {"collapse": 19}
    assert health.past_warnings(later) == {("collapse", 5)}


def test_a_trouble_back_within_rejoin_epochs_is_the_one_already_said():
    """The 600-cat run's D, which won by a little with dips under the line between (BENCHMARKS
    "When training goes wrong"): one trouble since epoch 165, said once, not three times."""
    winning = {*range(165, 171), 172, 177, 178, 179, 182, 184, 185, *range(193, 208)}
    history = [healthy(epoch, **({"d_real": 0.92, "d_fake": 0.07} if epoch in winning else {}))
               for epoch in range(1, 212)]
    assert health.past_warnings(history) == {("d_wins", 165)}
    for end in (170, 172, 177, 193, 207):
        assert kinds(history[:end]) == [("d_wins", 165)], end
    assert kinds(history[:176]) == [] and kinds(history[:211]) == []  # Between, it is over.
    # Back only after more than REJOIN_EPOCHS epochs: a new trouble, from its own first epoch.
    gap = 207 + health.REJOIN_EPOCHS + 1
    again = history[:207] + [healthy(epoch) for epoch in range(208, gap)] + [
        healthy(epoch, d_real=0.92, d_fake=0.07) for epoch in range(gap, gap + 3)]
    assert kinds(again) == [("d_wins", gap)]
    assert health.past_warnings(again) == {("d_wins", 165), ("d_wins", gap)}


def test_advice_names_memorising_for_small_data_sets():
    assert "600 training images D has likely memorised them" in health.advice("d_wins", 600)
    assert "--augment" in health.advice("d_wins", 600)
    assert "--lr-g" in health.advice("d_wins", 60000)
    assert "--lr" in health.advice("collapse", 600) and "--lr" in health.advice(
        "divergence", 600)


# --- Runs made to fail, and a healthy one ---------------------------------------------------


FAST = ("--batch-size", QUICK_FASHION_BATCH, "--checkpoint-every", 1, "--keep-checkpoints", 1)
# G that cannot learn against a quick D: D wins within a few epochs of the quick data.
D_WINS = ("--lr-g", "1e-8", "--lr-d", "2e-3")


def warnings_of(result):
    return [line for line in result.stdout.splitlines() if line.startswith("warning:")]


def resume_from_of(line):
    return int(re.search(r"--resume-from (\d+)", line).group(1))


@pytest.fixture
def judged_from_the_start(monkeypatch):
    """The quick data has 32 images: judge from the first epoch, not after 20,000 images,
    and with the collapse floor below a barely trained generator's blob (diversity ~0.07
    at 28 px), which is all these few steps make."""
    monkeypatch.setattr(health, "WARMUP_IMAGES", 0)
    monkeypatch.setattr(health, "COLLAPSED", 0.02)


def test_d_wins_is_warned_of_with_a_kept_way_back_that_works(tmp_path, quick_data,
                                                              judged_from_the_start):
    from conftest import run_main
    out = tmp_path / "run"
    result = run_main("train_fashion_mnist.py", "--data-dir", quick_data, "--out-dir", out,
                      "--epochs", 6, *FAST, *D_WINS)
    lines = warnings_of(result)
    assert len(lines) == 1, result.stdout  # Said once, not every epoch while it lasts.
    line = lines[0]
    since = int(re.search(r"since epoch (\d+)", line).group(1))
    back = resume_from_of(line)
    assert line.startswith("warning: D wins: D(x) 0.9") and "D(G(z)) 0.0" in line
    assert "with 32 training images D has likely memorised them" in line
    assert back == since - 1 and f"--out-dir {out}" in line
    # The epoch line says it for as long as it lasts, from the epoch the warning came.
    epoch_lines = [row for row in result.stdout.splitlines() if row.startswith("epoch ")]
    assert epoch_lines[-1].endswith(f"| d wins since epoch {since}")
    assert "since epoch" not in epoch_lines[0]
    # --keep-checkpoints 1, yet the way back is kept; the last epoch's is the newest.
    assert sorted(epochs_of_checkpoints(out / "checkpoints").values()) == [back, 6]
    # The named command works: back to that epoch, the later epochs' outputs set aside.
    again = run_main("train_fashion_mnist.py", "--resume-from", back, "--out-dir", out,
                     "--epochs", back + 1)
    assert f"after epoch {back}" in again.stdout
    assert len(read_history(out, back + 1)) == back + 1


def test_on_collapse_stop_saves_and_stops_with_one_line(tmp_path, quick_data,
                                                        judged_from_the_start):
    from conftest import refused
    out = tmp_path / "run"
    line = refused("train_fashion_mnist.py", "--data-dir", quick_data, "--out-dir", out,
                   "--epochs", 20, *FAST, *D_WINS, "--on-collapse", "stop", status=1)
    match = re.fullmatch(r"error: D wins: .* since epoch (\d+): .*; go back with "
                         r"--resume-from (\d+) .*; stopped \(--on-collapse stop\) after "
                         r"saving epoch (\d+)", line)
    assert match, line
    since, back, stopped = map(int, match.groups())
    assert stopped == since + health.WIN_EPOCHS - 1 < 20  # As soon as it is seen.
    assert len(read_history(out, stopped)) == stopped
    assert sorted(epochs_of_checkpoints(out / "checkpoints").values()) == [back, stopped]
    assert (out / "generator.keras").is_file()
    assert (out / "samples" / f"epoch_{stopped:04d}.png").is_file()


def ignores_its_noise(monkeypatch, script_module):
    """Feed the generator zeros for noise, in training and for the sample grid: it can only
    draw one picture, the collapse at its purest."""
    import tensorflow as tf
    original = script_module.sample_noise
    monkeypatch.setattr(script_module, "sample_noise",
                        lambda *args: tf.zeros_like(original(*args)))


def test_a_generator_that_ignores_its_noise_is_a_collapse(tmp_path, quick_data, monkeypatch):
    import train_fashion_mnist
    from conftest import run_main
    # Judged from the second epoch on, with the floor below a barely trained generator's
    # blob (diversity ~0.07 at 28 px; a healthy run on these thresholds is quiet: below).
    monkeypatch.setattr(health, "COLLAPSED", 0.02)
    monkeypatch.setattr(health, "WARMUP_IMAGES", 2 * QUICK_STEPS * QUICK_FASHION_BATCH)
    ignores_its_noise(monkeypatch, train_fashion_mnist)
    out = tmp_path / "collapsed"
    result = run_main("train_fashion_mnist.py", "--data-dir", quick_data, "--epochs", 4,
                      *FAST, "--out-dir", out)
    lines = warnings_of(result)
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith("warning: mode collapse: the samples are 0% as varied as real "
                               "images") and "since epoch 2" in lines[0]
    assert resume_from_of(lines[0]) == 1
    assert sorted(epochs_of_checkpoints(out / "checkpoints").values()) == [1, 4]
    assert [row["diversity"] for row in read_history(out, 4)] == [0.0] * 4


def test_copies_of_one_image_give_no_yardstick_so_no_collapse_is_judged(
        tmp_path, sample_images, monkeypatch):
    import train_fashion_mnist
    from conftest import run_main, write_idx_images
    # The generator of the test above, whose collapse is warned of against real images;
    # here every training image is the same picture, so there is nothing to compare with.
    monkeypatch.setattr(health, "COLLAPSED", 0.02)
    monkeypatch.setattr(health, "WARMUP_IMAGES", 0)
    ignores_its_noise(monkeypatch, train_fashion_mnist)
    data, out = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    write_idx_images(data / "train-images-idx3-ubyte.gz",
                     np.repeat(sample_images[:1], QUICK_STEPS * QUICK_FASHION_BATCH, axis=0))
    result = run_main("train_fashion_mnist.py", "--data-dir", data, "--epochs", 3, *FAST,
                      "--out-dir", out)
    assert "collapse" not in result.stdout, result.stdout
    history = read_history(out, 3)
    assert len(history) == 3 and not [row for row in history if "diversity" in row]
    assert "diversity" not in (out / "history.csv").read_text().splitlines()[0]
    assert (out / "d_probs.png").stat().st_size > 0


def test_a_healthy_run_is_quiet_and_a_diverging_one_is_seen_after_resume(
        tmp_path, quick_data, judged_from_the_start):
    from conftest import run_main
    out = tmp_path / "run"
    first = run_main("train_fashion_mnist.py", "--data-dir", quick_data, "--out-dir", out,
                     "--epochs", 4, *FAST)
    assert warnings_of(first) == [] and " since epoch" not in first.stdout  # Healthy.
    assert min(row["diversity"] for row in read_history(out, 4)) > health.COLLAPSED
    # The settled epochs are in the first process's history only: the resumed run judges
    # its epochs against them.
    result = run_main("train_fashion_mnist.py", "--resume", "--out-dir", out, "--epochs", 7,
                      "--lr", "0.05")
    # Such a learning rate may collapse G as well; the divergence is said once either way.
    lines = [line for line in warnings_of(result)
             if line.startswith("warning: the losses left where they had settled")]
    assert len(lines) == 1, result.stdout
    assert "since epoch 5" in lines[0] and resume_from_of(lines[0]) == 4
    assert "a lower --lr helps" in lines[0]
    assert 4 in epochs_of_checkpoints(out / "checkpoints").values()


# --- What the run does with a verdict (scripted, so each epoch's trouble is known) --------


@pytest.fixture
def scripted(monkeypatch):
    """`scripted({kind: epochs})`: the health check sees that kind of trouble at exactly
    those epochs (check, onsets and past_warnings all read health._streaks_by_row)."""
    from conftest import scripted_streaks

    def script(troubles):
        monkeypatch.setattr(health, "_streaks_by_row", scripted_streaks(troubles))
    return script


def interrupted_at_first_step(monkeypatch):
    """Ctrl-C during the first step of the run: the real signal, to the loop's handler."""
    import os
    import signal
    from common.run import Run
    log = Run.log

    def log_then_interrupt(self, metrics):
        if self.steps_taken == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return log(self, metrics)
    monkeypatch.setattr(Run, "log", log_then_interrupt)


def test_a_warned_way_back_stays_after_the_trouble_and_through_a_ctrl_c_on_resume(
        tmp_path, quick_data, scripted, monkeypatch):
    from conftest import run_main
    scripted({"collapse": {3, 4}})  # Said at epoch 4, since 3: back to 2; over at 5.
    out = tmp_path / "run"
    result = run_main("train_fashion_mnist.py", "--data-dir", quick_data, "--out-dir", out,
                      "--epochs", 6, *FAST)
    assert [resume_from_of(line) for line in warnings_of(result)] == [2], result.stdout
    # Two healthy epochs later, --keep-checkpoints 1 still keeps the way back it named.
    assert sorted(epochs_of_checkpoints(out / "checkpoints").values()) == [2, 6]
    interrupted_at_first_step(monkeypatch)
    again = run_main("train_fashion_mnist.py", "--resume", "--out-dir", out, "--epochs", 8,
                     check=False)
    assert again.returncode == 130, again.stderr
    assert warnings_of(again) == []  # Over before the resume: nothing to say again.
    assert 2 in epochs_of_checkpoints(out / "checkpoints").values()


def test_a_trouble_begun_but_not_yet_warned_of_keeps_its_way_back_through_a_ctrl_c(
        tmp_path, quick_data, scripted, monkeypatch):
    from common.run import Run
    from conftest import run_main
    scripted({"collapse": {3, 4, 5}})  # Begins at epoch 3, is said at 4: back to 2.
    out = tmp_path / "run"
    first = run_main("train_fashion_mnist.py", "--data-dir", quick_data, "--out-dir", out,
                     "--epochs", 3, *FAST)
    assert warnings_of(first) == []  # Not yet said ...
    # ... but its way back is kept already, past --keep-checkpoints 1.
    assert sorted(epochs_of_checkpoints(out / "checkpoints").values()) == [2, 3]
    log = Run.log
    interrupted_at_first_step(monkeypatch)
    stopped = run_main("train_fashion_mnist.py", "--resume", "--out-dir", out, "--epochs", 6,
                       check=False)
    assert stopped.returncode == 130 and warnings_of(stopped) == [], stopped.stderr
    assert 2 in epochs_of_checkpoints(out / "checkpoints").values()  # The Ctrl-C save kept it.
    monkeypatch.setattr(Run, "log", log)
    finished = run_main("train_fashion_mnist.py", "--resume", "--out-dir", out, "--epochs", 6)
    lines = warnings_of(finished)
    assert len(lines) == 1 and "since epoch 3" in lines[0], finished.stdout
    assert resume_from_of(lines[0]) == 2
    assert 2 in epochs_of_checkpoints(out / "checkpoints").values()


def test_on_collapse_stop_goes_on_past_what_it_stopped_at_and_says_all_it_sees(
        tmp_path, quick_data, scripted):
    from conftest import run_main
    # A collapse from epoch 3 that lasts, then D winning from 7 and a divergence from 8,
    # both said at epoch 9.
    scripted({"collapse": set(range(3, 20)), "d_wins": {7, 8, 9}, "divergence": {8, 9}})
    out = tmp_path / "run"
    first = run_main("train_fashion_mnist.py", "--data-dir", quick_data, "--out-dir", out,
                     "--epochs", 12, *FAST, "--on-collapse", "stop", check=False)
    assert first.returncode == 1 and first.stderr.strip().endswith(
        "stopped (--on-collapse stop) after saving epoch 4"), first.stderr
    assert "mode collapse" in first.stderr and "since epoch 3" in first.stderr
    # --resume (still --on-collapse stop, from args.json) goes on past that collapse: it
    # is said once more, as a warning, and the next new trouble stops the run again.
    again = run_main("train_fashion_mnist.py", "--resume", "--out-dir", out, check=False)
    lines = warnings_of(again)
    assert again.returncode == 1, again.stderr
    assert len(lines) == 2 and "mode collapse" in lines[0] and "since epoch 3" in lines[0]
    assert resume_from_of(lines[0]) == 2
    # Epoch 9: D wins stops it; the divergence seen at the same epoch is said before.
    assert lines[1].startswith("warning: the losses left") and "since epoch 8" in lines[1]
    stop_line = again.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"error: D wins: .* since epoch 7: .*--resume-from 6 .*; stopped "
                        r"\(--on-collapse stop\) after saving epoch 9", stop_line), stop_line
    assert {2, 6, 7, 9} <= set(epochs_of_checkpoints(out / "checkpoints").values())


# --- Every script writes the statistics -----------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_writes_diversity_and_images_seen(script, straight_run):
    out = straight_run(script)
    history = read_history(out, STRAIGHT_EPOCHS)
    per_epoch = (QUICK_STEPS * QUICK_FASHION_BATCH if script == "train_fashion_mnist.py"
                 else QUICK_IMAGES)
    assert [row["images"] for row in history] == [
        per_epoch * epoch for epoch in range(1, STRAIGHT_EPOCHS + 1)]
    assert all(0.0 < row["diversity"] < 3.0 for row in history), history


def test_the_statistics_continue_across_a_resume(tmp_path, straight_run):
    from conftest import run_main
    out = tmp_path / "run"
    shutil.copytree(straight_run("train_fashion_mnist.py"), out)
    run_main("train_fashion_mnist.py", "--resume", "--out-dir", out,
             "--epochs", STRAIGHT_EPOCHS + 1)
    history = read_history(out, STRAIGHT_EPOCHS + 1)
    per_epoch = QUICK_STEPS * QUICK_FASHION_BATCH
    assert history[-1]["images"] == per_epoch * (STRAIGHT_EPOCHS + 1)  # Counted on, not anew.
    assert history[-1]["diversity"] > 0.0
