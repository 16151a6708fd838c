import numpy as np
import pytest

from segan_jax import losses


def test_lsgan_discriminator_loss_hand_computed():
  real = np.array([1.0, 0.5, 2.0])   # (0, 0.25, 1) -> mean 5/12
  fake = np.array([0.0, -1.0, 0.5])  # (0, 1, 0.25) -> mean 5/12
  assert float(losses.lsgan_discriminator_loss(real, fake)) == pytest.approx(
      10 / 12, rel=1e-6)


def test_lsgan_generator_loss_hand_computed():
  fake = np.array([0.0, 1.0, 3.0])  # (1, 0, 4) -> mean 5/3
  assert float(losses.lsgan_generator_loss(fake)) == pytest.approx(5 / 3,
                                                                   rel=1e-6)


def test_l1_and_l2_hand_computed():
  prediction = np.array([[0.5, -0.5], [1.0, 0.0]])
  target = np.array([[0.0, 0.0], [0.0, 2.0]])
  # |.|: 0.5, 0.5, 1, 2 -> 1.0 ; (.)^2: 0.25, 0.25, 1, 4 -> 1.375
  assert float(losses.l1_loss(prediction, target)) == pytest.approx(1.0)
  assert float(losses.l2_loss(prediction, target)) == pytest.approx(1.375)


def test_perfect_discriminator_and_generator_have_zero_loss():
  assert float(losses.lsgan_discriminator_loss(np.ones(4), np.zeros(4))) == 0
  assert float(losses.lsgan_generator_loss(np.ones(4))) == 0


def test_bce_losses_hand_computed():
  # softplus(0) = log 2 for every term.
  zeros = np.zeros(3)
  assert float(losses.bce_discriminator_loss(zeros, zeros)) == pytest.approx(
      2 * np.log(2), rel=1e-6)
  assert float(losses.nonsaturating_generator_loss(zeros)) == pytest.approx(
      np.log(2), rel=1e-6)
  # softplus(-2) = log(1 + e^-2); softplus(1) = log(1 + e).
  value = losses.bce_discriminator_loss(np.array([2.0]), np.array([1.0]))
  assert float(value) == pytest.approx(np.log1p(np.exp(-2)) + np.log1p(np.e),
                                       rel=1e-6)
