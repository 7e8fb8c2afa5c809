"""The run folder's files, each written atomically: history.csv, args.json, the sample
grids' names (and `atomic_write`, which every file of a run goes through)."""

import csv
import json
import os
import re
from pathlib import Path

HISTORY_COLUMNS = ("epoch", "d_loss", "g_loss", "d_real", "d_fake", "images_per_sec", "seconds")
# Columns only some runs or epochs have: the health check's sample diversity and images
# trained on (common/health.py; runs from before it lack them), --augment-adaptive's p, and
# the scores of the epochs scored with --eval-every (common/quality.py); empty elsewhere.
OPTIONAL_COLUMNS = ("diversity", "images", "augment_p", "fcd", "fid", "kid", "swd")
# What sample_path writes; a hand-made epoch_1.png beside epoch_0001.png is not a sample.
SAMPLE_PATTERN = re.compile(r"^epoch_(\d{4,})\.png$")


def atomic_write(path, write):
    """Call `write(temporary_path)`, then move the finished file over `path` in one step.

    Readers see the old file or the new one, never half of one; if `write` fails or the
    process is interrupted, the temporary file is removed and `path` is untouched. The
    temporary name keeps the extension, so writers that choose a format by it still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(str(temporary))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def save_args(out_dir, args):
    """Write the run's arguments to args.json."""
    text = json.dumps(vars(args), indent=2, sort_keys=True) + "\n"
    atomic_write(Path(out_dir) / "args.json", lambda temporary: Path(temporary).write_text(text))


def load_args(out_dir):
    """The saved arguments of the run in `out_dir`, or {} when it has none."""
    path = Path(out_dir) / "args.json"
    if not path.exists():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {path} ({' '.join(str(error).split())}); fix it, or "
                         f"pass --overwrite to start over") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} does not hold a run's arguments (not a JSON object); fix "
                         f"it, or pass --overwrite to start over")
    return saved


def write_history(out_dir, rows):
    """Write history.csv: one row per finished epoch."""
    def write(temporary):
        columns = HISTORY_COLUMNS + tuple(
            name for name in OPTIONAL_COLUMNS if any(name in row for row in rows))
        with open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore", restval="")
            writer.writeheader()
            writer.writerows(rows)
    atomic_write(Path(out_dir) / "history.csv", write)


def read_history(out_dir, up_to_epoch):
    """The rows of history.csv for epochs 1..up_to_epoch (later rows belong to an epoch
    whose checkpoint was never written, so it will run again)."""
    path = Path(out_dir) / "history.csv"
    if not path.exists():
        return []
    try:
        with open(path, newline="") as file:
            lines = list(csv.DictReader(file))
        for number, line in enumerate(lines, 2):  # A cut-off row would break the plots later.
            # An empty field is a score not taken that epoch; a field not there at all (None)
            # is a row cut short.
            missing = [name for name, value in line.items() if value is None] or [
                name for name in HISTORY_COLUMNS if not line.get(name)]
            if missing:
                raise ValueError(f"line {number} has no {', '.join(missing)}")
        rows = [{name: int(line[name]) if name in ("epoch", "images")
                 else float(line[name])
                 for name in HISTORY_COLUMNS + OPTIONAL_COLUMNS if line.get(name)}
                for line in lines]
        return [row for row in rows if row["epoch"] <= up_to_epoch]
    except (OSError, ValueError, KeyError, TypeError, csv.Error) as error:
        raise ValueError(f"cannot read {path} ({type(error).__name__}: "
                         f"{' '.join(str(error).split())[:100]}); fix it, move it away (the "
                         f"run then keeps no history before this point), or pass "
                         f"--overwrite") from None


def sample_path(out_dir, epoch):
    return Path(out_dir) / "samples" / f"epoch_{epoch:04d}.png"


def sample_paths(out_dir, up_to_epoch):
    """The sample grids of epochs 1..up_to_epoch, oldest first: the GIF's frames."""
    folder = Path(out_dir) / "samples"
    found = []
    for path in folder.glob("epoch_*.png") if folder.is_dir() else []:
        match = SAMPLE_PATTERN.match(path.name)
        if match and int(match.group(1)) <= up_to_epoch:
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]
