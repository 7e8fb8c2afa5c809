"""common/augment.py: DiffAugment's transforms, ADA's per-image gating and adaptive p."""

import argparse
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from common.augment import (POLICIES, AdaptiveProbability, augment, parse_policy,
                            real_sign_sum, step_seed)
from conftest import ENV, ROOT

DTYPES = (tf.float32, tf.bfloat16, tf.float16)
TRANSFORMS = [(name,) for name in POLICIES] + [POLICIES]


def random_images(count=8, size=16, channels=3, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(-1, 1, (count, size, size, channels)),
                       tf.float32)


def as_numbers(images):
    return tf.cast(images, tf.float32).numpy()


# --- parse_policy -------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("color,translation,cutout", POLICIES),
    ("cutout,color,translation", POLICIES),          # Order is normalised.
    ("translation", ("translation",)),
    (" Translation , cutout,translation ", ("translation", "cutout")),  # Case, space, repeats.
    ("none", ()), ("", ()), ("NONE", ()),
])
def test_parse_policy_accepts_the_valid_forms(text, expected):
    assert parse_policy(text) == expected


@pytest.mark.parametrize("text", ["colour", "color,flip", "none,color", "all", "1"])
def test_parse_policy_refuses_anything_else_in_one_line_naming_the_flag(text):
    with pytest.raises(ValueError) as caught:
        parse_policy(text)
    message = str(caught.value)
    assert "\n" not in message and "--augment" in message
    assert all(name in message for name in (*POLICIES, "none"))
    # argparse shows this message (not its generic one) when parse_policy is a type=.
    parser = argparse.ArgumentParser(prog="train", exit_on_error=False)
    parser.add_argument("--augment", type=parse_policy)
    with pytest.raises(argparse.ArgumentError, match="give a comma list"):
        parser.parse_args(["--augment", text])


# --- The transforms -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda dtype: dtype.name)
@pytest.mark.parametrize("policy", TRANSFORMS, ids=",".join)
def test_each_transform_keeps_shape_dtype_and_a_bounded_range(policy, dtype):
    for channels in (3, 1):
        images = tf.cast(random_images(channels=channels), dtype)
        result = augment(images, policy, 1.0, seed=[1, 2])
        assert result.shape == images.shape and result.dtype == dtype
        values, source = as_numbers(result), as_numbers(images)
        assert np.isfinite(values).all()
        if "color" in policy:  # The worst case of brightness, saturation and contrast: 9.
            assert np.abs(values).max() <= 9
        else:  # Moving and masking pixels only picks input values and the fill, 0.
            assert set(np.unique(values)) <= set(np.unique(source)) | {0.0}
        assert not np.array_equal(values, source)


def test_color_treats_grayscale_like_grey_rgb():
    # Saturation has nothing to change in one channel; grey RGB gets the same brightness
    # and contrast draws, so both must come out alike.
    gray = random_images(channels=1)
    rgb = tf.repeat(gray, 3, axis=-1)
    from_gray = augment(gray, ("color",), 1.0, seed=[5, 6]).numpy()
    from_rgb = augment(rgb, ("color",), 1.0, seed=[5, 6]).numpy()
    np.testing.assert_allclose(np.repeat(from_gray, 3, axis=-1), from_rgb, atol=1e-5)
    assert not np.allclose(from_gray, gray.numpy())


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda dtype: dtype.name)
def test_probability_zero_returns_the_input_exactly_and_one_changes_every_image(dtype):
    images = tf.cast(random_images(count=16), dtype)
    for probability in (0.0, tf.Variable(0.0), tf.constant(0.0)):
        result = augment(images, POLICIES, probability, seed=[3, 4])
        assert result.dtype == dtype
        np.testing.assert_array_equal(as_numbers(result), as_numbers(images))
    for policy in (("color",), ("cutout",), POLICIES):  # Each always changes an image.
        changed = as_numbers(augment(images, policy, tf.Variable(1.0), seed=[3, 4]))
        assert (np.abs(changed - as_numbers(images)).max(axis=(1, 2, 3)) > 0).all(), policy


def test_each_image_is_gated_on_its_own():
    # ADA: with p = 0.3 about 30% of the images get a cutout, each independently.
    ones = tf.ones([1000, 8, 8, 1])
    result = augment(ones, ("cutout",), 0.3, seed=[7, 8]).numpy()
    share = (result.min(axis=(1, 2, 3)) == 0).mean()
    assert 0.25 < share < 0.35


