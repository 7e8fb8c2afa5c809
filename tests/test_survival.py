"""A run survives what happens to real runs: SIGKILL at any moment, a
disk that fills up mid-run, Ctrl-C, divergence, roll-backs, and two runs started on one
out-dir. Each behaviour a user counts on is tested on every script (on quick data: two
steps an epoch); the long series of kills runs on Fashion-MNIST only."""

import csv
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
import zipfile

import imageio.v3 as iio
import keras
import numpy as np
import pytest
import tensorflow as tf

import train_fashion_mnist
from common import rundir
from common.checkpoints import (ROLLED_BACK, _checkpoint_number, epochs_of_checkpoints,
                                remove_leftovers, roll_back)
from common.files import HISTORY_COLUMNS, SAMPLE_PATTERN, sample_paths
from conftest import (LATENT, QUICK_FASHION_BATCH, QUICK_STEPS, ROOT, SCRIPTS,
                      STRAIGHT_EPOCHS, optimizer_steps, process_server, refused, run_forked,
                      run_main, script_module, snapshot)
from process_server import files_at_most

SCRIPT = "train_fashion_mnist.py"
STEPS = QUICK_STEPS  # Per epoch on quick data: 32 images at batch 16, or 24 at batch 12.
EPOCHS_DONE = "epochs_done/.ATTRIBUTES/VARIABLE_VALUE"
FIXED_NOISE = "fixed_noise/.ATTRIBUTES/VARIABLE_VALUE"


def data_flags(data):
    """--data-dir, and quick data's batch size (so two full steps an epoch)."""
    quick = Path(data).name == "quick_fashion"
    return ["--data-dir", str(data)] + (["--batch-size", str(QUICK_FASHION_BATCH)] if quick else [])


def train(data, out, *flags, check=True):
    """train_fashion_mnist.py on `data`, in this process: the script of the tests that run
    on one script."""
    return run_main(SCRIPT, *data_flags(data), "--out-dir", out, *flags, check=check)


def start(data, out, *flags, output=subprocess.DEVNULL):
    """The script in a process of its own that the test can stop or kill at any moment
    (forked from the process server: conftest.process_server)."""
    return process_server().popen(
        [ROOT / SCRIPT, *data_flags(data), "--out-dir", out, *flags], stdout=output,
        stderr=subprocess.STDOUT)


def error_line(result):
    """The one line a refused or failed run ends with; never a traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], result.stderr
    return lines[-1]


def history_epochs(out):
    with open(out / "history.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    for row in rows:  # Every row parses, with finite numbers.
        assert all(np.isfinite(float(row[name])) for name in HISTORY_COLUMNS), row
    return [int(row["epoch"]) for row in rows]


def gif_frames(out):
    return iio.imread(out / "progress.gif", index=None).shape[0]


def sample_epochs(out):
    return [int(SAMPLE_PATTERN.match(path.name).group(1))
            for path in sample_paths(out, 10**9)]


def kept_checkpoints(out):
    """{checkpoint name: epochs it holds} that the state file lists, oldest first."""
    return {os.path.basename(path): done for path, done in
            epochs_of_checkpoints(out / "checkpoints").items()}


def latest_epoch(out):
    latest = tf.train.latest_checkpoint(str(out / "checkpoints"))
    return int(tf.train.load_variable(latest, EPOCHS_DONE)) if latest else 0


def fixed_noise(out):
    return tf.train.load_variable(tf.train.latest_checkpoint(str(out / "checkpoints")),
                                  FIXED_NOISE)


def run_files(out):
    """The files a run leaves, by path in the out-dir: not the lock, nor what --resume-from
    set aside, nor TensorBoard's event files (one per process, named by time and host)."""
    files = {str(path.relative_to(out)) for path in out.rglob("*") if path.is_file()
             and path.name != rundir.LOCK_NAME
             and path.relative_to(out).parts[0] not in (ROLLED_BACK, "tensorboard")}
    return sorted(files | ({"tensorboard/"} if (out / "tensorboard").is_dir() else set()))


def assert_checkpoint_restores(path, script=SCRIPT):
    """Every tensor reads back (the data file's checksums hold), and the generator's
    weights restore into a freshly built generator."""
    reader = tf.train.load_checkpoint(str(path))
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)
    generator = script_module(script).make_generator(LATENT[script])
    status = tf.train.Checkpoint(generator=generator).read(str(path))
    status.expect_partial().assert_existing_objects_matched()


