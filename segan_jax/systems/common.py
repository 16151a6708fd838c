"""Pieces the systems' train steps share: device means, norms, the STFT term
and the adversarial update (D first, then G through D's updated parameters)."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.training import train_state
from jax import lax

from segan_jax import losses
from segan_jax.models import layers

Metrics = dict[str, jax.Array]


def device_mean(tree: Any, axis_name: str | None) -> Any:
  """The mean over the pmap axis ``axis_name``; ``tree`` itself without one."""
  return lax.pmean(tree, axis_name) if axis_name else tree


def example_indices(local_batch: int, axis_name: str | None) -> jax.Array:
  """Global indices of this device's examples (keys of their z)."""
  first = lax.axis_index(axis_name) * local_batch if axis_name else 0
  return first + jnp.arange(local_batch)


def global_norm(tree: Any) -> jax.Array:
  """The square root of the sum of squares of all leaves (optax.tree.norm).

  Each leaf's sum of squares is a dot with itself: XLA:CPU turns a
  square-then-sum into a squared copy of every gradient and a separate
  reduction over it, an extra write and read of every gradient per step; a
  dot reads the gradient once.
  """
  return jnp.sqrt(sum(
      jnp.vdot(leaf, leaf, precision=lax.Precision.HIGHEST).real
      for leaf in jax.tree.leaves(tree)))


def add_stft_term(loss: jax.Array, signal: jax.Array, target: jax.Array,
                  weight: float, metrics: Metrics) -> jax.Array:
  """``loss + weight * multi-resolution STFT loss``; records it as g_stft.

  With weight 0 the term is not computed at all (and not in the metrics).
  """
  if not weight:
    return loss
  stft = losses.multi_resolution_stft_loss(signal, target)
  metrics['g_stft'] = stft
  return loss + weight * stft


def add_mask_term(loss: jax.Array, signal: jax.Array, noisy: jax.Array,
                  target: jax.Array, weight: float, floor: float,
                  metrics: Metrics) -> jax.Array:
  """``loss + weight * masked_output_loss``; records it as g_mask.

  With weight 0 the term is not computed at all (and not in the metrics).
  """
  if not weight:
    return loss
  masked = losses.masked_output_loss(signal, noisy, target, floor)
  metrics['g_mask'] = masked
  return loss + weight * masked


def rematerialized(fn: Callable, remat: str) -> Callable:
  """``fn`` whose backward pass keeps what --remat says of its forward pass.

  'none': ``fn`` itself (XLA keeps whatever its backward pass reads).
  'conv_outputs': jax.checkpoint keeping only the conv layers' outputs
  (layers.CONV_OUTPUT); the norms and activations after them, as cheap as a
  read of their input, are recomputed in the backward pass.
  """
  if remat == 'none':
    return fn
  if remat == 'conv_outputs':
    return jax.checkpoint(fn, policy=jax.checkpoint_policies
                          .save_only_these_names(layers.CONV_OUTPUT))
  raise ValueError(f'unknown remat {remat!r}')


def init_params(module: nn.Module, rng: jax.Array, *inputs: Any) -> Any:
  """The module's freshly initialised parameters (init compiled once)."""
  return jax.jit(module.init)(rng, *inputs)['params']


def new_state(module: nn.Module, params: Any, tx,
              state_class=train_state.TrainState, **fields: Any):
  return state_class.create(apply_fn=module.apply, params=params, tx=tx,
                            **fields)


def adversarial_update(
    g_state, d_state, generate: Callable[[Any], jax.Array],
    d_loss_fn: Callable[[Any, jax.Array], tuple[jax.Array, Metrics]],
    g_loss_fn: Callable[[Any, jax.Array], tuple[jax.Array, Metrics]],
    axis_name: str | None):
  """One GAN update: D on G's output, then G through the updated D.

  G runs forward once: D's update uses its output as data, and G's gradient
  is pulled back through that saved forward pass (G's parameters do not
  change between the two updates, so this equals a second forward pass).
  ``d_loss_fn(d_params, fake)`` and ``g_loss_fn(d_params, fake)`` return
  (loss, metrics); G's loss is differentiated with respect to ``fake`` only.

  Returns (g_state, d_state, metrics), gradients averaged over devices.
  """
  fake, generator_vjp = jax.vjp(generate, g_state.params)
  (d_loss, d_metrics), d_grads = jax.value_and_grad(
      d_loss_fn, has_aux=True)(d_state.params, fake)
  d_grads = device_mean(d_grads, axis_name)
  d_state = d_state.apply_gradients(grads=d_grads)
  (g_loss, g_metrics), d_fake = jax.value_and_grad(
      lambda signal: g_loss_fn(d_state.params, signal), has_aux=True)(fake)
  (g_grads,) = generator_vjp(d_fake)
  g_grads = device_mean(g_grads, axis_name)
  g_state = g_state.apply_gradients(grads=g_grads)
  metrics = {'d_loss': d_loss, **d_metrics, 'g_loss': g_loss, **g_metrics,
             'd_grad_norm': global_norm(d_grads),
             'g_grad_norm': global_norm(g_grads)}
  return g_state, d_state, metrics