def test_translation_moves_by_whole_pixels_and_fills_with_zero():
    size, limit = 32, 32 // 8
    count = 64
    # Every pixel of every image unique and non-zero, so a shift can be read off.
    images = tf.reshape(tf.range(1, count * size * size + 1, dtype=tf.float32),
                        [count, size, size, 1])
    result = augment(images, ("translation",), 1.0, seed=[9, 10]).numpy()[..., 0]
    source = images.numpy()[..., 0]
    shifts = set()
    for moved, original in zip(result, source):
        found = []
        for down in range(-limit, limit + 1):
            for right in range(-limit, limit + 1):
                # Shift with numpy: pad with zeros, then cut the frame back out.
                padded = np.pad(original, limit)
                expected = padded[limit - down:limit - down + size,
                                  limit - right:limit - right + size]
                if np.array_equal(moved, expected):
                    found.append((down, right))
        assert len(found) == 1, "not a whole-pixel shift within 1/8 of the size, 0 filled"
        shifts |= set(found)
    assert len(shifts) > 20  # The shifts vary from image to image.
    assert {down for down, _ in shifts} == set(range(-limit, limit + 1))


@pytest.mark.parametrize("size", [16, 28, 15])
def test_cutout_zeroes_a_square_of_half_the_size(size):
    ones = tf.ones([200, size, size, 3])
    result = augment(ones, ("cutout",), 1.0, seed=[11, 12]).numpy()
    side = size // 2
    whole = 0
    for image in result:
        assert set(np.unique(image)) == {0.0, 1.0}
        rows, columns = np.nonzero(image[..., 0] == 0)
        top, bottom, left, right = rows.min(), rows.max() + 1, columns.min(), columns.max() + 1
        assert (image[top:bottom, left:right] == 0).all()  # One rectangle, all channels...
        assert (image == 0).sum() == (bottom - top) * (right - left) * 3  # ...and only it.
        # A side is the square's, or cut short where the square hangs over an edge, by
        # at most half of it.
        for start, end in ((top, bottom), (left, right)):
            length = end - start
            assert length == side or (side - side // 2 <= length < side
                                      and (start == 0 or end == size))
        whole += (bottom - top, right - left) == (side, side)
    # About a quarter lie wholly inside (about half the positions do, along each axis).
    assert 30 < whole < 80


# --- Gradients ----------------------------------------------------------------------------


def tiny_generator():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8 * 8 * 3, activation="tanh"),
                             keras.layers.Reshape((8, 8, 3))])


@pytest.mark.parametrize("dtype", (tf.float32, tf.bfloat16), ids=lambda dtype: dtype.name)
@pytest.mark.parametrize("policy", TRANSFORMS, ids=",".join)
def test_gradients_flow_through_to_the_generator(policy, dtype):
    generator = tiny_generator()
    noise = tf.random.stateless_normal([16, 4], [0, 1])
    weights = tf.random.stateless_normal([1, 8, 8, 3], [0, 2])  # A stand-in for D.
    with tf.GradientTape() as tape:
        images = tf.cast(generator(noise), dtype)
        seen = tf.cast(augment(images, policy, 1.0, seed=[13, 14]), tf.float32)
        loss = tf.reduce_sum(seen * weights)
    for gradient in tape.gradient(loss, generator.trainable_variables):
        assert gradient is not None
        assert np.isfinite(gradient.numpy()).all() and np.abs(gradient.numpy()).max() > 0


def test_gradients_reach_exactly_the_pixels_that_are_shown():
    # d(sum of output)/d(input) is 1 for a pixel that is shown once and 0 for one cut
    # away or moved out of the frame: the gradient follows the pixels.
    images = tf.ones([32, 16, 16, 1]) * 0.5
    for policy in (("translation",), ("cutout",)):
        with tf.GradientTape() as tape:
            tape.watch(images)
            result = augment(images, policy, 1.0, seed=[15, 16])
            total = tf.reduce_sum(result)
        gradient = tape.gradient(total, images).numpy()
        shown = result.numpy() != 0
        assert set(np.unique(gradient)) == {0.0, 1.0}
        if policy == ("cutout",):
            np.testing.assert_array_equal(gradient == 1, shown)
        else:  # Each image keeps as many pixels as it shows.
            np.testing.assert_array_equal(gradient.sum(axis=(1, 2, 3)), shown.sum(axis=(1, 2, 3)))


# --- Seeds, tf.function, XLA --------------------------------------------------------------


