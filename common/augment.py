"""Differentiable augmentation for small data sets (--augment), with ADA's adaptive strength.

A discriminator trained on a few hundred images soon memorises them; its verdicts then
stop teaching the generator anything. DiffAugment (Zhao et al. 2020, "Differentiable
Augmentation for Data-Efficient GAN Training") randomly changes every image D sees, real
and generated alike, in D's update and in G's: D never sees the same picture twice, and
because the changes are differentiable, G still gets its gradients through them. Since
real and generated images are changed the same way, G is not pushed to make changed
images: D cannot tell the change apart from the data.

The three transforms, as in DiffAugment (images in [-1, 1]):
    color        brightness + U(-0.5, 0.5); saturation x U(0, 2) around each pixel's mean
                 over its channels (nothing to do for grayscale); contrast x U(0.5, 1.5)
                 around the image's mean. Values may leave [-1, 1] (at most to +-9);
                 nothing is clipped, as clipping would cut the gradients.
    translation  a shift of up to 1/8 of the height and of the width (whole pixels, each
                 image its own), the uncovered border filled with 0.
    cutout       a square of half the image's size, at a random place (up to half of it
                 may hang over an edge), set to 0.
Filling with 0 (mid-grey in [-1, 1]) is what DiffAugment's own code does; its published
settings were tuned with it, and 0 is the middle of the range, so it shifts an image's
statistics least. Real and generated images get the same fill, so D learns nothing from it.

How often: DiffAugment changes every image (probability 1). Measured on these DCGANs, that
teaches G to tile one motif over the whole picture, and translation alone does it: D, shown
every image at a random shift, comes to score patches wherever they are, and the patch it
likes best, repeated, scores best. Changing each image half the time keeps enough pictures
where they are for D to see the layout, and did not tile; --augment-probability sets it
(0.5 by default; BENCHMARKS.md has the runs).

ADA (Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data")
adds a strength p: each image gets each transform with probability p, and p follows how
sure D is about real images, r_t = E[sign(D(x_real))]: above a target (0.8 here), D is
overfitting and p rises; below, p falls. `AdaptiveProbability` keeps that p.

How a train step uses it (see `augment` and `AdaptiveProbability`):
    real_seen = augment(real, policy, p, seed=step_seed(run_seed, step, 0))
    fake_seen = augment(fake, policy, p, seed=step_seed(run_seed, step, 1))  # D update
    fake_seen = augment(fake, policy, p, seed=step_seed(run_seed, step, 2))  # G update
and returns real_sign_sum(real_logits) with its metrics, for AdaptiveProbability.update.
"""

import argparse

import tensorflow as tf

POLICIES = ("color", "translation", "cutout")

# The columns of the one table of uniform random numbers each call draws: a transform's
# draws stay the same whichever others the policy holds, so a seed means the same shift
# with or without color.
(_BRIGHTNESS_GATE, _BRIGHTNESS, _SATURATION_GATE, _SATURATION, _CONTRAST_GATE, _CONTRAST,
 _TRANSLATION_GATE, _SHIFT_DOWN, _SHIFT_RIGHT, _CUTOUT_GATE, _CUTOUT_TOP,
 _CUTOUT_LEFT) = range(12)
_DRAWS = 12


class PolicyError(ValueError, argparse.ArgumentTypeError):
    """A bad --augment value. A ValueError; also an ArgumentTypeError, so that argparse
    prints this message when parse_policy is a flag's type= (it hides a ValueError's)."""


def parse_policy(text):
    """The transforms a --augment value names, in POLICIES order, e.g. "translation,color"
    -> ("color", "translation"). "none" or "" -> () (no augmentation); repeats are fine."""
    words = [word.strip().lower() for word in str(text).split(",")]
    words = [word for word in words if word]
    if words in ([], ["none"]):
        return ()
    unknown = [word for word in words if word not in POLICIES]
    if unknown:
        raise PolicyError(
            f"unknown --augment value {', '.join(repr(word) for word in unknown)}; give a "
            f"comma list of {', '.join(POLICIES)} (e.g. color,translation,cutout), or none")
    return tuple(name for name in POLICIES if name in words)


