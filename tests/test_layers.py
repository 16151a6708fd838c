"""The fast conv forms of segan_jax.models.layers equal lax's, values and grads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from segan_jax import models
from segan_jax.models import layers

DN = ('NWC', 'WIO', 'NWC')


def _lax_conv_transpose(x, w, stride):
  return lax.conv_transpose(x, w, strides=(stride,), padding='SAME',
                            dimension_numbers=DN)


def _lax_conv(x, w, stride):
  return lax.conv_general_dilated(x, w, (stride,),
                                  (layers.same_padding(w.shape[0]),),
                                  dimension_numbers=DN)


def _inputs(batch, length, cin, cout, kernel_size, seed=0):
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


def _assert_same_with_grads(f, ref, x, w, rtol=1e-5, atol=1e-5):
  shape = jax.eval_shape(ref, x, w).shape
  cotangent = jnp.asarray(
      np.random.default_rng(1).normal(size=shape).astype(np.float32))
  got = _value_and_vjp(f)(x, w, cotangent)
  want = _value_and_vjp(ref)(x, w, cotangent)
  assert got[0].shape == want[0].shape == shape
  for g, g_ref in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, g_ref, rtol=rtol, atol=atol * 10)


@pytest.mark.parametrize('impl', ['polyphase', 'im2col', 'taps'])
@pytest.mark.parametrize('kernel_size,stride',
                         [(31, 2), (30, 2), (5, 2), (4, 2), (1, 2), (5, 3),
                          (2, 3)])
def test_conv_transpose_matches_lax(impl, kernel_size, stride):
  for length, cin, cout in [(1, 3, 2), (8, 6, 5), (33, 3, 4)]:
    x, w = _inputs(2, length, cin, cout, kernel_size)
    _assert_same_with_grads(
        lambda x, w: layers.conv_transpose1d(x, w, stride, impl),
        lambda x, w: _lax_conv_transpose(x, w, stride), x, w)


@pytest.mark.parametrize('kernel_size,stride',
                         [(31, 2), (30, 2), (5, 2), (4, 2), (1, 1), (5, 3),
                          (4, 1)])
def test_conv_im2col_matches_lax(kernel_size, stride):
  for length, cin, cout in [(2, 3, 2), (16, 4, 3), (66, 3, 4)]:
    x, w = _inputs(2, length, cin, cout, kernel_size)
    _assert_same_with_grads(
        lambda x, w: layers.conv1d(x, w, stride,
                                   layers.same_padding(kernel_size), 'im2col'),
        lambda x, w: _lax_conv(x, w, stride), x, w)


@pytest.mark.parametrize('kernel_size,stride,padding',
                         [(31, 2, (15, 15)), (30, 2, (14, 15)), (5, 2, (2, 2)),
                          (4, 2, (1, 2)), (5, 3, (2, 2)), (2, 3, (0, 1)),
                          (7, 2, (0, 0)), (7, 2, (5, 1))])
def test_conv_phases_matches_lax(kernel_size, stride, padding):
  """Forward and both gradients of the 'phases' form equal lax's."""
  phases = lambda x, w: layers.conv1d(x, w, stride, padding, 'phases')
  plain = lambda x, w: lax.conv_general_dilated(x, w, (stride,), (padding,),
                                                dimension_numbers=DN)
  for length, cin, cout in [(9, 3, 2), (16, 4, 3), (67, 3, 4)]:
    x, w = _inputs(2, length, cin, cout, kernel_size)
    _assert_same_with_grads(phases, plain, x, w)
  # The gradient really takes the stride-1 route.
  x, w = _inputs(2, 64, 3, 4, kernel_size)
  grad_jaxpr = str(jax.make_jaxpr(jax.grad(
      lambda x, w: jnp.sum(phases(x, w)), argnums=(0, 1)))(x, w))
  assert 'lhs_dilation=(1,)' in grad_jaxpr
  assert f'lhs_dilation=({stride},)' not in grad_jaxpr


@pytest.mark.parametrize('kernel_size,stride,padding',
                         [(31, 2, (15, 15)), (30, 2, (14, 15)), (5, 2, (2, 2)),
                          (4, 2, (1, 2)), (5, 3, (2, 2)), (2, 3, (0, 1)),
                          (7, 2, (0, 0)), (7, 2, (5, 1)), (1, 1, (0, 0)),
                          (4, 1, (1, 2))])