def assert_generator_loads(out, script=SCRIPT):
    generator = keras.saving.load_model(out / "generator.keras")
    images = np.asarray(generator(np.zeros((2, LATENT[script]), np.float32)))
    size, channels = (28, 1) if script == SCRIPT else (64, 3)
    assert images.shape == (2, size, size, channels) and np.isfinite(images).all()


def is_temporary(name):
    """atomic_write's temporary files, TensorFlow's checkpoint in the making (ckpt-N_temp/,
    checkpoint.tmp...), the write probe."""
    return ".tmp" in name or "_temp" in name or name.startswith(".write-test")


def temporaries(out):
    """The temporary files and folders in `out`, as paths: cheap enough to call every
    millisecond."""
    found = []
    for folder in (out, out / "samples", out / "checkpoints"):
        try:
            with os.scandir(folder) as entries:
                found += [entry.path for entry in entries if is_temporary(entry.name)]
        except FileNotFoundError:
            pass
    return found


def unlisted_checkpoint_files(out):
    """ckpt-N files the state file does not list (N past its newest): a save that was
    merged but not yet recorded."""
    checkpoints = out / "checkpoints"
    if not checkpoints.is_dir():
        return []
    newest = max(map(_checkpoint_number, kept_checkpoints(out)), default=-1)
    return [str(path) for path in checkpoints.iterdir()
            if _checkpoint_number(path.name) > newest]


def assert_clean(out):
    """No temporary file anywhere, and checkpoints/ holds exactly what the state file lists."""
    assert not [path for path in out.rglob("*") if is_temporary(path.name)
                or "tempstate" in path.name]
    listed = set(kept_checkpoints(out))
    present = {path.name for path in (out / "checkpoints").iterdir()} - {"checkpoint"}
    assert present == {f"{name}{end}" for name in listed
                       for end in (".index", ".data-00000-of-00001")}


# --- 1. SIGKILL at random moments, many times, then the run finishes as if never killed ---

KILL_EPOCHS = 10
# What each kill waits for: a write of that kind under way, or a random moment ("time").
KILL_PLAN = (["checkpoint"] * 3 + ["generator.keras"] * 2 + ["progress.gif"]
             + ["sample grid", "plot"] + ["time"] * 2)
WRITES = (("_temp", "checkpoint"), ("checkpoint.tmp", "checkpoint"),
          (".generator.tmp", "generator.keras"), (".progress.tmp", "progress.gif"),
          (".epoch_", "sample grid"), (".losses.tmp", "plot"), (".d_probs.tmp", "plot"),
          (".history.tmp", "history.csv"), (".args.tmp", "args.json"),
          (".write-test", "write probe"))


def write_of(path):
    name = os.path.basename(path)
    return next((what for part, what in WRITES if part in name), name)


def kill_at(process, out, target, skip, delay, stale):
    """SIGKILL `process` when the (skip+1)th write of kind `target` has begun (polling the
    out-dir every millisecond or so), or `delay` seconds after its start for "time".

    `stale` is what earlier kills left: not this process's writing, so writes are looked
    for only once the process has removed it. Should a fast machine finish a short write
    between two looks, the kill comes at the next generator.keras write instead. Returns
    the seconds the process took to begin its first epoch's writes (None if not seen) and
    what of `stale` is still there.
    """
    began = time.monotonic()
    present, seen, models, first_close = set(), 0, 0, None
    while process.poll() is None:
        now = time.monotonic() - began
        assert now < 300, "the run never reached the write it was to be killed in"
        stale = {path for path in stale if os.path.lexists(path)}
        if target == "time":
            if now >= delay:
                break
        elif not stale:
            was, present = present, {write_of(name) for name in temporaries(out)}
            if first_close is None and present & {"sample grid", "progress.gif"}:
                first_close = now
            seen += target in present - was
            models += "generator.keras" in present - was
            if seen > skip or models > skip + 1:
                break
        time.sleep(0.001)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    return first_close, {path for path in stale if os.path.lexists(path)}


def assert_consistent_after_kill(out):
    """What a kill leaves is usable: each file is an old or a new whole version, and the
    outputs are at most one epoch ahead of the checkpoint (the epoch --resume repeats)."""
    done = latest_epoch(out)
    if (out / "history.csv").exists():
        rows = history_epochs(out)
        assert rows == list(range(1, len(rows) + 1)) and done <= len(rows) <= done + 1, rows
    if (out / "progress.gif").exists():
        assert done <= gif_frames(out) <= done + 1
    assert done <= len(sample_epochs(out)) <= done + 1
    if (out / "generator.keras").exists():
        with zipfile.ZipFile(out / "generator.keras") as archive:
            assert archive.testzip() is None


