"""Is the GAN going wrong? A check at each epoch's close, from what the run already has.

Three failures users meet most (the question asked most in DCGAN tutorials' trackers):
- D wins: D(x) near 1 and D(G(z)) near 0 for several epochs; G gets no useful gradient
  (a generator that cannot keep up, or a discriminator that memorised a small data set);
- mode collapse: the 64 fixed-noise samples far less varied than real images are;
- divergence: the losses leave, and stay away from, where they had settled.

Each is a pure function of the history rows (history.csv: D(x), D(G(z)), the losses, and
the `diversity` column this module measures), so a resumed run goes on with the same
state: its history is resumed. Thresholds were measured (BENCHMARKS.md, "When training
goes wrong"); `check` returns what it sees, the run says it and names a way back.
"""

import numpy as np

# D wins: both for WIN_EPOCHS epochs in a row.
WIN_REAL, WIN_FAKE, WIN_EPOCHS = 0.9, 0.1, 3
# Collapse: the samples' diversity, as a fraction of real images' (see `diversity`), below
# COLLAPSED for COLLAPSE_EPOCHS epochs in a row; or, once it had reached SETTLED, below
# FELL_TO of the best it reached.
COLLAPSED, SETTLED, FELL_TO, COLLAPSE_EPOCHS = 0.15, 0.4, 0.5, 2
# Divergence: after SETTLE_EPOCHS, a loss more than DIVERGE_FACTOR times (or DIVERGE_ADD
# above) the median of the epochs before, for DIVERGE_EPOCHS epochs in a row.
SETTLE_EPOCHS, DIVERGE_FACTOR, DIVERGE_ADD, DIVERGE_EPOCHS = 3, 2.0, 1.0, 2
# Epochs in a row a trouble lasts before it is said.
LASTS = {"d_wins": WIN_EPOCHS, "collapse": COLLAPSE_EPOCHS, "divergence": DIVERGE_EPOCHS}
# A trouble long enough to be said that comes back within this many epochs of its last bad
# one is the same trouble, not a new one: a D that wins by a little dips under the line now
# and then (600 AFHQ cats: D won at epochs 165-170, 172, 177-179, 182, 184-185 and 193-207,
# one trouble, which had been said three times; BENCHMARKS.md, "When training goes wrong").
REJOIN_EPOCHS = 10
# Judged only after this many training images (see _warmed_up).
WARMUP_IMAGES = 20000
# The size images are compared at: fine detail is noise here; the layout is what varies.
COMPARE_SIZE = 16