def step_seed(seed, step, stream):
    """A seed for one augment() call: a different one for each run seed, step, stream
    (say 0 for the reals, 1 for the fakes in D's update, 2 for the fakes in G's) and
    device, so that no two calls and no two devices draw the same changes.

    Call it inside the train step (replica context): the device's number comes from
    tf.distribute's replica context (0 without a strategy). `seed` and `step` are Python
    ints or integer tensors (e.g. the run's --seed and the optimizer's iterations)."""
    context = tf.distribute.get_replica_context()
    replica = 0 if context is None else context.replica_id_in_sync_group
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
    key = tf.random.experimental.stateless_fold_in(key, tf.cast(stream, tf.int64))
    return tf.random.experimental.stateless_fold_in(key, tf.cast(replica, tf.int64))


def augment(images, policy, probability=1.0, seed=None):
    """`images` (N, H, W, C) in [-1, 1], changed by the transforms in `policy`.

    policy       a tuple from parse_policy (fixed when a tf.function traces this); ()
                 returns `images` unchanged.
    probability  the chance that an image gets each transform (each color step counts as
                 one): a Python float, a scalar tensor or a tf.Variable (ADA's p). With 0
                 every image comes back exactly as it was; with 1 every image is changed.
    seed         None: draws with tf.random (seeded by keras.utils.set_random_seed).
                 A [2] integer tensor: stateless draws, the same changes for the same seed
                 (on one machine and compile mode: XLA may pick another random algorithm).
                 A train step should pass step_seed(...), which also keeps the devices of
                 a tf.distribute strategy from drawing the same changes.

    Works in float32, bfloat16 and float16 and returns the input's dtype (color is
    computed in float32, for exact means; moving and masking pixels is exact in any
    dtype). Differentiable with respect to `images`. Shapes are static but for the batch
    size, so a tf.function traces it once per image size (XLA, with jit_compile, still
    compiles once more for each new batch size, such as an epoch's smaller last batch).
    """
    images = tf.convert_to_tensor(images)
    if not images.dtype.is_floating:
        raise ValueError(f"augment() needs float images in [-1, 1], got {images.dtype.name}")
    if not policy:
        return images
    unknown = set(policy) - set(POLICIES)
    if unknown:
        raise ValueError(f"unknown augmentation {sorted(unknown)}; known: {POLICIES}")
    if seed is None:  # One stateful draw for a seed, then the same stateless path.
        seed = tf.random.uniform([2], maxval=tf.int32.max, dtype=tf.int32)
    draws = tf.random.stateless_uniform([tf.shape(images)[0], _DRAWS], seed)
    # An image takes a transform when its draw falls below p: never for p = 0 (draws are
    # in [0, 1)), always for p = 1.
    gates = draws < tf.cast(probability, tf.float32)
    if "color" in policy:
        images = _color(images, draws, gates)
    if "translation" in policy:
        images = _translation(images, draws, gates)
    if "cutout" in policy:
        images = _cutout(images, draws, gates)
    return images


def _per_image(column):
    """A [N] column reshaped to broadcast over (N, H, W, C)."""
    return tf.reshape(column, [-1, 1, 1, 1])


def _whole_number(draw, count):
    """A uniform draw in [0, 1) as a whole number in [0, count), int32."""
    return tf.minimum(tf.cast(tf.floor(draw * count), tf.int32), count - 1)


