"""--resume and the run folder against the thirteen ways a hostile read found to lose, bend
or crash a run (issue 25): each resumes as the README promises, or is refused in one line
that changes nothing."""

import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf

from common import rundir
from common.checkpoints import epochs_of_checkpoints
from common.files import read_history
from conftest import (QUICK_FASHION_BATCH, QUICK_IMAGES, QUICK_STEPS, refused, run_main,
                      snapshot, write_idx_images)

SCRIPT = "train_fashion_mnist.py"


@pytest.fixture
def copy_of(tmp_path, straight_run):
    """script -> a copy of its three-epoch straight run (a checkpoint per epoch, all kept)."""
    def copy(script=SCRIPT):
        out = tmp_path / "run"
        shutil.copytree(straight_run(script), out)
        (out / ".lock").unlink(missing_ok=True)
        return out
    return copy


def kept_epochs(out):
    return list(epochs_of_checkpoints(out / "checkpoints").values())


def history_epochs(out):
    return [row["epoch"] for row in read_history(out, float("inf"))]


def gif_frames(out):
    return iio.imread(out / "progress.gif", index=None).shape[0]


# --- 1. Another precision on --resume ------------------------------------------------------


def test_a_float16_run_resumes_in_float32_and_back(tmp_path, sample_images):
    # float16 gradients are slow on some CPUs (see test_devices): 4 images, batch 2.
    data = tmp_path / "data"
    data.mkdir()
    write_idx_images(data / "train-images-idx3-ubyte.gz", sample_images[:4])
    out = tmp_path / "run"
    flags = ("--data-dir", data, "--out-dir", out, "--batch-size", 2)
    run_main(SCRIPT, *flags, "--epochs", 1, "--precision", "float16")
    assert any("dynamic_scale" in name for name, _ in
               tf.train.list_variables(tf.train.latest_checkpoint(str(out / "checkpoints"))))
    result = run_main(SCRIPT, *flags, "--resume", "--epochs", 2, "--precision", "float32")
    assert "resuming" in result.stdout and "after epoch 1" in result.stdout
    result = run_main(SCRIPT, *flags, "--resume", "--epochs", 3, "--precision", "float16",
                      "--max-steps", 1)
    assert "after epoch 2" in result.stdout and history_epochs(out) == [1, 2, 3]
    assert np.isfinite([row["d_loss"] for row in read_history(out, 3)]).all()


# --- 2. The checkpoint list lost, or checkpoints copied without it ---------------------------


def test_a_lost_checkpoint_list_is_written_again_and_the_run_goes_on(tmp_path, quick_train):
    out = tmp_path / "run"
    quick_train(SCRIPT, out, "--epochs", 1)  # One finished epoch: the case that lost it all.
    (out / "checkpoints" / "checkpoint").unlink()
    result = quick_train(SCRIPT, out, "--resume", "--epochs", 2)
    assert "was missing; listed the checkpoints found there again" in result.stdout
    assert "after epoch 1" in result.stdout
    assert kept_epochs(out) == [1, 2] and history_epochs(out) == [1, 2]


def test_checkpoints_copied_without_args_json_are_refused_and_kept(tmp_path, copy_of,
                                                                   quick_flags):
    out = tmp_path / "copied"
    shutil.copytree(copy_of() / "checkpoints", out / "checkpoints",
                    ignore=shutil.ignore_patterns("checkpoint"))  # Only ckpt-*.
    before = snapshot(out)
    line = refused(SCRIPT, *quick_flags(SCRIPT), "--out-dir", out, "--resume")
    assert line.startswith(f"error: {out} has a checkpoint but no args.json")
    assert snapshot(out) == before


# --- 3. args.json deleted ---------------------------------------------------------------------


@pytest.mark.parametrize("script", ["train_faces.py", "train_animals.py"])
def test_a_run_without_args_json_is_refused_by_every_script(script, copy_of, quick_flags):
    out = copy_of("train_faces.py")
    (out / "args.json").unlink()
    before = snapshot(out)
    line = refused(script, *quick_flags(script), "--out-dir", out, "--resume", "--epochs", 4)
    assert "has a checkpoint but no args.json" in line and "--overwrite" in line
    assert snapshot(out) == before


# --- 4. --out-dir inside the default data folder ---------------------------------------------


