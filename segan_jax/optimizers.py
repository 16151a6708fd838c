"""The optimizers and learning-rate schedules of the systems' networks, D's
train state (which carries its VBN reference batch) and the metric
discriminator's (which carries, in checkpoints, the labelled windows it has
yet to train on)."""

from __future__ import annotations

import jax
import optax
from flax.training import train_state

from segan_jax.config import Config


class DiscriminatorState(train_state.TrainState):
  """D's train state plus its virtual-batch-norm reference batch [N, T, 2].

  The reference batch is data, not a parameter: drawn once when training
  starts, never updated, and checkpointed so that a resumed run uses the same.
  """

  reference: jax.Array


class MetricDiscriminatorState(train_state.TrainState):
  """D_metric's train state plus its queue: the windows and PESQ labels of
  the two steps before a checkpoint, which the next two steps train on
  (metric_labels.MetricLabeller). The queue is data, saved so that a
  resumed run trains on what the uninterrupted one would; during a run the
  labeller holds it and the state's copy is zeros.
  """

  queue: dict[str, jax.Array]


def learning_rate_schedule(config: Config,
                           total_steps: int | None = None) -> optax.Schedule:
  """Linear warm-up, then cosine decay to lr_final_fraction at total_steps."""
  peak = config.learning_rate
  decay = config.lr_final_fraction != 1.0 and total_steps
  if not config.warmup_steps and not decay:
    return optax.constant_schedule(peak)
  if not decay:
    return optax.linear_schedule(0.0, peak, config.warmup_steps)
  return optax.warmup_cosine_decay_schedule(
      0.0 if config.warmup_steps else peak, peak, config.warmup_steps,
      max(total_steps, config.warmup_steps + 1),
      end_value=peak * config.lr_final_fraction)


def make_optimizer(config: Config, total_steps: int | None = None
                   ) -> optax.GradientTransformation:
  """The optimizer of G and D.

  rmsprop is TensorFlow 1's RMSPropOptimizer, which the paper's code uses:
  decay 0.9, epsilon 1e-10 added inside the square root, and accumulators
  that start at 1 rather than 0 (so the first steps are small: a built-in
  warm-up). optax's defaults (eps 1e-8, accumulators at 0) take full-size
  steps from the first update and put a floor under small gradients.
  """
  learning_rate = learning_rate_schedule(config, total_steps)
  if config.optimizer == 'adam':
    optimizer = optax.adam(learning_rate, b1=config.adam_b1)
  else:
    optimizer = optax.rmsprop(learning_rate, decay=0.9, eps=1e-10,
                              initial_scale=1.0, eps_in_sqrt=True)
  if not config.grad_clip_norm:
    return optimizer  # the optimizer state of runs from before the option
  # Adam with beta1 0.5 answers one outlying gradient with a step of up to
  # ~16 learning rates per parameter (m/sqrt(v) with v still small); a few
  # such steps can throw a trained G off for good.
  return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm),
                     optimizer)


def make_metric_optimizer(config: Config) -> optax.GradientTransformation:
  """D_metric's optimizer: Adam at --metric_learning_rate, constant (as
  MetricGAN+), whatever G's and D's are: it fits a regression target that
  moves with G, which a decayed rate would stop following."""
  return optax.adam(config.metric_learning_rate)
