"""Commands that would hurt a run: each is refused in one line with a non-zero exit (or
told there is nothing to do), and changes nothing that a run wrote."""

import importlib
import json
import shutil
import sys

import pytest

from conftest import (QUICK_FASHION_BATCH, ROOT, make_messy_folder, refused, run_main,
                      run_process, snapshot)

SCRIPT = "train_fashion_mnist.py"
SCRIPTS = ("train_fashion_mnist.py", "train_faces.py", "train_animals.py", "train_artworks.py")


def one_line(result, status=None):
    """The last line of a refused command; it must not be a traceback."""
    assert result.returncode != 0 if status is None else result.returncode == status, \
        result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def data(quick_data):
    return quick_data  # 32 real Fashion-MNIST images: 2 full steps an epoch, one trace.


@pytest.fixture(scope="module")
def finished_run(module_folder, data):
    """A two-epoch run with a checkpoint per epoch."""
    out = module_folder / "run"
    run_main(SCRIPT, "--data-dir", data, "--out-dir", out, "--epochs", "2",
             "--batch-size", QUICK_FASHION_BATCH, "--checkpoint-every", "1")
    return out


@pytest.fixture
def run_copy(tmp_path, finished_run):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    (copy / ".lock").unlink(missing_ok=True)
    return copy


def train(data, out, *flags):
    return run_main(SCRIPT, "--data-dir", data, "--out-dir", out, "--batch-size",
                    QUICK_FASHION_BATCH, *flags, check=False)


# --- Data loss ------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["delete folder", "empty folder", "delete files"])
def test_resume_without_a_checkpoint_refuses_and_touches_nothing(data, run_copy, damage):
    checkpoints = run_copy / "checkpoints"
    if damage == "delete folder":
        shutil.rmtree(checkpoints)
    elif damage == "empty folder":
        shutil.rmtree(checkpoints)
        checkpoints.mkdir()
    else:  # The ckpt-* files go, the list of them stays.
        for path in checkpoints.glob("ckpt-*"):
            path.unlink()
    before = snapshot(run_copy)
    message = refused(SCRIPT, "--data-dir", data, "--out-dir", run_copy, "--resume",
                      "--epochs", "3")
    assert str(run_copy) in message or "checkpoint" in message
    assert "--overwrite" in message or "--resume-from" in message
    assert snapshot(run_copy) == before


