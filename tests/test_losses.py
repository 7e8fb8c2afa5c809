"""common/losses.py: the GAN losses on logits with known answers, their device shares and
the step's metrics."""

import math

import pytest
import tensorflow as tf

from common import losses


def test_losses_match_hand_computed_cross_entropy():
    real_logits = tf.constant([[0.0], [2.0]])
    fake_logits = tf.constant([[0.0], [-1.0]])
    # BCE(x, 1) = log(1 + e^-x), BCE(x, 0) = log(1 + e^x).
    expected_real = (math.log(2) + math.log(1 + math.exp(-2))) / 2
    expected_fake = (math.log(2) + math.log(1 + math.exp(-1))) / 2
    d_loss = losses.discriminator_loss(real_logits, fake_logits, 2.0)
    assert float(d_loss) == pytest.approx(expected_real + expected_fake, rel=1e-6)
    g_loss = losses.generator_loss(fake_logits, 2.0)
    assert float(g_loss) == pytest.approx((math.log(2) + math.log(1 + math.e)) / 2, rel=1e-6)


def test_device_shares_of_the_losses_add_up_to_the_whole_batch_mean():
    # Several devices each score a share of the batch and divide by the whole batch's size:
    # the shares must sum to what one device computes on the whole batch (uneven shares too).
    real = tf.constant([[0.5], [-1.0], [2.0], [0.0], [3.0]])
    fake = tf.constant([[-0.5], [1.0], [0.0], [-2.0], [1.5]])
    whole = losses.discriminator_loss(real, fake, 5.0)
    shares = (losses.discriminator_loss(real[:3], fake[:3], 5.0)
              + losses.discriminator_loss(real[3:], fake[3:], 5.0))
    assert float(shares) == pytest.approx(float(whole), rel=1e-6)
    assert float(losses.mean_probability(real[:2], 5.0) + losses.mean_probability(real[2:], 5.0)
                 ) == pytest.approx(float(tf.reduce_mean(tf.sigmoid(real))), rel=1e-6)


def test_losses_count_the_batch_from_the_logits_when_not_given():
    real = tf.constant([[0.5], [-1.0], [2.0]])
    fake = tf.constant([[-0.5], [1.0], [0.0]])
    assert float(losses.discriminator_loss(real, fake)) == pytest.approx(
        float(losses.discriminator_loss(real, fake, 3.0)), rel=1e-6)
    assert float(losses.generator_loss(fake)) == pytest.approx(
        float(losses.generator_loss(fake, 3.0)), rel=1e-6)
    assert float(losses.mean_probability(real)) == pytest.approx(
        float(tf.reduce_mean(tf.sigmoid(real))), rel=1e-6)


def test_step_metrics_are_losses_probabilities_real_sign_and_count():
    real = tf.constant([[2.0], [-1.0], [3.0], [0.5]])
    fake = tf.constant([[-2.0], [0.0], [1.0], [-1.0]])
    d_loss, g_loss = losses.discriminator_loss(real, fake), losses.generator_loss(fake)
    metrics = losses.step_metrics(d_loss, g_loss, real, fake)
    assert all(value.dtype == tf.float32 for value in metrics.values())
    expected = {"d_loss": float(d_loss), "g_loss": float(g_loss),
                "d_real": float(tf.reduce_mean(tf.sigmoid(real))),
                "d_fake": float(tf.reduce_mean(tf.sigmoid(fake))),
                "real_sign": (1 - 1 + 1 + 1) / 4, "images": 4.0}
    assert {name: float(value) for name, value in metrics.items()} == pytest.approx(expected)


def test_losses_stay_finite_for_confident_logits():
    # The seeds' sigmoid-then-log form gives log(0) = -inf here; logits do not.
    huge = tf.constant([[100.0]])
    assert float(losses.discriminator_loss(huge, -huge, 1.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.generator_loss(-huge, 1.0)) == pytest.approx(100.0, rel=1e-6)


def test_losses_accept_bfloat16_logits_and_return_float32():
    logits = tf.constant([[1.0]], dtype=tf.bfloat16)
    assert losses.generator_loss(logits, 1.0).dtype == tf.float32


def test_mean_probability_is_mean_sigmoid():
    logits = tf.constant([[0.0], [math.log(3.0)]])
    assert float(losses.mean_probability(logits, 2.0)) == pytest.approx((0.5 + 0.75) / 2)
