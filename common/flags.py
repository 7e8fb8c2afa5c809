"""The command line every script shares (docs/reference.md lists it), and how a resumed run's
saved flags meet the ones typed now."""

import argparse
import os
import sys

from common.devices import add_device_arguments
from common.download import add_download_argument
from common.flag_types import (count, every, folder, fraction, positive_float, positive_int,
                               probability, whole_number)

# --ema's default decay: see BENCHMARKS.md "EMA of the generator" for the measurement.
EMA_DECAY = 0.99
# How often each --augment transform applies: DiffAugment's 1 (always) taught these DCGANs
# to tile one motif over the image; half the time did not (BENCHMARKS.md).
AUGMENT_PROBABILITY = 0.5
# What a run saved before a flag existed was trained with: resuming it keeps that (for the
# scripts that have the flag), not today's default. Runs saved before #16 have no
# augmentation; artworks runs saved before 2026-12-01 have the seed's layers.
BEFORE_THE_FLAG = {"augment": "none", "augment_adaptive": False, "augment_probability": 1.0,
                   "seed_layers": True}
# Flags a resumed run does not take over from args.json: how to start this invocation
# (resume, overwrite, resume_from), how long it may run (max_steps: "this invocation"),
# and the machine it runs on (precision, jit, strategy; a run may move to another machine).
NOT_RESUMED = ("resume", "overwrite", "resume_from", "max_steps", "download",
               "precision", "jit", "strategy")
# Bounds that keep a typo from asking for terabytes: a latent vector of 100 million floats
# is a 40 GB first layer. Far above anything a DCGAN uses.
MAX_LATENT_DIM = 4096
MAX_BATCH_SIZE = 65536
MAX_SEED = 2**31 - 1  # TensorFlow and NumPy seeds must fit in a signed 32-bit integer.
# Flags that shape the models (or the noise they take): a resumed run cannot change them,
# as its checkpoint holds weights of that shape. Only those a script has are checked.
FIXED = ("latent_dim", "noise", "seed_layers")


def parse_args(parser, argv=None):
    """Parse `argv` and return (args, the set of flags the user gave explicitly).

    With argv=None the command line is read, except inside a notebook kernel (Colab,
    Jupyter), whose own argv (`-f kernel.json`) is not meant for us: there it means [].
    A bad flag is one line (`error: ...`) and exit status 2; the usage stays on --help.
    """
    if argv is None:
        argv = [] if "ipykernel" in sys.modules else sys.argv[1:]
    argv = [str(value) for value in argv]
    parser.error = lambda message: _one_line_error(parser, message)
    args = parser.parse_args(argv)
    # argparse fills in a default only for names missing from the namespace it is given,
    # so parsing again over a namespace of sentinels shows which flags were typed.
    probe = argparse.Namespace(**{name: _UNSET for name in vars(args)})
    explicit = {name for name, value in vars(parser.parse_args(argv, probe)).items()
                if value is not _UNSET}
    return args, explicit


def _one_line_error(parser, message):
    print(f"error: {message} (see {parser.prog} --help)", file=sys.stderr)
    raise SystemExit(2)


class _Unset(list):
    """A 'not typed' marker. A list, because argparse appends to a repeatable flag's
    value; it copies the marker first, so a typed repeatable flag is not the marker."""


_UNSET = _Unset()