def spread(images, size=COMPARE_SIZE):
    """Mean distance between two of `images` (N, H, W[, C], values in [-1, 1]), compared
    at about size x size pixels, as the root mean square difference per pixel; None for
    fewer than 2 images."""
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[..., None]
    count, height, width, channels = images.shape
    if count < 2:
        return None
    # Average pooling by a whole factor: 64 px -> 16; 28 px, under twice `size`, stays whole.
    factor = max(1, min(height, width) // size)
    height, width = height // factor * factor, width // factor * factor
    pooled = images[:, :height, :width].reshape(
        count, height // factor, factor, width // factor, factor, channels).mean(axis=(2, 4))
    flat = pooled.reshape(count, -1).astype(np.float64)
    squares = (flat ** 2).sum(axis=1)
    distances = squares[:, None] + squares[None, :] - 2 * flat @ flat.T
    upper = np.triu_indices(count, 1)
    return float(np.sqrt(np.maximum(distances[upper], 0) / flat.shape[1]).mean())


def real_spread(pixels, count=64, seed=0):
    """`spread` of `count` real training images (uint8, N, H, W[, C]), drawn with `seed`."""
    chosen = np.random.default_rng(seed).choice(len(pixels), min(count, len(pixels)),
                                                replace=False)
    return spread(np.asarray(pixels[np.sort(chosen)], np.float32) / 127.5 - 1.0)


# Real images closer than this (per pixel, of a range of 2) are one picture repeated.
SAME_PICTURE = 1e-3


def diversity(samples, reference):
    """The samples' spread as a fraction of real images' (`reference`, from real_spread):
    about 1 for samples as varied as the data, 0 when all are the same picture. None when
    the real images give no yardstick (fewer than 2, or all the same picture)."""
    if reference is None or reference < SAME_PICTURE:
        return None
    return round(spread(samples) / reference, 4)


def _warmed_up(row):
    # A generator starts as one blob (diversity ~0.002 at 64 px, ~0.07 at 28 px) and D wins
    # the first steps: judged only once the run has trained on WARMUP_IMAGES images.
    return row.get("images", 0) >= WARMUP_IMAGES


def _limits(settled):
    """The loss above which an epoch has left where the `settled` epochs were."""
    if len(settled) < SETTLE_EPOCHS:
        return {}
    medians = {name: float(np.median([row[name] for row in settled]))
               for name in ("d_loss", "g_loss")}
    return {name: max(DIVERGE_FACTOR * median, median + DIVERGE_ADD)
            for name, median in medians.items()}


def _streaks_by_row(history):
    """After each row of `history`, the rows of each kind of trouble ending there (a trouble
    that returns within REJOIN_EPOCHS goes on from its earlier rows)."""
    streaks = {"d_wins": [], "collapse": [], "divergence": []}
    said = {}  # Each kind's last streak long enough to be said, to the last bad row so far.
    best, settled = 0.0, []  # The best diversity so far; the healthy rows losses settled at.
    for row in history:
        wins = _warmed_up(row) and row["d_real"] > WIN_REAL and row["d_fake"] < WIN_FAKE
        variety = row.get("diversity")
        # Below COLLAPSED only once warmed up; a fall by half once it had reached SETTLED,
        # which an untrained generator's one blob never does.
        collapsed = variety is not None and (
            (_warmed_up(row) and variety < COLLAPSED)
            or (best >= SETTLED and variety < FELL_TO * best))
        diverged = any(row[name] > limit for name, limit in _limits(settled).items())
        for kind, bad in (("d_wins", wins), ("collapse", collapsed), ("divergence", diverged)):
            if not bad:
                streaks[kind] = []
                continue
            back = said.get(kind) if not streaks[kind] else None
            if back and row["epoch"] - back[-1]["epoch"] <= REJOIN_EPOCHS:
                streaks[kind] = back  # The same trouble, back: its first epoch stays.
            streaks[kind] = streaks[kind] + [row]
            if len(streaks[kind]) >= LASTS[kind]:
                said[kind] = streaks[kind]
        if variety is not None:
            best = max(best, variety)
        if _warmed_up(row) and not diverged:
            settled.append(row)
        yield dict(streaks)


def _streaks(history):
    """The rows of each kind of trouble at the end of `history`, oldest first."""
    last = {"d_wins": [], "collapse": [], "divergence": []}
    for last in _streaks_by_row(history):
        pass
    return last


def onsets(history):
    """{kind: the epoch its trouble began} for each kind the last row of `history` is in the
    middle of, seen long enough to warn of or not yet: the run keeps a checkpoint from
    before each, so the way back still exists when the warning comes."""
    return {kind: rows[0]["epoch"] for kind, rows in _streaks(history).items() if rows}


def past_warnings(history):
    """{(kind, first epoch)} of every trouble `check` found at some row of `history`: what a
    run with this history has warned of (a resumed run says each again at most once)."""
    return {(kind, rows[0]["epoch"]) for streaks in _streaks_by_row(history)
            for kind, rows in streaks.items() if len(rows) >= LASTS[kind]}


def check(history):
    """What has gone wrong by the last row of `history` (rows as in history.csv): a list of
    (kind, first epoch of it, what was seen), kinds "d_wins", "collapse", "divergence"."""
    streaks, found = _streaks(history), []
    wins, collapse, diverging = streaks["d_wins"], streaks["collapse"], streaks["divergence"]
    if len(wins) >= WIN_EPOCHS:
        found.append(("d_wins", wins[0]["epoch"], f"D wins: D(x) {wins[-1]['d_real']:.3f} "
                                                  f"and D(G(z)) {wins[-1]['d_fake']:.3f}"))
    if len(collapse) >= COLLAPSE_EPOCHS:
        best = max(row.get("diversity") or 0 for row in history)
        found.append(("collapse", collapse[0]["epoch"],
                      f"mode collapse: the samples are {collapse[-1]['diversity']:.0%} as "
                      f"varied as real images (best {best:.0%})"))
    if len(diverging) >= DIVERGE_EPOCHS:
        found.append(("divergence", diverging[0]["epoch"],
                      f"the losses left where they had settled: d_loss "
                      f"{diverging[-1]['d_loss']:.3f}, g_loss {diverging[-1]['g_loss']:.3f}"))
    return found


# Fewer training images than this and a winning D has most likely memorised them.
SMALL_DATA = 10000


def advice(kind, image_count):
    """What helps against `kind` of trouble, in a run that trains on `image_count` images."""
    if kind == "d_wins" and image_count < SMALL_DATA:
        return (f"with {image_count} training images D has likely memorised them; more "
                f"images or --augment help")
    return {"d_wins": "G cannot keep up with D; a higher --lr-g or a lower --lr-d helps",
            "collapse": "G draws few kinds of picture; a lower --lr, or --lr-g below --lr-d, "
                        "helps",
            "divergence": "a lower --lr helps"}[kind]
