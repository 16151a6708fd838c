import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segan_jax import models
from segan_jax.models import layers

PAPER = (16, 32, 32, 64, 64, 128, 128, 256, 256, 512, 1024)


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def paper_generator_count():
  """From the paper's layer list: kernel 31, weights + bias + PReLU slopes."""
  total, c_in = 0, 1
  for c in PAPER:                       # encoder conv + bias + PReLU
    total += 31 * c_in * c + c + c
    c_in = c
  dec_out = [512, 256, 256, 128, 128, 64, 64, 32, 32, 16, 1]
  skips = [512, 256, 256, 128, 128, 64, 64, 32, 32, 16, 0]
  c_in = 1024 + 1024                    # code concatenated with z
  for c, skip in zip(dec_out, skips):   # deconv + bias (+ PReLU but last)
    total += 31 * c_in * c + c + (c if skip else 0)
    c_in = c + skip
  return total


def paper_discriminator_count():
  total, c_in = 0, 2
  for c in PAPER:                       # conv (no bias) + VBN scale and shift
    total += 31 * c_in * c + 2 * c
    c_in = c
  total += 1024 * 1 + 1                 # 1x1 conv to one channel
  total += 8 * 1 + 1                    # dense over the 8 positions -> logit
  return total


def test_paper_parameter_counts():
  g = models.Generator()
  x = jnp.zeros((1, 16384))
  z = jnp.zeros((1, 8, 1024))
  g_params = jax.eval_shape(g.init, jax.random.key(0), x, z)
  assert count(g_params) == paper_generator_count() == 73_100_049
  d = models.Discriminator()
  pair = jnp.zeros((1, 16384, 2))
  d_params = jax.eval_shape(d.init, jax.random.key(0), pair, pair)
  assert count(d_params) == paper_discriminator_count() == 24_370_570


def test_paper_shapes():
  assert models.latent_shape(16384, PAPER) == (8, 1024)
  g = models.Generator()
  x = jnp.zeros((3, 16384))
  z = jnp.zeros((3, 8, 1024))
  params = jax.eval_shape(g.init, jax.random.key(0), x, z)
  assert jax.eval_shape(g.apply, params, x, z).shape == (3, 16384)
  # Decoder layer i sees its predecessor's output plus the mirrored skip.
  assert params['params']['dec_0']['kernel'].shape == (31, 2048, 512)
  assert params['params']['dec_1']['kernel'].shape == (31, 1024, 256)
  assert params['params']['dec_10']['kernel'].shape == (31, 32, 1)
  d = models.Discriminator()
  pairs = jnp.zeros((3, 16384, 2))
  d_params = jax.eval_shape(d.init, jax.random.key(0), pairs, pairs[:2])
  assert jax.eval_shape(d.apply, d_params, pairs, pairs[:2]).shape == (3,)


def test_latent_shape_rejects_bad_window():
  with pytest.raises(ValueError, match='multiple'):
    models.latent_shape(1004, (4, 8, 8))


def _tiny_generator(use_z=True):
  return models.Generator(encoder_features=(4, 8, 8), kernel_size=5,
                          use_z=use_z)


def test_generator_output_range_and_z_dependence():
  g = _tiny_generator()
  x = jax.random.normal(jax.random.key(1), (2, 64))
  z1 = jax.random.normal(jax.random.key(2), (2, 8, 8))
  z2 = jax.random.normal(jax.random.key(3), (2, 8, 8))
  params = g.init(jax.random.key(0), x, z1)
  # PReLU slopes start at 0 (ReLU); leaky slopes let z reach the output.
  params = jax.tree_util.tree_map_with_path(
      lambda path, p: p + 0.25 if 'alpha' in str(path) else p, params)
  y1, y2 = g.apply(params, x, z1), g.apply(params, x, z2)
  assert y1.shape == (2, 64)
  assert float(jnp.max(jnp.abs(y1))) <= 1.0
  assert not np.allclose(y1, y2)
  with pytest.raises(ValueError, match='latent z'):
    g.apply(params, x)


def test_autoencoder_variant_has_no_z():
  g = _tiny_generator(use_z=False)
  x = jax.random.normal(jax.random.key(1), (2, 64))
  params = g.init(jax.random.key(0), x)
  assert params['params']['dec_0']['kernel'].shape == (5, 8, 8)
  assert g.apply(params, x).shape == (2, 64)