def test_an_out_dir_inside_the_default_data_folder_is_refused(tmp_path, monkeypatch,
                                                              quick_folder):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(quick_folder / "Rembrandt", tmp_path / "data" / "afhq" / "train")
    line = refused("train_animals.py", "--out-dir", "data/afhq/train/r1", "--batch-size", 12)
    assert line.startswith("error: --out-dir data/afhq/train/r1 is inside data/afhq/train")
    assert not (tmp_path / "data" / "afhq" / "train" / "r1").exists()


# --- 5. --augment-adaptive turned on at --resume ---------------------------------------------


def test_adaptive_augmentation_can_be_turned_on_at_resume(copy_of, quick_train):
    out = copy_of()
    quick_train(SCRIPT, out, "--resume", "--epochs", 4, "--augment", "color",
                "--augment-adaptive")
    rows = read_history(out, 4)
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4] and "augment_p" in rows[3]
    latest = tf.train.latest_checkpoint(str(out / "checkpoints"))
    assert any(name.startswith("augment_probability/")
               for name, _ in tf.train.list_variables(latest))


# --- 6. Damaged run files that passed the checks ---------------------------------------------


def test_a_cut_off_history_row_is_refused_in_one_line(copy_of, quick_flags):
    out = copy_of()
    text = (out / "history.csv").read_text()
    (out / "history.csv").write_text(text[:text.rindex(",")])  # The last row lost its end.
    before = snapshot(out)
    line = refused(SCRIPT, *quick_flags(SCRIPT), "--out-dir", out, "--resume", "--epochs", 4)
    assert line.startswith(f"error: cannot read {out / 'history.csv'}") and "line 4" in line
    assert snapshot(out) == before


def test_a_damaged_sample_is_left_out_of_the_gif_and_a_hand_made_one_ignored(copy_of,
                                                                            quick_train):
    out = copy_of()
    (out / "samples" / "epoch_0002.png").write_bytes(b"")
    shutil.copy(out / "samples" / "epoch_0001.png", out / "samples" / "epoch_1.png")
    result = quick_train(SCRIPT, out, "--resume", "--epochs", 4)
    assert f"warning: {out / 'samples' / 'epoch_0002.png'} cannot be read" in result.stdout
    assert gif_frames(out) == 3  # Epochs 1, 3 and 4.
    assert (out / "samples" / "epoch_1.png").read_bytes() == (
        out / "samples" / "epoch_0001.png").read_bytes()  # Not a sample: left alone.


# --- 7. args.json values out of range --------------------------------------------------------


@pytest.mark.parametrize("name, value, flag", [
    ("seed", -1, "--seed"), ("gif_frames", 1, "--gif-frames"),
    ("sample_every", 0, "--sample-every"), ("checkpoint_every", [0, "epochs"],
                                             "--checkpoint-every"),
    ("batch_size", 2.5, "--batch-size"), ("lr", 0, "--lr")])
def test_saved_values_go_through_the_flag_checks(copy_of, quick_flags, name, value, flag):
    out = copy_of()
    saved = json.loads((out / "args.json").read_text())
    (out / "args.json").write_text(json.dumps({**saved, name: value}))
    before = snapshot(out)
    flags = [item for item in quick_flags(SCRIPT) if item not in ("--batch-size",
                                                                  QUICK_FASHION_BATCH)]
    line = refused(SCRIPT, *flags, "--out-dir", out, "--resume", "--epochs", 4)
    assert line.startswith(f"error: args.json in {out} has {name} = ") and flag in line
    assert snapshot(out) == before


def test_a_saved_data_dir_of_another_type_is_one_line(copy_of):
    out = copy_of()
    saved = json.loads((out / "args.json").read_text())
    (out / "args.json").write_text(json.dumps({**saved, "data_dir": 5}))
    line = refused(SCRIPT, "--out-dir", out, "--resume", "--epochs", 4)
    assert line.startswith("error: ") and "5" in line


# --- 8. Ctrl-C saves do not count against --keep-checkpoints ---------------------------------


def ctrl_c_after_one_step(monkeypatch):
    """The next run in this process stops as at a Ctrl-C after its first step."""
    from common import run as run_module

    class CtrlCAfterOneStep(run_module.StopOnInterrupt):
        requested = property(lambda self: True, lambda self, value: None)
    monkeypatch.setattr(run_module, "StopOnInterrupt", CtrlCAfterOneStep)


