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


@pytest.mark.parametrize('policy', [
    conv.ConvPolicy(backend='cpu'),
    # Karatsuba two levels deep on these short layers as well.
    conv.ConvPolicy(backend='cpu', karatsuba_min_out_length=8,
                    karatsuba_min_macs=1)], ids=['cpu', 'karatsuba'])
def test_prepared_kernel_operands_give_the_same_output_without_re_layouts(
    policy):
  """prepare_inference stores each layer's kernel as its forms read it;
  applying G with them gives the same output, and its program no longer
  computes them."""
  gen = models.Generator(encoder_features=(4, 8, 8, 16), kernel_size=31)
  # Batch 9: no activation is shaped like a kernel operand (the check of
  # the program below goes by shapes).
  noisy = jax.random.normal(jax.random.key(1), (9, 256))
  z = jax.random.normal(jax.random.key(2), (9, 16, 16))
  with conv.use_policy(policy):
    initialized = gen.init(jax.random.key(0), noisy, z)
    assert list(initialized) == ['params']  # nothing prepared at init
    params = initialized['params']
    variables = layers.prepare_inference(gen, params, noisy, z)
    prepared = variables[layers.PREPARED]
    operands = {f'{layer}/{key}': value for layer, stored in prepared.items()
                for key, value in stored['kernel_operands'].items()}
    forms = {key.split('/')[1].split('_', 1)[1] for key in operands}
    # 16 and 32 input samples: 'taps' (enc_3's 16 outputs x batch 9 also
    # reach the policy's taps_min_rows); the last layer's 2 phases:
    # channels-first; the longer layers: phase kernels for XLA's conv.
    assert {'taps', 'channels_first', 'xla'} <= forms
    taps = prepared['dec_0']['kernel_operands']
    assert len(taps) > 1 and sum(p.shape[0] for p in taps.values()) <= 31
    apply = jax.jit(gen.apply)
    np.testing.assert_array_equal(apply(variables, noisy, z),
                                  apply({'params': params}, noisy, z))

    # The re-layouts are gone from the prepared program: nothing computes
    # arrays shaped like the stored operands (the plain program does).
    def computed_operands(v):
      hlo = apply.lower(v, noisy, z).compile().as_text()
      return [line for line in hlo.splitlines()
              if any(f'= f32[{",".join(map(str, p.shape))}]' in line
                     for p in operands.values())
              and 'parameter(' not in line]
    assert computed_operands({'params': params})
    assert not computed_operands(variables)
    # Other parameters (Enhancer.set_params per checkpoint): no recompile.
    compiled = layers._prepared_operands._cache_size()
    shifted = jax.tree.map(lambda p: p + 1.0, params)
    again = layers.prepare_inference(gen, shifted, noisy, z)[layers.PREPARED]
    assert layers._prepared_operands._cache_size() == compiled
    np.testing.assert_array_equal(
        list(again['dec_0']['kernel_operands'].values())[0],
        list(taps.values())[0] + 1.0)
    # Another batch size may pick other forms: still correct.
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
