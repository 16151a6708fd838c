"""The conv forms of segan_jax.ops.conv, and its policies, equal lax's
convolutions: values and gradients."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from conv_testing import (DN, assert_same_with_grads, conv_count, inputs,  # pylint: disable=g-bad-import-order
                          lax_conv, lax_conv_transpose, primitives)
from segan_jax.ops import conv
from segan_jax.ops.conv import (channels_first, karatsuba, prepared, stride1,
                                taps_plan)
from segan_jax.ops.conv.shapes import conv_transpose_same_padding

DEFAULT = conv.ConvPolicy()


@pytest.mark.parametrize('impl', ['polyphase', 'im2col', 'taps'])
@pytest.mark.parametrize('kernel_size,stride',
                         [(31, 2), (30, 2), (5, 2), (4, 2), (1, 2), (5, 3),
                          (2, 3)])
def test_conv_transpose_matches_lax(impl, kernel_size, stride):
  for length, cin, cout in [(1, 3, 2), (8, 6, 5), (33, 3, 4)]:
    x, w = inputs(2, length, cin, cout, kernel_size)
    assert_same_with_grads(
        lambda x, w: conv.conv_transpose1d(x, w, stride, impl),
        lambda x, w: lax_conv_transpose(x, w, stride), x, w)


@pytest.mark.parametrize('kernel_size,stride',
                         [(31, 2), (30, 2), (5, 2), (4, 2), (1, 1), (5, 3),
                          (4, 1)])
def test_conv_im2col_matches_lax(kernel_size, stride):
  padding = ((kernel_size - 1) // 2, kernel_size // 2)
  for length, cin, cout in [(2, 3, 2), (16, 4, 3), (66, 3, 4)]:
    x, w = inputs(2, length, cin, cout, kernel_size)
    assert_same_with_grads(
        lambda x, w: conv.conv1d(x, w, stride, padding, 'im2col'),
        lambda x, w: lax_conv(x, w, stride, padding), x, w)


def _assert_gradient_takes_stride1_route(fn, stride, kernel_size):
  x, w = inputs(2, 64, 3, 4, kernel_size)
  grad_jaxpr = str(jax.make_jaxpr(jax.grad(
      lambda x, w: jnp.sum(fn(x, w)), argnums=(0, 1)))(x, w))
  assert 'lhs_dilation=(1,)' in grad_jaxpr
  assert f'lhs_dilation=({stride},)' not in grad_jaxpr


@pytest.mark.parametrize('kernel_size,stride,padding',
                         [(31, 2, (15, 15)), (30, 2, (14, 15)), (5, 2, (2, 2)),
                          (4, 2, (1, 2)), (5, 3, (2, 2)), (2, 3, (0, 1)),
                          (7, 2, (0, 0)), (7, 2, (5, 1))])
def test_conv_phases_matches_lax(kernel_size, stride, padding):
  """Forward and both gradients of the 'phases' form equal lax's."""
  phases = lambda x, w: conv.conv1d(x, w, stride, padding, 'phases')
  for length, cin, cout in [(9, 3, 2), (16, 4, 3), (67, 3, 4)]:
    x, w = inputs(2, length, cin, cout, kernel_size)
    assert_same_with_grads(phases,
                           lambda x, w: lax_conv(x, w, stride, padding), x, w)
  # The gradient really takes the stride-1 route.
  _assert_gradient_takes_stride1_route(phases, stride, kernel_size)


@pytest.mark.parametrize('kernel_size,stride,padding',
                         [(4, 2, (1, 2)), (5, 3, (2, 2))])
def test_conv_xla_phase_grad_matches_lax(kernel_size, stride, padding):
  """'xla_phase_grad': XLA's strided conv alone, the phase form's gradient
  (SEGAN's k31 layers: test_accelerator_policy_matches_lax)."""
  form = lambda x, w: conv.conv1d(x, w, stride, padding, 'xla_phase_grad')
  x, w = inputs(2, 40, 3, 4, kernel_size)
  assert conv_count(form, x, w) == 1
  assert f'window_strides=({stride},)' in str(jax.make_jaxpr(form)(x, w))
  assert_same_with_grads(form, lambda x, w: lax_conv(x, w, stride, padding),
                         x, w)
  _assert_gradient_takes_stride1_route(form, stride, kernel_size)


