"""A run's checkpoints: which are kept and whole, which to resume from, rolling back to an
earlier one (--resume-from), and turning a failed write into one line that names the
checkpoint kept."""

import contextlib
import os
import re
import shutil
import time
from pathlib import Path

from common.errors import exit_with
from common.files import SAMPLE_PATTERN, atomic_write, read_history, sample_paths

ROLLED_BACK = "rolled_back"  # Where --resume-from puts what came after the chosen epoch.


def remove_leftovers(out_dir):
    """Delete the temporary files a killed run can leave: half-written files of
    `atomic_write`, the write probe, and a checkpoint save that never finished. Only
    called with the out-dir's lock held, so no live run is writing them."""
    out_dir = Path(out_dir)
    for folder in (out_dir, out_dir / "samples"):
        for path in folder.glob(".*.tmp-*") if folder.is_dir() else []:
            path.unlink(missing_ok=True)
    for path in out_dir.glob(".write-test-*"):
        path.unlink(missing_ok=True)
    checkpoints = out_dir / "checkpoints"
    if not checkpoints.is_dir():
        return
    # TensorFlow writes a checkpoint as ckpt-N_temp/ and merges it into ckpt-N.index and
    # .data; the state file "checkpoint" names it only once all that is done. So a save
    # that never finished left a _temp folder, or ckpt-N files numbered past the latest
    # checkpoint the state file lists (numbers only grow within a run).
    numbers = [_checkpoint_number(Path(path).name) for path in _checkpoint_paths(checkpoints)]
    # A state file that lists nothing is unreadable (TensorFlow ignores one it cannot
    # parse): then which checkpoints are the run's is unknown, and none is deleted. With no
    # state file, the first save was cut before it was written, the file was lost, or ckpt-N
    # files were copied here by hand: whole ones are kept (resume_point continues from
    # them); only a cut-off one, which nothing can read, is deleted.
    listed = (checkpoints / "checkpoint").exists()
    newest = max(numbers, default=float("inf"))
    whole = set() if listed else {
        _checkpoint_number(Path(path).name) for path in unlisted_checkpoints(checkpoints)}
    for path in checkpoints.iterdir():
        number = _checkpoint_number(path.name)
        if path.name.startswith(".") and ".tmp" in path.name or "_temp" in path.name:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        elif path.name.startswith("checkpoint.tmp"):  # The state file, half written.
            path.unlink(missing_ok=True)
        elif number > newest if listed else number >= 0 and number not in whole:
            path.unlink(missing_ok=True)


def unlisted_checkpoints(checkpoints):
    """{path: finished epochs} of the whole, readable ckpt-N files in `checkpoints`, oldest
    first: what is left to resume from when the state file is lost."""
    found = {}
    for index in sorted(Path(checkpoints).glob("ckpt-*.index"),
                        key=lambda path: _checkpoint_number(path.name)):
        path = str(index)[:-len(".index")]
        try:
            found[path] = _read_whole(path)
        except Exception:  # TensorFlow raises several kinds at a damaged file.
            pass
    return found


def _read_whole(path):
    """The finished epochs the checkpoint at `path` holds, after reading every byte of it
    (a truncated or damaged file raises here, not in the middle of a restore)."""
    import tensorflow as tf
    reader = tf.train.load_checkpoint(path)
    for name in reader.get_variable_to_shape_map():
        reader.get_tensor(name)
    return int(reader.get_tensor("epochs_done/.ATTRIBUTES/VARIABLE_VALUE"))


def relist_checkpoints(checkpoints):
    """Write the state file of `checkpoints` again, listing its whole ckpt-N files (after a
    resume from them found it missing), so CheckpointManager keeps and rotates them."""
    paths = list(unlisted_checkpoints(checkpoints))
    if paths:
        _write_checkpoint_state(checkpoints, paths[-1], paths, {})


def _write_checkpoint_state(checkpoints, chosen, paths, stamps):
    """TensorFlow's state file (a text protobuf): `chosen` the latest of `paths`, each with
    its timestamp (without one CheckpointManager would stop tracking it)."""
    lines = [f'model_checkpoint_path: "{Path(chosen).name}"']
    lines += [f'all_model_checkpoint_paths: "{Path(path).name}"' for path in paths]
    lines += [f"all_model_checkpoint_timestamps: {stamps.get(path, time.time())}"
              for path in paths]
    lines += [f"last_preserved_timestamp: {stamps.get('last', 0.0)}"]  # Older: kept.
    text = "\n".join(lines) + "\n"
    atomic_write(Path(checkpoints) / "checkpoint",
                 lambda temporary: Path(temporary).write_text(text))


def _checkpoint_number(name):
    """N of ckpt-N.index / ckpt-N.data-...; -1 for any other name."""
    match = re.match(r"^ckpt-(\d+)(\.|$)", name)
    return int(match.group(1)) if match else -1


