"""Quality against steps: train_fashion_mnist.py's defaults against each training option,
several seeds, scored by FCD on Fashion-MNIST's test images (held out from training).

Usage:
    python benchmarks/quality_per_step.py --out /tmp/qps --steps 117 234 469 938 \\
        --seeds 0 1 2 --parallel 2 --settings lr_2e-4 lr_4e-4
    python benchmarks/quality_per_step.py --out /tmp/qps --report docs/quality_per_step.png

Each (setting, seed) is one run in --out/SETTING-sSEED, trained on the 60,000 training
images at the default batch (128: 469 steps an epoch) up to the first of --steps, scored,
resumed (--resume --max-steps) to the next, scored, and so on; stages an earlier
invocation reached are skipped, so a curve can be extended later. A score is the FCD
(common/quality.py's ClassifierMeter) of 10,000 samples of the run's generator.keras
(the moving average, what a user gets) against the 10,000 test images; in a run with the
average, its own generator (the checkpoint's "generator") is scored too, as fcd_own: the
average never feeds back into training, so that is the same run without it. Each stage is its
own process; with --parallel 2 two run at once on one thread each (quality is the figure
here, not speed). Every score is one JSON line in --out/scores.jsonl; --report prints mean
± standard deviation (over seeds, population) per setting and step, and plots FCD against
steps; --settings picks what it shows.
Not part of the tests; the figures are in BENCHMARKS.md.
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
FASHION = "/usr/share/datasets/fashion-mnist"
SETTINGS = {
    # Every setting names its --lr, so a row means the same whatever the script's default is.
    # The first seven were measured when the default was 2e-4 (until 2026-12-03).
    "default": ["--lr", "2e-4"],                        # The old defaults, as first scored.
    "ttur": ["--lr-d", "4e-4", "--lr-g", "1e-4"],      # Heusel et al.: D faster than G.
    "init_dcgan": ["--lr", "2e-4", "--init", "dcgan"],  # N(0, 0.02) weights.
    "beta2": ["--lr", "2e-4", "--beta-2", "0.99"],
    "ema_rampup": ["--lr", "2e-4", "--ema-rampup", "0.05"],  # StyleGAN2's warm-up.
    "no_ema": ["--lr", "2e-4", "--ema", "0"],           # G's own samples.
    "lr_2e-4": ["--lr", "2e-4"],                        # The default until 2026-12-03.
    "lr_4e-4": ["--lr", "4e-4"],                        # The default on 2026-12-03.
    "lr_8e-4": ["--lr", "8e-4"],                        # The default since 2026-12-04.
    "g_fast": ["--lr", "2e-4", "--lr-g", "4e-4"],      # G twice D's rate (TTUR reversed).
    "g_fast_8e-4": ["--lr", "2e-4", "--lr-g", "8e-4"],
    "lr_8e-4_rampup": ["--lr", "8e-4", "--ema-rampup", "0.05"],  # The early samples.
    "lr_8e-4_no_ema": ["--lr", "8e-4", "--ema", "0"],
    "lr_8e-4_rampup_0.02": ["--lr", "8e-4", "--ema-rampup", "0.02"],  # Closer to G early.
    "lr_8e-4_rampup_0.01": ["--lr", "8e-4", "--ema-rampup", "0.01"],
}


def stage(out, steps, flags, data_dir):
    """Train `out` up to `steps` optimizer steps (a new run or --resume), then score it."""
    import numpy as np

    import train_fashion_mnist
    from common import quality
    from common.classifier import read_split
    from common.generate import load_generator

    resuming = (out / "args.json").exists()
    done = 0
    if resuming:
        done = json.loads((out / "steps.json").read_text())["steps"]
    seconds = None  # Trained that far already (killed while scoring): only score it.
    if done < steps:
        start = time.perf_counter()
        train_fashion_mnist.main(["--data-dir", data_dir, "--out-dir", out, "--epochs", "1000",
                                  "--max-steps", steps - done, "--checkpoint-every", "1000",
                                  *(["--resume"] if resuming else flags)])
        (out / "steps.json").write_text(json.dumps({"steps": steps}))
        seconds = round(time.perf_counter() - start, 1)
    test, _ = read_split(data_dir, "t10k")
    meter = quality.ClassifierMeter(test, 10000, out.parent / "test_features.npz")
    generator, latent_dim, _ = load_generator(out)

    def sample_noise(count, seed_pair):
        rng = np.random.default_rng([int(value) % 2**32 for value in seed_pair])
        return rng.standard_normal((count, latent_dim)).astype(np.float32)
    row = {"steps": steps, "fcd": meter.measure(generator, sample_noise)["fcd"],
           "train_seconds": seconds}
    if json.loads((out / "args.json").read_text()).get("ema"):
        # The moving average never feeds back into training, so the same run's G is what
        # --ema 0 would have given: scored beside it, a paired comparison for free.
        import tensorflow as tf
        own = train_fashion_mnist.make_generator(latent_dim)
        newest = tf.train.latest_checkpoint(out / "checkpoints")
        tf.train.Checkpoint(generator=own).restore(newest).expect_partial()
        row["fcd_own"] = meter.measure(own, sample_noise)["fcd"]
    return row


def job(out_root, setting, seed, steps_list, data_dir, threads):
    out = out_root / f"{setting}-s{seed}"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if threads:
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1")
    scores = out_root / "scores.jsonl"
    scored = {(row["setting"], row["seed"], row["steps"]) for row in map(
        json.loads, scores.read_text().splitlines() if scores.exists() else [])}
    for steps in steps_list:
        if (setting, seed, steps) in scored:
            continue  # Trained and scored that far by an earlier invocation.
        result = subprocess.run(
            [sys.executable, __file__, "--stage", str(out), str(steps), "--data-dir", data_dir,
             "--", *SETTINGS[setting], "--seed", str(seed)],
            capture_output=True, text=True, env=env, cwd=ROOT)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode or not lines:
            print(f"{setting} seed {seed} at {steps} steps failed:\n{result.stderr[-2000:]}")
            return
        row = {"setting": setting, "seed": seed, **json.loads(lines[-1])}
        with open(out_root / "scores.jsonl", "a") as file:
            file.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


def report(out_root, plot, only=None):
    rows = [json.loads(line) for line in (out_root / "scores.jsonl").read_text().splitlines()]
    rows = [row for row in rows if only is None or row["setting"] in only]
    # A run's own generator, scored beside its average, is a row of "SETTING, G's own".
    rows += [{**row, "setting": f"{row['setting']}, G's own", "fcd": row["fcd_own"]}
             for row in rows if "fcd_own" in row]
    table_and_plot(rows, "fcd", "FCD", SETTINGS, plot, "steps (batch 128; 469 an epoch)",
                   "FCD to held-out test images (lower is better)",
                   "Fashion-MNIST: quality against steps, mean ± sd over seeds")


def table_and_plot(rows, score, name, settings_flags, plot, xlabel, ylabel, title):
    """Print `score` of `rows` (one per setting, seed and steps) as a markdown table, mean ±
    sd (population, over seeds) per setting and step; with `plot`, a PNG of it against steps,
    one line per setting."""
    import numpy as np
    settings = list(dict.fromkeys(row["setting"] for row in rows))
    steps = sorted({row["steps"] for row in rows})
    print("| setting | " + " | ".join(f"{name} at {step} steps" for step in steps) + " |")
    print("|---|" + "---:|" * len(steps))
    curves = {}
    for setting in settings:
        cells, means, spreads = [], [], []
        for step in steps:
            values = [row[score] for row in rows if row["setting"] == setting
                      and row["steps"] == step]
            mean, spread = (float(np.mean(values)), float(np.std(values))) if values else (
                float("nan"), float("nan"))
            cells.append(f"{mean:.1f} ± {spread:.1f} ({', '.join(f'{v:.1f}' for v in values)})"
                         if values else "-")
            means.append(mean)
            spreads.append(spread)
        seeds = max(sum(row["setting"] == setting and row["steps"] == step for row in rows)
                    for step in steps)
        curves[setting] = (means, spreads, seeds)
        print(f"| {setting} {' '.join(settings_flags.get(setting, []))} | " + " | ".join(cells)
              + " |")
    if plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        figure, axes = plt.subplots(figsize=(7, 4))
        for setting, (means, spreads, seeds) in curves.items():
            label = f"{setting} {' '.join(settings_flags.get(setting, []))}".strip()
            axes.errorbar(steps, means, yerr=spreads, marker=".", capsize=3,
                          label=f"{label}, {seeds} seed{'s' * (seeds > 1)}")
        axes.set(xlabel=xlabel, ylabel=ylabel, title=title)
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        figure.savefig(plot, dpi=100)


def add_stage_arguments(parser, steps):
    """The flags this benchmark and quality_per_step_64.py share: what to run, and how."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, nargs="+", default=steps)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--report", nargs="?", const="", default=None, metavar="PLOT.png")
    parser.add_argument("--stage", nargs=2, metavar=("OUT", "STEPS"), help=argparse.SUPPRESS)
    parser.add_argument("flags", nargs="*", help=argparse.SUPPRESS)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/quality_per_step"))
    parser.add_argument("--settings", nargs="+", default=None, choices=SETTINGS,
                        help="what to train (default: all); with --report, what to show")
    parser.add_argument("--data-dir", default=FASHION)
    add_stage_arguments(parser, steps=[117, 234, 469])
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(stage(Path(args.stage[0]), int(args.stage[1]), args.flags,
                               args.data_dir)))
        return
    if args.report is not None:
        report(args.out, args.report, args.settings)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    threads = 1 if args.parallel > 1 else 0
    with ThreadPoolExecutor(args.parallel) as pool:
        for seed in args.seeds:
            for setting in args.settings or SETTINGS:
                pool.submit(job, args.out, setting, seed, sorted(args.steps), args.data_dir,
                            threads)


if __name__ == "__main__":
    main()