def test_skip_connections_carry_encoder_outputs():
  """Zeroing a mirrored encoder output changes G's output only via the skip."""
  g = _tiny_generator(use_z=False)
  x = jax.random.normal(jax.random.key(1), (1, 64))
  params = g.init(jax.random.key(0), x)
  # dec_1 input = dec_0 output (8 ch) + enc_1 output (8 ch): cut the skip part.
  kernel = params['params']['dec_1']['kernel']
  assert kernel.shape == (5, 16, 4)
  cut = jax.tree.map(lambda p: p, params)
  cut['params']['dec_1']['kernel'] = kernel.at[:, 8:, :].set(0.0)
  assert not np.allclose(g.apply(params, x), g.apply(cut, x))


def test_conv_lengths():
  x = jnp.ones((2, 32, 3))
  conv = layers.Conv1D(5, kernel_size=7)
  y = conv.apply(conv.init(jax.random.key(0), x), x)
  assert y.shape == (2, 16, 5)
  deconv = layers.ConvTranspose1D(4, kernel_size=7)
  y = deconv.apply(deconv.init(jax.random.key(0), x), x)
  assert y.shape == (2, 64, 4)


def test_virtual_batch_norm_matches_formula():
  rng = np.random.default_rng(0)
  reference = rng.normal(1.0, 2.0, (5, 12, 3)).astype(np.float32)
  x = rng.normal(-0.5, 0.7, (2, 12, 3)).astype(np.float32)
  vbn = layers.VirtualBatchNorm()
  params = vbn.init(jax.random.key(0), reference, x)
  ref_out, x_out = vbn.apply(params, reference, x)
  ref_mean = reference.mean(axis=(0, 1))
  ref_sq = (reference**2).mean(axis=(0, 1))
  np.testing.assert_allclose(
      ref_out, (reference - ref_mean) / np.sqrt(ref_sq - ref_mean**2 + 1e-5),
      rtol=1e-4, atol=1e-5)
  for b in range(2):  # each example joins the reference batch: weight 1/6
    mean = x[b].mean(0) / 6 + ref_mean * 5 / 6
    sq = (x[b]**2).mean(0) / 6 + ref_sq * 5 / 6
    np.testing.assert_allclose(
        x_out[b], (x[b] - mean) / np.sqrt(sq - mean**2 + 1e-5),
        rtol=1e-4, atol=1e-5)


def test_discriminator_logit_independent_of_batch_mates():
  d = models.Discriminator(features=(4, 8, 8), kernel_size=5)
  rng = np.random.default_rng(1)
  reference = rng.normal(size=(3, 64, 2)).astype(np.float32)
  pairs = rng.normal(size=(4, 64, 2)).astype(np.float32)
  params = d.init(jax.random.key(0), pairs, reference)
  together = d.apply(params, pairs, reference)
  alone = [d.apply(params, pairs[i:i + 1], reference)[0] for i in range(4)]
  np.testing.assert_allclose(together, np.array(alone), rtol=1e-5, atol=1e-6)
  # ... but it does depend on the reference batch.
  other = d.apply(params, pairs, reference * 2.0 + 1.0)
  assert not np.allclose(together, other)


def test_discriminator_split_reference_same_logits_and_pair_gradients():
  """G's update convolves the reference apart: same logits, same d/d pairs,
  and its gradient program has no backward pass over the reference."""
  d = models.Discriminator(features=(4, 8, 8), kernel_size=5)
  rng = np.random.default_rng(2)
  reference = jnp.asarray(rng.normal(size=(6, 64, 2)).astype(np.float32))
  pairs = jnp.asarray(rng.normal(size=(3, 64, 2)).astype(np.float32))
  params = d.init(jax.random.key(0), pairs, reference)

  def loss(x, split):
    return jnp.sum(jnp.square(d.apply(params, x, reference,
                                      split_reference=split) - 1.0))

  np.testing.assert_allclose(
      d.apply(params, pairs, reference, split_reference=True),
      d.apply(params, pairs, reference), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jax.grad(loss)(pairs, True),
                             jax.grad(loss)(pairs, False),
                             rtol=1e-4, atol=1e-6)
  # The backward pass covers the 3 pairs, not the 6 + 3 windows: fewer FLOPs.
  def flops(split):
    compiled = jax.jit(jax.grad(loss), static_argnums=1).lower(
        pairs, split).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):
      analysis = analysis[0]
    return analysis['flops']

  assert flops(True) < 0.8 * flops(False)