def _color(images, draws, gates):
    """Brightness, saturation, contrast, each taken or not per image (see the module).

    Each step is written x + change * gate: an image not taken adds exactly 0 and comes
    back bit for bit, and no second full-size result is made to choose from (measured:
    a third of the time that choosing with tf.where took on a CPU)."""
    x = tf.cast(images, tf.float32)  # Means of bfloat16 values lose too many digits.
    gates = tf.cast(gates, tf.float32)

    def amount(column, gate):  # A per-image factor, 0 for an image not taken.
        return _per_image(column * gates[:, gate])

    x = x + amount(draws[:, _BRIGHTNESS] - 0.5, _BRIGHTNESS_GATE)
    if x.shape[-1] != 1:  # One channel is its own mean: saturation changes nothing.
        # (x - mean) * s + mean, written as x + (x - mean) * (s - 1), s in [0, 2).
        mean = tf.reduce_mean(x, axis=3, keepdims=True)
        x = x + (x - mean) * amount(draws[:, _SATURATION] * 2 - 1, _SATURATION_GATE)
    # Likewise around the image's mean, with a factor in [0.5, 1.5).
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = x + (x - mean) * amount(draws[:, _CONTRAST] - 0.5, _CONTRAST_GATE)
    return tf.cast(x, images.dtype)


