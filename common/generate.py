"""Draw new images from a trained generator: a grid, one PNG per image, or a latent walk GIF.

    python -m common.generate runs/fashion_mnist                  # 64 images -> grid.png
    python -m common.generate runs/faces --num 16 --seed 3 --out faces.png
    python -m common.generate runs/animals --individual samples   # samples/0000.png, ...
    python -m common.generate runs/faces --num 9 --interpolate 30 # 9 looping walks -> walk.gif
    python -m common.generate my_models/generator.keras --noise uniform

From a notebook: `from common.generate import main; main(["runs/faces", "--num", "16"])`.
SOURCE is a run folder (a training script's --out-dir) or a .keras file; the args.json
beside the model tells which noise the generator was trained on. The same --seed gives
the same pictures, and no existing file is replaced without --overwrite.
"""

import argparse
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from common.errors import exit_with, user_errors
from common.flag_types import whole_number

BATCH_SIZE = 256  # Images per generator call: any --num fits in memory.
# Limits of the flags, so a typo (--num 1000000000) is one line, not a MemoryError.
MAX_IMAGES = 100_000  # --individual: written BATCH_SIZE at a time; more: run again, --seed.
MAX_GRID = 4_096  # One grid.png: 64x64 images, all held at once; more is not viewable.
MAX_WALKS = 64  # --interpolate: walks side by side in each GIF frame (an 8x8 grid).
MAX_FRAMES = 1_000  # --points x --interpolate: the GIF writer keeps every frame in memory.
MAX_SEED = 2**32 - 1  # NumPy's and Keras' seeds are 32-bit, as are the training scripts'.


class GenerateError(ValueError):
    """A problem the user can fix; main() prints it as one line, without a traceback.
    A ValueError, as common.evaluate, which loads generators here too, reports those."""


# --- Noise and latent walks ---------------------------------------------------------------


def draw_noise(distribution, count, latent_dim, rng):
    """`count` noise vectors as the generator saw them in training: float32 (count, latent_dim)."""
    if distribution == "uniform":
        return rng.uniform(-1.0, 1.0, (count, latent_dim)).astype(np.float32)
    return rng.standard_normal((count, latent_dim), dtype=np.float32)


def lerp(a, b, t):
    """The straight line from a (t=0) to b (t=1); it stays inside any box holding a and b."""
    return (1.0 - t) * np.asarray(a, np.float64) + t * np.asarray(b, np.float64)


def slerp(a, b, t):
    """Spherical interpolation from a (t=0) to b (t=1) along the last axis.

    High-dimensional normal noise lies near a sphere; a straight line between two points
    cuts through its inside, where the generator saw no noise, and fades the images out.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=-1, keepdims=True) * np.linalg.norm(b, axis=-1, keepdims=True)
    omega = np.arccos(np.clip(np.sum(a * b, axis=-1, keepdims=True) / np.maximum(norms, 1e-12),
                              -1.0, 1.0))
    sine = np.sin(omega)
    # (Anti)parallel vectors have no single great circle between them; a line does as well.
    curved = sine > 1e-6
    sine = np.where(curved, sine, 1.0)
    weight_a = np.where(curved, np.sin((1.0 - t) * omega) / sine, 1.0 - t)
    weight_b = np.where(curved, np.sin(t * omega) / sine, t)
    return weight_a * a + weight_b * b


def latent_walk(points, steps, distribution):
    """Frames of a loop through `points` (K, count, latent_dim): `steps` frames from each
    point to the next and from the last back to the first, so the GIF loops seamlessly.
    Returns float32 (K * steps, count, latent_dim); frame k * steps is points[k]."""
    interpolate = lerp if distribution == "uniform" else slerp
    frames = [interpolate(start, end, step / steps)
              for start, end in zip(points, np.roll(points, -1, axis=0))
              for step in range(steps)]
    return np.stack(frames).astype(np.float32)


# --- The generator ------------------------------------------------------------------------


def load_generator(source, noise="auto"):
    """The model in `source` (a run folder or a .keras file), checked to be a generator.
    Returns (model, latent_dim, distribution); distribution comes from args.json unless
    `noise` names one."""
    source = Path(source)
    model_path = source / "generator.keras" if source.is_dir() else source
    if not source.exists():
        raise GenerateError(f"{source} does not exist; pass a run folder (a training "
                            f"script's --out-dir) or a .keras file")
    if not model_path.is_file():
        raise GenerateError(f"{source} has no generator.keras; pass the --out-dir of a "
                            f"finished run or the path of a .keras file")
    saved = read_run_args(model_path.parent / "args.json")

    # Keras calls a .keras file that is no zip archive "not found"; say what is wrong.
    if model_path.suffix == ".keras" and not zipfile.is_zipfile(model_path):
        raise GenerateError(f"{model_path} is not a Keras model: not a complete .keras zip "
                            f"archive (truncated, or another kind of file); pass the "
                            f"generator.keras a finished training run wrote")
    import keras  # Here, not at the top: a typo in a flag is reported without TensorFlow.
    try:
        model = keras.saving.load_model(model_path, compile=False)
        input_shape, output_shape = tuple(model.input_shape), tuple(model.output_shape)
    except Exception as error:
        reason = (str(error).strip().splitlines() or [""])[0].split(". ")[0][:200]
        raise GenerateError(f"cannot load {model_path} as a Keras model ({type(error).__name__}"
                            f": {reason}); pass the generator.keras a training run wrote")
    flat_input = len(input_shape) == 2 and isinstance(input_shape[1], int)
    image_output = len(output_shape) == 4 and output_shape[3] in (1, 3)
    if not (flat_input and image_output):
        raise GenerateError(f"{model_path} is not a generator: it maps {input_shape} to "
                            f"{output_shape}, not noise (None, latent_dim) to images "
                            f"(None, H, W, 1 or 3); pass the run's generator.keras")
    latent_dim = input_shape[1]
    if saved.get("latent_dim", latent_dim) != latent_dim:
        raise GenerateError(f"{model_path} takes noise of length {latent_dim} but args.json "
                            f"beside it says latent_dim {saved['latent_dim']}; they belong to "
                            f"different runs: keep a run's files together")
    distribution = noise if noise != "auto" else saved.get("noise", "normal")
    if distribution not in ("normal", "uniform"):
        raise GenerateError(f"args.json beside {model_path} names noise {distribution!r}; "
                            f"pass --noise normal or --noise uniform")
    return model, latent_dim, distribution


def read_run_args(path):
    """The run's arguments from args.json, or {} when there is none (a bare .keras file)."""
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GenerateError(f"cannot read {path} ({error}); fix it, or move it away and "
                            f"pass --noise") from None
    if not isinstance(saved, dict):
        raise GenerateError(f"{path} holds no run arguments; move it away and pass --noise")
    return saved