def _checkpoint_paths(checkpoints):
    """The checkpoints the state file lists, oldest first."""
    import tensorflow as tf
    state = tf.train.get_checkpoint_state(str(checkpoints))
    return list(state.all_model_checkpoint_paths) if state else []


def epochs_of_checkpoints(checkpoints):
    """{checkpoint path: finished epochs it holds}, oldest first. A checkpoint the state
    file lists but whose index is gone (deleted by hand, or a kill while TensorFlow was
    deleting the oldest one) is left out."""
    import tensorflow as tf
    epochs = {}
    for path in _checkpoint_paths(checkpoints):
        try:
            epochs[path] = int(tf.train.load_variable(
                path, "epochs_done/.ATTRIBUTES/VARIABLE_VALUE"))
        except (tf.errors.OpError, ValueError):  # Gone or damaged: not one to resume from.
            pass
    return epochs


def prune_checkpoints(checkpoints, keep, also_keep=()):
    """Delete all but the newest checkpoint, those of the last `keep` finished epochs and
    those of the epochs in `also_keep` (the way back a training warning names).

    A Ctrl-C save is taken mid-epoch: it holds the finished epochs of the checkpoint before
    it (or none), so it is not one of an epoch and counts against no --keep-checkpoints;
    it stays only while it is the newest (what --resume continues from).
    """
    epochs = epochs_of_checkpoints(checkpoints)
    paths, seen, ends = list(epochs), set(), []
    for path in paths:
        if epochs[path] > 0 and epochs[path] not in seen:
            ends.append(path)
        seen.add(epochs[path])
    kept = [path for path in paths if path in ends[-keep:] or path == paths[-1]
            or (path in ends and epochs[path] in also_keep)]
    if kept == paths:
        return
    import tensorflow as tf
    state = tf.train.get_checkpoint_state(str(checkpoints))
    stamps = dict(zip(state.all_model_checkpoint_paths, state.all_model_checkpoint_timestamps))
    stamps["last"] = state.last_preserved_timestamp
    _write_checkpoint_state(checkpoints, paths[-1], kept, stamps)  # First: a kill leaves
    for path in set(paths) - set(kept):                           # only unlisted files.
        for file in Path(checkpoints).glob(Path(path).name + ".*"):
            file.unlink(missing_ok=True)


def resume_point(out_dir, resume_from=None):
    """The checkpoint --resume (or --resume-from EPOCH) would start from, and the epochs it
    has finished: (None, 0) when there is nothing to resume. Reads only; changes nothing.

    Raises ValueError (one line) whenever starting over would overwrite a run's work: its
    checkpoint list is lost, its newest checkpoint is missing or damaged, or the run has
    outputs of finished epochs but no checkpoint at all (deleted or emptied checkpoints/).
    """
    out_dir = Path(out_dir)
    checkpoints = out_dir / "checkpoints"
    listed = _checkpoint_paths(checkpoints) if checkpoints.is_dir() else []
    if resume_from:
        epochs = epochs_of_checkpoints(checkpoints) if listed else {}
        chosen = [path for path, done in epochs.items() if done == resume_from]
        if not chosen:
            kept = ", ".join(str(done) for done in sorted(set(epochs.values()))) or "none"
            raise ValueError(f"--resume-from {resume_from}: {checkpoints} has no checkpoint of "
                             f"epoch {resume_from} (kept epochs: {kept}); choose one of those, "
                             f"and keep more next time with --keep-checkpoints")
        return chosen[0], resume_from
    if not listed:
        files = [path.name for path in (checkpoints.iterdir() if checkpoints.is_dir() else [])
                 if _checkpoint_number(path.name) >= 0]
        whole = unlisted_checkpoints(checkpoints) if files else {}
        if whole and not (checkpoints / "checkpoint").exists():
            # The list was lost (or the files copied here without it): the newest whole
            # checkpoint is where the run is; Run.setup writes the list again.
            newest = list(whole)[-1]
            return newest, whole[newest]
        if files:
            raise ValueError(f"{checkpoints} holds checkpoint files, but its list of them "
                             f"(the file 'checkpoint') is unreadable; restore that file, or "
                             f"pass --overwrite to start over")
        progress = finished_work(out_dir)
        if progress:
            raise ValueError(f"{out_dir} has finished epochs ({progress}) but no checkpoint "
                             f"to continue from ({checkpoints} is missing or empty); "
                             f"--resume would start over on top of them: pass --overwrite to "
                             f"delete the run and start over, or choose another --out-dir")
        return None, 0
    newest = listed[-1]
    try:
        done = _read_whole(newest)
    except Exception as error:  # TensorFlow raises several kinds at a damaged file.
        reason = "its files are missing" if not Path(newest + ".index").exists() else \
            "it is damaged: " + " ".join(str(error).split())[:120]
        intact = [epochs for path, epochs in epochs_of_checkpoints(checkpoints).items()
                  if path != newest]
        advice = (f"continue from the newest intact one with --resume-from {max(intact)}"
                  if intact else "no other checkpoint is kept; pass --overwrite to start over")
        raise ValueError(f"the newest checkpoint {newest} cannot be read ({reason}); "
                         f"{advice}") from None
    return newest, done


