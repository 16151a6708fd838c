"""Building blocks shared by the SEGAN generator, discriminator and autoencoder.

All layers work on channels-last 1-D signals, shaped ``[batch, time, channels]``.
How the conv layers compute their convolutions (which form, on which
backend) is `segan_jax.ops.conv`'s business.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
from jax.ad_checkpoint import checkpoint_name

from segan_jax.ops import conv
from segan_jax.ops.conv import prepared

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


# Flax collection of kernels re-laid out once for inference
# (`prepare_inference`).
PREPARED = 'prepared'

# The name every conv layer gives its output (jax.ad_checkpoint
# .checkpoint_name): what --remat=conv_outputs keeps for the backward pass.
CONV_OUTPUT = 'conv_output'


class _StridedConv(nn.Module):
  """Kernel ``[kernel_size, Cin, features]`` and optional bias around a conv.

  Most conv forms re-lay the kernel out on every call (`ops.conv.prepared`).
  Applied with the PREPARED collection mutable, the layer stores those
  re-laid-out kernels there; applied with it given, it reads them instead
  (`prepare_inference`).
  """

  features: int
  kernel_size: int = 31
  stride: int = 2
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  # A form of `segan_jax.ops.conv` ('auto': the policy's choice), and the
  # policy (None: `conv.current_policy()` when traced).
  impl: str = 'auto'
  policy: conv.ConvPolicy | None = None
  kernel_init: Any = default_kernel_init

  def convolve(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', self.kernel_init,
                        (self.kernel_size, x.shape[-1], self.features),
                        self.param_dtype)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    y = None
    if self.has_variable(PREPARED, 'kernel_operands'):
      # None when prepared for other shapes (another batch size may pick
      # other forms): then computed as usual.
      y = prepared.replay(self.convolve, x, kernel,
                          self.get_variable(PREPARED, 'kernel_operands'))
    elif (self.is_mutable_collection(PREPARED) and
          not self.is_initializing()):  # init: parameters only
      y, operands = prepared.record(self.convolve, x, kernel)
      self.put_variable(PREPARED, 'kernel_operands', operands)
    if y is None:
      y = self.convolve(x, kernel)
    if self.use_bias:
      bias = self.param('bias', nn.initializers.zeros, (self.features,),
                        self.param_dtype)
      y = y + bias.astype(self.dtype)
    return checkpoint_name(y, CONV_OUTPUT)


class Conv1D(_StridedConv):
  """Strided 1-D convolution with 'same' padding (length L -> L / stride)."""

  def convolve(self, x, kernel):
    return conv.conv1d(x, kernel, self.stride,
                       same_padding(self.kernel_size, self.stride), self.impl,
                       self.policy)


class ConvTranspose1D(_StridedConv):
  """Strided 1-D transposed convolution (length L -> L * stride).

  Same result as ``lax.conv_transpose(x, kernel, (stride,), 'SAME')`` with
  the kernel stored ``[kernel_size, Cin, Cout]``, computed by the form the
  conv policy picks (`segan_jax.ops.conv.conv_transpose1d`).
  """

  def convolve(self, x, kernel):
    return conv.conv_transpose1d(x, kernel, self.stride, self.impl,
                                 self.policy)


def prepare_inference(model: nn.Module, params: Any, *example_args: Any,
                      **example_kwargs: Any) -> dict[str, Any]:
  """Variables for applying ``model`` without re-laying kernels out per call.

  Returns ``{'params': params, PREPARED: ...}``: each conv layer's kernel
  as its forms read it (phase and polyphase kernels, Karatsuba's half
  kernels and their sums, channels-first matrices, 'taps' pieces:
  `ops.conv.prepared`), for inputs shaped like ``example_args`` (values
  unused). ``model.apply`` on them gives the same outputs as on
  ``{'params': params}`` (float-exact: the same products), without those
  passes over the kernels on every call; for other shapes the layers fall
  back to computing them per call. For inference: gradients do not flow
  into them. Compiles only the re-layouts (XLA drops the unused forward).
  """
  return {'params': params,
          PREPARED: _prepared_operands(model, conv.current_policy(), params,
                                       example_args, example_kwargs)}


@functools.partial(jax.jit, static_argnums=(0, 1))
def _prepared_operands(model, policy, params, args, kwargs):
  """The PREPARED collection after one apply (compiled once per model, conv
  policy and input shapes: `Enhancer.set_params` calls it per checkpoint).
  The policy is a static argument: operands recorded under one policy fit
  only programs traced under it."""
  with conv.use_policy(policy):
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