def generate(model, noise):
    """The generator's images in [-1, 1] for each noise row, float32 (N, H, W, C)."""
    return np.concatenate([np.asarray(model(noise[start:start + BATCH_SIZE], training=False),
                                      np.float32)
                           for start in range(0, len(noise), BATCH_SIZE)])


# --- Writing ------------------------------------------------------------------------------


def individual_paths(folder, count):
    digits = max(4, len(str(count - 1)))  # 0000.png ...; wider only past 10,000 images.
    return [Path(folder) / f"{index:0{digits}d}.png" for index in range(count)]


def write_individual(images, paths):
    import imageio.v3 as iio

    from common.files import atomic_write
    # The same mapping as common.plotting.image_grid; grayscale is saved as a 2-D PNG.
    pixels = np.clip((images + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    for image, path in zip(pixels, paths):
        image = image[..., 0] if image.shape[-1] == 1 else image
        atomic_write(path, lambda temporary: iio.imwrite(temporary, image, extension=".png"))


def write_walk(model, walk, path, milliseconds_per_frame=100):
    from PIL import Image

    from common.plotting import image_grid
    from common.files import atomic_write
    # One generator call and one grid per frame, made a picture as the GIF writer asks for
    # it: memory holds one frame's images, and the frames as Pillow's GIF writer keeps them
    # (a byte a pixel), never every frame's images at once. (imageio's writer, which this
    # matches byte for byte, would stack all the frames first.)
    frames = (Image.fromarray(image_grid(generate(model, noise))) for noise in walk)

    def write(temporary):
        next(frames).save(temporary, format="GIF", save_all=True, append_images=frames,
                          duration=milliseconds_per_frame, loop=0)
    atomic_write(path, write)


# --- Command line -------------------------------------------------------------------------


class OneLineParser(argparse.ArgumentParser):
    """Reports a bad flag in one line (argparse would print its usage first)."""

    def error(self, message):
        exit_with(f"{message} (see python -m common.generate --help)")


def make_parser():
    parser = OneLineParser(prog="python -m common.generate", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", metavar="SOURCE",
                        help="a run folder (a training script's --out-dir) or a .keras file")
    parser.add_argument("--num", type=whole_number(
                            1, MAX_IMAGES, " (for more, run again with another --seed)"),
                        default=64,
                        help=f"images, or side-by-side walks with --interpolate: at most "
                             f"{MAX_GRID:,} in a grid, {MAX_IMAGES:,} with --individual, "
                             f"{MAX_WALKS} walks (default: %(default)s)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", default=None,
                       help="the grid PNG, or the GIF with --interpolate "
                            "(default: grid.png, or walk.gif with --interpolate)")
    where.add_argument("--individual", metavar="DIR", default=None,
                       help="write one PNG per image, DIR/0000.png, ..., instead of a grid")
    frames = f" (a GIF holds at most {MAX_FRAMES:,} frames)"
    parser.add_argument("--interpolate", metavar="STEPS", type=whole_number(1, MAX_FRAMES, frames),
                        default=None,
                        help="write a looping GIF latent walk with STEPS frames from each "
                             "point to the next; --points x STEPS is at most "
                             f"{MAX_FRAMES:,} frames (default: no walk, still images)")
    parser.add_argument("--points", type=whole_number(2, MAX_FRAMES, frames), default=4,
                        help="random latent points each walk visits before it returns to "
                             "its first (default: %(default)s)")
    parser.add_argument("--seed", type=whole_number(0, MAX_SEED, " (seeds are 32-bit)"),
                        default=0,
                        help="random seed of the noise, 0 to 2**32-1; the same seed gives "
                             "the same pictures (default: %(default)s)")
    parser.add_argument("--noise", choices=("auto", "normal", "uniform"), default="auto",
                        help="noise distribution (default: %(default)s: args.json's "
                             "\"noise\" if the run has one, else normal)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files that already exist (default: refuse)")
    return parser


def refuse_to_overwrite(targets, individual, overwrite):
    """Stop before loading the model, so the user is not kept waiting to be told."""
    existing = [path for path in targets if path.exists()]
    if existing and not overwrite:
        if not individual:
            exit_with(f"{existing[0]} already exists; pass --overwrite to replace it or "
                      f"choose another --out")
        exit_with(f"{existing[0]} already exists ({len(existing)} of the {len(targets)} files "
                  f"to write in {individual} do); pass --overwrite to replace them or choose "
                  f"another --individual folder")


def check_limits(parser, args, walk):
    """One line for a --num, --points or --interpolate within its own limit but too large
    for what the flags together ask for."""
    if walk and args.num > MAX_WALKS:
        parser.error(f"--num {args.num:,} with --interpolate: at most {MAX_WALKS} side-by-side "
                     f"walks fit a GIF frame; pass a smaller --num")
    if walk and args.points * args.interpolate > MAX_FRAMES:
        parser.error(f"--points {args.points:,} x --interpolate {args.interpolate:,} is "
                     f"{args.points * args.interpolate:,} frames; at most {MAX_FRAMES:,} (the "
                     f"GIF is built in memory): pass fewer")
    if not walk and not args.individual and args.num > MAX_GRID:
        parser.error(f"--num {args.num:,}: a grid of at most {MAX_GRID:,} images stays "
                     f"viewable; pass --individual DIR to write up to {MAX_IMAGES:,} single "
                     f"PNGs")


def main(argv=None):
    parser = make_parser()
    if argv is None and "ipykernel" in sys.modules:
        argv = []  # A notebook kernel's own argv (-f kernel.json) is not meant for us.
    args = parser.parse_args(None if argv is None else [str(value) for value in argv])
    if args.individual and args.interpolate:
        parser.error("--individual writes still images; drop it or --interpolate")
    walk = args.interpolate is not None
    check_limits(parser, args, walk)
    out = Path(args.out or ("walk.gif" if walk else "grid.png"))
    if not args.individual and out.suffix.lower() != (".gif" if walk else ".png"):
        parser.error(f"--out {out} must end in {'.gif' if walk else '.png'}")
    targets = individual_paths(args.individual, args.num) if args.individual else [out]
    refuse_to_overwrite(targets, args.individual, args.overwrite)
    try:
        with user_errors():  # GenerateError: a bad source or args.json.
            model, latent_dim, distribution = load_generator(args.source, args.noise)
            rng = np.random.default_rng(args.seed)
            if walk:
                points = draw_noise(distribution, args.points * args.num, latent_dim, rng)
                write_walk(model, latent_walk(points.reshape(args.points, args.num, latent_dim),
                                             args.interpolate, distribution), out)
            elif args.individual:
                # Drawn at once (the same pictures as ever for a seed), generated and written a
                # batch at a time: memory holds one batch of images, whatever --num is.
                noise = draw_noise(distribution, args.num, latent_dim, rng)
                for start in range(0, args.num, BATCH_SIZE):
                    write_individual(generate(model, noise[start:start + BATCH_SIZE]),
                                     targets[start:start + BATCH_SIZE])
            else:
                from common.plotting import save_image_grid
                noise = draw_noise(distribution, args.num, latent_dim, rng)
                save_image_grid(generate(model, noise), out)
    except OSError as error:
        place = args.individual or out
        exit_with(f"cannot write {place} ({error.strerror or error}); choose a writable "
                  f"{'--individual' if args.individual else '--out'}")
    size = "x".join(map(str, model.output_shape[1:]))
    if walk:
        what = (f"{args.num} latent walks of {size} ({args.points * args.interpolate} frames, "
                f"{'lerp' if distribution == 'uniform' else 'slerp'}, looping) to {out}")
    else:
        where = f"{targets[0]} ... {targets[-1]}" if args.individual else out
        what = f"{args.num} images of {size} to {where}"
    print(f"wrote {what} (noise: {distribution}, latent {latent_dim}, seed {args.seed})")


if __name__ == "__main__":
    main()