def finished_work(out_dir):
    """What in `out_dir` shows epochs were finished (a run's first epoch always ends with a
    checkpoint, so these without one mean the checkpoints were lost), or "" if nothing."""
    out_dir = Path(out_dir)
    found = [name for name in ("generator.keras", "progress.gif") if (out_dir / name).exists()]
    try:
        epochs = [row["epoch"] for row in read_history(out_dir, float("inf"))]
    except ValueError:
        epochs = [2]  # An unreadable history: assume the worst.
    if epochs and max(epochs) >= 2:
        found.append(f"history.csv up to epoch {max(epochs)}")
    return ", ".join(found)


def roll_back(out_dir, epoch):
    """Make the checkpoint of `epoch` the run's latest (--resume-from) and return it.

    Later checkpoints, sample grids of later epochs, history.csv and generator.keras are
    moved (not deleted) to OUT_DIR/rolled_back/after_epoch_<epoch>[_2...]/, so a roll-back
    loses nothing. A Ctrl-C checkpoint taken during the next epoch also holds `epoch`
    finished epochs; the one written at the epoch's end (the fewest steps) is chosen.
    """
    import tensorflow as tf
    out_dir = Path(out_dir)
    checkpoints = out_dir / "checkpoints"
    chosen, _ = resume_point(out_dir, epoch)
    order = list(epochs_of_checkpoints(checkpoints))
    later = order[order.index(chosen) + 1:]
    aside = out_dir / ROLLED_BACK / f"after_epoch_{epoch}"
    suffix = 2
    while aside.exists():
        aside = out_dir / ROLLED_BACK / f"after_epoch_{epoch}_{suffix}"
        suffix += 1
    moves = [file for path in later for file in checkpoints.glob(Path(path).name + ".*")]
    moves += [path for path in sample_paths(out_dir, 10**9)
              if int(SAMPLE_PATTERN.match(path.name).group(1)) > epoch]
    if moves:  # Rolling back to the newest epoch sets nothing aside.
        moves += [out_dir / name for name in ("history.csv", "generator.keras")
                  if (out_dir / name).exists()]
    for path in moves:
        target = aside / path.relative_to(out_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.name == "history.csv":
            shutil.copy2(path, target)  # The kept rows are still needed; resume trims it.
        else:
            os.replace(path, target)
    # The state file ends at the chosen checkpoint.
    state = tf.train.get_checkpoint_state(str(checkpoints))
    stamps = dict(zip(state.all_model_checkpoint_paths, state.all_model_checkpoint_timestamps))
    stamps["last"] = state.last_preserved_timestamp
    _write_checkpoint_state(checkpoints, chosen, [path for path in order if path not in later],
                            stamps)
    print(f"rolled back to epoch {epoch} ({chosen}); moved {len(moves)} later files to {aside}")
    return chosen


@contextlib.contextmanager
def disk_errors_exit(out_dir, manager):
    """Turn a failed write in the block (a full disk, a read-only or vanished folder) into
    one line and exit 1, after removing what the failed writes left half done. Every
    file is written atomically and the checkpoint comes last, so the last good one and
    the files that match it are still in place for --resume."""
    import tensorflow as tf
    try:
        yield
    except (OSError, tf.errors.OpError) as error:
        try:
            remove_leftovers(out_dir)
        except (OSError, ValueError, tf.errors.OpError):
            pass
        # The state file says which checkpoint is kept, not the manager: a save that failed
        # while being recorded is already the manager's latest, and was just removed.
        try:
            kept = tf.train.latest_checkpoint(str(manager.directory))
        except (OSError, ValueError, tf.errors.OpError):
            kept = None
        exit_with(f"cannot write to {out_dir} ({_write_error_reason(error)}); kept the last "
                  f"good checkpoint ({kept or 'none yet'}). Free some space or fix the folder, "
                  f"then continue with --resume")


def _write_error_reason(error):
    """Why a write failed, in the system's words ("No space left on device", "File too
    large", "Read-only file system"): TensorFlow's messages put it after the op's name and
    its own temporary path, which a user has no use for."""
    text = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
    lines = str(text).strip().splitlines()
    text = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", lines[0] if lines else "")
    text = re.sub(r"\s*\[Op:\w+\]$", "", text).rsplit("; ", 1)[-1]
    return text[:200] or type(error).__name__
