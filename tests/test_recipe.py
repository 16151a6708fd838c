"""What makes training learn: the paper's optimizer, wiring and init, the
recipe's extra options, and a learning-health check on real speech."""

import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from segan_jax import systems
from segan_jax import audio, losses, optimizers, train
from segan_jax.config import Config
from segan_jax.models import layers

VBD_TRAIN = (pathlib.Path(__file__).resolve().parents[1].parent / 'shared' /
             'data' / 'vbd_train')


def _tiny(**changes):
  return Config(model_size='tiny', batch_size=2, vbn_reference_size=2,
                **changes)


def test_rmsprop_has_tf1_semantics():
  """Accumulators start at 1, eps 1e-10 inside the root (TF1 RMSProp)."""
  config = _tiny(learning_rate=0.01)
  tx = optimizers.make_optimizer(config)
  params = {'w': jnp.array([1.0, -2.0, 3.0])}
  state = tx.init(params)
  nu = jax.tree.leaves(state[0].nu)[0]
  np.testing.assert_array_equal(nu, 1.0)
  grads = {'w': jnp.array([0.5, 1e-6, -4.0])}
  updates, _ = tx.update(grads, state, params)
  g = np.asarray(grads['w'], np.float64)
  ms = 0.9 * 1.0 + 0.1 * g**2
  expected = -0.01 * g / np.sqrt(ms + 1e-10)
  np.testing.assert_allclose(updates['w'], expected, rtol=1e-6)


def test_adam_optimizer_and_schedule():
  config = _tiny(optimizer='adam', adam_b1=0.5, learning_rate=1e-3,
                 warmup_steps=10, lr_final_fraction=0.1)
  schedule = optimizers.learning_rate_schedule(config, total_steps=100)
  assert float(schedule(0)) == 0.0
  assert float(schedule(10)) == pytest.approx(1e-3)
  assert float(schedule(100)) == pytest.approx(1e-4)
  constant = optimizers.learning_rate_schedule(_tiny(), total_steps=100)
  assert float(constant(0)) == float(constant(100)) == 2e-4
  state = optimizers.make_optimizer(config, 100).init({'w': jnp.zeros(3)})
  assert any(isinstance(s, optax.ScaleByAdamState)
             for s in jax.tree.leaves(state, is_leaf=lambda s: isinstance(
                 s, optax.ScaleByAdamState)))


def test_grad_clip_norm_bounds_the_gradient_the_optimizer_sees():
  params = {'w': jnp.zeros(2), 'b': jnp.zeros(1)}
  grads = {'w': jnp.array([30.0, 40.0]), 'b': jnp.array([0.0])}  # norm 50
  sgd_like = dict(optimizer='rmsprop', learning_rate=1.0)
  plain = optimizers.make_optimizer(_tiny(**sgd_like))
  clipped = optimizers.make_optimizer(_tiny(grad_clip_norm=5.0, **sgd_like))
  # Off: the optimizer's own state, as before the option existed.
  assert jax.tree.structure(plain.init(params)) != jax.tree.structure(
      clipped.init(params))
  # rmsprop's first step from accumulators at 1: -g / sqrt(0.9 + 0.1 g^2);
  # clipped, g is scaled to norm 5 first: (3, 4).
  updates, _ = clipped.update(grads, clipped.init(params), params)
  g = np.array([3.0, 4.0])
  np.testing.assert_allclose(updates['w'], -g / np.sqrt(0.9 + 0.1 * g**2),
                             rtol=1e-5)
  unclipped, _ = plain.update(grads, plain.init(params), params)
  assert not np.allclose(unclipped['w'], updates['w'])
  with pytest.raises(ValueError, match='grad_clip_norm must be >= 0'):
    _tiny(grad_clip_norm=-1.0)


def test_strided_conv_padding_is_tensorflow_same():
  """(14, 15) for k31/s2, equal to XLA's 'SAME' (TensorFlow's rule)."""
  assert layers.same_padding(31, 2) == (14, 15)
  assert layers.same_padding(31, 1) == (15, 15)
  x = jax.random.normal(jax.random.key(0), (2, 64, 3))
  conv = layers.Conv1D(4, kernel_size=31, stride=2)
  params = conv.init(jax.random.key(1), x)
  expected = lax.conv_general_dilated(
      x, params['params']['kernel'], (2,), 'SAME',
      dimension_numbers=('NWC', 'WIO', 'NWC')) + params['params']['bias']
  np.testing.assert_allclose(conv.apply(params, x), expected, atol=1e-5)