@pytest.mark.parametrize('kernel_size,stride,padding',
                         [(31, 2, (15, 15)), (30, 2, (14, 15)), (5, 2, (2, 2)),
                          (4, 2, (1, 2)), (5, 3, (2, 2)), (2, 3, (0, 1)),
                          (7, 2, (0, 0)), (7, 2, (5, 1)), (1, 1, (0, 0)),
                          (4, 1, (1, 2))])
def test_conv_taps_matches_lax(kernel_size, stride, padding):
  """Forward and both gradients of the strided conv's 'taps' form."""
  taps = lambda x, w: conv.conv1d(x, w, stride, padding, 'taps')
  for length, cin, cout in [(1, 3, 2), (9, 3, 2), (16, 4, 3), (67, 3, 4)]:
    if length + sum(padding) < kernel_size:
      continue
    x, w = inputs(2, length, cin, cout, kernel_size)
    assert_same_with_grads(taps,
                           lambda x, w: lax_conv(x, w, stride, padding), x, w)


@pytest.mark.parametrize('kernel_size,stride',
                         [(31, 2), (30, 2), (5, 2), (4, 2), (1, 2), (5, 3),
                          (2, 3), (7, 4)])
def test_polyphase_kernel_holds_the_taps_of_each_phase(kernel_size, stride):
  _, w = inputs(1, 1, 3, 2, kernel_size)
  d_min, taps = conv.polyphase_taps(kernel_size, stride)
  got_d_min, got = conv.polyphase_kernel(w, stride)
  assert got_d_min == d_min and got.shape == (len(taps), 3, stride * 2)
  for j, per_phase in enumerate(taps):
    for r, k in enumerate(per_phase):
      want = np.zeros((3, 2)) if k is None else w[k]
      np.testing.assert_array_equal(got[j, :, 2 * r:2 * r + 2], want)


def _lax_padded_stride1(padding):
  # Padding by lax.pad, not by the conv: with padding (5, 0) around a
  # 3-tap kernel, lax's conv gave a wrong input gradient at the last sample
  # (jax 0.10.2, CPU; checked by hand).
  return lambda x, w: lax.conv_general_dilated(
      lax.pad(x, 0.0, ((0, 0, 0), (*padding, 0), (0, 0, 0))), w, (1,),
      ((0, 0),), dimension_numbers=DN)


@pytest.mark.parametrize('levels,kernel_size,padding',
                         [(1, 16, (0, 0)), (2, 16, (0, 0)), (2, 15, (7, 8)),
                          (3, 31, (15, 15)), (1, 2, (0, 0)), (2, 3, (5, 0)),
                          (2, 8, (-2, 3))])
def test_karatsuba_conv_matches_lax(levels, kernel_size, padding):
  """Karatsuba's three half-size convs (recursively) give the stride-1 conv."""
  policy = dataclasses.replace(DEFAULT, karatsuba_min_out_length=4,
                               karatsuba_min_macs=0)
  fast = lambda x, w: karatsuba.karatsuba_conv(x, w, padding, levels, policy)
  plain = _lax_padded_stride1(padding)
  for length in (41, 70):
    x, w = inputs(2, length, 3, 5, kernel_size)
    assert_same_with_grads(fast, plain, x, w)
    np.testing.assert_allclose(jax.jit(fast)(x, w), plain(x, w),
                               rtol=1e-5, atol=1e-5)


def test_long_stride1_convs_take_the_karatsuba_form():
  """Alone (inference) karatsuba_levels deep: 9 convs at 2 levels, about
  9/16 of the FLOPs; differentiated karatsuba_train_levels deep (0: one
  XLA conv); values and gradients equal XLA's conv either way."""
  assert (DEFAULT.karatsuba_levels, DEFAULT.karatsuba_train_levels) == (2, 0)
  x, w = inputs(4, 300, 64, 32, 16)
  fast = lambda x, w: stride1.stride1_conv(x, w, (7, 8), DEFAULT)
  plain = lambda x, w: lax_conv(x, w, 1, (7, 8))
  assert conv_count(fast, x, w) == 9
  assert conv_count(lambda x, w: jax.vjp(fast, x, w)[0], x, w) == 1
  flops = [jax.jit(f).lower(x, w).cost_analysis()['flops']
           for f in (fast, plain)]
  assert flops[0] < 0.62 * flops[1]
  np.testing.assert_allclose(jax.jit(fast)(x, w), plain(x, w), rtol=1e-5,
                             atol=1e-5)
  assert_same_with_grads(fast, plain, x, w)
  # Short, small or bfloat16 (whose sums would round): one conv.
  assert conv_count(fast, x[:, :40], w) == 1
  assert conv_count(fast, x[:1, :, :8], w[:, :8]) == 1
  assert conv_count(fast, x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)) == 1