def test_the_same_seed_gives_the_same_augmentation_and_another_seed_another():
    images = random_images()
    first = augment(images, POLICIES, 1.0, seed=tf.constant([1, 2])).numpy()
    np.testing.assert_array_equal(first, augment(images, POLICIES, 1.0, seed=[1, 2]).numpy())
    assert not np.array_equal(first, augment(images, POLICIES, 1.0, seed=[1, 3]).numpy())
    # A translation's draws do not depend on what else the policy holds.
    alone = augment(images, ("translation",), 1.0, seed=[1, 2]).numpy()
    with_cutout = augment(images, ("translation", "cutout"), 1.0, seed=[1, 2]).numpy()
    kept = with_cutout != 0
    np.testing.assert_array_equal(alone[kept], with_cutout[kept])
    # Without a seed each call draws anew.
    assert not np.array_equal(augment(images, POLICIES).numpy(), augment(images, POLICIES).numpy())


def test_step_seed_differs_by_step_and_stream():
    seeds = {tuple(step_seed(7, step, stream).numpy()) for step in range(3) for stream in range(3)}
    assert len(seeds) == 9
    assert tuple(step_seed(7, 1, 0).numpy()) == tuple(step_seed(7, 1, 0).numpy())
    assert tuple(step_seed(8, 1, 0).numpy()) != tuple(step_seed(7, 1, 0).numpy())


def test_compiles_with_xla_for_every_dtype():
    probability = tf.Variable(1.0)

    @tf.function(jit_compile=True, reduce_retracing=True)
    def step(images, seed):
        return augment(images, POLICIES, probability, seed)

    for dtype in DTYPES:
        images = tf.cast(random_images(count=8), dtype)
        probability.assign(1.0)
        first = step(images, tf.constant([1, 2]))
        assert first.dtype == dtype and first.shape == images.shape
        np.testing.assert_array_equal(as_numbers(first),
                                      as_numbers(step(images, tf.constant([1, 2]))))
        assert not np.array_equal(as_numbers(first), as_numbers(step(images, tf.constant([2, 2]))))
        probability.assign(0.0)  # p is read at run time, not baked in when traced.
        np.testing.assert_array_equal(as_numbers(step(images, tf.constant([1, 2]))),
                                      as_numbers(images))
    smaller = step(images[:5], tf.constant([1, 2]))  # The last, smaller batch of an epoch.
    assert smaller.shape == (5, 16, 16, 3)
    # Also without a seed (tf.random inside XLA): fresh draws each call.
    probability.assign(1.0)
    unseeded = tf.function(lambda images: augment(images, POLICIES, probability), jit_compile=True)
    assert not np.array_equal(unseeded(random_images()).numpy(), unseeded(random_images()).numpy())


# Runs in a fresh Python: logical devices must be set before TensorFlow starts.
MIRRORED = r"""
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from common.augment import POLICIES, AdaptiveProbability, augment, real_sign_sum, step_seed

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    keras.utils.set_random_seed(0)
    generator = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8 * 8 * 3),
                                  keras.layers.Reshape((8, 8, 3))])
    adaptive = AdaptiveProbability(interval=2, speed_images=100, initial=0.5)
    step_count = tf.Variable(0, dtype=tf.int64)

def replica_step(real, noise):
    # As a train step would: augment reals and fakes with p, a seed per step, stream and
    # device; D is a stand-in that is always sure on reals.
    with tf.GradientTape() as tape:
        fake = generator(noise)
        fake_seen = augment(fake, POLICIES, adaptive.probability, step_seed(0, step_count, 1))
        loss = tf.reduce_sum(fake_seen)
    gradients = tape.gradient(loss, generator.trainable_variables)
    real_seen = augment(real, POLICIES, adaptive.probability, step_seed(0, step_count, 0))
    real_logits = tf.ones([tf.shape(real)[0], 1])
    norm = tf.add_n([tf.reduce_sum(tf.square(g)) for g in gradients])
    count = tf.cast(tf.shape(real)[0], tf.float32)
    return real_seen, tf.stack([real_sign_sum(real_logits), count]), norm

# A tf.function per device inside one for the step, as the scripts do; without XLA, which
# they leave off under several devices (XLA refuses to reach the other devices' weights).
compiled = tf.function(replica_step)

@tf.function
def distributed_step(real, noise):
    seen, sums, norm = strategy.run(compiled, args=(real, noise))
    sums = strategy.reduce("SUM", sums, axis=None)
    adaptive.update(sums[0], sums[1])  # Once a step, in cross-replica context.
    step_count.assign_add(1)
    return seen, sums, norm

# The same real images on both devices: their augmentations must still differ.
real = tf.ones([4, 8, 8, 3]) * 0.5
both = strategy.experimental_distribute_values_from_function(lambda context: real)
noise = strategy.experimental_distribute_values_from_function(
    lambda context: tf.random.stateless_normal([4, 4], [1, context.replica_id_in_sync_group]))
before = float(adaptive.probability.numpy())
for _ in range(2):
    seen, sums, norm = distributed_step(both, noise)
first, second = [t.numpy() for t in strategy.experimental_local_results(seen)]
norms = [float(t.numpy()) for t in strategy.experimental_local_results(norm)]
results = dict(devices_differ=bool((first != second).any()), images=float(sums.numpy()[1]),
               norms=norms, before=before, after=float(adaptive.probability.numpy()))
print(json.dumps(results))
"""