def test_sigkill_at_random_moments_then_resume_finishes_every_epoch_once(
        tmp_path, quick_data):
    rng = random.Random(6)
    plan = list(KILL_PLAN)
    rng.shuffle(plan)
    out, logs = tmp_path / "run", tmp_path / "logs"
    logs.mkdir()
    kills = []
    first_close = 8.0  # Seconds from a start to the first epoch's writes; measured below.
    for number, target in enumerate(plan):
        remaining = KILL_EPOCHS - latest_epoch(out)
        # Let some epochs finish before the kill, but leave work for the kills after it.
        skip = min(rng.choice([0, 0, 1, 1, 2]), max(0, remaining - 4))
        delay = rng.uniform(0.05, 1.4 if remaining > 4 else 0.9) * first_close
        stale = set(temporaries(out) + unlisted_checkpoint_files(out))
        with open(logs / f"{number:02d}.txt", "w") as log:
            process = start(quick_data, out, "--resume", "--epochs", KILL_EPOCHS,
                            "--checkpoint-every", 1, output=log)
            measured, stale = kill_at(process, out, target, skip, delay, stale)
            first_close = measured or first_close
        # A write under way at the kill left its temporary file (or merged checkpoint files
        # the state file does not list yet): that is what the kill interrupted.
        cut = sorted({write_of(path) for path in temporaries(out) if path not in stale}
                     | {"checkpoint" for path in unlisted_checkpoint_files(out)
                        if path not in stale})
        output = re.findall(r"^(?:\d+ training images|training on|resuming|epoch ).*$",
                            (logs / f"{number:02d}.txt").read_text(), re.M)
        last_said = output[-1][:40] if output else "nothing yet"
        kills.append((target, skip if target != "time" else f"{delay:.1f} s", cut, last_said))
        assert_consistent_after_kill(out)

    finished = train(quick_data, out, "--resume", "--epochs", KILL_EPOCHS)
    logs_text = [path.read_text() for path in sorted(logs.iterdir())] + [
        finished.stdout, finished.stderr]
    summary = "\n".join(f"kill {index + 1:2d}: waited for {target} ({wait}), cut "
                        f"{', '.join(cut) or '-'}; the run had said: {said}"
                        for index, (target, wait, cut, said) in enumerate(kills))
    print(summary)
    assert not [text for text in logs_text if "Traceback" in text], summary
    resumed = [int(match) for text in logs_text
               for match in re.findall(r"^resuming .* after epoch (\d+)$", text, re.M)]
    assert resumed == sorted(resumed), resumed  # No process went back to an earlier epoch.

    during_writes = [cut for _, _, cut, _ in kills if cut]
    assert len(kills) >= 10 and len(during_writes) >= 4, summary
    assert any("checkpoint" in cut for cut in during_writes), summary
    assert any("generator.keras" in cut for cut in during_writes), summary

    # Every epoch finished once: as many optimizer steps as an unbroken run takes.
    assert optimizer_steps(out) == KILL_EPOCHS * STEPS
    assert latest_epoch(out) == KILL_EPOCHS
    assert history_epochs(out) == list(range(1, KILL_EPOCHS + 1))
    assert sample_epochs(out) == list(range(1, KILL_EPOCHS + 1))
    assert gif_frames(out) == KILL_EPOCHS
    assert list(kept_checkpoints(out).values()) == [KILL_EPOCHS - 2, KILL_EPOCHS - 1,
                                                    KILL_EPOCHS]
    assert_generator_loads(out)
    assert_checkpoint_restores(tf.train.latest_checkpoint(str(out / "checkpoints")))
    assert_clean(out)


# --- 2. Every script: --resume-from, a full disk, --resume, Ctrl-C, a NaN loss -------------
#
# Each compares with, or starts from, the script's unbroken run (conftest.straight_run:
# STRAIGHT_EPOCHS epochs, a checkpoint per epoch, all kept, --ema and --tensorboard on).


def copy_run(source, folder):
    shutil.copytree(source, folder)
    return folder


@pytest.fixture(scope="module")
def rolled_back(module_folder, straight_run, quick_train):
    """script -> (out, result, files before): a copy of its straight run, rolled back with
    --resume-from 1 and trained on to epoch 2. Tests copy it before changing anything."""
    made = {}

    def get(script):
        if script not in made:
            out = copy_run(straight_run(script), module_folder / f"rolled_{script[:-3]}")
            before = snapshot(out)
            result = quick_train(script, out, "--resume-from", 1, "--epochs", 2)
            made[script] = out, result, before
        return made[script]
    return get


