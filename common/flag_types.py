"""argparse types for every command's flags: each turns text into a value or says in one
line what is wrong. Nothing here loads TensorFlow, so a typo is reported at once."""

import argparse
import re


def whole_number(minimum=1, maximum=None, why=""):
    """argparse type: a whole number in [minimum, maximum]; `why` says why the maximum
    (e.g. " (seeds are 32-bit)")."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:  # Also for more than 4,300 digits (Python's int() limit).
            shown = text if len(text) <= 30 else text[:27] + "..."
            raise argparse.ArgumentTypeError(f"must be a whole number, got {shown!r}") from None
        shown = value if len(str(value)) <= 30 else f"a {len(str(value))}-digit number"
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:,}, got {shown}")
        if maximum is not None and value > maximum:
            shown = f"{value:,}" if isinstance(shown, int) else shown
            raise argparse.ArgumentTypeError(f"must be at most {maximum:,}{why}, got {shown}")
        return value
    return parse


positive_int = whole_number(1)
count = whole_number(0)  # Intervals where 0 means "never".


def positive_float(text):
    """argparse type for rates that must be finite and above 0."""
    value = _number(text, float, "a number")
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def probability(text):
    """argparse type for a probability in [0, 1]."""
    value = _number(text, float, "a number")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


def fraction(text):
    """argparse type for a decay in [0, 1) (--ema)."""
    value = _number(text, float, "a number")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def folder(text):
    """argparse type for a path: an empty one would silently mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; give a folder path (\".\" for this one)")
    return text


def every(text):
    """argparse type for --checkpoint-every: "3" (epochs) or "5m" / "0.5min" (minutes).
    Returns [number, "epochs" or "minutes"], the form args.json keeps."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(m|min|minutes?)?\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a number of epochs (e.g. 5) or of minutes (e.g. 10m), got {text!r}")
    if match.group(2):
        return [float(match.group(1)), "minutes"]
    if not float(match.group(1)).is_integer():
        raise argparse.ArgumentTypeError(f"epochs must be whole, got {text!r} (minutes: "
                                         f"add m, e.g. {text}m)")
    return [int(float(match.group(1))), "epochs"]


def _number(text, kind, what):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
