"""Score a finished run's generator by FID and KID against its real images.

Usage:
    python -m common.evaluate runs/fashion_mnist
    python -m common.evaluate runs/faces --num 5000 --data-dir data/img_align_celeba
    python -m common.evaluate runs/old_run --dataset artworks       # args.json predates it
    python -m common.evaluate runs/faces --inception-weights \\
        ~/Downloads/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5   # offline

From a notebook cell: `main(["runs/fashion_mnist", "--num", "2000"])`.

Reads RUN_DIR/generator.keras and RUN_DIR/args.json (dataset, data and cache folders,
artists, latent size, seed, noise), reads the real images with the training script's own
reader, and prints FID, KID (mean ± std over subsets), N and where the real images came
from. The real images' Inception features are cached in RUN_DIR/inception_real.npz, the
file training with --eval-every uses too. See common/quality.py for what the numbers mean:
they compare between runs scored here, not with published FIDs.
"""

import argparse
import importlib
import json
import math
import sys
from pathlib import Path

# The generator is loaded and checked as common.generate does; its int flag type loads no
# TensorFlow, so a typo is reported at once.
from common.generate import load_generator, whole_number

ROOT = Path(__file__).resolve().parent.parent  # The repo root, which holds the scripts.
DATASETS = ("fashion_mnist", "faces", "animals", "artworks")
DEFAULT_ARTISTS = ["Rembrandt"]  # train_artworks.py's default when --artist is not given.


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m common.evaluate",
        description="Score a finished run's generator.keras by FID and KID against the "
                    "real images it trained on.")
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="the run's --out-dir, holding generator.keras and args.json")
    parser.add_argument("--dataset", choices=DATASETS, default=None,
                        help="which script trained the run (default: from args.json)")
    parser.add_argument("--num", type=whole_number(2), default=10000,
                        help="generated and real images to score; fewer is faster but "
                             "biased upward, so compare only equal N (default: %(default)s)")
    parser.add_argument("--data-dir", default=None,
                        help="where the real images are (default: the run's, from args.json)")
    parser.add_argument("--inception-weights", default="imagenet", metavar="PATH",
                        help="InceptionV3 weights: 'imagenet' (Keras downloads them once "
                             "into ~/.keras/models) or a weights file (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None,
                        help="chooses the real subset and the noise (default: the run's seed)")
    parser.add_argument("--batch-size", type=whole_number(1), default=50,
                        help="images per Inception batch (default: %(default)s)")
    return parser


# --- The run ------------------------------------------------------------------------------


def read_run(run_dir, dataset=None):
    """The run's saved arguments with "dataset" filled in; ValueError on what is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run folder {run_dir} does not exist; pass the --out-dir of a "
                         f"training run")
    if not (run_dir / "generator.keras").is_file():
        raise ValueError(f"{run_dir} has no generator.keras; a run writes it at the end of "
                         f"its first epoch")
    saved = {}
    path = run_dir / "args.json"
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read {path} ({_one_line(error)}); fix it, or pass "
                             f"--dataset and --data-dir") from None
        if not isinstance(saved, dict):
            raise ValueError(f"{path} is not a JSON object; fix it, or pass --dataset")
    dataset = dataset or saved.get("dataset")
    if dataset is None:
        raise ValueError(f"{run_dir} does not say which data set trained it (no \"dataset\" in "
                         f"args.json); pass --dataset {'|'.join(DATASETS)}")
    if dataset not in DATASETS:
        raise ValueError(f"args.json names an unknown dataset {dataset!r}; pass --dataset "
                         f"{'|'.join(DATASETS)}")
    return {**saved, "dataset": dataset}


def _one_line(error):
    return " ".join(str(error).split())


def training_script(dataset):
    """The module train_<dataset>, imported from the repo root."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"train_{dataset}")


def read_real_images(script, saved, data_dir=None):
    """The run's real images as uint8 (N, H, W, C), and where they came from, read by the
    training script's own reader. ValueError (one line) on bad data."""
    data_dir = data_dir if data_dir is not None else saved.get("data_dir")
    if saved["dataset"] == "fashion_mnist":
        return script.read_train_images(data_dir)
    if data_dir is None:  # Only runs from before data_dir was saved: the script's default.
        data_dir = script.build_parser().get_default("data_dir")
    cache_dir = saved.get("cache_dir")
    if saved["dataset"] == "artworks":
        images, _, source = script.read_images(data_dir, saved.get("artist") or DEFAULT_ARTISTS,
                                               cache_dir)
    else:
        images, _, source = script.read_images(data_dir, cache_dir)
    return images, source


def noise_sampler(script, saved, latent_dim):
    """`sample_noise(count, seed_pair)` drawing the run's noise: faces may be uniform."""
    if saved["dataset"] == "faces":
        distribution = saved.get("noise", "uniform")  # train_faces.py's default.
        return lambda count, seed: script.sample_noise(count, latent_dim, seed, distribution)
    return lambda count, seed: script.sample_noise(count, latent_dim, seed)


# --- Main ---------------------------------------------------------------------------------


def evaluate(run_dir, dataset=None, num=10000, data_dir=None, inception_weights="imagenet",
             seed=None, batch_size=50):
    """Score the run in `run_dir`; returns {"fid", "kid", "kid_std", "count", "source"}.
    Raises ValueError with a one-line message on every user error."""
    run_dir = Path(run_dir)
    saved = read_run(run_dir, dataset)  # Before TensorFlow loads: bad paths fail at once.
    from common.quality import QualityMeter  # Imports TensorFlow: seconds.

    generator, latent_dim, _ = load_generator(run_dir)  # Checked to map noise to images.
    script = training_script(saved["dataset"])
    try:
        images, source = read_real_images(script, saved, data_dir)
    except ValueError as error:
        if data_dir is None:  # The folder came from args.json: say so, and how to override.
            raise ValueError(f"{error} (the run's data folder, from {run_dir / 'args.json'}; "
                             f"pass --data-dir to read the images elsewhere)") from None
        raise
    if seed is None:
        seed = int(saved.get("seed", 0))
    meter = QualityMeter(images, num, run_dir / "inception_real.npz", inception_weights, seed,
                         batch_size=batch_size)
    scores = meter.measure(generator, noise_sampler(script, saved, latent_dim))
    return {**scores, "source": source}


def main(argv=None):
    if argv is None:  # In a notebook kernel sys.argv is the kernel's, not ours.
        argv = [] if "ipykernel" in sys.modules else sys.argv[1:]
    args = build_parser().parse_args([str(value) for value in argv])
    try:
        scores = evaluate(args.run_dir, args.dataset, args.num, args.data_dir,
                          args.inception_weights, args.seed, args.batch_size)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    if not all(math.isfinite(scores[name]) for name in ("fid", "kid", "kid_std")):
        raise SystemExit(f"error: the scores are not finite ({scores['fid']}, "
                         f"{scores['kid']}); the generator's images hold NaN or inf")
    print(f"FID {scores['fid']:.6g}")
    print(f"KID {scores['kid']:.6g} ± {scores['kid_std']:.6g}")
    print(f"N {scores['count']} generated and {scores['count']} real images; real images "
          f"from {scores['source']}")
    return scores


if __name__ == "__main__":
    main()