@pytest.mark.parametrize("script", SCRIPTS)
def test_resume_from_rolls_back_and_keeps_what_came_after(script, rolled_back):
    out, result, before = rolled_back(script)
    aside = out / "rolled_back" / "after_epoch_1"
    assert f"rolled back to epoch 1 ({out / 'checkpoints' / 'ckpt-2'}); moved" in result.stdout
    assert f"resuming {out} after epoch 1" in result.stdout
    assert history_epochs(out) == [1, 2] and sample_epochs(out) == [1, 2]
    assert gif_frames(out) == 2
    assert kept_checkpoints(out) == {"ckpt-2": 1, "ckpt-4": 2}
    assert optimizer_steps(out) == 2 * STEPS
    moved = ["checkpoints/ckpt-4.index", "checkpoints/ckpt-4.data-00000-of-00001",
             "checkpoints/ckpt-6.index", "checkpoints/ckpt-6.data-00000-of-00001",
             "samples/epoch_0002.png", "samples/epoch_0003.png", "generator.keras",
             "history.csv"]
    assert snapshot(aside) == {name: before[name] for name in moved}  # Byte for byte.
    assert_generator_loads(out, script)
    assert_clean(out)


def test_a_second_roll_back_keeps_the_first_ones_files_apart(tmp_path, rolled_back, quick_data):
    source, _, before = rolled_back(SCRIPT)
    out = copy_run(source, tmp_path / "run")
    aside = out / "rolled_back" / "after_epoch_1"
    first_aside = snapshot(aside)
    epoch_2 = snapshot(out)
    train(quick_data, out, "--resume-from", "1", "--epochs", "2")
    again = out / "rolled_back" / "after_epoch_1_2"
    assert snapshot(again) == {name: epoch_2[name] for name in (
        "checkpoints/ckpt-4.index", "checkpoints/ckpt-4.data-00000-of-00001",
        "samples/epoch_0002.png", "generator.keras", "history.csv")}
    assert snapshot(aside) == first_aside
    assert history_epochs(out) == [1, 2] and gif_frames(out) == 2

    # An epoch without a checkpoint: one line listing those there are; nothing changes.
    files = snapshot(out)
    line = refused(SCRIPT, *data_flags(quick_data), "--out-dir", out, "--resume-from", "9")
    assert line == (f"error: --resume-from 9: {out / 'checkpoints'} has no checkpoint of epoch "
                    f"9 (kept epochs: 1, 2); choose one of those, and keep more next time "
                    f"with --keep-checkpoints")
    assert snapshot(out) == files


# The sizes an epoch's writes need: a sample grid about 27 KB (28px) or 300-500 KB (64px),
# generator.keras about 10 MB (28px) or 15 MB (64px), the checkpoint about 46 MB or 94 MB
# (with the EMA generator). So the same limits stop every script at the same write: each
# script is tried at one of them, every write on at least one script (the code is shared).
FULL_DISK = [(SCRIPT, 3_000_000, "generator.keras"),
             ("train_faces.py", 10_000, "sample grid"),  # The first write of the epoch, as
             ("train_animals.py", 20_000_000, "checkpoint"),  # in a read-only folder.
             ("train_artworks.py", 3_000_000, "generator.keras")]