def test_conv_taps_matches_lax(kernel_size, stride, padding):
  """Forward and both gradients of the strided conv's 'taps' form."""
  taps = lambda x, w: layers.conv1d(x, w, stride, padding, 'taps')
  plain = lambda x, w: lax.conv_general_dilated(x, w, (stride,), (padding,),
                                                dimension_numbers=DN)
  for length, cin, cout in [(1, 3, 2), (9, 3, 2), (16, 4, 3), (67, 3, 4)]:
    if length + sum(padding) < kernel_size:
      continue
    x, w = _inputs(2, length, cin, cout, kernel_size)
    _assert_same_with_grads(taps, plain, x, w)


@pytest.mark.parametrize('kernel_size,stride',
                         [(31, 2), (30, 2), (5, 2), (4, 2), (1, 2), (5, 3),
                          (2, 3), (7, 4)])
def test_polyphase_kernel_holds_the_taps_of_each_phase(kernel_size, stride):
  _, w = _inputs(1, 1, 3, 2, kernel_size)
  d_min, taps = layers.polyphase_taps(kernel_size, stride)
  got_d_min, got = layers.polyphase_kernel(w, stride)
  assert got_d_min == d_min and got.shape == (len(taps), 3, stride * 2)
  for j, per_phase in enumerate(taps):
    for r, k in enumerate(per_phase):
      want = np.zeros((3, 2)) if k is None else w[k]
      np.testing.assert_array_equal(got[j, :, 2 * r:2 * r + 2], want)


@pytest.mark.parametrize('levels,kernel_size,padding',
                         [(1, 16, (0, 0)), (2, 16, (0, 0)), (2, 15, (7, 8)),
                          (3, 31, (15, 15)), (1, 2, (0, 0)), (2, 3, (5, 0)),
                          (2, 8, (-2, 3))])
def test_karatsuba_conv_matches_lax(monkeypatch, levels, kernel_size,
                                    padding):
  """Karatsuba's three half-size convs (recursively) give the stride-1 conv."""
  monkeypatch.setattr(layers, 'KARATSUBA_MIN_OUT_LENGTH', 4)
  monkeypatch.setattr(layers, 'KARATSUBA_MIN_MACS', 0)
  karatsuba = lambda x, w: layers._karatsuba_conv(x, w, padding, levels)
  # Padding by lax.pad, not by the conv: with padding (5, 0) around a
  # 3-tap kernel, lax's conv gave a wrong input gradient at the last sample
  # (jax 0.10.2, CPU; checked by hand).
  plain = lambda x, w: lax.conv_general_dilated(
      lax.pad(x, 0.0, ((0, 0, 0), (*padding, 0), (0, 0, 0))), w, (1,),
      ((0, 0),), dimension_numbers=DN)
  for length in (41, 70):
    x, w = _inputs(2, length, 3, 5, kernel_size)
    _assert_same_with_grads(karatsuba, plain, x, w)
    np.testing.assert_allclose(jax.jit(karatsuba)(x, w), plain(x, w),
                               rtol=1e-5, atol=1e-5)


def _conv_count(fn, *args):
  return str(jax.make_jaxpr(fn)(*args)).count('conv_general_dilated')


def test_long_stride1_convs_take_the_karatsuba_form():
  """Alone (inference) KARATSUBA_LEVELS deep: 9 convs at 2 levels, about
  9/16 of the FLOPs; differentiated KARATSUBA_TRAIN_LEVELS deep (0: one
  XLA conv); values and gradients equal XLA's conv either way."""
  assert (layers.KARATSUBA_LEVELS, layers.KARATSUBA_TRAIN_LEVELS) == (2, 0)
  x, w = _inputs(4, 300, 64, 32, 16)
  conv = lambda x, w: layers._stride1_conv(x, w, (7, 8))
  plain = lambda x, w: lax.conv_general_dilated(x, w, (1,), ((7, 8),),
                                                dimension_numbers=DN)
  assert _conv_count(conv, x, w) == 9
  assert _conv_count(lambda x, w: jax.vjp(conv, x, w)[0], x, w) == 1
  flops = [jax.jit(f).lower(x, w).cost_analysis()['flops']
           for f in (conv, plain)]
  assert flops[0] < 0.62 * flops[1]
  np.testing.assert_allclose(jax.jit(conv)(x, w), plain(x, w), rtol=1e-5,
                             atol=1e-5)
  _assert_same_with_grads(conv, plain, x, w)
  # Short, small or bfloat16 (whose sums would round): one conv.
  assert _conv_count(conv, x[:, :40], w) == 1
  assert _conv_count(conv, x[:1, :, :8], w[:, :8]) == 1
  assert _conv_count(conv, x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)) == 1


