"""common/rundir.py and common/files.py: the out-dir, atomic writes, refusals, history."""


import pytest

from common import files, rundir


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("old")

    def broken(temporary):
        with open(temporary, "w") as file:
            file.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        files.atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]  # No temporary left.


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
    files.write_history(tmp_path, rows)
    assert files.read_history(tmp_path, 3) == rows
    assert files.read_history(tmp_path, 2) == rows[:2]
    assert files.read_history(tmp_path / "none", 5) == []
    # Counts are whole numbers: an epoch of 2.5 is a damaged file, not epoch 2.
    text = (tmp_path / "history.csv").read_text()
    (tmp_path / "history.csv").write_text(text.replace("\n2,", "\n2.5,"))
    with pytest.raises(ValueError, match="cannot read .*history.csv"):
        files.read_history(tmp_path, 3)