@pytest.mark.parametrize("script, size, fails_at", FULL_DISK)
def test_full_disk_mid_run_keeps_the_last_good_checkpoint_and_resume_ends_as_unbroken(
        tmp_path, rolled_back, straight_run, quick_train, script, size, fails_at):
    out = copy_run(rolled_back(script)[0], tmp_path / "run")  # Epochs 1 and 2 done.
    before = snapshot(out)
    result = quick_train(script, out, "--resume", "--epochs", STRAIGHT_EPOCHS, check=False,
                         preexec=files_at_most(size))
    line = error_line(result)
    assert line.startswith(
        f"error: cannot write to {out} (File too large); kept the last good checkpoint "
        f"({out / 'checkpoints' / 'ckpt-4'}). "), line
    assert "--resume" in line
    # Each file is the old one or a whole new one, and which is known from where it failed.
    new = {"sample grid": set(),
           "generator.keras": {"samples/epoch_0003.png", "progress.gif", "history.csv"},
           "checkpoint": {"samples/epoch_0003.png", "progress.gif", "history.csv",
                          "generator.keras"}}[fails_at]
    after = snapshot(out)
    for name in ("generator.keras", "progress.gif", "history.csv", "samples/epoch_0003.png"):
        if name in new:
            assert name in after and after[name] != before.get(name), name
        else:
            assert after.get(name) == before.get(name), name
    assert_generator_loads(out, script)
    assert gif_frames(out) == history_epochs(out)[-1] == len(sample_epochs(out))
    assert history_epochs(out) == ([1, 2, 3] if "history.csv" in new else [1, 2])
    # The checkpoint of epoch 2 is still the run's latest, and it restores.
    assert kept_checkpoints(out) == {"ckpt-2": 1, "ckpt-4": 2}
    assert_checkpoint_restores(out / "checkpoints" / "ckpt-4", script)
    assert {name for name in after if name.startswith("checkpoints/")} == {
        name for name in before if name.startswith("checkpoints/")}
    assert_clean(out)

    # With space again, --resume finishes the run as the unbroken run did: the same steps,
    # epochs, samples, GIF frames, checkpoints, files and fixed noise.
    resumed = quick_train(script, out, "--resume", "--epochs", STRAIGHT_EPOCHS)
    assert f"resuming {out} after epoch 2" in resumed.stdout
    straight = straight_run(script)
    assert history_epochs(out) == history_epochs(straight) == [1, 2, 3]
    assert sample_epochs(out) == sample_epochs(straight) == [1, 2, 3]
    assert gif_frames(out) == gif_frames(straight) == 3
    assert optimizer_steps(out) == optimizer_steps(straight) == STRAIGHT_EPOCHS * STEPS
    assert kept_checkpoints(out) == kept_checkpoints(straight) == {
        "ckpt-2": 1, "ckpt-4": 2, "ckpt-6": 3}
    assert run_files(out) == run_files(straight)
    np.testing.assert_array_equal(fixed_noise(out), fixed_noise(straight))
    assert_generator_loads(out, script)
    assert_clean(out)


RECORD_FAILS = """
import os, resource, signal, sys
import tensorflow as tf
from common.checkpoints import disk_errors_exit
out = sys.argv[1]
done = tf.Variable(0, dtype=tf.int64)
manager = tf.train.CheckpointManager(tf.train.Checkpoint(epochs_done=done),
                                     os.path.join(out, "checkpoints"), max_to_keep=10)
for epoch in range(1, 9):
    done.assign(epoch)
    manager.save(checkpoint_number=epoch)
# Room for each file of this small checkpoint (under 300 bytes) but not for the state
# file that lists nine (about 870): the save is written and merged, recording it fails.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (500, resource.RLIM_INFINITY))
with disk_errors_exit(out, manager):
    done.assign(9)
    manager.save(checkpoint_number=9)
"""


def test_full_disk_while_recording_a_checkpoint_names_the_one_kept(tmp_path):
    out = tmp_path / "run"
    result = run_forked("-c", RECORD_FAILS, out, check=False, timeout=300)
    line = error_line(result)
    checkpoints = out / "checkpoints"
    assert line.startswith(f"error: cannot write to {out} (File too large); kept the last good "
                           f"checkpoint ({checkpoints / 'ckpt-8'}). "), line
    assert tf.train.latest_checkpoint(str(checkpoints)) == str(checkpoints / "ckpt-8")
    assert not list(checkpoints.glob("ckpt-9*")) and not temporaries(out)
    assert tf.train.load_variable(str(checkpoints / "ckpt-8"), EPOCHS_DONE) == 8


