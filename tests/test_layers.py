"""The layers of segan_jax.models.layers: conv modules (their convolutions
are segan_jax.ops.conv's, tests/test_conv.py), PReLU, prepared kernels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conv_testing import assert_same_with_grads, inputs  # pylint: disable=g-bad-import-order
from segan_jax import models
from segan_jax.models import layers
from segan_jax.ops import conv


def test_prepared_kernel_pieces_give_the_same_output_without_the_split():
  """prepare_inference stores the short layers' kernel splits; applying G
  with them gives the same output, and its program no longer copies them."""
  gen = models.Generator(encoder_features=(4, 8, 8, 16), kernel_size=31)
  noisy = jax.random.normal(jax.random.key(1), (8, 256))
  z = jax.random.normal(jax.random.key(2), (8, 16, 16))
  initialized = gen.init(jax.random.key(0), noisy, z)
  assert list(initialized) == ['params']  # no pieces made at init
  params = initialized['params']
  variables = layers.prepare_inference(gen, params, noisy, z)
  prepared = variables[layers.PREPARED]
  # 16 and 32 input samples: the 'taps' form (enc_3's 16 outputs x batch 8
  # also reach the policy's taps_min_rows); the longer layers use their kernels whole.
  assert sorted(prepared) == ['dec_0', 'dec_1', 'enc_3']
  pieces = prepared['dec_0']['kernel_pieces']
  np.testing.assert_array_equal(np.concatenate(pieces),
                                params['dec_0']['kernel'])
  assert len(pieces) > 1
  apply = jax.jit(gen.apply)
  np.testing.assert_array_equal(apply(variables, noisy, z),
                                apply({'params': params}, noisy, z))
  # The split is gone from the prepared program: nothing computes arrays
  # shaped like the pieces (the plain program slices them out of the kernel).
  def computed_pieces(v):
    hlo = apply.lower(v, noisy, z).compile().as_text()
    return [line for line in hlo.splitlines()
            if any(f'= f32[{",".join(map(str, p.shape))}]' in line
                   for p in pieces) and 'parameter(' not in line]
  assert computed_pieces({'params': params})
  assert not computed_pieces(variables)
  # Other parameters (Enhancer.set_params per checkpoint): no recompile.
  compiled = layers._prepared_pieces._cache_size()
  shifted = jax.tree.map(lambda p: p + 1.0, params)
  again = layers.prepare_inference(gen, shifted, noisy, z)[layers.PREPARED]
  assert layers._prepared_pieces._cache_size() == compiled
  np.testing.assert_array_equal(again['dec_0']['kernel_pieces'][0],
                                pieces[0] + 1.0)
  # Another batch size may split differently or not at all: still correct.
  small = noisy[:1], z[:1]
  np.testing.assert_allclose(apply(variables, *small),
                             apply({'params': params}, *small), atol=1e-6)


@pytest.mark.parametrize('length', [8, 64])
def test_modules_match_plain_lax_implementation(length):
  """Conv1D / ConvTranspose1D ('auto') equal the 'xla' forms, with bias."""
  x, _ = inputs(2, length, 6, 1, 1)
  for cls in (layers.Conv1D, layers.ConvTranspose1D):
    fast = cls(5, kernel_size=7)
    plain = cls(5, kernel_size=7, impl='xla')
    params = fast.init(jax.random.key(0), x)
    params = jax.tree.map(lambda p: p + 0.1, params)  # nonzero bias
    assert params['params']['kernel'].shape == (7, 6, 5)
    assert_same_with_grads(lambda x, p: fast.apply(p, x),
                           lambda x, p: plain.apply(p, x), x, params)


@pytest.mark.parametrize('cls', [layers.Conv1D, layers.ConvTranspose1D])
def test_bfloat16_compute_with_float32_params(cls):
  x, _ = inputs(2, 16, 4, 1, 1)
  fast = cls(3, kernel_size=5, dtype=jnp.bfloat16)
  params = fast.init(jax.random.key(0), x)
  assert params['params']['kernel'].dtype == jnp.float32
  y = fast.apply(params, x)
  assert y.dtype == jnp.bfloat16
  y32 = cls(3, kernel_size=5).apply(params, x)
  np.testing.assert_allclose(np.asarray(y, np.float32), y32, rtol=0.05,
                             atol=0.05)


def test_prelu():
  x = jnp.asarray([[[-2.0, 3.0], [1.0, -1.0]]])
  prelu = layers.PReLU()
  params = {'params': {'alpha': jnp.asarray([0.5, 0.25])}}
  np.testing.assert_allclose(prelu.apply(params, x),
                             [[[-1.0, 3.0], [1.0, -0.25]]])


def test_modules_take_their_policy():
  """A module's policy, else the installed one, picks its conv forms."""
  x, _ = inputs(1, 8, 4, 1, 1)
  for cls in (layers.Conv1D, layers.ConvTranspose1D):
    params = jax.eval_shape(cls(3, kernel_size=31).init, jax.random.key(0), x)
    uses_xla_conv = lambda module: 'conv_general_dilated' in str(
        jax.make_jaxpr(module.apply)(params, x))
    assert not uses_xla_conv(cls(3, kernel_size=31))
    assert uses_xla_conv(
        cls(3, kernel_size=31, policy=conv.ConvPolicy(backend='gpu')))
    with conv.use_policy(conv.ConvPolicy(xla_only=True)):
      assert uses_xla_conv(cls(3, kernel_size=31))