def add_common_arguments(parser, dataset, epochs, batch_size, lr, latent_dim,
                         augment="none", adaptive=False, flip=None, download=False):
    """The flags every script has, with the script's defaults (docs/reference.md).
    `flip` adds --flip/--no-flip with that default; `download` adds --download."""
    parser.add_argument("--epochs", type=positive_int, default=epochs,
                        help="epochs to train in all, counting resumed ones (default: %(default)s)")
    parser.add_argument("--batch-size", type=whole_number(1, MAX_BATCH_SIZE),
                        default=batch_size, help="images per training step (default: %(default)s)")
    parser.add_argument("--lr", type=positive_float, default=lr,
                        help="Adam learning rate of both models; with --resume it replaces "
                             "the saved one (default: %(default)s)")
    parser.add_argument("--lr-d", type=positive_float, default=None, metavar="LR",
                        help="the discriminator's learning rate instead of --lr (two "
                             "time-scales, TTUR: Heusel et al. 2017) (default: --lr)")
    parser.add_argument("--lr-g", type=positive_float, default=None, metavar="LR",
                        help="the generator's learning rate instead of --lr (default: --lr)")
    parser.add_argument("--beta-1", type=fraction, default=0.5, metavar="B",
                        help="Adam's beta_1 for both models; DCGAN's 0.5 damps the momentum "
                             "that makes GANs oscillate (default: %(default)s)")
    parser.add_argument("--beta-2", type=fraction, default=0.999, metavar="B",
                        help="Adam's beta_2 for both models (default: %(default)s)")
    parser.add_argument("--init", choices=("keras", "dcgan"), default="keras",
                        help="a new run's weights: Keras' defaults (Glorot uniform) or "
                             "DCGAN's N(0, 0.02) (default: %(default)s)")
    parser.add_argument("--latent-dim", type=whole_number(1, MAX_LATENT_DIM),
                        default=latent_dim,
                        help="length of the generator's noise vector (default: %(default)s)")
    parser.add_argument("--seed", type=whole_number(0, MAX_SEED), default=0,
                        help="random seed for weights, noise and shuffling (default: %(default)s)")
    parser.add_argument("--data-dir", type=folder, default=None,
                        help="where the dataset is (default: see the README)")
    parser.add_argument("--out-dir", type=folder, default=os.path.join("runs", dataset),
                        help="where samples, plots, checkpoints and the generator go "
                             "(default: %(default)s)")
    parser.add_argument("--max-steps", type=positive_int, default=None,
                        help="stop after this many training steps in this invocation (not "
                             "kept for --resume), then close the epoch normally; for tests "
                             "and benchmarks (default: no limit)")
    parser.add_argument("--sample-every", type=positive_int, default=1,
                        help="epochs between sample grids; the last epoch always gets one "
                             "(default: %(default)s)")
    parser.add_argument("--gif-frames", type=whole_number(2, 10000), default=100,
                        help="most frames progress.gif keeps, spread evenly over the run, "
                             "the newest last (default: %(default)s)")
    parser.add_argument("--checkpoint-every", type=every, default=[5.0, "minutes"],
                        metavar="N|Nm",
                        help="save the checkpoint and generator.keras every N epochs, or at "
                             "most every N minutes with an m (e.g. 10m); always at the last "
                             "epoch, Ctrl-C and --max-steps (default: 5m)")
    parser.add_argument("--augment", default=augment, metavar="POLICY",
                        help="differentiable augmentation of every image D sees, real and "
                             "generated: a comma list of color, translation, cutout, or none "
                             "(default: %(default)s)")
    parser.add_argument("--augment-probability", type=probability,
                        default=AUGMENT_PROBABILITY, metavar="P",
                        help="the chance each --augment transform is applied to each image; "
                             "1 is DiffAugment's 'always' (default: %(default)s)")
    parser.add_argument("--augment-adaptive", action=argparse.BooleanOptionalAction,
                        default=adaptive,
                        help="tune that chance (p in [0, 1]) from how sure D is on real "
                             "images, as ADA does, instead of --augment-probability "
                             "(default: %(default)s)")
    parser.add_argument("--ema", type=fraction, default=EMA_DECAY, metavar="DECAY",
                        help="keep a moving average of the generator's weights with this decay "
                             "and use it for samples, generator.keras and FID/KID; 0 turns it "
                             "off (default: %(default)s)")
    parser.add_argument("--ema-rampup", type=fraction, default=0.0, metavar="R",
                        help="early in a run the average's half-life is at most R x the "
                             "steps taken (StyleGAN2's warm-up: 0.05); 0 lowers the decay "
                             "as tf.train.ExponentialMovingAverage does (default: %(default)s)")
    parser.add_argument("--eval-every", type=count, default=0, metavar="EPOCHS",
                        help="score the samples against the real images every this many "
                             "epochs (FID and KID; FCD for Fashion-MNIST; SWD when the "
                             "Inception weights are missing), into history.csv and "
                             "quality.png; 0 never (default: %(default)s)")
    parser.add_argument("--eval-count", type=whole_number(2, 1_000_000), default=10000,
                        metavar="N",
                        help="generated and real images per score (SWD takes at most 2,048); "
                             "fewer is faster but biased upward (default: %(default)s)")
    parser.add_argument("--inception-weights", default="imagenet", metavar="PATH",
                        help="InceptionV3 weights for FID/KID: 'imagenet' (Keras downloads "
                             "them once) or a weights file; without them FCD or SWD only "
                             "(default: %(default)s)")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also log the epoch's numbers and sample grid for TensorBoard "
                             "under OUT_DIR/tensorboard")
    if flip is not None:
        parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=flip,
                            help="flip each image left-right at random (default: %(default)s)")
    if download:
        add_download_argument(parser)
    add_device_arguments(parser)
    # Not flags: args.json records which script made the run and its noise, so a run is
    # resumed only by its own script and common.generate draws the right noise.
    parser.set_defaults(dataset=dataset, noise="normal")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue the run in --out-dir from its latest checkpoint "
                            "(starts one if there is none)")
    start.add_argument("--overwrite", action="store_true",
                       help="delete the run in --out-dir and start over")
    start.add_argument("--resume-from", type=positive_int, default=None, metavar="EPOCH",
                       help="continue the run in --out-dir from the checkpoint of this earlier "
                            "epoch (after a collapse); what came after it is moved to "
                            "OUT_DIR/rolled_back/, not deleted")
    parser.add_argument("--keep-checkpoints", type=whole_number(1, 1000), default=3,
                        metavar="N", help="keep the last N checkpoints (default: %(default)s)")
    parser.add_argument("--on-collapse", choices=("warn", "stop"), default="warn",
                        help="when the health check sees training go wrong (D wins, mode "
                             "collapse, divergence): warn and go on, or save and stop with "
                             "exit status 1 (default: %(default)s)")