@pytest.mark.parametrize('kernel_size,padding',
                         [(16, (7, 8)), (16, (0, 0)), (3, (5, 0)),
                          (8, (-2, 3))])
def test_channels_first_conv_matches_lax(kernel_size, padding):
  """Few output channels: one matmul over the input channels, then the
  taps' shifted outputs summed; values and gradients equal the conv's."""
  fast = lambda x, w: channels_first.channels_first_conv(x, w, padding)
  for length, cout in ((41, 2), (70, 1)):
    x, w = inputs(2, length, 6, cout, kernel_size)
    assert_same_with_grads(fast, _lax_padded_stride1(padding), x, w)


def test_last_decoder_layer_takes_the_channels_first_form_alone():
  """SEGAN's 1-channel output layer: no conv when evaluated alone, XLA's
  conv when differentiated; same values either way."""
  x, w = inputs(2, 128, 8, 1, 31)
  fast = lambda x, w: conv.conv_transpose1d(x, w, 2)
  assert conv_count(fast, x, w) == 0
  assert conv_count(lambda x, w: jax.vjp(fast, x, w)[0], x, w) == 1
  np.testing.assert_allclose(jax.jit(fast)(x, w), lax_conv_transpose(x, w, 2),
                             rtol=1e-5, atol=1e-5)
  assert_same_with_grads(fast, lambda x, w: lax_conv_transpose(x, w, 2), x, w)


@pytest.mark.parametrize('transpose', [False, True])
def test_long_layers_match_lax_alone_and_differentiated(transpose):
  """SEGAN's long layers: the inference value (Karatsuba, 2 levels) and the
  train-time value and gradients (1 level) equal lax's."""
  policy = dataclasses.replace(DEFAULT, karatsuba_min_macs=0,
                               karatsuba_train_levels=1)
  x, w = inputs(2, 300, 8, 6, 31)
  if transpose:
    fast = lambda x, w: conv.conv_transpose1d(x, w, 2, policy=policy)
    plain = lambda x, w: lax_conv_transpose(x, w, 2)
  else:
    fast = lambda x, w: conv.conv1d(x, w, 2, (15, 15), policy=policy)
    plain = lambda x, w: lax_conv(x, w, 2, (15, 15))
  assert conv_count(fast, x, w) == 9
  np.testing.assert_allclose(jax.jit(fast)(x, w), plain(x, w), rtol=1e-5,
                             atol=1e-5)
  assert_same_with_grads(fast, plain, x, w)


@pytest.mark.parametrize('transpose', [False, True])
def test_taps_form_skips_products_of_padding(transpose):
  """On SEGAN's shortest layers about half of im2col's products multiply
  padding; the 'taps' form computes few more than the needed ones."""
  length, kernel_size = 8 if transpose else 16, 31
  if transpose:
    pad = conv_transpose_same_padding(kernel_size, 2)
    out_length = 2 * length
    needed = sum(0 <= 2 * i + pad - k < out_length
                 for i in range(length) for k in range(kernel_size))
  else:
    pad, out_length = 15, length // 2
    needed = sum(0 <= 2 * u + k - pad < length
                 for u in range(out_length) for k in range(kernel_size))
  groups = taps_plan.tap_groups(kernel_size, 2, length, pad, out_length,
                                transpose, DEFAULT.tap_groups)
  computed = sum((end - first) * n for first, end, n, _ in groups)
  everything = kernel_size * (length if transpose else out_length)
  assert len(groups) <= DEFAULT.tap_groups
  assert needed <= computed <= 1.1 * needed
  assert needed < 0.55 * everything


