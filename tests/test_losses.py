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


def test_feature_matching_hand_computed_and_targets_get_no_gradient():
  import jax  # pylint: disable=g-import-not-at-top
  fake = [np.array([[1.0, 2.0]]), np.array([[0.0, 0.0, 3.0]])]
  real = [np.array([[1.0, 0.0]]), np.array([[0.0, 0.0, 0.0]])]
  # Layer means 1 and 1, averaged over the 2 layers: 1.
  assert float(losses.feature_matching_loss(fake, real)) == pytest.approx(1.0)
  assert float(losses.feature_matching_loss(real, real)) == 0.0
  grad_real = jax.grad(lambda r: losses.feature_matching_loss(fake, r))(real)
  assert all(float(np.abs(g).sum()) == 0.0 for g in grad_real)
  grad_fake = jax.grad(lambda f: losses.feature_matching_loss(f, real))(fake)
  assert float(np.abs(grad_fake[0]).sum()) > 0


def test_feature_matching_enters_segan_generator_update_only_when_weighted():
  import jax  # pylint: disable=g-import-not-at-top
  from segan_jax import systems  # pylint: disable=g-import-not-at-top
  from segan_jax.config import Config  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  clean = rng.standard_normal((4, 1024)).astype(np.float32) * 0.1
  batch = {'clean': clean,
           'noisy': clean + 0.05 * rng.standard_normal((4, 1024)).astype(
               np.float32)}
  results = {}
  for weight in (0.0, 1.0):
    config = Config(model_size='tiny', batch_size=4, vbn_reference_size=2,
                    feature_matching_weight=weight, parallelism='none')
    states = systems.create_states(config, jax.random.key(0))
    step = jax.jit(systems.of(config).make_step(config))
    results[weight] = step(states, batch, jax.random.key(1))
  (plain, plain_metrics), (matched, matched_metrics) = results[0.0], results[1.0]
  assert 'g_feature_matching' not in plain_metrics
  assert float(matched_metrics['g_feature_matching']) > 0
  # D's update comes first and does not see the term; G's does.
  for a, b in zip(jax.tree.leaves(plain['d'].params),
                  jax.tree.leaves(matched['d'].params)):
    np.testing.assert_array_equal(a, b)
  assert float(matched_metrics['g_loss']) > float(plain_metrics['g_loss'])
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(plain['g'].params), jax.tree.leaves(matched['g'].params)))


def test_instance_noise_reaches_d_seeded_and_equal_to_the_draw_it_names():
  import jax  # pylint: disable=g-import-not-at-top
  from segan_jax import models, systems  # pylint: disable=g-import-not-at-top
  from segan_jax.config import Config  # pylint: disable=g-import-not-at-top
  from segan_jax.systems import segan  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  clean = rng.standard_normal((4, 1024)).astype(np.float32) * 0.1
  batch = {'clean': clean,
           'noisy': clean + 0.05 * rng.standard_normal((4, 1024)).astype(
               np.float32)}

  def run(noise, batch):
    config = Config(model_size='tiny', batch_size=4, vbn_reference_size=2,
                    d_input_noise=noise, parallelism='none')
    states = systems.create_states(config, jax.random.key(0))
    step = jax.jit(systems.of(config).make_step(config))
    return step(states, batch, jax.random.key(1))

  plain, plain_metrics = run(0.0, batch)
  noised, noised_metrics = run(0.3, batch)
  again, _ = run(0.3, batch)
  for a, b in zip(jax.tree.leaves(noised), jax.tree.leaves(again)):
    np.testing.assert_array_equal(a, b)  # seeded: the same run twice
  assert float(noised_metrics['d_real']) != float(plain_metrics['d_real'])
  # The noise is N(0, s^2) keyed by (step, example): D's view of the clean
  # pair with noise equals the noiseless run's on clean + that draw.
  config = Config(model_size='tiny', batch_size=4, vbn_reference_size=2,
                  parallelism='none')
  states = systems.create_states(config, jax.random.key(0))
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(1), 0),
                           segan._INSTANCE_NOISE_STREAM)  # pylint: disable=protected-access
  draw = 0.3 * np.asarray(models.sample_latent(key, np.arange(4), (1024,)))
  d = states['d']
  logits = d.apply_fn({'params': d.params},
                      models.make_pair(clean + draw, batch['noisy']),
                      d.reference)
  assert float(noised_metrics['d_real']) == pytest.approx(
      float(np.mean(logits)), rel=1e-5, abs=1e-6)
