"""Building blocks shared by the SEGAN generator, discriminator and autoencoder.

All layers work on channels-last 1-D signals, shaped ``[batch, time, channels]``.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Dtype = Any

# Xavier/Glorot initialisation, as santi-pdp/segan uses for its 1-D convolutions.
default_kernel_init = nn.initializers.xavier_uniform()


def same_padding(kernel_size: int) -> tuple[int, int]:
  """'Same' padding for an odd kernel: a stride-s conv maps length L to L / s."""
  return ((kernel_size - 1) // 2, kernel_size // 2)


# Which form computes a convolution (see `conv1d` and `conv_transpose1d`):
# 'auto' picks per layer from its shapes; 'xla' is lax's convolution as is;
# 'im2col' is strided slices + one matmul; 'phases' (strided convs only) is
# XLA's conv forward with the gradient of the same conv rewritten as a
# stride-1 conv over the input's phases; 'polyphase' (transposed convs only)
# is one stride-1 XLA conv over the input whose output channels hold the
# phases; 'taps' (transposed convs only) is one batched matmul over the
# kernel taps whose products are added where they land. All give the same
# numbers to float rounding, with the same [K, Cin, Cout] kernels.
IMPLS = ('auto', 'xla', 'im2col', 'phases', 'polyphase', 'taps')

# XLA:CPU's convolution (and its gradient) leaves its fast path on short
# signals: seconds instead of milliseconds for SEGAN's 8-32-sample layers (see
# BENCHMARKS.md). At or below these lengths 'auto' uses matmul forms.
IM2COL_MAX_OUT_LENGTH = 32      # Conv1D: output length.
TAPS_MAX_IN_LENGTH = 32         # ConvTranspose1D: input length.

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
  return _xla_conv(xp.reshape(batch, padded_length // stride, stride * cin),
                   kernel.reshape(taps, stride * cin, cout), 1, (0, 0))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_phase_grad(x, kernel, stride, padding):
  """XLA's strided conv forward (fastest there); gradient via _phase_conv."""
  return _xla_conv(x, kernel, stride, padding)


def _conv_phase_grad_fwd(x, kernel, stride, padding):
  return _xla_conv(x, kernel, stride, padding), (x, kernel)


def _conv_phase_grad_bwd(stride, padding, residuals, cotangent):
  x, kernel = residuals
  # The phase form's forward is not needed here and is removed by XLA.
  _, vjp = jax.vjp(lambda x, w: _phase_conv(x, w, stride, padding), x,
                   kernel)
  return vjp(cotangent)


_conv_phase_grad.defvjp(_conv_phase_grad_fwd, _conv_phase_grad_bwd)