def test_works_under_mirrored_strategy_on_two_devices():
    result = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True,
                            env=ENV, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads(result.stdout.strip().splitlines()[-1])
    assert run["devices_differ"], "both devices drew the same changes"
    assert run["images"] == 8  # Both devices' reals counted.
    assert all(np.isfinite(norm) and norm > 0 for norm in run["norms"])  # G's gradients.
    # Always sure on reals: after 2 steps (one interval) of 8 images, p rises 16/100.
    assert run["after"] == pytest.approx(run["before"] + 0.16)


# --- The adaptive probability -------------------------------------------------------------


def test_adaptive_probability_rises_on_a_sure_discriminator_up_to_one():
    adaptive = AdaptiveProbability(interval=4, speed_images=2_560)
    positive = real_sign_sum(tf.fill([64, 1], 3.0))
    assert float(positive) == 64
    history = [float(adaptive.update(positive, 64)) for _ in range(60)]
    # Only every 4th step adjusts, by 4 * 64 / 2560 = 0.1.
    assert history[:3] == [0.0] * 3
    assert history[3] == pytest.approx(0.1) and history[4:7] == [history[3]] * 3
    assert history[7] == pytest.approx(0.2)
    assert all(0 <= p <= 1 for p in history) and history[-1] == 1.0
    assert float(adaptive.overfitting) == 1.0  # r_t, for logging.


def test_adaptive_probability_falls_to_zero_on_an_unsure_discriminator():
    adaptive = AdaptiveProbability(interval=2, speed_images=1_000, initial=0.5)
    update = tf.function(adaptive.update)  # As the run helper calls it.
    negative = real_sign_sum(tf.fill([50, 1], -0.1))
    history = [float(update(negative, 50)) for _ in range(60)]
    assert history[1] == pytest.approx(0.4)
    assert all(0 <= p <= 1 for p in history) and history[-1] == 0.0
    assert float(adaptive.overfitting) == -1.0
    # At the target exactly, p stays where it is.
    adaptive.probability.assign(0.3)
    for _ in range(4):
        update(real_sign_sum(tf.constant([[1.0]] * 9 + [[-1.0]])), 10)  # r_t = 8/10 = 0.8.
    assert float(adaptive.probability) == pytest.approx(0.3)


def test_adaptive_probability_round_trips_through_a_checkpoint(tmp_path):
    adaptive = AdaptiveProbability(interval=4, speed_images=1_000)
    for _ in range(6):  # One adjustment, and halfway into the next interval.
        adaptive.update(20.0, 20)
    saved = {name: getattr(adaptive, name).numpy() for name in
             ("probability", "overfitting", "sign_sum", "image_count", "steps")}
    assert saved["probability"] > 0 and saved["image_count"] == 40
    path = tf.train.Checkpoint(augment=adaptive).save(str(tmp_path / "ckpt"))
    assert any("probability" in name for name, _ in tf.train.list_variables(path))
    restored = AdaptiveProbability(interval=4, speed_images=1_000)
    tf.train.Checkpoint(augment=restored).restore(path).assert_existing_objects_matched()
    for name, value in saved.items():
        assert getattr(restored, name).numpy() == value, name
    # Restored mid-interval, it adjusts on the same step the original would have.
    restored.update(20.0, 20)
    assert float(restored.probability) == saved["probability"]
    restored.update(20.0, 20)
    assert float(restored.probability) == pytest.approx(saved["probability"] + 0.08)
