"""Does --augment (DiffAugment, optionally ADA-adaptive) give better samples on tiny sets?

Usage:
    python benchmarks/augment_quality.py --script artworks --steps 300 \
        --configs none "color,translation,cutout" "translation,cutout"
    python benchmarks/augment_quality.py --script animals --steps 300 --batch-size 64 \
        --configs none "translation,cutout+adaptive" --repeats 0 1

Each config trains the real script in a subprocess (sys.executable, --max-steps N, its own
temporary --out-dir, --checkpoint-every 1000 so it saves only at the end, --ema at its
default) on a few hundred real images, the same number of steps for every config. The
statistics, from --num-generated images of the run's generator.keras against the images of
the same set HELD OUT from training (lower is better for both):
- pixel-FID: common.metrics.pixel_fid, the Frechet distance on the top 20 principal
  components of pixels (what images look like as a whole: colour, light, layout);
- SWD: common.metrics.sliced_wasserstein, Progressive GAN's multi-scale sliced Wasserstein
  distance between 7x7 patches of the Laplacian pyramids (edges and texture at 64, 32 and
  16 px), x 1000, the mean over the levels (the log also holds each level).
It also asks the run's final D (from its checkpoint, inference mode) about the real images:
the mean sign of its logits on the training images and on as many held-out ones (+1: all
"real", -1: all "fake"). A D that calls training images real and unseen images of the same
set fake has memorised its training set, which is what augmentation is meant to prevent.

Data (never copied into the repository; the training copy lives under --work-dir):
- artworks: a fixed-seed random --train-count (262, Rembrandt's size) of
  --artworks-style (Ukiyo_e) paintings, laid out as <work>/images/Rembrandt/ so that
  `--data-dir <work>/images --artist Rembrandt` reads them; the rest of the style is held out.
- animals: a fixed-seed random --train-count (160) of afhq_cat_600/cat/; the other 440 are
  held out; `--data-dir <work>/animals`.
- faces: a fixed-seed random --train-count (4,000) of celeba_5k/, the other 1,000 held out
  (cropped to the face, as train_faces.py crops); `--data-dir <work>/faces`.

A config is a --augment policy ("none", "translation,cutout", ...), optionally suffixed
"+adaptive" for --augment-adaptive, and/or "@flag=value" for another flag, such as
"@lr=3e-3" or "@augment-probability=1" (DiffAugment's "always"; the scripts' default is
0.5). Prints a markdown table (means over --repeats seeds) and writes one JSON line per run
to --log.
Not part of the tests.
"""

import argparse
import csv
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCRIPTS = {
    "artworks": {"file": "train_artworks.py", "train_count": 262, "crop": 1.0,
                 "source": "/work/shared/data/wikiart_2styles/images/{style}"},
    "animals": {"file": "train_animals.py", "train_count": 160, "crop": 1.0,
                "source": "/work/shared/data/afhq_cat_600/cat"},
    # The faces are cropped to the face as train_faces.py crops them (its CROP).
    "faces": {"file": "train_faces.py", "train_count": 4000, "crop": 140 / 178,
              "source": "/work/shared/data/celeba_5k"},
}


def image_files(folder):
    from common.images import find_images
    return find_images(folder)


def split_data(script, source, train_count, seed, work):
    """Copy a fixed-seed random `train_count` images of `source` under `work`; returns
    (data-dir flags for the script, the held-out image paths, the training folder)."""
    files = image_files(source)
    if len(files) <= train_count:
        raise SystemExit(f"error: {source} has {len(files)} images, need more than {train_count}")
    chosen = set(random.Random(seed).sample(range(len(files)), train_count))
    train = [path for index, path in enumerate(files) if index in chosen]
    held = [path for index, path in enumerate(files) if index not in chosen]
    if script == "artworks":
        folder = work / "images" / "Rembrandt"
        flags = ["--data-dir", str(work / "images"), "--artist", "Rembrandt"]
    else:
        folder = work / script
        flags = ["--data-dir", str(folder)]
    folder.mkdir(parents=True, exist_ok=True)
    for path in train:
        shutil.copy2(path, folder / path.name)
    held_folder = work / "held_out"
    held_folder.mkdir(exist_ok=True)
    for path in held:
        shutil.copy2(path, held_folder / path.name)
    return flags, held_folder, folder


