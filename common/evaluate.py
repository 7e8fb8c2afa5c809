"""Score a finished run's generator against its real images: FID and KID, FCD, or SWD.

Usage:
    python -m common.evaluate runs/fashion_mnist
    python -m common.evaluate runs/faces --num 5000
    python -m common.evaluate runs/animals --data-dir afhq/train/cat   # other real images
    python -m common.evaluate runs/faces --inception-weights \\
        ~/Downloads/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5   # offline

From a notebook cell: `main(["runs/fashion_mnist", "--num", "2000"])`.

Reads RUN_DIR/generator.keras and RUN_DIR/args.json, which records where the run's real
images came from and how they were read (an idx file, or image folders with their crop),
and the noise its generator takes; so it needs no training script. Prints one line saying
which scores it gives, then each: FCD for a Fashion-MNIST run (in the features of the
shipped classifier: no download), FID and KID (mean ± std over subsets) when InceptionV3's
weights can be had, and for a 64px run without them SWD instead; then N and where the real
images came from. The real images' features are cached in RUN_DIR (inception_real.npz,
classifier_real.npz), the files training with --eval-every uses too. See common/quality.py
for what the numbers mean: they compare between runs scored here, not with published FIDs.
"""

import argparse
import math
import sys
from pathlib import Path

# The generator is loaded and checked as common.generate does; its int flag type loads no
# TensorFlow, so a typo is reported at once.
from common.errors import exit_with, user_errors
from common.flag_types import whole_number
from common.generate import draw_noise, load_generator, read_run_args


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m common.evaluate",
        description="Score a finished run's generator.keras against the real images it "
                    "trained on: FID and KID, FCD (Fashion-MNIST) or SWD (64px, offline).")
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="the run's --out-dir, holding generator.keras and args.json")
    parser.add_argument("--num", type=whole_number(2), default=10000,
                        help="generated and real images to score; fewer is faster but "
                             "biased upward, so compare only equal N (default: %(default)s)")
    parser.add_argument("--data-dir", default=None,
                        help="real images to compare with: a folder of images (or of "
                             "Fashion-MNIST idx files) instead of the run's own")
    parser.add_argument("--inception-weights", default="imagenet", metavar="PATH",
                        help="InceptionV3 weights for FID and KID: 'imagenet' (Keras "
                             "downloads them once into ~/.keras/models; without them a 64px "
                             "run gets SWD) or a weights file, which must load "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None,
                        help="chooses the real subset and the noise (default: the run's seed)")
    parser.add_argument("--batch-size", type=whole_number(1), default=50,
                        help="images per Inception batch (default: %(default)s)")
    return parser


# --- The run ------------------------------------------------------------------------------


def read_run(run_dir):
    """The run's saved arguments; ValueError on what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run folder {run_dir} does not exist; pass the --out-dir of a "
                         f"training run")
    if not (run_dir / "generator.keras").is_file():
        raise ValueError(f"{run_dir} has no generator.keras; a run writes it at the end of "
                         f"its first epoch")
    return read_run_args(run_dir / "args.json")


def read_real_images(saved, data_dir=None):
    """The real images as uint8 (N, H, W, C), and where they came from: those args.json
    records (`data_source`), or the ones in `data_dir`. ValueError (one line) on bad data."""
    from common.idx import read_idx_images
    from common.image_data import read_source
    source = saved.get("data_source") or {}
    if data_dir is not None:
        folder = Path(data_dir)
        idx = sorted(folder.glob("train-images-idx3-ubyte*")) if folder.is_dir() else []
        if idx:
            return read_idx_images(idx[0]), str(idx[0])
        if not folder.is_dir():
            raise ValueError(f"--data-dir {folder} does not exist; pass a folder of images")
        if "idx" in source:  # A 28px run is compared with idx files, not a folder of images.
            raise ValueError(f"--data-dir {folder} has no train-images-idx3-ubyte file; "
                             f"pass the folder holding Fashion-MNIST's idx files")
        source = {"size": 64, "crop": 1.0, **source, "folders": [str(folder)],
                  "cache_dir": None}
    if "idx" in source:
        return read_idx_images(source["idx"]), source["idx"]
    if "folders" not in source:
        raise ValueError("args.json does not say where the run's images came from (a run "
                         "from before that was recorded); pass --data-dir")
    # With the run's own name and --cache-dir: its decoded cache is read, not made again.
    return read_source({"size": 64, "crop": 1.0, **source}), " + ".join(source["folders"])


# --- Main ---------------------------------------------------------------------------------


def evaluate(run_dir, num=10000, data_dir=None, inception_weights="imagenet", seed=None,
             batch_size=50):
    """Score the run in `run_dir`; returns its scores by name ("fcd"; "fid", "kid",
    "kid_std"; or "swd": see common.quality.make_meter), "count" and "source". Raises
    ValueError with a one-line message on every user error."""
    run_dir = Path(run_dir)
    saved = read_run(run_dir)  # Before TensorFlow loads: bad paths fail at once.
    from common.quality import make_meter  # Imports TensorFlow: seconds.
    import numpy as np

    # Checked to map noise to images; the noise's distribution comes from args.json.
    generator, latent_dim, distribution = load_generator(run_dir)
    try:
        images, source = read_real_images(saved, data_dir)
    except ValueError as error:
        if data_dir is None:  # The folder came from args.json: say so, and how to override.
            raise ValueError(f"{error} (the run's data folder, from {run_dir / 'args.json'}; "
                             f"pass --data-dir to read the images elsewhere)") from None
        raise
    if seed is None:
        seed = int(saved.get("seed", 0))
    # A weights file the user named must load; the default download may fail (offline).
    meter = make_meter(images, num, run_dir, inception_weights, seed,
                       required=inception_weights != "imagenet", batch_size=batch_size)

    def sample_noise(count, seed_pair):
        rng = np.random.default_rng([int(value) % 2**32 for value in seed_pair])
        return draw_noise(distribution, int(count), latent_dim, rng)

    scores = meter.measure(generator, sample_noise)
    return {**scores, "source": source}


def main(argv=None):
    if argv is None:  # In a notebook kernel sys.argv is the kernel's, not ours.
        argv = [] if "ipykernel" in sys.modules else sys.argv[1:]
    args = build_parser().parse_args([str(value) for value in argv])
    with user_errors():
        scores = evaluate(args.run_dir, args.num, args.data_dir, args.inception_weights,
                          args.seed, args.batch_size)
    values = {name: value for name, value in scores.items() if name not in ("count", "source")}
    if not all(math.isfinite(value) for value in values.values()):
        exit_with(f"the scores are not finite ({', '.join(map(str, values.values()))}); "
                  f"the generator's images hold NaN or inf")
    for name in ("fcd", "fid", "swd"):
        if name in scores:
            print(f"{name.upper()} {scores[name]:.6g}")
        if name == "fid" and "kid" in scores:
            print(f"KID {scores['kid']:.6g} ± {scores['kid_std']:.6g}")
    print(f"N {scores['count']} generated and {scores['count']} real images; real images "
          f"from {scores['source']}")
    return scores


if __name__ == "__main__":
    main()
