"""The training loop that SEGAN, the autoencoder and the basic GAN share:
resume, batches, the compiled step of the run's system (the steps are in
segan_jax/systems/; `make_train_step` adds the NaN policy), logging,
checkpoints, preemption, the evaluators and the best checkpoint."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging

from segan_jax import best_checkpoint
from segan_jax import checkpoints
from segan_jax import input_pipeline
from segan_jax import logging_utils
from segan_jax import metric_labels
from segan_jax import parallel
from segan_jax import preemption as preemption_lib
from segan_jax import systems
from segan_jax import optimizers
from segan_jax import warm_start
from segan_jax.config import Config

# Builds the evaluators of a run on process 0: (config, workdir, writer) ->
# [checkpoint_evaluators.Evaluator] (segan_jax/checkpoint_evaluators.py:
# validation scores or GAN samples). Each runs after the checkpoints and
# returns flat metrics, logged with the step and handed to the best-keeper.
EvaluatorFactory = Callable[[Config, str, logging_utils.MetricWriter], list]


def make_train_step(config: Config):
  """The step of ``config.model``: step(states, batch, rng, *, axis_name)."""
  step_fn = systems.of(config).make_step(config)
  if config.nan_policy == 'skip_step':
    return skip_nonfinite_updates(step_fn)
  return step_fn


def skip_nonfinite_updates(step_fn):
  """Wraps a step so that an update with a non-finite metric is dropped.

  Losses and gradient norms are among the metrics, so a NaN or Inf anywhere
  in the forward or backward pass shows in them. Under pmap the metrics are
  already averaged over replicas, so every replica takes the same decision.
  The metric ``skipped`` is 1 for a dropped update.
  """

  def step(states, batch, rng, *, axis_name=None):
    new_states, metrics = step_fn(states, batch, rng, axis_name=axis_name)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v))
                                for v in metrics.values()]))
    new_states = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                              new_states, states)
    return new_states, {**metrics,
                        'skipped': 1.0 - finite.astype(jnp.float32)}

  return step


def train_and_evaluate(config: Config, workdir: str,
                       make_evaluators: EvaluatorFactory | None = None
                       ) -> dict[str, Any]:
  """Trains (or resumes) a run in ``workdir``; returns the final host states.

  The returned dict holds ``states`` (``{'g': ..., 'd': ...}``, host numpy),
  ``step``, ``epoch``, ``history`` (the metrics logged in this invocation),
  ``preempted`` (True when a SIGTERM stopped the run early, after saving a
  checkpoint at ``step``) and ``best`` (what the run's best-keeper kept:
  ``{'metric', 'value', 'step'}`` of ``WORKDIR/best``, or None).

  ``make_evaluators(config, workdir, writer)`` builds, on process 0, what
  runs after checkpoints (``checkpoint_evaluators.make_evaluators``:
  validation scores or GAN samples); the best-keeper of ``best_checkpoint.keeper_for`` acts on
  what they return.

  A run without a checkpoint of its own starts from ``config.init_from``'s
  parameters when set (``warm_start.warm_start``); once it has saved one,
  it resumes from its own and init_from is ignored.
  """
  keeper = best_checkpoint.keeper_for(config, workdir,
                                      evaluated=make_evaluators is not None)
  with contextlib.ExitStack() as stack:
    checkpointer = checkpoints.Checkpointer(workdir, config.keep_checkpoints)
    # Closed last: whatever stops the loop, a checkpoint being written is
    # finished.
    stack.callback(checkpointer.close)
    stack.callback(checkpointer.wait)
    # Watching from the start: a SIGTERM while the data loads or the step
    # compiles is kept, and the run stops after its first step with a
    # checkpoint instead of dying with none.
    preemption = stack.enter_context(
        contextlib.closing(preemption_lib.PreemptionWatcher()))
    resuming = checkpointer.latest_step() is not None
    if config.init_from and not resuming:
      # Before the data is loaded: a mistyped path answers at once.
      warm_start.check_init_from(config.init_from)
    strategy = parallel.make_strategy(config.parallelism, config.batch_size)
    data = input_pipeline.load_train_windows(config)
    # Noise clips and rooms load before the networks build: a bad folder or
    # file answers at once.
    augmentation = input_pipeline.make_augmentation(config, data)
    schedule = input_pipeline.BatchSchedule(len(data), config.batch_size,
                                            config.seed)
    total_steps = schedule.steps_per_epoch * config.num_epochs
    states, train_rng, start_step = _initial_states(
        config, checkpointer, data, total_steps, resuming)
    labeller = _metric_labeller(config, strategy)
    if labeller is not None:
      stack.callback(labeller.close)
      states = labeller.resume(states, start_step)
    logging.info('%s: %d training windows, %d steps per epoch of %d, '
                 'parallelism=%s on %d device(s).', config.model, len(data),
                 schedule.steps_per_epoch, config.batch_size, strategy.name,
                 strategy.num_devices)
    step_fn = strategy.compile(make_train_step(config))
    learning_rate = optimizers.learning_rate_schedule(config, total_steps)
    states = strategy.put_state(states)
    writer = stack.enter_context(
        contextlib.closing(logging_utils.MetricWriter(workdir)))
    evaluators = []
    if make_evaluators is not None and jax.process_index() == 0:
      evaluators = make_evaluators(config, workdir, writer)
    logging_utils.write_run_record(workdir, config.to_dict())
    progress = stack.enter_context(contextlib.closing(tqdm.tqdm(
        total=total_steps, initial=start_step, unit='step',
        disable=not (sys.stderr.isatty() and jax.process_index() == 0),
        dynamic_ncols=True)))
    host_batches = input_pipeline.batches(
        data, schedule, start_step, total_steps,
        augmentation=augmentation)
    history = []
    # Metrics of the steps since the last host sync, fetched together then:
    # the loop never waits for the devices in between.
    pending = []
    done = last_logged = start_step
    window_start = time.perf_counter()
    preempted = False
    for step in range(start_step, total_steps):
      host_batch = next(host_batches)
      if labeller is not None:  # waits for the labels of step - 2
        host_batch = {**host_batch, **labeller.inputs(step)}
      states, metrics = step_fn(states, strategy.put_batch(host_batch),
                                train_rng)
      if labeller is not None:  # labels step - 1's probe while this runs
        metrics = labeller.record(step, metrics)
      done = step + 1
      pending.append((done, metrics))
      progress.update(1)
      epoch, in_epoch = divmod(done, schedule.steps_per_epoch)
      log_now = done % config.log_every_steps == 0 or done == total_steps
      save_now = in_epoch == 0 and (epoch % config.checkpoint_every_epochs == 0
                                    or done == total_steps)
      preempted = preemption.should_stop(sync=log_now)
      if not (log_now or save_now or preempted):
        continue
      # Every step's metrics are checked, so a divergence is caught at the
      # step where it happened and never reaches a checkpoint.
      window = [(s, strategy.get_metrics(m)) for s, m in pending]
      pending = []
      skipped = _check_finite(window, config.nan_policy, checkpointer)
      if log_now:
        host_metrics = {
            **window[-1][1],
            'examples_per_second': ((done - last_logged) * config.batch_size /
                                    (time.perf_counter() - window_start)),
            'learning_rate': float(learning_rate(done))}
        if config.nan_policy == 'skip_step':
          host_metrics['skipped'] = float(skipped)
        if labeller is not None:
          host_metrics.update(labeller.timing())
        last_logged, window_start = done, time.perf_counter()
        _log(history, writer, done, host_metrics)
        _show_progress(progress, host_metrics, done, schedule.steps_per_epoch)
      if save_now or preempted:
        host_states = strategy.get_state(states)
        if labeller is not None:  # the labelled windows of the next 2 steps
          host_states = labeller.stash(host_states, done)
        checkpointer.save(done, host_states, train_rng, epoch, config)
        logging.info('Saved checkpoint for epoch %.4g at %s/%d.',
                     done / schedule.steps_per_epoch, checkpointer.directory,
                     done)
      if save_now:
        scores = _evaluate(evaluators, host_states, done, epoch, config,
                           last=done == total_steps)
        _log(history, writer, done, scores)
        keeper.update(done, scores, checkpointer)
      if preempted:
        logging.warning('Preempted: stopped at step %d after saving its '
                        'checkpoint; relaunch the same command to continue.',
                        done)
        break
  host_states = strategy.get_state(states)
  return {'states': host_states, 'step': done,
          'epoch': done // schedule.steps_per_epoch, 'history': history,
          'preempted': preempted, 'best': keeper.final()}


def _initial_states(config: Config, checkpointer: checkpoints.Checkpointer,
                    data, total_steps: int, resuming: bool):
  """The run's own latest checkpoint, else fresh states with --init_from's
  parameters, else fresh states; returns ``(states, train_rng, start_step)``
  on the host."""
  init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
  states = systems.create_states(config, init_rng, total_steps, data)
  if resuming:
    states, train_rng, meta = checkpointer.restore_latest_readable(
        jax.device_get(states), train_rng, config)
    logging.info('Resumed from %s/%d (epoch %d)%s.', checkpointer.directory,
                 meta['step'], meta['epoch'],
                 f'; --init_from={config.init_from} is ignored'
                 if config.init_from else '')
    if meta['step'] >= total_steps:
      logging.info('Already trained for %d epochs (step %d); raise '
                   '--num_epochs to train further.', config.num_epochs,
                   meta['step'])
    return states, train_rng, int(meta['step'])
  if config.init_from:
    # Parameters only: optimizer states, step, key, data order and D's VBN
    # reference stay this run's own.
    states, _ = warm_start.warm_start(jax.device_get(states), config)
  return states, train_rng, 0


def _metric_labeller(config: Config, strategy: parallel.Strategy
                     ) -> metric_labels.MetricLabeller | None:
  """The PESQ labeller of --metric_discriminator (None without it)."""
  if not config.metric_discriminator:
    return None
  count = config.metric_windows_per_step
  if count > config.batch_size or count % strategy.num_devices:
    raise ValueError(f'metric_windows_per_step {count} must be at most '
                     f'batch_size {config.batch_size} and a multiple of the '
                     f'{strategy.num_devices} device(s)')
  if jax.process_count() > 1:
    # Each process would label windows of the others' batches.
    raise ValueError('metric_discriminator trains in a single process; this '
                     f'run has {jax.process_count()}')
  return metric_labels.MetricLabeller(count, config.window, config.preemphasis,
                                      config.metric_workers)


def _evaluate(evaluators, host_states: dict[str, Any], step: int, epoch: int,
              config: Config, *, last: bool) -> dict[str, float]:
  """The flat metrics of the evaluators due at this checkpoint."""
  scores = {}
  for evaluator in evaluators:
    if evaluator.due(epoch, config, last=last):
      scores.update(evaluator.run(host_states, step))
  return scores


def _log(history: list, writer: logging_utils.MetricWriter, step: int,
         metrics: dict[str, float]) -> None:
  if metrics:
    history.append({'step': step, **metrics})
    writer.write(step, metrics)


def _show_progress(progress, host_metrics: dict[str, float], done: int,
                   steps_per_epoch: int) -> None:
  progress.set_postfix(
      epoch=f'{done / steps_per_epoch:.2f}',
      examples_per_s=f'{host_metrics["examples_per_second"]:.1f}',
      refresh=False)
  logging.info('step %d (epoch %.2f): %s', done, done / steps_per_epoch,
               ', '.join(f'{k}={v:.4g}' for k, v in host_metrics.items()))


def training_summary(config: Config, workdir: str, result: dict[str, Any]) -> str:
  """What a finished run left and the commands that use it, for stdout."""
  steps = checkpoints.steps(workdir)
  if result.get('preempted'):
    head = (f'Preempted: saved a checkpoint at step {result["step"]} and '
            'stopped; launch the same command again to continue.')
  else:
    head = (f'Trained {config.model} to step {result["step"]} '
            f'(epoch {result["epoch"]}).')
  lines = [
      head,
      f'  parameters:  sha256 {logging_utils.fingerprint(result["states"])[:16]} '
      f'(process {jax.process_index()})',
      f'  checkpoints: {checkpoints.checkpoint_dir(workdir)} (steps {", ".join(map(str, steps))})',
      f'  metrics:     {os.path.join(workdir, "metrics.jsonl")}; '
      f'tensorboard --logdir {workdir}',
      f'  report:      python launch.py --mode=report --workdir={workdir}',
  ]
  best = result.get('best')
  if best:
    lines.append(f'  best:        step {best["step"]}, {best["metric"]} '
                 f'{best["value"]:.4g} in {best_checkpoint.best_dir(workdir)} '
                 '(enhance and evaluate use it by default)')
  if not systems.of(config).ENHANCES:
    lines.append(f'  samples:     {os.path.join(workdir, "samples")}')
  else:
    lines.append(f'  enhance:     python launch.py --mode=enhance '
                 f'--workdir={workdir} --input=NOISY --output=ENHANCED')
  return '\n'.join(lines)


def _check_finite(window: list[tuple[int, dict[str, float]]],
                  nan_policy: str,
                  checkpointer: checkpoints.Checkpointer) -> int:
  """Stops at the first step with a non-finite metric (policy ``stop``);
  returns the number of dropped updates in the window (``skip_step``)."""
  if nan_policy == 'skip_step':
    skipped = int(sum(m['skipped'] for _, m in window))
    if skipped:
      logging.warning('Skipped %d update(s) with non-finite metrics among '
                      'steps %d-%d.', skipped, window[0][0], window[-1][0])
    return skipped
  for step, metrics in window:
    bad = [k for k, v in metrics.items() if not np.isfinite(v)]
    if bad:
      latest = checkpointer.latest_step()
      kept = (f'the last good checkpoint is {checkpointer.directory}/{latest}'
              if latest is not None else 'no checkpoint was written yet')
      raise FloatingPointError(
          f'training diverged at step {step}: {", ".join(bad)} not finite; '
          f'{kept} (--nan_policy=skip_step drops such updates instead)')
  return 0