def test_kernels_start_truncated_normal_with_std_002():
  conv = layers.Conv1D(64, kernel_size=31)
  kernel = np.asarray(conv.init(jax.random.key(0), jnp.zeros((1, 64, 32)))[
      'params']['kernel'])
  # Truncated at two standard deviations: std 0.02 * 0.88 after truncation.
  assert np.abs(kernel).max() <= 0.04 + 1e-6
  assert 0.016 < kernel.std() < 0.019
  # The models pass --kernel_init on: Xavier's first layer (fan 15 + 60)
  # reaches far beyond 0.04.
  for init, bound in (('truncated_normal', 0.04), ('xavier_uniform', 0.28)):
    g = systems.generator(_tiny(kernel_init=init))
    params = g.init(jax.random.key(0), jnp.zeros((1, 1024)),
                    jnp.zeros((1, 32, 16)))['params']
    assert 0.5 * bound < np.abs(params['enc_0']['kernel']).max() <= bound


@pytest.mark.parametrize('preactivation', [True, False])
def test_skip_tensors_are_taken_before_the_prelu(preactivation):
  """dec_1's input holds enc_{L-2}'s conv output (before its PReLU) or the
  PReLU's output, by --skip_connections."""
  config = _tiny(use_z=False, skip_connections=(
      'preactivation' if preactivation else 'activation'))
  g = systems.generator(config)
  x = jax.random.normal(jax.random.key(1), (1, 1024))
  params = g.init(jax.random.key(0), x)
  seen = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__':
      seen[context.module.name] = (args[0], out)
    return out

  with nn.intercept_methods(record):
    g.apply(params, x)
  level = len(config.features) - 2
  conv_out = seen[f'enc_{level}'][1]
  activated = seen[f'enc_prelu_{level}'][1]
  assert np.any(conv_out < 0)  # PReLU (slope 0 at init) would change it
  dec_in = seen['dec_1'][0]
  skip = dec_in[..., -conv_out.shape[-1]:]
  np.testing.assert_array_equal(skip, conv_out if preactivation else activated)


def test_residual_generator_starts_as_identity():
  config = _tiny(residual=True)
  states = systems.create_states(config, jax.random.key(0))
  g = states['g']
  x = jax.random.normal(jax.random.key(1), (2, 1024)) * 0.1
  z = jax.random.normal(jax.random.key(2), (2,) + systems.latent_shape(
      config))
  np.testing.assert_array_equal(g.apply_fn({'params': g.params}, x, z), x)


def test_discriminator_features_override():
  config = _tiny(discriminator_features=(2, 4, 4, 8, 8))
  states = systems.create_states(config, jax.random.key(0))
  assert states['d'].params['conv_4']['kernel'].shape == (15, 8, 8)
  assert states['g'].params['enc_4']['kernel'].shape == (15, 16, 16)