def test_paper_decoder_shapes_match_lax():
  """SEGAN's first decoder layer shape class (short input, wide channels)."""
  x, w = inputs(2, 8, 96, 24, 31)
  assert_same_with_grads(
      lambda x, w: conv.conv_transpose1d(x, w, 2),
      lambda x, w: lax_conv_transpose(x, w, 2), x, w, rtol=1e-4, atol=1e-4)
  x, w = inputs(2, 16, 48, 96, 31)
  assert_same_with_grads(
      lambda x, w: conv.conv1d(x, w, 2, (15, 15)),
      lambda x, w: lax_conv(x, w, 2, (15, 15)), x, w, rtol=1e-4, atol=1e-4)


def test_auto_avoids_xla_conv_on_short_signals():
  short, w = inputs(1, 8, 4, 3, 31)
  assert 'conv_general_dilated' not in primitives(
      lambda x, w: conv.conv_transpose1d(x, w, 2), short, w)
  assert 'conv_general_dilated' not in primitives(
      lambda x, w: conv.conv1d(x, w, 2, (15, 15)), short, w)
  # Many output rows: the 'taps' form (batched matmuls, no conv).
  many, _ = inputs(16, 16, 4, 3, 31)
  assert 'conv_general_dilated' not in primitives(
      lambda x, w: conv.conv1d(x, w, 2, (15, 15)), many, w)
  long, _ = inputs(1, 256, 4, 3, 31)
  assert 'conv_general_dilated' in str(jax.make_jaxpr(
      lambda x, w: conv.conv1d(x, w, 2, (15, 15)))(long, w))


def test_policy_forms_per_backend(monkeypatch):
  """CPU: the tuned forms; GPU and TPU: XLA's conv, with the phase form's
  gradient for strided convs. The backend is read when traced."""
  assert jax.default_backend() == 'cpu'
  cpu = [DEFAULT.conv1d_form(8, 8, 2), DEFAULT.conv1d_form(8, 16, 2),
         DEFAULT.conv1d_form(8, 64, 2), DEFAULT.conv1d_form(8, 64, 1),
         DEFAULT.conv_transpose1d_form(8), DEFAULT.conv_transpose1d_form(64)]
  assert cpu == ['im2col', 'taps', 'phases', 'xla', 'taps', 'polyphase']
  assert DEFAULT.resolved().backend == 'cpu'
  for backend in ('gpu', 'tpu'):
    policy = conv.ConvPolicy(backend=backend)
    assert [policy.conv1d_form(8, n, 2) for n in (8, 16, 64)] == [
        'xla_phase_grad'] * 3
    assert policy.conv1d_form(8, 64, 1) == 'xla'
    assert [policy.conv_transpose1d_form(n) for n in (8, 64)] == ['xla'] * 2
  xla_only = conv.ConvPolicy(xla_only=True)
  assert xla_only.conv1d_form(8, 64, 2) == 'xla'
  assert xla_only.conv_transpose1d_form(8) == 'xla'
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert DEFAULT.conv1d_form(8, 8, 2) == 'xla_phase_grad'
  assert DEFAULT.resolved() == conv.ConvPolicy(backend='gpu')


def _some_layers(policy):
  """Short and long strided, stride-1 and transposed convs, by ``policy``:
  one output vector (one compile for all of them)."""
  def run(xs, ws):
    short, long = xs
    w_conv, w_1x1, w_transpose = ws
    ys = [conv.conv1d(short, w_conv, 2, (14, 15), policy=policy),
          conv.conv1d(long, w_conv, 2, (14, 15), policy=policy),
          conv.conv1d(long, w_1x1, 1, (0, 0), policy=policy),
          conv.conv_transpose1d(short, w_transpose, 2, policy=policy),
          conv.conv_transpose1d(long, w_transpose, 2, policy=policy)]
    return jnp.concatenate([y.ravel() for y in ys])
  return run


@pytest.mark.parametrize('backend', ['gpu', 'tpu'])
def test_accelerator_policy_matches_lax(backend):
  """The GPU and TPU policies, forced on CPU, equal lax: values, gradients."""
  short, w_conv = inputs(2, 8, 4, 3, 31)
  long, w_transpose = inputs(2, 64, 4, 4, 31, seed=1)
  _, w_1x1 = inputs(1, 1, 4, 5, 1, seed=2)
  xs, ws = (short, long), (w_conv, w_1x1, w_transpose)
  fast = _some_layers(conv.ConvPolicy(backend=backend))
  assert 'dot_general' not in str(jax.make_jaxpr(fast)(xs, ws))  # XLA's convs
  assert_same_with_grads(fast, _some_layers(conv.ConvPolicy(xla_only=True)),
                         xs, ws)