def merge_resumed_args(args, explicit, saved, fixed=FIXED, parser=None):
    """On --resume, the saved run's arguments win except for flags typed this time.

    So `--resume` alone continues with the original settings and `--resume --epochs 200`
    extends the run. Flags in `fixed` shape the models and cannot change. With `parser`,
    each saved value goes through its flag's own check, as if typed. Raises ValueError when
    args.json belongs to another script or holds values of the wrong type or out of range.
    """
    if not isinstance(saved, dict):
        raise ValueError("args.json does not hold the run's arguments (not a JSON object); "
                         "fix it, or pass --overwrite to start over")
    if saved.get("dataset", args.dataset) != args.dataset:
        raise ValueError(
            f"{args.out_dir} holds a run of train_{saved['dataset']}.py, not of "
            f"train_{args.dataset}.py; resume it with that script, or choose another --out-dir")
    for name in fixed:
        if name in explicit and hasattr(args, name) and getattr(args, name) != saved.get(
                name, BEFORE_THE_FLAG.get(name, getattr(args, name))):
            flag = "--" + name.replace("_", "-")
            if isinstance(getattr(args, name), bool):  # A switch: say what it is.
                raise ValueError(
                    f"{flag} shapes the models, and the run being resumed was trained "
                    f"{'without' if getattr(args, name) else 'with'} it; drop {flag} or "
                    f"choose another --out-dir")
            raise ValueError(
                f"{flag} {getattr(args, name)} does not match the run being resumed "
                f"({flag} {saved[name]}); drop {flag} or choose another --out-dir")
    for name, value in saved.items():
        if name in explicit or name in NOT_RESUMED or not hasattr(args, name):
            continue
        default = getattr(args, name)
        if not _same_kind(value, default):
            raise ValueError(
                f"args.json in {args.out_dir} has {name} = {value!r}, which is not a "
                f"{type(default).__name__}; fix that line, or pass --overwrite to start over")
        setattr(args, name, _checked_as_typed(parser, name, value, args.out_dir))
    for name, value in BEFORE_THE_FLAG.items():
        if name not in saved and name not in explicit and hasattr(args, name):
            setattr(args, name, value)
    return args


def _checked_as_typed(parser, name, value, out_dir):
    """`value` from args.json, through the check its flag's type makes of typed text (a
    seed of -1 or --gif-frames 1 is refused here as it would be on the command line)."""
    action = next((action for action in parser._actions if action.dest == name), None) \
        if parser is not None else None
    if action is None or value is None or action.type is None and not action.choices:
        return value  # Switches and free text: _same_kind has checked them.
    text = str(value)
    if isinstance(value, list) and len(value) == 2 and value[1] in ("epochs", "minutes"):
        text = f"{value[0]}" + ("m" if value[1] == "minutes" else "")  # --checkpoint-every
    try:
        checked = action.type(text) if action.type else value
        if action.choices and checked not in action.choices:
            raise ValueError(f"choose from {', '.join(map(str, action.choices))}")
        return checked
    except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
        raise ValueError(f"args.json in {out_dir} has {name} = {value!r}, which "
                         f"{action.option_strings[0]} refuses ({error}); fix that line, or "
                         f"pass --overwrite to start over") from None


def _same_kind(value, default):
    """Whether a value read from args.json can stand where `default` stood."""
    if default is None or value is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))
