"""How much of a run's wall time goes to training, and how much to closing epochs (samples,
GIF, plots, history, generator.keras, checkpoints).

Usage:
    python benchmarks/run_overhead.py --epochs 400 train_artworks.py FOLDER -- --artist Ukiyo_e
    python benchmarks/run_overhead.py --epochs 30 --code /tmp/old train_animals.py FOLDER

(Its own options come before the script; the script's flags after `--`.)

Runs the script once in a fresh process on FOLDER (as --data-dir) into a temporary
out-dir, with its defaults and the extra flags after `--`, and compares the process's
wall time after the data is decoded with the sum of history.csv's per-epoch `seconds`
(each epoch's training steps). `--code DIR` runs the script from another checkout (e.g.
a `git worktree` of an earlier commit) to compare before and after. Also reports the size
of progress.gif and of the checkpoints folder. Not part of the tests; see BENCHMARKS.md.
"""

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def folder_bytes(path):
    return sum(file.stat().st_size for file in Path(path).rglob("*") if file.is_file())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("script")
    parser.add_argument("data_dir")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--code", default=str(ROOT), help="checkout to run the script from")
    parser.add_argument("--out-dir", default=None,
                        help="keep the run here (default: a temporary folder, deleted)")
    parser.add_argument("extra", nargs=argparse.REMAINDER,
                        help="more flags for the script (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(args.out_dir or Path(scratch) / "run")
        command = [sys.executable, "-u", str(Path(args.code) / args.script), "--data-dir",
                   args.data_dir, "--out-dir", str(out), "--epochs", str(args.epochs),
                   *[flag for flag in args.extra if flag != "--"]]
        start = time.perf_counter()
        first_epoch_start = None
        process = subprocess.Popen(command, cwd=args.code, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        for line in process.stdout:
            # Timing starts once the images are decoded and the models built: the line that
            # names the device comes right before the first epoch.
            if first_epoch_start is None and line.startswith("training on"):
                first_epoch_start = time.perf_counter()
        process.wait()
        end = time.perf_counter()
        if process.returncode != 0:
            raise SystemExit(f"the run failed ({process.returncode})")
        with open(out / "history.csv", newline="") as file:
            training = sum(float(row["seconds"]) for row in csv.DictReader(file))
        wall = end - (first_epoch_start or start)
        print(f"{platform.node()} {time.strftime('%Y-%m-%d %H:%M')} code={args.code}")
        print(f"| {args.script} | {args.epochs} epochs | wall {wall:.1f} s | training "
              f"{training:.1f} s | outside training {wall - training:.1f} s "
              f"({100 * (wall - training) / wall:.1f}%) | GIF "
              f"{(out / 'progress.gif').stat().st_size / 1e6:.1f} MB | checkpoints "
              f"{folder_bytes(out / 'checkpoints') / 1e6:.0f} MB |")


if __name__ == "__main__":
    main()
