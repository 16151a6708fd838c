"""Building blocks shared by the SEGAN generator, discriminator and autoencoder.

All layers work on channels-last 1-D signals, shaped ``[batch, time, channels]``.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Dtype = Any

# santi-pdp/segan initialises its G and D convolutions with a truncated
# normal of std 0.02 (its `downconv`/`deconv` are called with that init).
KERNEL_INITS = {
    'truncated_normal': nn.initializers.truncated_normal(stddev=0.02),
    'xavier_uniform': nn.initializers.xavier_uniform(),
}
default_kernel_init = KERNEL_INITS['truncated_normal']


def same_padding(kernel_size: int, stride: int = 1) -> tuple[int, int]:
  """TensorFlow's 'SAME' padding of a conv over a length divisible by stride.

  A stride-s conv then maps length L to L / s. The total padding is
  kernel_size - stride, the odd sample on the right: (14, 15) for SEGAN's
  k31/s2 layers. With this, the encoder's grid lines up with the grid of
  the transposed convs ('SAME' too), as in the paper's code.
  """
  total = max(kernel_size - stride, 0)
  return (total // 2, total - total // 2)


# Which form computes a convolution (see `conv1d` and `conv_transpose1d`):
# 'auto' picks per layer from its shapes; 'xla' is lax's convolution as is;
# 'im2col' is strided slices + one matmul; 'phases' (strided convs only) is
# the conv rewritten as a stride-1 conv over the input's phases (under
# differentiation: XLA's conv forward, the phase form's gradient);
# 'polyphase' (transposed convs only) is one stride-1 conv over the input
# whose output channels hold the phases; both stride-1 convs are XLA's, or
# when evaluated alone `_karatsuba_conv` / `_channels_first_conv`; 'taps'
# is a few batched matmuls over groups of kernel taps, computing only the
# products that touch the signal, added where they land. All give the same
# numbers to float rounding, with the same [K, Cin, Cout] kernels.
IMPLS = ('auto', 'xla', 'im2col', 'phases', 'polyphase', 'taps')

# XLA:CPU's convolution (and its gradient) leaves its fast path on short
# signals: seconds instead of milliseconds for SEGAN's 8-16-sample layers (see
# BENCHMARKS.md). At or below these lengths 'auto' uses matmul forms (for
# Conv1D at 32 output samples XLA's forward with the phase-form gradient was
# 3 % faster over the train step than im2col).
IM2COL_MAX_OUT_LENGTH = 16      # Conv1D: output length.
TAPS_MAX_IN_LENGTH = 32         # ConvTranspose1D: input length.
# Conv1D's short layers, where im2col's patches are 25-50 % padding: 'taps'
# from TAPS_MIN_ROWS output rows (batch x length) on, im2col below (at batch
# 8 and 8 samples its one big matmul is faster than several small ones).
TAPS_MIN_ROWS = 128

_default_impl = 'auto'


def set_default_impl(impl: str) -> None:
  """What layers built with impl='auto' use: 'auto' or 'xla' (lax as is).

  For benchmarks against the plain lax implementation; not thread-safe, and
  it applies to functions traced after the call.
  """
  global _default_impl
  if impl not in ('auto', 'xla'):
    raise ValueError(f"default impl must be 'auto' or 'xla', got {impl!r}")
  _default_impl = impl


def _im2col(x: jax.Array, kernel_size: int, stride: int,
            padding: tuple[int, int], out_length: int) -> jax.Array:
  """Patches ``[B, out_length, kernel_size * C]``, tap-major like a WIO kernel."""
  lo, hi = padding
  xp = jnp.pad(x, ((0, 0), (max(lo, 0), max(hi, 0)), (0, 0)))
  start = max(lo, 0) - lo  # > 0 only for negative (cropping) padding.
  span = stride * (out_length - 1) + 1
  cols = [lax.slice_in_dim(xp, start + k, start + k + span, stride, axis=1)
          for k in range(kernel_size)]
  patches = jnp.stack(cols, axis=2)
  return patches.reshape(x.shape[0], out_length, kernel_size * x.shape[-1])


def _conv_out_length(length: int, kernel_size: int, stride: int,
                     padding: tuple[int, int]) -> int:
  return (length + padding[0] + padding[1] - kernel_size) // stride + 1


def _xla_conv(x: jax.Array, kernel: jax.Array, stride: int,
              padding: tuple[int, int]) -> jax.Array:
  return lax.conv_general_dilated(
      x, kernel, window_strides=(stride,), padding=(padding,),
      dimension_numbers=('NWC', 'WIO', 'NWC'))


# Long, big stride-1 convs run as three half-size convs (`_karatsuba_conv`),
# recursively: evaluated alone (inference) KARATSUBA_LEVELS deep (9/16 of
# the multiplies at 2; G's forward 12-15 % faster by A/B, BENCHMARKS.md);
# under differentiation KARATSUBA_TRAIN_LEVELS deep, forward and gradient
# (1 level gave the train step 0-5 %, within this VM's noise, for 9 s more
# compilation; 2 levels were slower). Only convs of at least
# KARATSUBA_MIN_OUT_LENGTH output samples (shorter halves leave XLA:CPU's
# fast conv path) and KARATSUBA_MIN_MACS multiply-adds (below, the extra
# element-wise passes and compile time outweigh the saved quarter).
KARATSUBA_MIN_OUT_LENGTH = 64
KARATSUBA_MIN_MACS = 2**22
KARATSUBA_LEVELS = 2
KARATSUBA_TRAIN_LEVELS = 0


def _karatsuba_conv(x: jax.Array, kernel: jax.Array,
                    padding: tuple[int, int], levels: int = 1) -> jax.Array:
  """A stride-1 conv (NWC/WIO) from three half-size convs: 3/4 of the FLOPs.

  Karatsuba's product of two polynomials split into even and odd
  coefficients, applied to the correlation ``y[m] = sum_j x[m + j] @ w[j]``:
  with the even/odd samples and taps ``x_e, x_o, w_e, w_o`` and ``A = x_e *
  w_e``, ``B = x_o * w_o``, ``C = (x_o + x_e[1:]) * (w_e + w_o)`` (stride-1
  correlations of half the length with half the taps, each 1/4 of the
  work), ``y_even = A + B`` and ``y_odd = C - B - A[1:]``. Exact in real
  arithmetic; in float32 it differs from one conv by rounding (~1e-6
  relative, tested). XLA:CPU runs these convs at the same GFLOP/s as the
  full one, so the saved quarter of the multiplies is saved time (see
  BENCHMARKS.md); its gradients are the same three convs transposed. The
  half-size convs split again while ``levels`` allows and they are long
  enough: 9/16 of the FLOPs at two levels.
  """
  batch, length, cin = x.shape
  kernel_size, _, cout = kernel.shape
  out_length = _conv_out_length(length, kernel_size, 1, padding)
  half_out, half_taps = -(-out_length // 2), -(-kernel_size // 2)
  # An even number of taps (a zero tap last), and x cropped or padded to
  # exactly the 2 * (half_out + half_taps) samples the halves read.
  kernel = jnp.pad(kernel, ((0, 2 * half_taps - kernel_size), (0, 0), (0, 0)))
  x = lax.pad(x, jnp.zeros((), x.dtype),
              ((0, 0, 0),
               (padding[0], 2 * (half_out + half_taps) - length - padding[0],
                0),
               (0, 0, 0)))
  x = x.reshape(batch, half_out + half_taps, 2, cin)
  x_even, x_odd = x[:, :, 0], x[:, :, 1]
  kernel = kernel.reshape(half_taps, 2, cin, cout)
  w_even, w_odd = kernel[:, 0], kernel[:, 1]

  def half_conv(x, w):
    return _karatsuba_or_xla_conv(x, w, (0, 0), levels - 1)

  a = half_conv(x_even, w_even)    # half_out + 1 samples
  b = half_conv(x_odd[:, :-1], w_odd)
  c = half_conv(x_odd[:, :-1] + x_even[:, 1:], w_even + w_odd)
  y_even = a[:, :-1] + b
  y_odd = c - b - a[:, 1:]
  y = jnp.stack([y_even, y_odd], axis=2).reshape(batch, 2 * half_out, cout)
  return y[:, :out_length]


# Evaluated alone (inference), float32 stride-1 convs with at most this many
# output channels (SEGAN's last decoder layer: 1 channel, 2 phases) contract
# the input channels first (`_channels_first_conv`); G's forward 192 -> 183
# ms by A/B. Not under differentiation: the train step was 2 % slower.
CHANNELS_FIRST_MAX_FEATURES = 2


def _channels_first_conv(x: jax.Array, kernel: jax.Array,
                         padding: tuple[int, int]) -> jax.Array:
  """A stride-1 conv with few output channels: one matmul, then shifted sums.

  ``z[t, k] = x[t] @ w[k]`` for all taps at once (a ``[B*L, Cin] @ [Cin,
  K*Cout]`` matmul), then ``y[m] = sum_k z[m + k - pad, k]``, one fused
  pass. XLA:CPU's conv ran SEGAN's 2-channel polyphase output layer at
  ~14 GFLOP/s (12 ms at batch 8); this form takes ~2 ms.
  """
  batch, length, cin = x.shape
  kernel_size, _, cout = kernel.shape
  out_length = _conv_out_length(length, kernel_size, 1, padding)
  z = lax.dot_general(
      x, kernel.transpose(1, 0, 2).reshape(cin, kernel_size * cout),
      (((2,), (0,)), ((), ())))
  z = lax.pad(z.reshape(batch, length, kernel_size, cout),
              jnp.zeros((), z.dtype),
              ((0, 0, 0), (padding[0], padding[1], 0), (0, 0, 0), (0, 0, 0)))
  return sum(z[:, k:k + out_length, k] for k in range(kernel_size))


def _karatsuba_or_xla_conv(x: jax.Array, kernel: jax.Array,
                           padding: tuple[int, int], levels: int) -> jax.Array:
  """`_karatsuba_conv` from KARATSUBA_MIN_OUT_LENGTH on, else XLA's conv.

  float32 only: in bfloat16 the rounding of the sums (and of A, B, C before
  ``C - B - A``) would add error a plain conv does not have, and bfloat16 is
  for accelerators, whose convs are fast as they are.
  """
  kernel_size, cin, cout = kernel.shape
  out_length = _conv_out_length(x.shape[1], kernel_size, 1, padding)
  macs = x.shape[0] * out_length * kernel_size * cin * cout
  if (levels > 0 and kernel_size > 1 and
      out_length >= KARATSUBA_MIN_OUT_LENGTH and
      macs >= KARATSUBA_MIN_MACS and
      x.dtype == jnp.float32 and kernel.dtype == jnp.float32):
    return _karatsuba_conv(x, kernel, padding, levels)
  return _xla_conv(x, kernel, 1, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _stride1_conv(x: jax.Array, kernel: jax.Array,
                  padding: tuple[int, int]) -> jax.Array:
  """A stride-1 conv: alone, `_channels_first_conv` for few output channels,
  else KARATSUBA_LEVELS deep; differentiated, KARATSUBA_TRAIN_LEVELS deep."""
  if (kernel.shape[-1] <= CHANNELS_FIRST_MAX_FEATURES and
      kernel.shape[0] > 1 and x.dtype == jnp.float32):
    return _channels_first_conv(x, kernel, padding)
  return _karatsuba_or_xla_conv(x, kernel, padding, KARATSUBA_LEVELS)


def _stride1_conv_fwd(x, kernel, padding):
  return (_karatsuba_or_xla_conv(x, kernel, padding, KARATSUBA_TRAIN_LEVELS),
          (x, kernel))


def _stride1_conv_bwd(padding, residuals, cotangent):
  x, kernel = residuals
  # Only the gradient is used; XLA removes the recomputed forward.
  _, vjp = jax.vjp(lambda x, w: _karatsuba_or_xla_conv(
      x, w, padding, KARATSUBA_TRAIN_LEVELS), x, kernel)
  return vjp(cotangent)


_stride1_conv.defvjp(_stride1_conv_fwd, _stride1_conv_bwd)


def _phase_conv(x: jax.Array, kernel: jax.Array, stride: int,
                padding: tuple[int, int]) -> jax.Array:
  """The strided conv as one stride-1 conv over the input's phases.

  ``y[t] = sum_k xp[stride*t + k] @ w[k]``; with ``k = stride*j + p`` this is
  ``sum_j x2[t + j] @ w2[j]`` where ``x2[m]`` stacks the ``stride`` samples
  ``xp[stride*m + p]`` as channels (a free reshape) and ``w2[j]`` stacks the
  taps ``w[stride*j + p]`` the same way (zero taps pad K to a multiple of
  the stride). Same numbers as the strided conv, but its gradients are
  stride-1 convs, which XLA:CPU runs 1.5-3x faster than the gradients of a
  strided conv (whose input gradient is a zero-dilated conv).
  """
  batch, length, cin = x.shape
  kernel_size, _, cout = kernel.shape
  out_length = _conv_out_length(length, kernel_size, stride, padding)
  taps = -(-kernel_size // stride)
  kernel = jnp.pad(kernel, ((0, taps * stride - kernel_size), (0, 0), (0, 0)))
  padded_length = stride * (out_length - 1 + taps)
  lo = padding[0]
  xp = lax.pad(x, jnp.zeros((), x.dtype),
               ((0, 0, 0), (lo, padded_length - length - lo, 0), (0, 0, 0)))
  return _stride1_conv(xp.reshape(batch, padded_length // stride,
                                  stride * cin),
                       kernel.reshape(taps, stride * cin, cout), (0, 0))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_phase_grad(x, kernel, stride, padding):
  """A strided conv by the fastest form for how it is used.

  Evaluated alone (inference, or a forward no gradient flows through): the
  phase form, whose Karatsuba stride-1 convs do 3/4 (or 9/16) of the
  multiplies. Under differentiation: XLA's strided conv forward (the phase
  form's forward and backward together were slower over the train step),
  and the gradient of the phase form.
  """
  return _phase_conv(x, kernel, stride, padding)


def _conv_phase_grad_fwd(x, kernel, stride, padding):
  return _xla_conv(x, kernel, stride, padding), (x, kernel)


def _conv_phase_grad_bwd(stride, padding, residuals, cotangent):
  x, kernel = residuals
  # The phase form's forward is not needed here and is removed by XLA.
  _, vjp = jax.vjp(lambda x, w: _phase_conv(x, w, stride, padding), x,
                   kernel)
  return vjp(cotangent)


_conv_phase_grad.defvjp(_conv_phase_grad_fwd, _conv_phase_grad_bwd)


def _conv1d_impl(batch: int, out_length: int, stride: int, impl: str) -> str:
  """The form `conv1d` uses for ``impl`` on this shape."""
  if impl == 'auto':
    impl = _default_impl
  if impl == 'auto':
    if out_length > IM2COL_MAX_OUT_LENGTH:
      impl = 'phases' if stride > 1 else 'xla'
    elif batch * out_length >= TAPS_MIN_ROWS:
      impl = 'taps'
    else:
      impl = 'im2col'
  if impl not in ('xla', 'im2col', 'phases', 'taps'):
    raise ValueError(f'unknown conv impl {impl!r}')
  return impl


def conv1d(x: jax.Array, kernel: jax.Array, stride: int,
           padding: tuple[int, int], impl: str = 'auto',
           kernel_pieces: Sequence[jax.Array] | None = None) -> jax.Array:
  """``lax.conv_general_dilated`` on NWC/WIO: by XLA's conv, by im2col, by
  per-tap products ('taps', `_grouped_taps`), or by XLA's conv with the
  gradient of the phase form.

  Up to IM2COL_MAX_OUT_LENGTH output samples XLA:CPU's conv and above all
  its input gradient run at ~1 GFLOP/s, so 'auto' uses matmul forms there:
  'taps' from TAPS_MIN_ROWS output rows (batch x length) on, which skips
  the products of padding that im2col (``[B*Lout, K*Cin] @ [K*Cin, Cout]``)
  computes, else im2col (one big matmul beats several small ones).
  Longer strided convs use 'phases': a faster backward and, evaluated
  alone, a forward with fewer multiplies (`_karatsuba_conv`).

  ``kernel_pieces``: the 'taps' form's split of the kernel, made once
  outside (sizes from `conv1d_kernel_split`); other forms ignore it.
  """
  kernel_size = kernel.shape[0]
  out_length = _conv_out_length(x.shape[1], kernel_size, stride, padding)
  impl = _conv1d_impl(x.shape[0], out_length, stride, impl)
  if impl == 'xla':
    return _xla_conv(x, kernel, stride, padding)
  if impl == 'taps':
    return _grouped_taps(x, kernel, stride, padding[0], out_length,
                         transpose=False, kernel_pieces=kernel_pieces)
  if impl == 'phases':
    return _conv_phase_grad(x, kernel, stride, tuple(padding))
  patches = _im2col(x, kernel_size, stride, padding, out_length)
  return lax.dot_general(
      patches, kernel.reshape(-1, kernel.shape[-1]),
      (((2,), (0,)), ((), ())))


def _conv_transpose_same_padding(kernel_size: int, stride: int) -> int:
  """Left padding of the dilated input in ``lax.conv_transpose(..., 'SAME')``."""
  pad_len = kernel_size + stride - 2
  if stride > kernel_size - 1:
    return kernel_size - 1
  return int(np.ceil(pad_len / 2))


def polyphase_taps(kernel_size: int, stride: int
                   ) -> tuple[int, list[list[int | None]]]:
  """How the transposed conv splits into ``stride`` stride-1 convs.

  Output ``u = stride * m + r`` (phase r) sums ``x[m + d] @ kernel[k]`` over
  the taps k with ``stride * d = r + k - pad``. Returns ``(d_min, taps)``
  where ``taps[j][r]`` is the tap k at offset ``d = d_min + j`` of phase r
  (None where phase r has no tap there).
  """
  pad = _conv_transpose_same_padding(kernel_size, stride)
  offsets = {}
  for r in range(stride):
    for k in range(kernel_size):
      if (r + k - pad) % stride == 0:
        offsets[(r, (r + k - pad) // stride)] = k
  ds = [d for _, d in offsets]
  d_min, d_max = min(ds), max(ds)
  taps = [[offsets.get((r, d)) for r in range(stride)]
          for d in range(d_min, d_max + 1)]
  return d_min, taps


def polyphase_kernel(kernel: jax.Array, stride: int) -> tuple[int, jax.Array]:
  """The ``[T, Cin, stride * Cout]`` kernel of the phases' stride-1 conv.

  Output channel block r holds phase r; a phase without a tap at some offset
  gets zeros there (the entries of `polyphase_taps`). Built by pad, reshape,
  reverse and transpose, which XLA fuses into one copy; its gradient is the
  same ops reversed (a stack of per-tap pieces had, as gradient, a zero-
  padded copy of the kernel per tap, summed).
  """
  kernel_size, cin, cout = kernel.shape
  d_min, taps = polyphase_taps(kernel_size, stride)
  # Tap k of phase r sits at row j with k = stride * j + first - r, so
  # row-major [T, stride] position (j, stride - 1 - r) of the padded taps
  # holds tap k when the padding puts tap 0 at first - (stride - 1).
  first = stride * d_min + _conv_transpose_same_padding(kernel_size, stride)
  front = (stride - 1) - first
  back = stride * len(taps) - front - kernel_size
  padded = lax.pad(kernel, jnp.zeros((), kernel.dtype),
                   ((front, back, 0), (0, 0, 0), (0, 0, 0)))
  phases = padded.reshape(len(taps), stride, cin, cout)[:, ::-1]
  return d_min, phases.transpose(0, 2, 1, 3).reshape(len(taps), cin,
                                                     stride * cout)


def _conv_transpose1d_impl(in_length: int, impl: str) -> str:
  """The form `conv_transpose1d` uses for ``impl`` on this shape."""
  if impl == 'auto':
    impl = _default_impl
  if impl == 'auto':
    impl = 'taps' if in_length <= TAPS_MAX_IN_LENGTH else 'polyphase'
  return impl


def conv_transpose1d(x: jax.Array, kernel: jax.Array, stride: int,
                     impl: str = 'auto',
                     kernel_pieces: Sequence[jax.Array] | None = None
                     ) -> jax.Array:
  """``lax.conv_transpose(x, kernel, (stride,), 'SAME', ('NWC','WIO','NWC'))``.

  'xla' calls lax.conv_transpose (a conv over the zero-dilated input: half of
  its multiplies hit inserted zeros at stride 2). 'polyphase' and 'im2col'
  run one stride-1 conv over the undilated input whose ``stride * Cout``
  output channels hold the phases (reshaped to interleave them), by XLA's
  conv or as a matmul; they re-lay the kernel out on every call (cheap for
  the long layers' small kernels). 'taps' (see `_grouped_taps`) reads
  the kernel as stored. 'auto': 'taps' up to TAPS_MAX_IN_LENGTH input
  samples, where XLA's conv is slow and kernels are big, else 'polyphase'.
  ``kernel_pieces``: the 'taps' form's split of the kernel, made once
  outside (sizes from `conv_transpose1d_kernel_split`); other forms ignore
  it.
  """
  impl = _conv_transpose1d_impl(x.shape[1], impl)
  if impl == 'xla':
    return lax.conv_transpose(x, kernel, strides=(stride,), padding='SAME',
                              dimension_numbers=('NWC', 'WIO', 'NWC'))
  if impl == 'taps':
    return _grouped_taps(
        x, kernel, stride,
        _conv_transpose_same_padding(kernel.shape[0], stride),
        stride * x.shape[1], transpose=True, kernel_pieces=kernel_pieces)
  batch, length, _ = x.shape
  features = kernel.shape[-1]
  d_min, phase_kernel = polyphase_kernel(kernel, stride)
  taps = phase_kernel.shape[0]
  padding = (-d_min, d_min + taps - 1)
  if impl == 'polyphase':
    y = _stride1_conv(x, phase_kernel, padding)
  elif impl == 'im2col':
    y = conv1d(x, phase_kernel, 1, padding, impl='im2col')
  else:
    raise ValueError(f'unknown conv transpose impl {impl!r}')
  return y.reshape(batch, length * stride, features)


# At most this many batched matmuls per 'taps' layer (see `_tap_groups`):
# measured best at 12 for SEGAN's 8-32-sample layers (BENCHMARKS.md).
TAP_GROUPS = 12


@functools.lru_cache(maxsize=None)
def _tap_groups(kernel_size: int, stride: int, length: int, offset: int,
                out_length: int, transpose: bool,
                max_groups: int = TAP_GROUPS):
  """Plan of the 'taps' form: which products a strided (transposed) conv needs.

  Tap k pairs input sample i with output sample u: ``i = stride * u + k -
  offset`` for a conv (offset = left padding), ``u = stride * i + offset - k``
  for a transposed conv (offset = its 'SAME' padding). On short signals many
  pairs fall outside the signal (half of them for SEGAN's 8-sample layers),
  and im2col or a matmul over all taps multiplies those by zero. Per tap the
  pairs that exist form one run of consecutive outputs (conv) or inputs
  (transposed conv); contiguous taps are grouped, each group one batched
  matmul over runs of its longest run's length (the grouping that computes
  the fewest products, by dynamic programming).

  Returns the groups, each ``(first_tap, end_tap, n, starts)``: taps
  ``first_tap:end_tap`` each take ``n`` consecutive outputs (conv) or inputs
  (transposed) from its entry of ``starts``.
  """
  runs = []
  for k in range(kernel_size):
    if transpose:
      valid = [i for i in range(length)
               if 0 <= stride * i + offset - k < out_length]
    else:
      valid = [u for u in range(out_length)
               if 0 <= stride * u + k - offset < length]
    runs.append((valid[0], len(valid)) if valid else (0, 0))
  counts = [n for _, n in runs]
  span = length if transpose else out_length

  @functools.lru_cache(maxsize=None)
  def best(first: int, groups_left: int):
    """(products, groups) of the cheapest split of taps[first:]."""
    if first == kernel_size:
      return 0, ()
    if groups_left == 0:
      return float('inf'), ()
    choice = (float('inf'), ())
    for end in range(first + 1, kernel_size + 1):
      n = max(counts[first:end])
      cost, rest = best(end, groups_left - 1)
      cost += (end - first) * n
      if cost < choice[0]:
        starts = tuple(min(runs[k][0], span - n) for k in range(first, end))
        choice = (cost, ((first, end, n, starts),) + rest)
    return choice

  return tuple(g for g in best(0, max_groups)[1] if g[2] > 0)


def conv1d_kernel_split(x_shape: Sequence[int], kernel_shape: Sequence[int],
                        stride: int, padding: tuple[int, int],
                        impl: str = 'auto') -> tuple[int, ...] | None:
  """Taps per piece of the kernel split `conv1d` makes on this shape (its
  'taps' form), or None when it uses the kernel whole."""
  out_length = _conv_out_length(x_shape[1], kernel_shape[0], stride, padding)
  if _conv1d_impl(x_shape[0], out_length, stride, impl) != 'taps':
    return None
  return _kernel_split(kernel_shape[0], stride, x_shape[1], padding[0],
                       out_length, False)


def conv_transpose1d_kernel_split(x_shape: Sequence[int],
                                  kernel_shape: Sequence[int], stride: int,
                                  impl: str = 'auto'
                                  ) -> tuple[int, ...] | None:
  """As `conv1d_kernel_split`, for `conv_transpose1d`."""
  if _conv_transpose1d_impl(x_shape[1], impl) != 'taps':
    return None
  kernel_size = kernel_shape[0]
  return _kernel_split(kernel_size, stride, x_shape[1],
                       _conv_transpose_same_padding(kernel_size, stride),
                       stride * x_shape[1], True)


def _kernel_split(kernel_size: int, stride: int, length: int, offset: int,
                  out_length: int, transpose: bool) -> tuple[int, ...]:
  """Taps per piece of the kernel (groups, and unused taps between them)."""
  groups = _tap_groups(kernel_size, stride, length, offset, out_length,
                       transpose, TAP_GROUPS)
  bounds = sorted({0, kernel_size} | {g[0] for g in groups} |
                  {g[1] for g in groups})
  return tuple(b - a for a, b in zip(bounds[:-1], bounds[1:]))


def _grouped_taps(x: jax.Array, kernel: jax.Array, stride: int, offset: int,
                  out_length: int, transpose: bool,
                  kernel_pieces: Sequence[jax.Array] | None = None
                  ) -> jax.Array:
  """Strided conv (offset = left padding) or 'SAME' transposed conv (offset
  = its padding) of ``out_length`` samples, as per-tap products.

  Every product needed, few that are not (`_tap_groups`): one batched
  matmul per group of taps, reading the kernel in its stored ``[K, Cin,
  Cout]`` layout, then one matmul against a constant 0/1 matrix adds each
  product where it lands (exact; one op where per-tap adds were K loops in
  XLA:CPU). Plain JAX: its gradients are the same forms transposed.

  The kernel's split into the groups' taps is a copy in XLA (the whole
  kernel: 130 MB for SEGAN's dec_0). ``kernel_pieces``, that split made once
  outside (`prepare_inference`), saves it on every call.
  """
  batch, length, cin = x.shape
  kernel_size, _, features = kernel.shape
  groups = _tap_groups(kernel_size, stride, length, offset, out_length,
                       transpose, TAP_GROUPS)
  if not groups:
    return jnp.zeros((batch, out_length, features), x.dtype)
  # Rows of the products: input samples, time-major. A conv's windows may
  # reach into its padding (zero samples there give zero products), so x is
  # padded as the conv pads it; a transposed conv reads inputs only.
  if transpose:
    lo = hi = 0
  else:
    lo = max(0, offset)
    hi = max(0, stride * (out_length - 1) + kernel_size - 1 - offset -
             (length - 1))
  xt = jnp.pad(x, ((0, 0), (lo, hi), (0, 0))).transpose(1, 0, 2)
  # One split of the kernel into the groups' taps (and unused taps between
  # them): its gradient is one concatenation, where per-group slices gave
  # a zero-padded copy of the whole kernel per group, summed (0.06 s for D's
  # conv_10 in the train step).
  sizes = _kernel_split(kernel_size, stride, length, offset, out_length,
                        transpose)
  if kernel_pieces is None:
    kernel_pieces = lax.split(kernel, sizes, axis=0)
  elif tuple(p.shape for p in kernel_pieces) != tuple(
      (n,) + kernel.shape[1:] for n in sizes):
    raise ValueError(
        f'kernel pieces of shapes {[p.shape for p in kernel_pieces]} do not '
        f'split a {kernel.shape} kernel into {sizes} taps')
  pieces = dict(zip(np.cumsum((0,) + sizes[:-1]).tolist(), kernel_pieces))
  step = 1 if transpose else stride
  products, landing = [], []
  for first, end, n, starts in groups:
    rows = []
    for k, start in zip(range(first, end), starts):
      # Tap k's run: n consecutive inputs (transposed) or outputs (conv).
      run = np.arange(start, start + n)
      if transpose:
        first_row, landing_k = start, stride * run + offset - k
      else:
        first_row, landing_k = stride * start + k - offset, run
      rows.append(lax.slice_in_dim(xt, lo + first_row,
                                   lo + first_row + step * (n - 1) + 1, step,
                                   0))
      landing.append(landing_k)
    rows = jnp.stack(rows).reshape(end - first, n * batch, cin)
    group_products = lax.dot_general(rows, pieces[first],
                                     (((2,), (1,)), ((0,), (0,))))
    products.append(group_products.reshape((end - first) * n,
                                           batch * features))
  landing = np.concatenate(landing)
  overlap_add = np.zeros((out_length, landing.size), np.float32)
  inside = (landing >= 0) & (landing < out_length)
  overlap_add[landing[inside], np.flatnonzero(inside)] = 1.0
  products = jnp.concatenate(products, axis=0)
  y = lax.dot_general(jnp.asarray(overlap_add, products.dtype), products,
                      (((1,), (0,)), ((), ())),
                      precision=lax.Precision.HIGHEST)
  return y.reshape(out_length, batch, features).transpose(1, 0, 2)


# Flax collection of kernels re-laid out once for inference
# (`prepare_inference`).
PREPARED = 'prepared'


class _StridedConv(nn.Module):
  """Kernel ``[kernel_size, Cin, features]`` and optional bias around a conv.

  Where the conv splits its kernel by taps (the 'taps' form of the short
  layers), the split is a copy of the kernel on every call. Applied with the
  PREPARED collection mutable, the layer stores that split there; applied
  with it given, it uses the stored pieces instead (`prepare_inference`).
  """

  features: int
  kernel_size: int = 31
  stride: int = 2
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  impl: str = 'auto'
  kernel_init: Any = default_kernel_init

  def kernel_split(self, x_shape: Sequence[int],
                   kernel_shape: Sequence[int]) -> tuple[int, ...] | None:
    raise NotImplementedError

  def convolve(self, x: jax.Array, kernel: jax.Array,
               kernel_pieces: Sequence[jax.Array] | None) -> jax.Array:
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', self.kernel_init,
                        (self.kernel_size, x.shape[-1], self.features),
                        self.param_dtype)
    kernel_pieces = None
    sizes = self.kernel_split(x.shape, kernel.shape)
    if sizes is not None:
      if self.has_variable(PREPARED, 'kernel_pieces'):
        stored = self.get_variable(PREPARED, 'kernel_pieces')
        # Prepared for other shapes (another batch size may choose another
        # split): compute the split here as usual.
        if tuple(p.shape[0] for p in stored) == sizes:
          kernel_pieces = [p.astype(self.dtype) for p in stored]
      elif (self.is_mutable_collection(PREPARED) and
            not self.is_initializing()):  # init: parameters only
        self.put_variable(PREPARED, 'kernel_pieces',
                          tuple(lax.split(kernel, sizes, axis=0)))
    y = self.convolve(x.astype(self.dtype), kernel.astype(self.dtype),
                      kernel_pieces)
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,),
                        self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


class Conv1D(_StridedConv):
  """Strided 1-D convolution with 'same' padding (length L -> L / stride)."""

  def kernel_split(self, x_shape, kernel_shape):
    return conv1d_kernel_split(x_shape, kernel_shape, self.stride,
                               same_padding(self.kernel_size, self.stride),
                               self.impl)

  def convolve(self, x, kernel, kernel_pieces):
    return conv1d(x, kernel, self.stride,
                  same_padding(self.kernel_size, self.stride), self.impl,
                  kernel_pieces)


class ConvTranspose1D(_StridedConv):
  """Strided 1-D transposed convolution (length L -> L * stride).

  Same result as ``lax.conv_transpose(x, kernel, (stride,), 'SAME')`` with
  the kernel stored ``[kernel_size, Cin, Cout]``, computed in 'taps' or
  polyphase form (see conv_transpose1d).
  """

  def kernel_split(self, x_shape, kernel_shape):
    return conv_transpose1d_kernel_split(x_shape, kernel_shape, self.stride,
                                         self.impl)

  def convolve(self, x, kernel, kernel_pieces):
    return conv_transpose1d(x, kernel, self.stride, self.impl, kernel_pieces)


def prepare_inference(model: nn.Module, params: Any, *example_args: Any,
                      **example_kwargs: Any) -> dict[str, Any]:
  """Variables for applying ``model`` without re-laying kernels out per call.

  Returns ``{'params': params, PREPARED: ...}``: the kernel splits of the
  layers that split their kernels (the short 'taps' layers; for the
  paper-size G at batch 8, 195 MB, one extra copy of those kernels), for
  inputs shaped like ``example_args`` (values unused). ``model.apply`` on
  them gives the same outputs as on ``{'params': params}`` (float-exact:
  the same products), faster (G's forward 8 %); for other shapes the layers
  fall back to splitting per call. For inference: gradients do not flow
  into the pieces. Compiles only the splits (XLA drops the unused forward).
  """
  return {'params': params,
          PREPARED: _prepared_pieces(model, params, example_args,
                                     example_kwargs)}


@functools.partial(jax.jit, static_argnums=0)
def _prepared_pieces(model, params, args, kwargs):
  """The PREPARED collection after one apply (compiled once per model and
  input shapes: `Enhancer.set_params` calls it per checkpoint)."""
  _, state = model.apply({'params': params}, *args, mutable=[PREPARED],
                         **kwargs)
  return state.get(PREPARED, {})


class PReLU(nn.Module):
  """Parametric ReLU with one slope per channel, initialised to 0 as in SEGAN."""

  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    alpha = self.param('alpha', nn.initializers.zeros, (x.shape[-1],),
                       self.param_dtype)
    return jnp.where(x >= 0, x, alpha.astype(x.dtype) * x)


class VirtualBatchNorm(nn.Module):
  """Virtual batch normalisation (Salimans et al. 2016, "Improved techniques").

  Each example is normalised with statistics of a fixed reference batch
  combined with its own, so an example's output never depends on the other
  examples of its minibatch (unlike batch norm): the discriminator's output
  for a pair is a function of that pair alone, which also makes data
  parallelism exact. The reference batch's own activations are normalised
  with the reference statistics only.

  Call with ``reference`` (activations of the reference batch at this layer,
  ``[N, T, C]``) and ``x`` (``[B, T, C]``); returns both normalised.
  """

  epsilon: float = 1e-5
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, reference: jax.Array,
               x: jax.Array) -> tuple[jax.Array, jax.Array]:
    features = x.shape[-1]
    gamma = self.param('scale', nn.initializers.ones, (features,),
                       self.param_dtype)
    beta = self.param('bias', nn.initializers.zeros, (features,),
                      self.param_dtype)
    # Statistics in float32 even when the activations are bfloat16.
    ref32 = reference.astype(jnp.float32)
    x32 = x.astype(jnp.float32)
    ref_mean = jnp.mean(ref32, axis=(0, 1))
    ref_mean_sq = jnp.mean(jnp.square(ref32), axis=(0, 1))
    # Each example joins the reference batch as one more member.
    new_coeff = 1.0 / (reference.shape[0] + 1.0)
    mean = new_coeff * jnp.mean(x32, axis=1, keepdims=True) + (
        1.0 - new_coeff) * ref_mean
    mean_sq = new_coeff * jnp.mean(jnp.square(x32), axis=1, keepdims=True) + (
        1.0 - new_coeff) * ref_mean_sq

    def normalize(h, mu, mu_sq):
      var = jnp.maximum(mu_sq - jnp.square(mu), 0.0)
      return (h - mu) * lax.rsqrt(var + self.epsilon) * gamma + beta

    return (normalize(ref32, ref_mean, ref_mean_sq).astype(reference.dtype),
            normalize(x32, mean, mean_sq).astype(x.dtype))