def parse_config(text):
    """'color,translation,cutout+adaptive@lr=3e-3' -> (policy, adaptive, extra flags)."""
    extra = []
    if "@" in text:
        text, *options = text.split("@")
        for option in options:
            key, value = option.split("=", 1)
            extra += [f"--{key}", value]
    adaptive = text.endswith("+adaptive")
    policy = text[: -len("+adaptive")] if adaptive else text
    return policy, adaptive, extra


def read_history(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def score(run_dir, held_out, count, seed, draws=3, patches_per_image=128):
    """(pixel-FID, SWD per pyramid level and their mean) of `count` generated images
    against the held-out ones, each the mean over `draws` noise draws (one draw of 2,000
    moved pixel-FID by up to +-7); SWD from `patches_per_image` patches of each image."""
    from common.generate import draw_noise, generate, load_generator
    from common.metrics import pixel_fid, sliced_wasserstein
    model, latent_dim, distribution = load_generator(run_dir)
    real = held_out.astype(np.float32) / 127.5 - 1.0
    fids, swds = [], []
    for draw in range(draws):
        rng = np.random.default_rng([seed, draw])
        generated = generate(model, draw_noise(distribution, count, latent_dim, rng))
        fids.append(pixel_fid(real, generated))
        swds.append(sliced_wasserstein(real, generated,
                                       patches_per_image=patches_per_image, seed=draw))
    return float(np.mean(fids)), {level: float(np.mean([swd[level] for swd in swds]))
                                  for level in swds[0]}


def discriminator_signs(script_file, run_dir, train, held_out):
    """Mean sign of the final D's logits on the training images and on as many held-out
    ones (inference mode, D restored from the run's last checkpoint)."""
    import importlib
    import tensorflow as tf
    module = importlib.import_module(Path(script_file).stem)
    discriminator = module.make_discriminator()
    checkpoint = tf.train.Checkpoint(discriminator=discriminator)
    latest = tf.train.latest_checkpoint(str(Path(run_dir) / "checkpoints"))
    checkpoint.restore(latest).expect_partial()
    signs = []
    for images in (train, held_out[:len(train)]):
        logits = [discriminator(images[start:start + 64].astype(np.float32) / 127.5 - 1.0,
                                training=False).numpy() for start in range(0, len(images), 64)]
        signs.append(float(np.mean(np.sign(np.concatenate(logits)))))
    return signs


def evaluate(script_file, run_dir, train, held_out, count, seed):
    """The benchmark's figures for one finished run, rounded for the log."""
    fid, swd = score(run_dir, held_out, count, seed=1000 + seed)
    d_train, d_held = discriminator_signs(script_file, run_dir, train, held_out)
    return {"pixel_fid": round(fid, 3), "swd": round(swd.pop("mean"), 2),
            # Per level, finest first: 64 px is edges and grain, 16 px is shapes.
            **{f"swd_{level}": round(value, 2) for level, value in swd.items()},
            "d_sign_train": round(d_train, 3), "d_sign_held_out": round(d_held, 3)}


def last_sample(run_dir):
    samples = sorted((Path(run_dir) / "samples").glob("epoch_*.png"))
    return str(samples[-1]) if samples else ""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--script", choices=sorted(SCRIPTS), default="artworks")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--configs", nargs="+",
                        default=["none", "translation,cutout", "color,translation,cutout",
                                 "color,translation,cutout+adaptive"],
                        help="--augment policies; '+adaptive' adds --augment-adaptive, "
                             "'@lr=3e-3' (any flag=value) adds that flag")
    parser.add_argument("--repeats", type=int, nargs="+", default=[0],
                        help="training seeds (--seed); the table shows the mean")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="--batch-size for the script (default: the script's)")
    parser.add_argument("--train-count", type=int, default=None,
                        help="training images (default: 262 artworks, 160 cats, 4,000 faces)")
    parser.add_argument("--artworks-style", default="Ukiyo_e", choices=("Ukiyo_e", "Pointillism"))
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--num-generated", type=int, default=2000,
                        help="generated images scored, in each of 3 noise draws (the scores "
                             "are their means)")
    parser.add_argument("--score-only", nargs="+", metavar="RUN_DIR", default=None,
                        help="score these finished runs (trained on this split, e.g. with "
                             "--resume --epochs N) instead of training")
    parser.add_argument("--work-dir", default=None,
                        help="data copies and run folders (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run folders (sample grids) after the benchmark")
    parser.add_argument("--log", default="/tmp/augment_results/runs.jsonl")
    parser.add_argument("--nice", type=int, default=0, help="nice the training subprocesses")
    args = parser.parse_args()

    spec = SCRIPTS[args.script]
    train_count = args.train_count or spec["train_count"]
    source = spec["source"].format(style=args.artworks_style)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix=f"augment_{args.script}_"))
    work.mkdir(parents=True, exist_ok=True)
    data_flags, held_folder, train_folder = split_data(args.script, source, train_count,
                                                       args.split_seed, work)
    from common.image_data import read_image_folders
    held_out, _ = read_image_folders([held_folder], crop=spec["crop"])
    train_images, _ = read_image_folders([train_folder], crop=spec["crop"])
    print(f"{args.script}: {train_count} training images in {train_folder}, "
          f"{len(held_out)} held out from {source}", flush=True)

    if args.score_only:
        for run_dir in args.score_only:
            seed = json.loads((Path(run_dir) / "args.json").read_text())["seed"]
            epochs = len(read_history(Path(run_dir) / "history.csv"))
            print(json.dumps({"run": run_dir, "epochs": epochs,
                              **evaluate(spec["file"], run_dir, train_images, held_out,
                                         args.num_generated, seed)}), flush=True)
        return

    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for config in args.configs:
        policy, adaptive, extra = parse_config(config)
        for seed in args.repeats:
            safe = config.replace(",", "-").replace("+", "_").replace("@", "_").replace("=", "")
            run_dir = work / "runs" / f"{safe}_seed{seed}"
            command = ([sys.executable, str(ROOT / spec["file"])] + data_flags +
                       ["--out-dir", str(run_dir), "--max-steps", str(args.steps),
                        "--checkpoint-every", "1000", "--sample-every", "1000",
                        "--seed", str(seed), "--augment", policy or "none",
                        "--no-download"] +
                       (["--augment-adaptive"] if adaptive else []) +
                       (["--batch-size", str(args.batch_size)] if args.batch_size else []) +
                       extra)
            if args.nice:
                command = ["nice", "-n", str(args.nice)] + command
            print("$ " + " ".join(f"'{part}'" if "," in part else part for part in command),
                  flush=True)
            start = time.time()
            result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            seconds = time.time() - start
            if result.returncode != 0:
                print(result.stdout[-2000:], result.stderr[-3000:], sep="\n")
                raise SystemExit(f"error: {config} seed {seed} failed ({result.returncode})")
            history = read_history(run_dir / "history.csv")
            # The first epoch holds tracing and warm-up; leave it out when there are more.
            speeds = [float(row["images_per_sec"]) for row in history[1:] or history]
            row = {"script": args.script, "train_images": train_count, "config": config,
                   "seed": seed, "steps": args.steps, "epochs": len(history),
                   "seconds": round(seconds, 1),
                   **evaluate(spec["file"], run_dir, train_images, held_out,
                              args.num_generated, seed),
                   "images_per_sec": round(float(np.median(speeds)), 1),
                   "d_real": float(history[-1].get("d_real", "nan")),
                   "d_fake": float(history[-1].get("d_fake", "nan")),
                   "sample": last_sample(run_dir), "command": command}
            print(json.dumps({key: value for key, value in row.items() if key != "command"}),
                  flush=True)
            with open(args.log, "a") as log:
                log.write(json.dumps(row) + "\n")
            rows.append(row)

    print(f"\n| script | training images | config | steps | seconds | pixel-FID to held-out "
          f"({len(held_out)}, mean of {len(args.repeats)} seed(s)) | SWD | D's sign on "
          f"training / held-out reals | img/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for config in args.configs:
        mine = [row for row in rows if row["config"] == config]
        print(f"| {spec['file']} | {train_count} | {config} | {args.steps} | "
              f"{np.mean([row['seconds'] for row in mine]):.0f} | "
              f"{np.mean([row['pixel_fid'] for row in mine]):.2f}"
              f"{' (' + ', '.join(str(row['pixel_fid']) for row in mine) + ')' if len(mine) > 1 else ''} | "
              f"{np.mean([row['swd'] for row in mine]):.1f} | "
              f"{np.mean([row['d_sign_train'] for row in mine]):+.2f} / "
              f"{np.mean([row['d_sign_held_out'] for row in mine]):+.2f} | "
              f"{np.mean([row['images_per_sec'] for row in mine]):.1f} |")
    if not args.keep and not args.work_dir:
        shutil.rmtree(work / "images", ignore_errors=True)
        shutil.rmtree(work / args.script, ignore_errors=True)
        print(f"(run folders kept in {work / 'runs'})")


if __name__ == "__main__":
    main()