@pytest.fixture(scope="module")
def interrupted(module_folder, quick_flags):
    """script -> (out, exit status, output): a run of 30 epochs stopped by Ctrl-C once its
    first epoch has closed, checkpoint and all (so during a later epoch's steps)."""
    made = {}

    def get(script):
        if script not in made:
            out = module_folder / f"interrupted_{script[:-3]}"
            # Its child takes Ctrl-C as in a terminal, whatever the test runner ignores.
            process = process_server().popen(
                [ROOT / script, *quick_flags(script), "--out-dir", out, "--epochs", 30],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            lines = []
            try:
                for line in process.stdout:  # Wait until an epoch has closed ...
                    lines.append(line)
                    if re.match(r"epoch +1/30 \|", line):
                        break
                began = time.monotonic()  # ... and its checkpoint is listed: its close
                while not (out / "checkpoints" / "checkpoint").exists():  # is done.
                    assert process.poll() is None and time.monotonic() - began < 300
                    time.sleep(0.01)
                process.send_signal(signal.SIGINT)
                lines.append(process.communicate(timeout=300)[0])
            finally:
                process.kill()
            made[script] = out, process.returncode, "".join(lines)
        return made[script]
    return get


@pytest.mark.parametrize("script", SCRIPTS)
def test_ctrl_c_saves_a_checkpoint(script, interrupted):
    out, status, output = interrupted(script)
    assert status == 130, output
    assert "Traceback" not in output
    assert f"saved {out / 'checkpoints'}" in output and f"--resume --out-dir {out}" in output
    finished = history_epochs(out)
    done = len(finished)
    assert finished == list(range(1, done + 1)) and latest_epoch(out) == done
    # The checkpoint holds the steps of the interrupted epoch too; --resume trains that
    # epoch again from those weights.
    assert optimizer_steps(out) > STEPS * done
    assert sample_epochs(out) == finished and gif_frames(out) == done
    assert_checkpoint_restores(tf.train.latest_checkpoint(str(out / "checkpoints")), script)
    assert_generator_loads(out, script)
    assert_clean(out)


@pytest.mark.parametrize("script", SCRIPTS)
def test_nan_stop_names_epoch_and_step_and_keeps_the_checkpoint(script, tmp_path, interrupted,
                                                                quick_train):
    """A diverging resume of the Ctrl-C run: it restores that checkpoint, and at the first
    non-finite loss stops with one line, leaving the checkpoint and the files as they were."""
    out = copy_run(interrupted(script)[0], tmp_path / "run")
    done, steps = latest_epoch(out), optimizer_steps(out)
    before = snapshot(out)
    # A learning rate of 1e30 overflows the weights within a step or two.
    result = quick_train(script, out, "--resume", "--epochs", done + 2, "--lr", "1e30",
                         check=False)
    line = error_line(result)
    assert f"resuming {out} after epoch {done}" in result.stdout
    assert re.match(rf"error: non-finite loss at epoch {done + 1}, step \d+ of the epoch "
                    rf"\(global step \d+\): d_loss=\S+, g_loss=\S+\. Kept the last good "
                    rf"checkpoint \({re.escape(str(out / 'checkpoints' / f'ckpt-{steps}'))}\); "
                    rf"continue from it with --resume", line), line
    after = snapshot(out)
    for name in ["generator.keras", "history.csv", "progress.gif", "checkpoints/checkpoint"] + [
            name for name in before if name.startswith(("samples/", "checkpoints/"))]:
        assert after.get(name) == before[name], name
    assert set(after) - set(before) <= {name for name in after if name.startswith(
        "tensorboard/")}, "the stopped run left new files"
    if script != SCRIPT:
        return
    # With a saner --lr the run goes on from the same checkpoint (and so does the Ctrl-C
    # run: its interrupted epoch is trained again, once).
    result = quick_train(script, out, "--resume", "--lr", "2e-4")
    assert f"resuming {out} after epoch {done}" in result.stdout
    assert history_epochs(out) == list(range(1, done + 3))  # Also: every number finite.
    assert optimizer_steps(out) == steps + 2 * STEPS


def test_nan_found_while_the_bar_redraws_is_one_line_too(tmp_path, tiny_data, monkeypatch):
    import common.progress
    monkeypatch.setattr(common.progress, "_interactive", lambda stream: True)  # A notebook.
    try:
        with pytest.raises(SystemExit) as stop:
            train_fashion_mnist.main(["--data-dir", tiny_data, "--out-dir", tmp_path / "run",
                                      "--epochs", 1, "--lr", "1e30", "--precision", "float32"])
    finally:  # Let go of the out-dir's lock, as a finished process would.
        while rundir._locks:
            rundir._locks.popitem()[1].close()
    assert str(stop.value.code).startswith("error: non-finite loss at epoch 1, step ")


# --- 3. Checkpoints kept, lost or damaged (one script: this is the run folder's code) --------


def test_checkpoint_every_n_epochs_and_keep_checkpoints(tmp_path, quick_data):
    """--checkpoint-every 2 saves at epochs 2 and 4, and at the first and the last epoch of
    the invocation; --keep-checkpoints 3 keeps the newest three of those."""
    out = tmp_path / "run"
    train(quick_data, out, "--epochs", "5", "--checkpoint-every", "2", "--keep-checkpoints", "3")
    assert kept_checkpoints(out) == {"ckpt-4": 2, "ckpt-8": 4, "ckpt-10": 5}
    assert_clean(out)  # And no other checkpoint files.


def fake_run(out, epochs, every=2):
    """An out-dir with real checkpoints (just epochs_done) for `epochs`, at `every` steps
    an epoch, and stand-ins for the other files a run writes."""
    done = tf.Variable(0, dtype=tf.int64)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(epochs_done=done),
                                         out / "checkpoints", max_to_keep=10)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    for epoch in epochs:
        done.assign(epoch)
        manager.save(checkpoint_number=every * epoch)
        (out / "samples" / f"epoch_{epoch:04d}.png").write_bytes(b"grid %d" % epoch)
    (out / "generator.keras").write_bytes(b"model")
    (out / "history.csv").write_text("epoch\n" + "".join(f"{e}\n" for e in epochs))
    return manager