def test_out_dir_inside_the_data_dir_is_refused(data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    before = snapshot(copy)
    message = refused(SCRIPT, "--data-dir", copy, "--out-dir", copy / "runs" / "inside")
    assert "inside --data-dir" in message
    assert snapshot(copy) == before and not (copy / "runs").exists()
    assert "inside --data-dir" in refused(SCRIPT, "--data-dir", copy, "--out-dir", copy)


@pytest.mark.parametrize("flags", [["--seed", "-1"], ["--eval-count", "1"],
                                   ["--augment", "colour"], ["--latent-dim", "100000000"],
                                   ["--data-dir", "/nonexistent"]])
def test_overwrite_deletes_nothing_when_a_flag_or_the_data_is_bad(data, run_copy, flags):
    before = snapshot(run_copy)
    message = refused(SCRIPT, "--data-dir", data, "--out-dir", run_copy, "--overwrite", *flags)
    assert message.startswith("error:")
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("other", ["train_animals.py", "train_faces.py"])
def test_a_run_is_resumed_only_by_the_script_that_made_it(run_copy, other, tmp_path):
    before = snapshot(run_copy)
    message = refused(other, "--data-dir", tmp_path / "data", "--out-dir", run_copy, "--resume")
    assert "train_fashion_mnist.py" in message and other in message
    assert snapshot(run_copy) == before


# --- Crashes that must be one line ----------------------------------------------------------


# Every flag's own check is in test_flags.py; here, that a script stops at one of each kind
# in one line, before it makes anything.
@pytest.mark.parametrize("flags, words", [
    (["--seed", str(2**40)], "--seed"),
    (["--out-dir", ""], "--out-dir"),
    (["--augment-probability", "1.5"], "--augment-probability"),
])
def test_bad_flags_are_one_line_without_the_usage_block(data, tmp_path, flags, words):
    message = refused(SCRIPT, "--data-dir", data, "--out-dir", tmp_path / "run", *flags, status=2)
    assert words in message and message.startswith("error:")
    assert "usage:" not in message  # argparse's 14-line usage stays on --help.
    assert not (tmp_path / "run").exists()


def test_a_fixed_and_an_adaptive_augment_strength_together_are_refused(data, tmp_path,
                                                                      run_copy):
    both = ("--augment", "translation", "--augment-probability", "0.3")
    message = refused(SCRIPT, "--data-dir", data, "--out-dir", tmp_path / "new", *both,
                      "--augment-adaptive", status=1)
    assert "--augment-probability" in message and "--augment-adaptive" in message
    assert not (tmp_path / "new").exists()
    # Resuming an adaptive run with a fixed chance is the same contradiction.
    saved = json.loads((run_copy / "args.json").read_text())
    (run_copy / "args.json").write_text(json.dumps({**saved, "augment": "translation",
                                                    "augment_adaptive": True}))
    before = snapshot(run_copy)
    message = refused(SCRIPT, "--data-dir", data, "--out-dir", run_copy, "--resume",
                      "--epochs", "3", "--augment-probability", "0.3", status=1)
    assert "--augment-adaptive" in message
    assert snapshot(run_copy) == before


def test_a_typed_fixed_chance_turns_off_a_scripts_default_adaptive_strength():
    from common import flags, run
    artworks = importlib.import_module("train_artworks")  # Adaptive by default.
    args, explicit = flags.parse_args(artworks.build_parser(), ["--augment-probability", "0.3"])
    assert args.augment_adaptive
    run._one_augment_strength(args, explicit)
    assert (args.augment_adaptive, args.augment_probability) == (False, 0.3)
    # Not so on a resumed run: its saved --augment-adaptive stands, and the chance is refused.
    args, explicit = flags.parse_args(artworks.build_parser(), ["--augment-probability", "0.3"])
    with pytest.raises(ValueError, match="--augment-adaptive"):
        run._one_augment_strength(args, explicit, resuming=True)


def test_argument_errors_in_a_fresh_process_are_one_line(data, tmp_path):
    result = run_process(SCRIPT, "--epochs", "abc", "--out-dir", tmp_path / "run", check=False)
    assert result.returncode == 2 and "usage:" not in result.stderr
    assert one_line(result).startswith("error: argument --epochs")


@pytest.mark.parametrize("content, words", [
    ("[1, 2, 3]", "not a JSON object"),
    ('{"latent_dim": "big", "dataset": "fashion_mnist"}', "latent_dim"),
    ("{not json", "cannot read"),
])
def test_a_damaged_args_json_is_one_line(data, run_copy, content, words):
    (run_copy / "args.json").write_text(content)
    before = snapshot(run_copy)
    assert words in refused(SCRIPT, "--data-dir", data, "--out-dir", run_copy, "--resume",
                            "--epochs", "3")
    assert snapshot(run_copy) == before


def test_a_garbled_history_is_one_line(data, run_copy):
    (run_copy / "history.csv").write_text("epoch,d_loss\nthree,x\n")
    before = snapshot(run_copy)
    message = refused(SCRIPT, "--data-dir", data, "--out-dir", run_copy, "--resume",
                      "--epochs", "3")
    assert "history.csv" in message
    assert snapshot(run_copy) == before


def test_a_truncated_or_missing_newest_checkpoint_points_to_resume_from(data, run_copy):
    newest = max((run_copy / "checkpoints").glob("ckpt-*.data-*"),
                 key=lambda path: int(path.name.split("-")[1].split(".")[0]))
    newest.write_bytes(newest.read_bytes()[:1000])
    before = snapshot(run_copy)
    argv = (SCRIPT, "--data-dir", data, "--out-dir", run_copy, "--resume", "--epochs", "3")
    message = refused(*argv)
    assert "--resume-from 1" in message and newest.name.split(".")[0] in message
    assert snapshot(run_copy) == before
    # Deleted instead of cut short: the same advice, never --overwrite.
    for path in newest.parent.glob(newest.name.split(".")[0] + ".*"):
        path.unlink()
    message = refused(*argv)
    assert "--resume-from 1" in message and "--overwrite" not in message
    # The advice works.
    result = train(data, run_copy, "--resume-from", "1", "--epochs", "2")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("tf_config", ['{"cluster": {"worker": 5}}', "[]",
                                       '{"cluster": {"worker": ["localhost:1", "localhost:2"]},'
                                       ' "task": {"type": "worker", "index": 9}}'])
def test_malformed_tf_config_is_one_line(data, tmp_path, monkeypatch, tf_config):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    result = run_main(SCRIPT, "--data-dir", data, "--out-dir", tmp_path / "run",
                      "--strategy", "multiworker", check=False)
    assert "TF_CONFIG" in one_line(result)


# --- Wrong messages and surprises -----------------------------------------------------------


def test_max_steps_is_not_kept_for_resume(quick_data, tmp_path):
    out = tmp_path / "run"
    assert train(quick_data, out, "--epochs", "1", "--max-steps", "1").returncode == 0
    assert json.loads((out / "args.json").read_text())["max_steps"] == 1
    result = train(quick_data, out, "--resume", "--epochs", "3")
    assert result.returncode == 0, result.stderr
    assert "--max-steps" not in result.stdout
    rows = (out / "history.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["1", "2", "3"]


def test_artist_folders_differing_only_in_case_are_ambiguous(tmp_path):
    sys.path.insert(0, str(ROOT))
    import train_artworks
    for name in ("rembrandt", "Rembrandt", "Pablo_Picasso"):
        (tmp_path / name).mkdir()
    with pytest.raises(ValueError, match="matches 2 folders"):
        train_artworks.choose_artists(tmp_path, ["REMBRANDT"])
    assert train_artworks.choose_artists(tmp_path, ["Rembrandt"]) == [tmp_path / "Rembrandt"]
    assert train_artworks.choose_artists(tmp_path, ["pablo picasso"]) == \
        [tmp_path / "Pablo_Picasso"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_data_dir_that_is_a_file_says_so(script, tmp_path):
    file = tmp_path / "data.zip"
    file.write_bytes(b"PK")
    message = refused(script, "--data-dir", file, "--out-dir", tmp_path / "run")
    assert str(file) in message and "file" in message and "does not exist" not in message


def test_resume_with_fewer_epochs_than_done_says_so_and_changes_nothing(data, run_copy):
    before = snapshot(run_copy)
    result = run_main(SCRIPT, "--data-dir", data, "--out-dir", run_copy, "--resume", "--epochs",
                      "1")  # Status 0: nothing is wrong, there is just nothing to do.
    assert "already finished epoch 2" in result.stdout
    assert snapshot(run_copy) == before


def test_for_an_image_folder_too(tmp_path):
    """Case 2 for the 64px scripts: the run would sit among the paintings."""
    make_messy_folder(tmp_path / "images", good_per_artist=2)
    before = snapshot(tmp_path / "images")
    message = refused("train_artworks.py", "--data-dir", tmp_path / "images",
                      "--out-dir", tmp_path / "images" / "Rembrandt" / "run")
    assert "inside --data-dir" in message
    assert snapshot(tmp_path / "images") == before
