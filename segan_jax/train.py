"""Train steps (pure, compiled once) of SEGAN, the autoencoder and the basic
GAN, and the training loop they share."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging

from segan_jax import augment
from segan_jax import checkpoints
from segan_jax import input_pipeline
from segan_jax import logging_utils
from segan_jax import parallel
from segan_jax import preemption as preemption_lib
from segan_jax import systems
from segan_jax import train_state
from segan_jax.config import Config

# Builds the hook that runs after each checkpoint: (config, workdir, writer)
# -> hook(g_params, step) -> flat metrics, or None.
CheckpointHookFactory = Callable[
    [Config, str, logging_utils.MetricWriter],
    Callable[[Any, int], dict[str, float]] | None]

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
                       make_checkpoint_hook: CheckpointHookFactory | None = None
                       ) -> dict[str, Any]:
  """Trains (or resumes) a run in ``workdir``; returns the final host states.

  The returned dict holds ``states`` (``{'g': ..., 'd': ...}``, host numpy;
  also as ``g_state`` and ``d_state``), ``step``, ``epoch``, ``history``
  (the metrics logged in this invocation), ``preempted`` (True when a
  SIGTERM stopped the run early, after saving a checkpoint at ``step``)
  and ``best`` (with --keep_best: ``{'metric', 'value', 'step'}`` of the best
  checkpoint so far, kept in ``WORKDIR/best``; else None).

  ``make_checkpoint_hook(config, workdir, writer)`` builds what runs after
  each checkpoint on process 0 (``hook(g_params, step) -> metrics``, logged
  with the step; ``hooks.make_checkpoint_hook`` validates or samples), or
  returns None. --keep_best needs it to score checkpoints.

  A run without a checkpoint of its own starts from ``config.init_from``'s
  parameters when set (``checkpoints.warm_start``); once it has saved one,
  it resumes from its own and init_from is ignored.
  """
  if config.keep_best and not (config.validation_files and
                               make_checkpoint_hook):
    raise ValueError(
        f'--keep_best={config.keep_best} needs validation scores at each '
        'checkpoint: ' + ('set --validation_files to 1 or more'
                          if not config.validation_files else
                          'this caller hands the loop no validation hook'))
  checkpointer = checkpoints.Checkpointer(workdir, config.keep_checkpoints)
  resuming = checkpointer.latest_step() is not None
  if config.init_from and not resuming:
    # Before the data is loaded: a mistyped path answers at once.
    checkpoints.check_init_from(config.init_from)
  strategy = parallel.make_strategy(config.parallelism, config.batch_size)
  data = input_pipeline.load_train_windows(config)
  schedule = input_pipeline.BatchSchedule(len(data), config.batch_size,
                                          config.seed)
  total_steps = schedule.steps_per_epoch * config.num_epochs
  rng = jax.random.key(config.seed)
  init_rng, train_rng = jax.random.split(rng)
  states = systems.create_states(config, init_rng, total_steps, data)

  start_step = 0
  best = None
  if resuming:
    states, train_rng, meta = checkpointer.restore_latest_readable(
        jax.device_get(states), train_rng, config)
    start_step = int(meta['step'])
    logging.info('Resumed from %s/%d (epoch %d)%s.', checkpointer.directory,
                 start_step, meta['epoch'],
                 f'; --init_from={config.init_from} is ignored'
                 if config.init_from else '')
    if config.keep_best:
      best = _resumed_best(workdir, config.keep_best)
  elif config.init_from:
    # Parameters only: optimizer states, step, key, data order and D's VBN
    # reference stay this run's own.
    states, _ = checkpoints.warm_start(jax.device_get(states), config)
  logging.info('%s: %d training windows, %d steps per epoch of %d, '
               'parallelism=%s on %d device(s).', config.model, len(data),
               schedule.steps_per_epoch, config.batch_size, strategy.name,
               strategy.num_devices)

  if start_step >= total_steps:
    logging.info('Already trained for %d epochs (step %d); raise --num_epochs '
                 'to train further.', config.num_epochs, start_step)
  step_fn = strategy.compile(make_train_step(config))
  learning_rate = train_state.learning_rate_schedule(config, total_steps)
  states = strategy.put_state(states)
  history = []
  window_start = time.perf_counter()
  writer = logging_utils.MetricWriter(workdir)
  try:
    on_checkpoint = None
    if make_checkpoint_hook is not None and jax.process_index() == 0:
      on_checkpoint = make_checkpoint_hook(config, workdir, writer)
    if config.keep_best and jax.process_index() == 0 and on_checkpoint is None:
      raise ValueError(f'--keep_best={config.keep_best}: no validation hook '
                       f'for {config.model} on {config.dataset}')
  except BaseException:
    writer.close()
    checkpointer.close()
    raise
  logging_utils.write_run_record(workdir, config.to_dict())
  progress = tqdm.tqdm(total=total_steps, initial=start_step, unit='step',
                       disable=not (sys.stderr.isatty()
                                    and jax.process_index() == 0),
                       dynamic_ncols=True)
  preemption = preemption_lib.PreemptionWatcher()
  host_batches = input_pipeline.batches(
      data, schedule, start_step, total_steps,
      augmentation=augment.Augmentation.from_config(config))
  # Metrics of the steps since the last host sync, fetched together then: the
  # loop never waits for the devices in between.
  pending = []
  done = last_logged = start_step
  preempted = False
  try:
    for step in range(start_step, total_steps):
      batch = strategy.put_batch(next(host_batches))
      states, metrics = step_fn(states, batch, train_rng)
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
        host_metrics = dict(window[-1][1])
        elapsed = time.perf_counter() - window_start
        host_metrics['examples_per_second'] = (
            (done - last_logged) * config.batch_size / elapsed)
        last_logged = done
        host_metrics['learning_rate'] = float(learning_rate(done))
        if config.nan_policy == 'skip_step':
          host_metrics['skipped'] = float(skipped)
        window_start = time.perf_counter()
        history.append({'step': done, **host_metrics})
        writer.write(done, host_metrics)
        progress.set_postfix(
            epoch=f'{done / schedule.steps_per_epoch:.2f}',
            examples_per_s=f'{host_metrics["examples_per_second"]:.1f}',
            refresh=False)
        logging.info('step %d (epoch %.2f): %s', done,
                     done / schedule.steps_per_epoch,
                     ', '.join(f'{k}={v:.4g}' for k, v in host_metrics.items()))
      if save_now or preempted:
        host_states = strategy.get_state(states)
        checkpointer.save(done, host_states, train_rng, epoch, config)
        logging.info('Saved checkpoint for epoch %.4g at %s/%d.',
                     done / schedule.steps_per_epoch, checkpointer.directory,
                     done)
        if save_now and config.keep_best:
          # The checkpoint may become the best, copied once it is complete
          # (every process waits: Orbax finishes a save collectively).
          checkpointer.wait()
        if save_now and on_checkpoint is not None:
          checkpoint_metrics = on_checkpoint(host_states['g'].params, done)
          history.append({'step': done, **checkpoint_metrics})
          writer.write(done, checkpoint_metrics)
          if config.keep_best:
            best = _update_best(workdir, config.keep_best, checkpoint_metrics,
                                done, best)
      if preempted:
        logging.warning('Preempted: stopped at step %d after saving its '
                        'checkpoint; relaunch the same command to continue.',
                        done)
        break
  finally:
    # Whatever stops the loop, a checkpoint being written is finished.
    preemption.close()
    progress.close()
    writer.close()
    checkpointer.wait()
    checkpointer.close()
  host_states = strategy.get_state(states)
  if config.keep_best:
    if best is None:  # processes other than 0 do not validate
      best = checkpoints.read_best(workdir)
    if best is not None:
      logging.info('Best checkpoint so far: step %d, %s=%.4g, kept in %s.',
                   best['step'], best['metric'], best['value'],
                   checkpoints.best_dir(workdir))
  return {'states': host_states, 'g_state': host_states['g'],
          'd_state': host_states.get('d'), 'step': done,
          'epoch': done // schedule.steps_per_epoch, 'history': history,
          'preempted': preempted, 'best': best}


def training_summary(config: Config, workdir: str, result: dict[str, Any]) -> str:
  """What a finished run left and the commands that use it, for stdout."""
  folder = checkpoints.checkpoint_dir(workdir)
  steps = sorted(int(s) for s in os.listdir(folder) if s.isdigit())
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
      f'  checkpoints: {folder} (steps {", ".join(map(str, steps))})',
      f'  metrics:     {os.path.join(workdir, "metrics.jsonl")}; '
      f'tensorboard --logdir {workdir}',
      f'  report:      python launch.py --mode=report --workdir={workdir}',
  ]
  best = result.get('best')
  if best:
    lines.append(f'  best:        step {best["step"]}, {best["metric"]} '
                 f'{best["value"]:.4g} in {checkpoints.best_dir(workdir)} '
                 '(enhance and evaluate use it by default)')
  if not systems.of(config).ENHANCES:
    lines.append(f'  samples:     {os.path.join(workdir, "samples")}')
  else:
    lines.append(f'  enhance:     python launch.py --mode=enhance '
                 f'--workdir={workdir} --input=NOISY --output=ENHANCED')
  return '\n'.join(lines)


def _resumed_best(workdir: str, metric: str) -> dict[str, Any] | None:
  """The best so far of a resumed run (WORKDIR/best/best.json), or None."""
  best = checkpoints.read_best(workdir)
  if best is not None and best['metric'] != metric:
    logging.warning('%s kept the best by %s; this run keeps the best by %s: '
                    'the next validated checkpoint replaces it.',
                    checkpoints.best_dir(workdir), best['metric'], metric)
    return None
  if best is not None:
    logging.info('Best so far: step %d, %s=%.4g.', best['step'], metric,
                 best['value'])
  return best


def _update_best(workdir: str, metric: str, scores: dict[str, float],
                 step: int, best: dict[str, Any] | None
                 ) -> dict[str, Any] | None:
  """Keeps checkpoint ``step`` as the best when its ``metric`` is higher
  than the best so far (every validation metric is better higher)."""
  value = scores.get(metric)
  if value is None or not np.isfinite(value):
    logging.warning('step %d: %s is %s; not a candidate for the best.', step,
                    metric, value)
    return best
  if best is not None and value <= best['value']:
    return best
  best = checkpoints.save_best(workdir, step, metric, value)
  logging.info('step %d is the best so far (%s=%.4g): kept in %s.', step,
               metric, value, checkpoints.best_dir(workdir))
  return best


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