def conv1d(x: jax.Array, kernel: jax.Array, stride: int,
           padding: tuple[int, int], impl: str = 'auto') -> jax.Array:
  """``lax.conv_general_dilated`` on NWC/WIO: by XLA's conv, by im2col, or
  by XLA's conv with the gradient of the phase form.

  'auto' uses im2col (``[B*Lout, K*Cin] @ [K*Cin, Cout]``, the kernel read in
  its stored layout) up to IM2COL_MAX_OUT_LENGTH output samples: there
  XLA:CPU's conv and above all its input gradient run at ~1 GFLOP/s. Longer
  strided convs use 'phases': the same forward, a faster backward.
  """
  kernel_size = kernel.shape[0]
  out_length = _conv_out_length(x.shape[1], kernel_size, stride, padding)
  if impl == 'auto':
    impl = _default_impl
  if impl == 'auto':
    if out_length <= IM2COL_MAX_OUT_LENGTH:
      impl = 'im2col'
    else:
      impl = 'phases' if stride > 1 else 'xla'
  if impl not in ('xla', 'im2col', 'phases'):
    raise ValueError(f'unknown conv impl {impl!r}')
  if impl == 'xla':
    return _xla_conv(x, kernel, stride, padding)
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
  gets zeros there. One copy of the weight (fused by XLA into one loop).
  """
  d_min, taps = polyphase_taps(kernel.shape[0], stride)
  zeros = jnp.zeros(kernel.shape[1:], kernel.dtype)
  rows = []
  for per_phase in taps:
    rows.append(jnp.concatenate(
        [kernel[k] if k is not None else zeros for k in per_phase], axis=-1))
  return d_min, jnp.stack(rows, axis=0)


def conv_transpose1d(x: jax.Array, kernel: jax.Array, stride: int,
                     impl: str = 'auto') -> jax.Array:
  """``lax.conv_transpose(x, kernel, (stride,), 'SAME', ('NWC','WIO','NWC'))``.

  'xla' calls lax.conv_transpose (a conv over the zero-dilated input: half of
  its multiplies hit inserted zeros at stride 2). 'polyphase' and 'im2col'
  run one stride-1 conv over the undilated input whose ``stride * Cout``
  output channels hold the phases (reshaped to interleave them), by XLA's
  conv or as a matmul; they re-lay the kernel out on every call (cheap for
  the long layers' small kernels). 'taps' (see `_conv_transpose_taps`) reads
  the kernel as stored. 'auto': 'taps' up to TAPS_MAX_IN_LENGTH input
  samples, where XLA's conv is slow and kernels are big, else 'polyphase'.
  """
  if impl == 'auto':
    impl = _default_impl
  if impl == 'auto':
    impl = 'taps' if x.shape[1] <= TAPS_MAX_IN_LENGTH else 'polyphase'
  if impl == 'xla':
    return lax.conv_transpose(x, kernel, strides=(stride,), padding='SAME',
                              dimension_numbers=('NWC', 'WIO', 'NWC'))
  if impl == 'taps':
    return _conv_transpose_taps(x, kernel, stride)
  batch, length, _ = x.shape
  features = kernel.shape[-1]
  d_min, phase_kernel = polyphase_kernel(kernel, stride)
  taps = phase_kernel.shape[0]
  padding = (-d_min, d_min + taps - 1)
  if impl == 'polyphase':
    y = conv1d(x, phase_kernel, 1, padding, impl='xla')
  elif impl == 'im2col':
    y = conv1d(x, phase_kernel, 1, padding, impl='im2col')
  else:
    raise ValueError(f'unknown conv transpose impl {impl!r}')
  return y.reshape(batch, length * stride, features)


def _overlap_add_matrix(kernel_size: int, stride: int, length: int
                        ) -> np.ndarray:
  """0/1 matrix ``[stride * length, kernel_size * length]`` of the taps form.

  Entry ``(u, k * length + i)`` is 1 where input i through tap k lands on
  output u, i.e. ``u = stride * i + pad - k`` (lax's conv_transpose does not
  flip the kernel); products landing outside the output have no entry.
  """
  pad = _conv_transpose_same_padding(kernel_size, stride)
  out_length = stride * length
  matrix = np.zeros((out_length, kernel_size, length), np.float32)
  for k in range(kernel_size):
    for i in range(length):
      u = stride * i + pad - k
      if 0 <= u < out_length:
        matrix[u, k, i] = 1.0
  return matrix.reshape(out_length, kernel_size * length)


def _conv_transpose_taps_plain(x: jax.Array, kernel: jax.Array,
                               stride: int) -> jax.Array:
  """Scatter form: every input sample times every tap, added where it lands.

  The products are one batched matmul (batch = taps) that reads the kernel
  in its stored ``[K, Cin, Cout]`` layout, with no multiply by an inserted
  zero. Adding them where they land is a second, small matmul against the
  constant 0/1 matrix of `_overlap_add_matrix`: one op forward and backward,
  where K shifted adds became K separate loops in XLA:CPU (2-3x slower
  over the layer's forward and backward at 16-32 input samples).
  """
  batch, length, cin = x.shape
  kernel_size, _, features = kernel.shape
  rows = jnp.broadcast_to(x.reshape(1, batch * length, cin),
                          (kernel_size, batch * length, cin))
  products = lax.dot_general(rows, kernel, (((2,), (1,)), ((0,), (0,))))
  # [K, B, L, C] -> [K, L, B, C] -> [K * L, B * C]: taps and input samples
  # are what the overlap-add contracts.
  products = products.reshape(kernel_size, batch, length, features)
  products = products.transpose(0, 2, 1, 3).reshape(
      kernel_size * length, batch * features)
  overlap_add = jnp.asarray(
      _overlap_add_matrix(kernel_size, stride, length), products.dtype)
  y = lax.dot_general(overlap_add, products, (((1,), (0,)), ((), ())),
                      precision=lax.Precision.HIGHEST)
  return y.reshape(stride * length, batch, features).transpose(1, 0, 2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_transpose_taps(x: jax.Array, kernel: jax.Array,
                         stride: int) -> jax.Array:
  """`_conv_transpose_taps_plain` with its input gradient as one matmul.

  Differentiated as is, the input gradient is a batched matmul over the taps
  followed by a sum over them, which XLA:CPU runs at 25-50 GFLOP/s. Here it
  is ``dx[b, i] = sum_k dy[b, stride*i + pad - k] @ kernel[k].T``: dy's
  samples gathered per (tap, input) by the transposed overlap-add matrix,
  then one matmul contracting taps and output channels together.
  """
  return _conv_transpose_taps_plain(x, kernel, stride)


def _conv_transpose_taps_fwd(x, kernel, stride):
  return _conv_transpose_taps_plain(x, kernel, stride), (x, kernel)


def _conv_transpose_taps_bwd(stride, residuals, cotangent):
  x, kernel = residuals
  batch, length, cin = x.shape
  kernel_size, _, features = kernel.shape
  # The kernel gradient as differentiated (batched matmul, stored layout);
  # the forward traced here is unused and removed by XLA.
  _, kernel_vjp = jax.vjp(
      lambda w: _conv_transpose_taps_plain(x, w, stride), kernel)
  (d_kernel,) = kernel_vjp(cotangent)
  overlap_add = jnp.asarray(
      _overlap_add_matrix(kernel_size, stride, length), cotangent.dtype)
  # [U, B, C] -> gathered [K * L, B * C] -> [K, L, B, C].
  gathered = lax.dot_general(
      overlap_add, cotangent.transpose(1, 0, 2).reshape(
          stride * length, batch * features),
      (((0,), (0,)), ((), ())), precision=lax.Precision.HIGHEST)
  gathered = gathered.reshape(kernel_size, length, batch, features)
  d_x = lax.dot_general(gathered, kernel, (((0, 3), (0, 2)), ((), ())))
  return d_x.transpose(1, 0, 2).astype(x.dtype), d_kernel


_conv_transpose_taps.defvjp(_conv_transpose_taps_fwd, _conv_transpose_taps_bwd)


class _StridedConv(nn.Module):
  """Kernel ``[kernel_size, Cin, features]`` and optional bias around a conv."""

  features: int
  kernel_size: int = 31
  stride: int = 2
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  impl: str = 'auto'

  def convolve(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', default_kernel_init,
                        (self.kernel_size, x.shape[-1], self.features),
                        self.param_dtype)
    y = self.convolve(x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,),
                        self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


class Conv1D(_StridedConv):
  """Strided 1-D convolution with 'same' padding (length L -> L / stride)."""

  def convolve(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
    return conv1d(x, kernel, self.stride, same_padding(self.kernel_size),
                  self.impl)


class ConvTranspose1D(_StridedConv):
  """Strided 1-D transposed convolution (length L -> L * stride).

  Same result as ``lax.conv_transpose(x, kernel, (stride,), 'SAME')`` with
  the kernel stored ``[kernel_size, Cin, Cout]``, computed in 'taps' or
  polyphase form (see conv_transpose1d).
  """

  def convolve(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
    return conv_transpose1d(x, kernel, self.stride, self.impl)


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