def _translation(images, draws, gates):
    """Each image shifted by whole pixels, up to 1/8 of its size either way, 0 filled in.

    Output pixel (r, c) is input pixel (r - down, c - right) of the same image, picked
    with one tf.gather from all the batch's pixels (its gradient carries each pixel's back
    to where it came from); output pixels with no source are then multiplied by 0. An
    image not taken gets a shift of 0: itself."""
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    gate = tf.cast(gates[:, _TRANSLATION_GATE], tf.int32)
    down = (_whole_number(draws[:, _SHIFT_DOWN], 2 * (height // 8) + 1) - height // 8) * gate
    right = (_whole_number(draws[:, _SHIFT_RIGHT], 2 * (width // 8) + 1) - width // 8) * gate
    rows = tf.range(height)[tf.newaxis, :] - down[:, tf.newaxis]     # (N, H) source rows
    columns = tf.range(width)[tf.newaxis, :] - right[:, tf.newaxis]  # (N, W) source columns
    # The source's place among all N * H * W pixels (clipped into the frame: those
    # outside are blanked below).
    source = (tf.range(tf.shape(images)[0])[:, tf.newaxis, tf.newaxis] * (height * width)
              + tf.clip_by_value(rows, 0, height - 1)[:, :, tf.newaxis] * width
              + tf.clip_by_value(columns, 0, width - 1)[:, tf.newaxis, :])
    moved = tf.gather(tf.reshape(images, [-1, channels]), source)  # (N, H, W, C)
    inside = ((rows >= 0) & (rows < height))[:, :, tf.newaxis, tf.newaxis] & (
        (columns >= 0) & (columns < width))[:, tf.newaxis, :, tf.newaxis]
    return _blank(~inside, moved)


def _cutout(images, draws, gates):
    """A square of half the image's size set to 0, in each image taken.

    As in DiffAugment, the square may hang over an edge by up to half its side, so the
    pixels near the edges are covered about as often as those in the middle."""
    height, width = images.shape[1], images.shape[2]
    size_y, size_x = height // 2, width // 2
    top = _square_start(draws[:, _CUTOUT_TOP], height, size_y)
    left = _square_start(draws[:, _CUTOUT_LEFT], width, size_x)
    rows = tf.range(height)[tf.newaxis, :] - top[:, tf.newaxis]      # (N, H) row in square
    columns = tf.range(width)[tf.newaxis, :] - left[:, tf.newaxis]   # (N, W)
    covered = (((rows >= 0) & (rows < size_y))[:, :, tf.newaxis, tf.newaxis]
               & ((columns >= 0) & (columns < size_x))[:, tf.newaxis, :, tf.newaxis]
               & _per_image(gates[:, _CUTOUT_GATE]))
    return _blank(covered, images)


def _square_start(draw, length, side):
    """Where a square of `side` pixels starts along `length`: a whole number from
    -(side // 2) to length - side + side // 2, uniform."""
    return _whole_number(draw, length - side + 2 * (side // 2) + 1) - side // 2


def _blank(mask, images):
    """`images` set to 0 (the fill, see the module) where the (N, H, W, 1) `mask` is true.
    A multiply by the 0/1 mask rather than tf.where: the same values and gradients, while
    tf.where's broadcasting over the channels measured 1.5-2x slower on a CPU."""
    return images * tf.cast(~mask, images.dtype)


def real_sign_sum(real_logits):
    """Sum of sign(D(x)) over this device's real images: what a train step returns for
    AdaptiveProbability.update (summed over devices), alongside its image count."""
    return tf.reduce_sum(tf.sign(tf.cast(real_logits, tf.float32)))


class AdaptiveProbability(tf.Module):
    """ADA's augmentation probability p, tuned on the fly from how sure D is about reals.

    Every `interval` steps, r_t = (sum of sign(D(real))) / (real images) over those steps;
    p moves by sign(r_t - target) * (images in those steps) / speed_images, kept in
    [0, 1]. So p can cross from 0 to 1 in `speed_images` images, no faster.

    The paper's defaults: target 0.6, interval 4 steps, speed 500k images, p from 0.
    Changed here: target 0.8. A DCGAN's D is surer of real images than StyleGAN2's from its
    first epochs, with or without overfitting: at 0.6, p climbed to 1 within 25k images on
    paintings and cats and G tiled one motif; at 0.8, p stayed at 0 for the first half of
    a 400-epoch run on 262 paintings and ended at 0.35 (BENCHMARKS.md). And speed_images
    = 25,000. ADA's runs see about 25M images, 50 times its
    speed; a 400-epoch run on 262 Rembrandts sees 105k, in which p could rise by at most
    0.21 at 500k: far too slow for a D that memorises a few hundred paintings within tens
    of epochs. At 25k, p can cross the range in a quarter of that run (about 95 epochs)
    and moves by 0.01 per adjustment at batch 64, small against the noise of r_t over
    256 images (about 0.06). For large sets (faces:
    millions of images a run) the paper's 500k is the better choice.

    All state is in tf.Variables (float32 except the step count), so
    tf.train.Checkpoint(..., augment=this) saves and restores it, mid-interval included.
    Create it inside strategy.scope() (or not: both work), read `probability` anywhere,
    including inside strategy.run, and call update() once a step outside strategy.run,
    with the step's sums over all devices.
    """

    def __init__(self, target=0.8, interval=4, speed_images=25_000, initial=0.0,
                 name="adaptive_probability"):
        super().__init__(name=name)
        if not 0 <= initial <= 1 or interval < 1 or speed_images <= 0:
            raise ValueError("AdaptiveProbability needs 0 <= initial <= 1, interval >= 1 "
                             "and speed_images > 0")
        self.target, self.interval = float(target), int(interval)
        self.speed_images = float(speed_images)

        def variable(value, name, dtype=tf.float32):
            return tf.Variable(value, dtype=dtype, trainable=False, name=name)

        self.probability = variable(initial, "probability")  # p, what augment() takes.
        self.overfitting = variable(0.0, "overfitting")      # The last r_t, for logging.
        self.sign_sum = variable(0.0, "sign_sum")            # Since the last adjustment.
        self.image_count = variable(0.0, "image_count")
        self.steps = variable(0, "steps", tf.int64)

    def update(self, sign_sum, image_count):
        """Count one step's real images (`sign_sum` = sum of sign(D(real)) over them, see
        real_sign_sum; `image_count` = how many); every `interval`-th call, adjust p.
        Works eagerly and inside a tf.function (cross-replica context). Returns p."""
        total = self.sign_sum + tf.cast(sign_sum, tf.float32)
        count = self.image_count + tf.cast(image_count, tf.float32)
        steps = self.steps + 1
        due = tf.equal(steps % self.interval, 0)
        overfitting = total / tf.maximum(count, 1.0)
        adjusted = tf.clip_by_value(
            self.probability + tf.sign(overfitting - self.target) * count / self.speed_images,
            0.0, 1.0)
        # Computed from reads above, then written: no read sees a half-made update.
        self.probability.assign(tf.where(due, adjusted, self.probability))
        self.overfitting.assign(tf.where(due, overfitting, self.overfitting))
        self.sign_sum.assign(tf.where(due, 0.0, total))
        self.image_count.assign(tf.where(due, 0.0, count))
        self.steps.assign(steps)
        return tf.identity(self.probability)
