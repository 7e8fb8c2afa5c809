"""Quality against steps on the 64px sets: a script's old defaults against training options,
several seeds, scored by SWD (and pixel-FID) against real images held out from training.

Usage:
    python benchmarks/quality_per_step_64.py --script faces --steps 150 300 \\
        --seeds 0 1 2 --settings lr_2e-4 lr_8e-4 --parallel 2 --work-dir /tmp/qps64_faces
    python benchmarks/quality_per_step_64.py --script animals --train-count 480 ... \\
        --work-dir /tmp/qps64_cats
    python benchmarks/quality_per_step_64.py --script faces --work-dir /tmp/qps64_faces \\
        --report docs/quality_per_step_faces.png

The data split is benchmarks/augment_quality.py's (a fixed-seed random --train-count of
the sample in ../shared/data, copied under --work-dir; the rest held out, and never
trained on). Each (setting, seed) is one run in WORK/runs/SETTING-sSEED, trained up to the
first of --steps (optimizer steps at the script's default batch), scored, resumed
(--resume --max-steps) to the next, scored, and so on; stages an earlier invocation
reached are skipped (a stage killed while it trained has no checkpoint of where it got
to: delete that run's folder). A score (augment_quality.score) is the SWD (x1000, the mean
of the pyramid levels, 32 patches an image as --eval-every takes) and pixel-FID of as many
samples of the run's generator.keras (the moving average, what a user gets) as there are
held-out images, against them, each the mean of 2 noise draws. Each stage is its own
process; with --parallel 2 two run at once on one thread each (quality is the figure, not
speed). One JSON line per score in WORK/scores.jsonl; --report prints mean ±
sd (population, over seeds) per setting and step, and with a PNG path plots SWD against
steps. Not part of the tests; the figures are in BENCHMARKS.md.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
SETTINGS = {  # Each names its --lr, so a row means the same whatever a default becomes.
    "lr_2e-4": ["--lr", "2e-4"],    # DCGAN's rate: the 64px scripts' default.
    "lr_4e-4": ["--lr", "4e-4"],
    "lr_8e-4": ["--lr", "8e-4"],    # Fashion-MNIST's default since 2026-12-04.
    "lr_8e-4_rampup": ["--lr", "8e-4", "--ema-rampup", "0.05"],
    "ttur": ["--lr-d", "4e-4", "--lr-g", "1e-4"],
    "init_dcgan": ["--lr", "2e-4", "--init", "dcgan"],
}


def stage(script, work, out, steps, flags):
    """Train `out` up to `steps` optimizer steps (a new run or --resume), then score it."""
    import augment_quality
    from common.image_data import read_image_folders
    from common.quality import SWD_PATCHES
    spec = augment_quality.SCRIPTS[script]
    data_flags = json.loads((work / "split.json").read_text())["flags"]
    progress = out / "steps.json"
    done = json.loads(progress.read_text())["steps"] if progress.exists() else 0
    seconds = None  # Trained that far already (killed while scoring): only score it.
    if done < steps:
        module = __import__(Path(spec["file"]).stem)
        start = time.perf_counter()
        module.main([*data_flags, "--out-dir", str(out), "--epochs", "100000", "--no-download",
                     "--cache-dir", str(work / "cache"),
                     "--max-steps", str(steps - done), "--checkpoint-every", "100000",
                     "--sample-every", "100000",
                     *(["--resume"] if (out / "args.json").exists() else flags)])
        progress.write_text(json.dumps({"steps": steps}))
        seconds = round(time.perf_counter() - start, 1)
    held_out, _ = read_image_folders([work / "held_out"], crop=spec["crop"])
    seed = json.loads((out / "args.json").read_text())["seed"]
    # As many samples as held-out images, 2 noise draws, the --eval-every meter's patches.
    pixel_fid, swd = augment_quality.score(out, held_out, len(held_out), 1000 + seed, draws=2,
                                           patches_per_image=SWD_PATCHES)
    return {"steps": steps, "swd": round(swd.pop("mean"), 3), "pixel_fid": round(pixel_fid, 3),
            **{f"swd_{level}": round(value, 3) for level, value in swd.items()},
            "train_seconds": seconds}


def job(script, work, setting, seed, steps_list, threads):
    out = work / "runs" / f"{setting}-s{seed}"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if threads:
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1")
    scores = work / "scores.jsonl"
    for steps in steps_list:
        scored = {(row["setting"], row["seed"], row["steps"]) for row in map(
            json.loads, scores.read_text().splitlines() if scores.exists() else [])}
        if (setting, seed, steps) in scored:
            continue  # Trained and scored that far by an earlier invocation.
        result = subprocess.run(
            [sys.executable, __file__, "--script", script, "--work-dir", str(work),
             "--stage", str(out), str(steps), "--", *SETTINGS[setting], "--seed", str(seed)],
            capture_output=True, text=True, env=env, cwd=ROOT)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode or not lines:
            print(f"{setting} seed {seed} at {steps} steps failed:\n{result.stderr[-2000:]}",
                  flush=True)
            return
        row = {"setting": setting, "seed": seed, **json.loads(lines[-1])}
        with open(scores, "a") as file:
            file.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def report(script, work, plot, only=None):
    from quality_per_step import table_and_plot
    rows = [json.loads(line) for line in (work / "scores.jsonl").read_text().splitlines()]
    rows = [row for row in rows if only is None or row["setting"] in only]
    table_and_plot(rows, "swd", "SWD", SETTINGS, plot, "steps (batch 128)",
                   "SWD x1000 to held-out images (lower is better)",
                   f"{script}: quality against steps, mean ± sd over seeds")


def main():
    from quality_per_step import add_stage_arguments
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--script", choices=("faces", "animals", "artworks"), default="faces")
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--settings", nargs="+", default=["lr_2e-4", "lr_8e-4"],
                        choices=SETTINGS)
    parser.add_argument("--train-count", type=int, default=None,
                        help="training images (default: augment_quality's: 4,000 faces, "
                             "160 cats, 262 artworks)")
    add_stage_arguments(parser, steps=[150, 300])
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(stage(args.script, args.work_dir, Path(args.stage[0]),
                               int(args.stage[1]), args.flags)))
        return
    if args.report is not None:
        report(args.script, args.work_dir, args.report, args.settings)
        return
    import augment_quality
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if not (args.work_dir / "split.json").exists():  # The same split for every later call.
        spec = augment_quality.SCRIPTS[args.script]
        flags, held, train = augment_quality.split_data(
            args.script, spec["source"].format(style="Ukiyo_e"),
            args.train_count or spec["train_count"], 0, args.work_dir)
        (args.work_dir / "split.json").write_text(json.dumps({"flags": flags}))
    threads = 1 if args.parallel > 1 else 0
    with ThreadPoolExecutor(args.parallel) as pool:
        for seed in args.seeds:
            for setting in args.settings:
                pool.submit(job, args.script, args.work_dir, setting, seed, sorted(args.steps),
                            threads)


if __name__ == "__main__":
    main()