@pytest.mark.parametrize('kernel_size,padding',
                         [(16, (7, 8)), (16, (0, 0)), (3, (5, 0)),
                          (8, (-2, 3))])
def test_channels_first_conv_matches_lax(kernel_size, padding):
  """Few output channels: one matmul over the input channels, then the
  taps' shifted outputs summed; values and gradients equal the conv's."""
  fast = lambda x, w: layers._channels_first_conv(x, w, padding)
  plain = lambda x, w: lax.conv_general_dilated(
      lax.pad(x, 0.0, ((0, 0, 0), (*padding, 0), (0, 0, 0))), w, (1,),
      ((0, 0),), dimension_numbers=DN)
  for length, cout in ((41, 2), (70, 1)):
    x, w = _inputs(2, length, 6, cout, kernel_size)
    _assert_same_with_grads(fast, plain, x, w)


def test_last_decoder_layer_takes_the_channels_first_form_alone():
  """SEGAN's 1-channel output layer: no conv when evaluated alone, XLA's
  conv when differentiated; same values either way."""
  x, w = _inputs(2, 128, 8, 1, 31)
  fast = lambda x, w: layers.conv_transpose1d(x, w, 2)
  assert _conv_count(fast, x, w) == 0
  assert _conv_count(lambda x, w: jax.vjp(fast, x, w)[0], x, w) == 1
  np.testing.assert_allclose(jax.jit(fast)(x, w),
                             _lax_conv_transpose(x, w, 2), rtol=1e-5,
                             atol=1e-5)
  _assert_same_with_grads(fast, lambda x, w: _lax_conv_transpose(x, w, 2),
                          x, w)


@pytest.mark.parametrize('transpose', [False, True])
def test_long_layers_match_lax_alone_and_differentiated(monkeypatch,
                                                       transpose):
  """SEGAN's long layers: the inference value (Karatsuba, 2 levels) and the
  train-time value and gradients (1 level) equal lax's."""
  monkeypatch.setattr(layers, 'KARATSUBA_MIN_MACS', 0)
  monkeypatch.setattr(layers, 'KARATSUBA_TRAIN_LEVELS', 1)
  x, w = _inputs(2, 300, 8, 6, 31)
  if transpose:
    fast = lambda x, w: layers.conv_transpose1d(x, w, 2)
    plain = lambda x, w: _lax_conv_transpose(x, w, 2)
  else:
    fast = lambda x, w: layers.conv1d(x, w, 2, layers.same_padding(31))
    plain = lambda x, w: _lax_conv(x, w, 2)
  assert _conv_count(fast, x, w) == 9
  np.testing.assert_allclose(jax.jit(fast)(x, w), plain(x, w), rtol=1e-5,
                             atol=1e-5)
  _assert_same_with_grads(fast, plain, x, w)


@pytest.mark.parametrize('transpose', [False, True])
def test_taps_form_skips_products_of_padding(transpose):
  """On SEGAN's shortest layers about half of im2col's products multiply
  padding; the 'taps' form computes few more than the needed ones."""
  length, kernel_size = 8 if transpose else 16, 31
  if transpose:
    pad = layers._conv_transpose_same_padding(kernel_size, 2)
    out_length = 2 * length
    needed = sum(0 <= 2 * i + pad - k < out_length
                 for i in range(length) for k in range(kernel_size))
  else:
    pad, out_length = 15, length // 2
    needed = sum(0 <= 2 * u + k - pad < length
                 for u in range(out_length) for k in range(kernel_size))
  groups = layers._tap_groups(kernel_size, 2, length, pad, out_length,
                              transpose)
  computed = sum((end - first) * n for first, end, n, _ in groups)
  everything = kernel_size * (length if transpose else out_length)
  assert len(groups) <= layers.TAP_GROUPS
  assert needed <= computed <= 1.1 * needed
  assert needed < 0.55 * everything


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
  # also reach TAPS_MIN_ROWS); the longer layers use their kernels whole.
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