def test_ctrl_c_saves_do_not_push_out_epoch_checkpoints(tmp_path, quick_train, monkeypatch):
    out = tmp_path / "run"
    keep = ("--keep-checkpoints", 2, "--checkpoint-every", 1)
    quick_train(SCRIPT, out, "--epochs", 2, *keep)
    for _ in range(2):  # Two interrupted tries at epoch 3.
        with monkeypatch.context() as patch:
            ctrl_c_after_one_step(patch)
            assert quick_train(SCRIPT, out, "--resume", "--epochs", 5, *keep,
                               check=False).returncode == 130
        assert kept_epochs(out) == [1, 2, 2]  # Epochs 1 and 2, and the Ctrl-C save.
    quick_train(SCRIPT, out, "--resume", "--epochs", 4, *keep)
    assert kept_epochs(out) == [3, 4]
    result = quick_train(SCRIPT, out, "--resume-from", 3, "--epochs", 4, *keep)
    assert "rolled back to epoch 3" in result.stdout


# --- 9. common.evaluate's --data-dir and --cache-dir -----------------------------------------


def test_evaluate_refuses_a_fashion_data_dir_without_idx_files(copy_of, tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    result = run_main("common.evaluate", copy_of(), "--data-dir", folder, "--num", 4,
                      check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --data-dir {folder} has no train-images-idx3-ubyte file; pass the folder "
        f"holding Fashion-MNIST's idx files")


def test_evaluate_reads_the_runs_own_image_cache(tmp_path, quick_folder, monkeypatch):
    from common import evaluate, images
    out, cache = tmp_path / "run", tmp_path / "cache"
    run_main("train_faces.py", "--data-dir", quick_folder, "--batch-size",
             QUICK_IMAGES // QUICK_STEPS, "--out-dir", out, "--epochs", 1, "--cache-dir", cache)
    made = sorted(cache.rglob("*"))
    saved = json.loads((out / "args.json").read_text())
    monkeypatch.setattr(images, "decode_images", None)  # Nothing may be decoded again.
    pixels, _ = evaluate.read_real_images(saved)
    assert len(pixels) == QUICK_IMAGES and sorted(cache.rglob("*")) == made


# --- 10. The files describe the checkpoint from the start of a resumed run -------------------


def test_resume_from_makes_the_files_match_the_checkpoint_before_training(copy_of, quick_train,
                                                                          monkeypatch):
    from common import run as run_module
    out = copy_of()
    monkeypatch.setattr(run_module.Run, "epochs", lambda self: iter(()))  # Stop at once.
    quick_train(SCRIPT, out, "--resume-from", 1, "--epochs", 3)
    assert history_epochs(out) == [1] and gif_frames(out) == 1
    assert (out / "generator.keras").is_file() and kept_epochs(out) == [1]


# --- 11. A refused run's clean-up leaves other runs' locks -----------------------------------


def test_a_refused_runs_clean_up_leaves_another_runs_lock(tmp_path):
    parent = tmp_path / "new"
    created = rundir.first_missing(parent / "typo")  # Before any run made `parent`.
    other = parent / "good"
    other.mkdir(parents=True)
    rundir.lock_out_dir(other)  # Another run, started at the same time.
    (parent / "typo").mkdir()
    rundir.lock_out_dir(parent / "typo")
    rundir.remove_new_out_dir(parent / "typo", created)
    assert (other / ".lock").is_file() and not (parent / "typo").exists()
    rundir.remove_new_out_dir(other, None)  # The other run lets go of its lock too.


# --- 13. --seed-layers shapes the model ------------------------------------------------------


def test_seed_layers_cannot_be_turned_on_at_resume(copy_of, quick_flags):
    out = copy_of("train_artworks.py")
    before = snapshot(out)
    line = refused("train_artworks.py", *quick_flags("train_artworks.py"), "--out-dir", out,
                   "--resume", "--epochs", 4, "--seed-layers")
    assert line == ("error: --seed-layers shapes the models, and the run being resumed was "
                    "trained without it; drop --seed-layers or choose another --out-dir")
    assert snapshot(out) == before