def test_resume_refuses_checkpoints_whose_list_is_unreadable(tmp_path, quick_data,
                                                             straight_run):
    """A garbled list of checkpoints cannot say which are the run's: --resume would start at
    epoch 1 and write over the run's history, samples and generator. It refuses instead.
    (A list that is gone is written again: test_resume_hard_cases.py.)"""
    out = copy_run(straight_run(SCRIPT), tmp_path / "run")
    (out / "checkpoints" / "checkpoint").write_text("model_checkpoint_path: {{{")
    before = snapshot(out)
    line = refused(SCRIPT, *data_flags(quick_data), "--out-dir", out, "--resume", "--epochs",
                   "4")
    assert str(out / "checkpoints") in line and "--overwrite" in line, line
    assert snapshot(out) == before


def test_roll_back_passes_over_checkpoints_whose_files_are_gone(tmp_path, capsys):
    """A checkpoint the state file lists may be gone: deleted by hand to save space, or
    by a kill while TensorFlow was deleting the oldest one."""
    out = tmp_path / "run"
    fake_run(out, [1, 2, 3, 4])
    for path in (out / "checkpoints").glob("ckpt-4.*"):
        path.unlink()
    (out / "checkpoints" / "ckpt-2.index").unlink()  # Half deleted: the data file stays.
    assert kept_checkpoints(out) == {"ckpt-6": 3, "ckpt-8": 4}
    with pytest.raises(ValueError, match=r"has no checkpoint of epoch 1 \(kept epochs: 3, 4\)"):
        roll_back(out, 1)
    assert roll_back(out, 3) == str(out / "checkpoints" / "ckpt-6")
    assert "rolled back to epoch 3" in capsys.readouterr().out
    assert tf.train.latest_checkpoint(str(out / "checkpoints")) == str(
        out / "checkpoints" / "ckpt-6")
    aside = out / "rolled_back" / "after_epoch_3"
    assert sorted(str(path.relative_to(aside)) for path in aside.rglob("*.*")) == [
        "checkpoints/ckpt-8.data-00000-of-00001", "checkpoints/ckpt-8.index",
        "generator.keras", "history.csv", "samples/epoch_0004.png"]


# --- 4. Two runs on one out-dir ------------------------------------------------------------


def test_a_second_run_on_the_same_out_dir_is_refused_until_the_first_is_killed(
        tmp_path, quick_data):
    out = tmp_path / "run"
    first = start(quick_data, out, "--epochs", "1000", "--checkpoint-every", "1")
    try:
        # Stop the first run in the middle of writing its second checkpoint: the lock is
        # held, and the second run must not take the half-written files for leftovers.
        began = time.monotonic()
        seen, present = 0, False
        while seen < 2:
            assert first.poll() is None and time.monotonic() - began < 300
            was, present = present, any(name.endswith("_temp") for name in temporaries(out))
            seen += present and not was
            time.sleep(0.001)
        first.send_signal(signal.SIGSTOP)
        stopped_in = temporaries(out)
        before = snapshot(out)
        seconds = [start(quick_data, out, *flags, output=subprocess.PIPE) for flags in (
            ["--resume"], ["--overwrite"], ["--epochs", "2"])]
        results = []
        for process in seconds:
            output = process.communicate(timeout=300)[0]  # start() sends both to one pipe.
            results.append(subprocess.CompletedProcess(process.args, process.returncode,
                                                       output, output))
        for result in results:
            line = error_line(result)
            assert line.startswith("error: ") and str(out) in line, line
        for result in results[:2]:  # With --resume or --overwrite: the lock speaks.
            assert error_line(result) == (
                f"error: another run (process {first.pid}) is using --out-dir {out}; wait for "
                f"it to finish, stop it, or choose another --out-dir")
        assert snapshot(out) == before, "a refused run changed the out-dir"
        assert (out / rundir.LOCK_NAME).read_text() == f"{first.pid}\n"
        assert stopped_in  # ... including the first run's half-written checkpoint.
    finally:
        first.kill()
        first.wait()
    # A killed run does not leave the lock stuck: the next run resumes, and clears up.
    result = train(quick_data, out, "--resume", "--epochs", "3")
    assert f"resuming {out} after epoch 1" in result.stdout
    assert history_epochs(out) == [1, 2, 3] and optimizer_steps(out) == 3 * STEPS
    assert (out / rundir.LOCK_NAME).read_text().strip() != str(first.pid)
    assert_clean(out)