def test_wrong_kernel_pieces_are_refused():
  x, w = _inputs(8, 16, 4, 5, 31)
  sizes = layers.conv_transpose1d_kernel_split(x.shape, w.shape, 2)
  assert sizes is not None and sum(sizes) == 31
  wrong = lax.split(w, [1, 30], axis=0)
  with pytest.raises(ValueError, match='do not split'):
    layers.conv_transpose1d(x, w, 2, kernel_pieces=wrong)
  assert layers.conv_transpose1d_kernel_split((8, 64, 4), w.shape, 2) is None


@pytest.mark.parametrize('length', [8, 64])
def test_modules_match_plain_lax_implementation(length):
  """Conv1D / ConvTranspose1D ('auto') equal the 'xla' forms, with bias."""
  x, _ = _inputs(2, length, 6, 1, 1)
  for cls in (layers.Conv1D, layers.ConvTranspose1D):
    fast = cls(5, kernel_size=7)
    plain = cls(5, kernel_size=7, impl='xla')
    params = fast.init(jax.random.key(0), x)
    params = jax.tree.map(lambda p: p + 0.1, params)  # nonzero bias
    assert params['params']['kernel'].shape == (7, 6, 5)
    _assert_same_with_grads(lambda x, p: fast.apply(p, x),
                            lambda x, p: plain.apply(p, x), x, params)


def test_paper_decoder_shapes_match_lax():
  """SEGAN's first decoder layer shape class (short input, wide channels)."""
  x, w = _inputs(2, 8, 96, 24, 31)
  _assert_same_with_grads(
      lambda x, w: layers.conv_transpose1d(x, w, 2),
      lambda x, w: _lax_conv_transpose(x, w, 2), x, w, rtol=1e-4, atol=1e-4)
  x, w = _inputs(2, 16, 48, 96, 31)
  _assert_same_with_grads(
      lambda x, w: layers.conv1d(x, w, 2, layers.same_padding(31)),
      lambda x, w: _lax_conv(x, w, 2), x, w, rtol=1e-4, atol=1e-4)


def _primitives(fn, *args):
  return {str(e.primitive) for e in jax.make_jaxpr(fn)(*args).eqns}


def test_auto_avoids_xla_conv_on_short_signals():
  short, w = _inputs(1, 8, 4, 3, 31)
  assert 'conv_general_dilated' not in _primitives(
      lambda x, w: layers.conv_transpose1d(x, w, 2), short, w)
  assert 'conv_general_dilated' not in _primitives(
      lambda x, w: layers.conv1d(x, w, 2, (15, 15)), short, w)
  # Many output rows: the 'taps' form (batched matmuls, no conv).
  many, _ = _inputs(16, 16, 4, 3, 31)
  assert 'conv_general_dilated' not in _primitives(
      lambda x, w: layers.conv1d(x, w, 2, (15, 15)), many, w)
  long, _ = _inputs(1, 256, 4, 3, 31)
  assert 'conv_general_dilated' in str(jax.make_jaxpr(
      lambda x, w: layers.conv1d(x, w, 2, (15, 15)))(long, w))


def test_default_impl_switch():
  x, w = _inputs(1, 8, 4, 3, 31)
  layers.set_default_impl('xla')
  try:
    assert 'conv_general_dilated' in _primitives(
        lambda x, w: layers.conv_transpose1d(x, w, 2), x, w)
  finally:
    layers.set_default_impl('auto')
  with pytest.raises(ValueError):
    layers.set_default_impl('im2col')
  with pytest.raises(ValueError, match='unknown'):
    layers.conv1d(x, w, 2, (15, 15), impl='nope')


@pytest.mark.parametrize('cls', [layers.Conv1D, layers.ConvTranspose1D])
def test_bfloat16_compute_with_float32_params(cls):
  x, _ = _inputs(2, 16, 4, 1, 1)
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
