"""Helpers of the conv tests (tests/test_conv.py, tests/test_layers.py)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from segan_jax.models import layers

DN = ('NWC', 'WIO', 'NWC')


def lax_conv_transpose(x, w, stride):
  return lax.conv_transpose(x, w, strides=(stride,), padding='SAME',
                            dimension_numbers=DN)


def lax_conv(x, w, stride, padding=None):
  """lax's conv; 'SAME' padding (`layers.same_padding`) unless given."""
  if padding is None:
    padding = layers.same_padding(w.shape[0])
  return lax.conv_general_dilated(x, w, (stride,), (padding,),
                                  dimension_numbers=DN)


def inputs(batch, length, cin, cout, kernel_size, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(batch, length, cin)).astype(np.float32)
  w = (rng.normal(size=(kernel_size, cin, cout)) /
       np.sqrt(kernel_size * cin)).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(w)


def _value_and_vjp(f):
  """jit(x, w, cotangent -> (f(x, w), d/dx, d/dw)): one compile per shape."""
  def run(x, w, cotangent):
    y, vjp = jax.vjp(f, x, w)
    return (y,) + vjp(cotangent)
  return jax.jit(run)


def assert_same_with_grads(f, ref, x, w, rtol=1e-5, atol=1e-5):
  shape = jax.eval_shape(ref, x, w).shape
  cotangent = jnp.asarray(
      np.random.default_rng(1).normal(size=shape).astype(np.float32))
  got = _value_and_vjp(f)(x, w, cotangent)
  want = _value_and_vjp(ref)(x, w, cotangent)
  assert got[0].shape == want[0].shape == shape
  for g, g_ref in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, g_ref, rtol=rtol, atol=atol * 10)


def primitives(fn, *args):
  return {str(e.primitive) for e in jax.make_jaxpr(fn)(*args).eqns}


def conv_count(fn, *args):
  return str(jax.make_jaxpr(fn)(*args)).count('conv_general_dilated')