def test_installed_policy_and_unknown_forms():
  """use_policy applies to what is traced inside it (fresh functions here:
  make_jaxpr, like jit, caches a function's trace without the policy)."""
  x, w = inputs(1, 8, 4, 3, 31)

  def uses_xla_conv():
    transpose = lambda x, w: conv.conv_transpose1d(x, w, 2)
    return 'conv_general_dilated' in primitives(transpose, x, w)

  assert not uses_xla_conv()
  with conv.use_policy(conv.ConvPolicy(xla_only=True)) as policy:
    assert conv.current_policy() is policy
    assert uses_xla_conv()
  assert conv.current_policy() == DEFAULT
  assert not uses_xla_conv()
  with pytest.raises(ValueError, match='unknown'):
    conv.conv1d(x, w, 2, (15, 15), impl='nope')
  with pytest.raises(ValueError, match='unknown'):
    conv.conv_transpose1d(x, w, 2, impl='phases')


# A policy under which the tiny shapes below reach every form's re-layout:
# Karatsuba two levels deep, channels-first, 'taps'.
_EAGER_KARATSUBA = conv.ConvPolicy(backend='cpu', karatsuba_min_out_length=8,
                                   karatsuba_min_macs=1)


@pytest.mark.parametrize('kind, form, length, cout', [
    ('conv1d', 'xla', 64, 8), ('conv1d', 'im2col', 8, 8),
    ('conv1d', 'taps', 16, 8), ('conv1d', 'phases', 64, 8),
    ('conv1d', 'phases', 64, 1), ('conv1d', 'xla_phase_grad', 64, 8),
    ('conv_transpose1d', 'xla', 16, 8), ('conv_transpose1d', 'im2col', 16, 8),
    ('conv_transpose1d', 'taps', 16, 8),
    ('conv_transpose1d', 'polyphase', 64, 8),
    ('conv_transpose1d', 'polyphase', 64, 1)])
def test_prepared_kernel_operands_replay_every_form_exactly(kind, form, length,
                                                            cout):
  x, w = inputs(8, length, 6, cout, 31)
  if kind == 'conv1d':
    convolve = lambda x, w: conv.conv1d(x, w, 2, (14, 15), form,
                                        _EAGER_KARATSUBA)
  else:
    convolve = lambda x, w: conv.conv_transpose1d(x, w, 2, form,
                                                  _EAGER_KARATSUBA)
  y, operands = jax.jit(lambda x, w: prepared.record(convolve, x, w))(x, w)
  plain = jax.jit(convolve)(x, w)
  np.testing.assert_array_equal(y, plain)
  replayed = jax.jit(lambda x, w, ops: prepared.replay(convolve, x, w, ops))
  np.testing.assert_array_equal(replayed(x, w, operands), plain)
  # What is replayed is what the program reads: other operands, other output.
  if operands:
    changed = jax.tree.map(lambda o: 2.0 * o, operands)
    assert not np.allclose(replayed(x, w, changed), plain)
  else:  # A form that reads the kernel as it is stores nothing.
    assert form in ('xla', 'xla_phase_grad')
  # Recorded for another input length, they do not fit: None, not a wrong y.
  other_x, _ = inputs(8, 2 * length, 6, cout, 31)
  _, other = jax.jit(lambda x, w: prepared.record(convolve, x, w))(other_x, w)
  if jax.tree.map(np.shape, other) != jax.tree.map(np.shape, operands):
    assert prepared.replay(convolve, x, w, other) is None


def test_the_forms_re_lay_the_kernel_out_in_the_karatsuba_tree():
  """Two Karatsuba levels: 9 quarter-length kernels, from the sums of
  halves; the stored operands are those leaves, not the kernel."""
  x, w = inputs(8, 64, 6, 8, 31)
  _, operands = prepared.record(
      lambda x, w: conv.conv_transpose1d(x, w, 2, 'polyphase',
                                         _EAGER_KARATSUBA), x, w)
  assert [k.split('_', 1)[1] for k in operands] == ['xla'] * 9
  assert not prepared.active()