def test_stft_loss_is_zero_for_equal_signals_and_finite_at_silence():
  x = jax.random.normal(jax.random.key(0), (2, 4096))
  assert float(losses.multi_resolution_stft_loss(x, x)) == pytest.approx(
      0.0, abs=1e-5)
  assert float(losses.multi_resolution_stft_loss(0.5 * x, x)) > 0.1
  silence = jnp.zeros((2, 4096))
  grad = jax.grad(lambda s: losses.multi_resolution_stft_loss(s, x))(silence)
  assert np.all(np.isfinite(grad))
  magnitude = losses.stft_magnitude(x, 512, 128)
  assert magnitude.shape == (2, 4096 // 128 + 1, 257)


def test_masked_output_loss_scores_the_clipped_magnitude():
  """|E| is clipped to [floor |X|, |X|] before it is scored, as the mask
  plays it: above the input or below the floor, G's output does not matter."""
  keys = jax.random.split(jax.random.key(0), 2)
  clean = jax.random.normal(keys[0], (2, 4096))
  noisy = clean + 0.5 * jax.random.normal(keys[1], (2, 4096))
  # The input itself plays the input: a gain of 1 everywhere.
  identity = float(losses.masked_output_loss(noisy, noisy, clean, 0.1))
  assert float(losses.masked_output_loss(3.0 * noisy, noisy, clean,
                                         0.1)) == pytest.approx(identity,
                                                                rel=1e-5)
  # Silence plays the input at the floor, whatever is below it.
  floor = 0.2
  silent = float(losses.masked_output_loss(jnp.zeros_like(noisy), noisy,
                                           clean, floor))
  assert float(losses.masked_output_loss(0.01 * floor * noisy, noisy, clean,
                                         floor)) == pytest.approx(silent,
                                                                  rel=1e-5)
  fx = losses.stft_magnitude(noisy, 1024, 256)
  expected = losses.spectral_distance(floor * fx,
                                      losses.stft_magnitude(clean, 1024, 256))
  assert silent == pytest.approx(float(expected), rel=1e-4)
  # The clean signal is within range where |S| <= |X| and scores far better.
  assert float(losses.masked_output_loss(clean, noisy, clean,
                                         0.1)) < 0.5 * identity
  # No gradient where the gain is clipped, some where it is not.
  grad = jax.grad(lambda e: losses.masked_output_loss(e, noisy, clean, 0.1))
  assert float(jnp.max(jnp.abs(grad(3.0 * noisy)))) == 0.0
  assert float(jnp.max(jnp.abs(grad(0.5 * noisy)))) > 0.0


@pytest.mark.parametrize('model', ['autoencoder', 'segan'])
@pytest.mark.parametrize('weight,metric', [('stft_weight', 'g_stft'),
                                           ('mask_loss_weight', 'g_mask')])
def test_a_loss_weight_adds_its_term_and_metric(model, weight, metric):
  config = _tiny(model=model, attenuation_limit_db=14, output_mask=True)
  batch = {'noisy': jax.random.normal(jax.random.key(1), (2, 1024)) * 0.1,
           'clean': jax.random.normal(jax.random.key(2), (2, 1024)) * 0.1}
  states = systems.create_states(config, jax.random.key(0))
  plain, m0 = train.make_train_step(config)(states, batch, jax.random.key(3))
  weighted, m1 = train.make_train_step(config.replace(**{weight: 1.0}))(
      states, batch, jax.random.key(3))
  assert metric in m1 and metric not in m0
  loss = 'loss' if model == 'autoencoder' else 'g_loss'
  assert float(m1[loss]) == pytest.approx(float(m0[loss]) + float(m1[metric]),
                                          rel=1e-4)
  assert not np.allclose(plain['g'].params['enc_0']['kernel'],
                         weighted['g'].params['enc_0']['kernel'])


def test_mask_loss_weight_is_checked():
  with pytest.raises(ValueError, match='mask_loss_weight must be >= 0'):
    _tiny(mask_loss_weight=-1.0)
  with pytest.raises(ValueError, match='needs a model that enhances'):
    gan = _tiny(model='gan', mask_loss_weight=1.0)
    systems.of(gan).make_step(gan)


def _real_windows(count, window):
  """``count`` windows from the middle of spread-out vbd_train files."""
  import soundfile  # pylint: disable=g-import-not-at-top
  if not (VBD_TRAIN / 'noisy').is_dir():
    pytest.skip(f'shared VoiceBank-DEMAND pairs not found under {VBD_TRAIN}')
  names = sorted(p.name for p in (VBD_TRAIN / 'noisy').iterdir())
  pairs = []
  for name in names[::len(names) // count][:count]:
    noisy, _ = soundfile.read(VBD_TRAIN / 'noisy' / name, dtype='float32')
    clean, _ = soundfile.read(VBD_TRAIN / 'clean' / name, dtype='float32')
    start = len(noisy) // 2 - window // 2
    pairs.append(audio.preemphasis(
        np.stack([noisy, clean])[:, start:start + window], 0.95))
  pairs = np.stack(pairs)
  return {'noisy': jnp.asarray(pairs[:, 0]), 'clean': jnp.asarray(pairs[:, 1])}


def test_learning_health_demo_generator_fits_real_windows():
  """The demo-size G of the CPU recipe must fit 8 real noisy windows well
  below doing nothing (returning the noisy input) within 300 steps.

  A change that breaks learning (wiring, init, optimizer, loss scaling)
  turns this red: the project once trained Gs that after 125 epochs fitted
  their own data barely better than the identity.
  """
  batch = _real_windows(8, 4096)
  identity = float(losses.l1_loss(batch['noisy'], batch['clean']))
  config = Config(model='autoencoder', model_size='demo', window_size=4096,
                  batch_size=8, residual=True, kernel_init='xavier_uniform',
                  optimizer='adam', adam_b1=0.5, learning_rate=1e-3)
  states = systems.create_states(config, jax.random.key(0))
  step = jax.jit(train.make_train_step(config))
  for _ in range(300):
    states, metrics = step(states, batch, jax.random.key(1))
  final = float(metrics['g_l1'])
  assert final < 0.75 * identity, (final, identity)