@pytest.fixture
def locked(tmp_path):
    """tmp_path; its lock, if this process took one, is let go afterwards."""
    yield tmp_path
    handle = rundir._locks.pop(os.path.realpath(tmp_path), None)
    if handle:
        handle.close()


def test_lock_out_dir_twice_in_one_process_is_fine(locked):
    """A notebook that runs main() again reuses the lock it holds."""
    rundir.lock_out_dir(locked)
    rundir.lock_out_dir(locked)
    assert rundir.prepare_out_dir(locked, resume=True, overwrite=False) is False
    assert (locked / rundir.LOCK_NAME).read_text() == f"{os.getpid()}\n"
    # Another process cannot take it meanwhile.
    probe = ("import fcntl, sys\n"
             "with open(sys.argv[1], 'a') as f:\n"
             "    try: fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
             "    except OSError: sys.exit(3)\n")
    other = subprocess.run([sys.executable, "-c", probe, str(locked / rundir.LOCK_NAME)])
    assert other.returncode == 3


# --- 5. remove_leftovers -------------------------------------------------------------------


def test_remove_leftovers_removes_what_killed_runs_leave_and_nothing_else(tmp_path):
    out = tmp_path / "run"
    fake_run(out, [1, 2])
    checkpoints, samples = out / "checkpoints", out / "samples"
    leftovers = [checkpoints / "ckpt-99_temp" / "part-00000-of-00001.data-00000-of-00001.tempstate1",
                 checkpoints / "ckpt-99.index", checkpoints / "ckpt-99.data-00000-of-00001",
                 checkpoints / "checkpoint.tmp0123456789abcdef", checkpoints / ".checkpoint.tmp-7",
                 out / ".history.tmp-1.csv", out / ".generator.tmp-1.keras",
                 out / ".progress.tmp-1.gif", samples / ".epoch_0001.tmp-1.png",
                 out / ".write-test-1"]
    kept = [out / "notes.txt", checkpoints / "notes.txt", checkpoints / "ckpt-notes.txt",
            samples / "notes.tmp.txt"]
    for path in leftovers + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    before = snapshot(out)
    remove_leftovers(out)
    after = snapshot(out)
    assert not (checkpoints / "ckpt-99_temp").exists()
    assert set(after) == {name for name in before
                          if out / name not in leftovers}, set(before) - set(after)
    assert all(after[name] == before[name] for name in after)
    assert kept_checkpoints(out) == {"ckpt-2": 1, "ckpt-4": 2}
    remove_leftovers(out)  # Again: nothing more to do.
    assert snapshot(out) == after
    remove_leftovers(tmp_path / "empty")  # No run there yet: nothing to do.


@pytest.mark.parametrize("state", ["garbage {{{\n", ""])
def test_remove_leftovers_never_deletes_checkpoints_it_cannot_read_the_list_of(tmp_path, state):
    out = tmp_path / "run"
    fake_run(out, [1, 2])
    (out / "checkpoints" / "checkpoint").write_text(state)
    (out / ".history.tmp-1.csv").write_text("x")
    try:
        remove_leftovers(out)
    except ValueError:
        pass  # Refusing is fine too; deleting the checkpoints is not.
    assert sorted(path.name for path in (out / "checkpoints").iterdir()) == [
        "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index",
        "ckpt-4.data-00000-of-00001", "ckpt-4.index"]


@pytest.mark.parametrize("name, number", [
    ("ckpt-12.index", 12), ("ckpt-12.data-00000-of-00001", 12), ("ckpt-7", 7),
    ("ckpt-12_temp", -1), ("ckpt-notes.txt", -1), ("checkpoint", -1), ("my-ckpt-3.index", -1),
])
def test_checkpoint_number(name, number):
    assert _checkpoint_number(name) == number


@pytest.mark.parametrize("every, since_save, epoch, due", [
    ([5.0, "minutes"], 299.0, 7, False), ([5.0, "minutes"], 300.0, 7, True),
    ([0.5, "minutes"], 31.0, 1, True), ([3, "epochs"], 10_000.0, 7, False),
    ([3, "epochs"], 0.0, 9, True)])
def test_checkpoint_clock_saves_once_the_interval_has_passed(monkeypatch, every, since_save,
                                                             epoch, due):
    """What a kill can cost: an epoch's close saves once --checkpoint-every has passed since
    the last save, so at most that interval plus the epoch under way is ever lost."""
    from types import SimpleNamespace

    from common.run import Run
    monkeypatch.setattr(time, "monotonic", lambda: 1000.0 + since_save)
    run = SimpleNamespace(args=SimpleNamespace(checkpoint_every=every), last_save=1000.0)
    assert Run._save_due(run, epoch) is due
