"""Train steps (pure, compiled once) of SEGAN, the autoencoder and the basic
GAN, and the training loop they share."""

from __future__ import annotations

import functools
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging
from jax import lax

from segan_jax import augment
from segan_jax import checkpoints
from segan_jax import input_pipeline
from segan_jax import logging_utils
from segan_jax import losses
from segan_jax import parallel
from segan_jax import preemption as preemption_lib
from segan_jax import train_state
from segan_jax.config import Config
from segan_jax.models import make_pair, sample_latent

Metrics = dict[str, jax.Array]


def global_norm(tree: Any) -> jax.Array:
  """The square root of the sum of squares of all leaves (optax.tree.norm).

  Each leaf's sum of squares is a dot with itself: XLA:CPU turned the
  square-then-sum into a squared copy of every gradient and a separate
  reduction over it (an extra write and read of 97 M floats per step at
  paper size); a dot reads the gradient once.
  """
  return jnp.sqrt(sum(
      jnp.vdot(leaf, leaf, precision=lax.Precision.HIGHEST).real
      for leaf in jax.tree.leaves(tree)))


def train_step(g_state, d_state: train_state.DiscriminatorState,
               batch: dict[str, jax.Array], rng: jax.Array, *,
               l1_weight: float, latent_shape: tuple[int, int] | None,
               adversarial_weight: float = 1.0, stft_weight: float = 0.0,
               axis_name: str | None = None):
  """One SEGAN update: D on (clean, noisy) vs (G(noisy), noisy), then G.

  Args:
    g_state, d_state: the two train states (same step count).
    batch: ``noisy`` and ``clean`` pre-emphasised windows ``[B, T]`` (the
      per-device part of the global batch under pmap).
    rng: the run's base key; this step uses ``fold_in(rng, step)``.
    l1_weight: lambda of the L1 term of G's loss.
    adversarial_weight, stft_weight: weights of the LSGAN term and of the
      multi-resolution STFT loss in G's loss.
    latent_shape: shape of z per example, or None for a G without z.
    axis_name: the pmap axis to average gradients over, or None.

  Returns:
    (g_state, d_state, metrics): flat dict of scalars, averaged over devices.
  """
  noisy, clean = batch['noisy'], batch['clean']
  step_rng = jax.random.fold_in(rng, g_state.step)
  local_batch = noisy.shape[0]
  first = lax.axis_index(axis_name) * local_batch if axis_name else 0
  z = None
  if latent_shape is not None:
    z = sample_latent(step_rng, first + jnp.arange(local_batch), latent_shape)

  def generate(g_params):
    return g_state.apply_fn({'params': g_params}, noisy, z)

  # G runs forward once: D's update uses its output as data, and G's gradient
  # is pulled back through the saved forward pass (G's params are unchanged
  # between the two updates, so this equals a second forward pass).
  enhanced, generator_vjp = jax.vjp(generate, g_state.params)

  def discriminate(d_params, signals, noisy_pairs, split_reference=False):
    return d_state.apply_fn({'params': d_params},
                            make_pair(signals, noisy_pairs), d_state.reference,
                            split_reference=split_reference)

  def d_loss_fn(d_params):
    # Real and fake pairs in one call: VBN makes each logit independent of
    # the rest of the batch, so this equals two separate calls.
    logits = discriminate(d_params,
                          jnp.concatenate([clean, enhanced], axis=0),
                          jnp.concatenate([noisy, noisy], axis=0))
    real, fake = logits[:local_batch], logits[local_batch:]
    return losses.lsgan_discriminator_loss(real, fake), (real, fake)

  (d_loss, (real_logits, fake_logits)), d_grads = jax.value_and_grad(
      d_loss_fn, has_aux=True)(d_state.params)
  if axis_name:
    d_grads = lax.pmean(d_grads, axis_name)
  d_state = d_state.apply_gradients(grads=d_grads)

  def g_loss_fn(signal):
    # Only `signal` is differentiated here, so the reference batch goes
    # through D on its own, without a backward pass.
    adversarial = losses.lsgan_generator_loss(
        discriminate(d_state.params, signal, noisy, split_reference=True))
    l1 = losses.l1_loss(signal, clean)
    total = adversarial_weight * adversarial + l1_weight * l1
    stft = 0.0
    if stft_weight:
      stft = losses.multi_resolution_stft_loss(signal, clean)
      total = total + stft_weight * stft
    return total, (adversarial, l1, stft)

  (g_loss, (g_adv, g_l1, g_stft)), d_enhanced = jax.value_and_grad(
      g_loss_fn, has_aux=True)(enhanced)
  (g_grads,) = generator_vjp(d_enhanced)
  if axis_name:
    g_grads = lax.pmean(g_grads, axis_name)
  g_state = g_state.apply_gradients(grads=g_grads)

  metrics = {
      'd_loss': d_loss,
      'd_real': jnp.mean(real_logits),
      'd_fake': jnp.mean(fake_logits),
      'g_loss': g_loss,
      'g_adv': g_adv,
      'g_l1': g_l1,
      'd_grad_norm': global_norm(d_grads),
      'g_grad_norm': global_norm(g_grads),
  }
  if stft_weight:
    metrics['g_stft'] = g_stft
  if axis_name:
    metrics = lax.pmean(metrics, axis_name)
  return g_state, d_state, metrics


def segan_step(states, batch, rng, *, axis_name=None, **kwargs):
  """train_step on the states dict the training loop carries."""
  g_state, d_state, metrics = train_step(states['g'], states['d'], batch, rng,
                                         axis_name=axis_name, **kwargs)
  return {'g': g_state, 'd': d_state}, metrics


def autoencoder_step(states, batch, rng, *, reconstruction: str,
                     stft_weight: float = 0.0, axis_name: str | None = None):
  """One update of the denoising autoencoder (SEGAN's G without z or D)."""
  del rng  # deterministic: no z, no dropout
  g_state = states['g']
  loss_fn = losses.l1_loss if reconstruction == 'l1' else losses.l2_loss

  def loss(params):
    enhanced = g_state.apply_fn({'params': params}, batch['noisy'])
    value = loss_fn(enhanced, batch['clean'])
    stft = 0.0
    if stft_weight:
      stft = losses.multi_resolution_stft_loss(enhanced, batch['clean'])
      value = value + stft_weight * stft
    return value, (losses.l1_loss(enhanced, batch['clean']), stft)

  (value, (l1, stft)), grads = jax.value_and_grad(loss, has_aux=True)(
      g_state.params)
  if axis_name:
    grads = lax.pmean(grads, axis_name)
  metrics = {'loss': value, 'g_l1': l1, 'g_grad_norm': global_norm(grads)}
  if stft_weight:
    metrics['g_stft'] = stft
  if axis_name:
    metrics = lax.pmean(metrics, axis_name)
  return {'g': g_state.apply_gradients(grads=grads)}, metrics


def gan_step(states, batch, rng, *, latent_dim: int, gan_loss: str,
             axis_name: str | None = None):
  """One update of the basic GAN: D on real clean windows vs G(z), then G."""
  g_state, d_state = states['g'], states['d']
  real = batch['clean']
  local_batch = real.shape[0]
  first = lax.axis_index(axis_name) * local_batch if axis_name else 0
  z = sample_latent(jax.random.fold_in(rng, g_state.step),
                    first + jnp.arange(local_batch), (latent_dim,))
  if gan_loss == 'bce':
    d_loss_fn, g_loss_fn = (losses.bce_discriminator_loss,
                            losses.nonsaturating_generator_loss)
  else:
    d_loss_fn, g_loss_fn = (losses.lsgan_discriminator_loss,
                            losses.lsgan_generator_loss)
  fake, generator_vjp = jax.vjp(
      lambda p: g_state.apply_fn({'params': p}, z), g_state.params)

  def d_loss(params):
    logits = d_state.apply_fn({'params': params},
                              jnp.concatenate([real, fake], axis=0))
    real_logits, fake_logits = logits[:local_batch], logits[local_batch:]
    return d_loss_fn(real_logits, fake_logits), (real_logits, fake_logits)

  (d_value, (real_logits, fake_logits)), d_grads = jax.value_and_grad(
      d_loss, has_aux=True)(d_state.params)
  if axis_name:
    d_grads = lax.pmean(d_grads, axis_name)
  d_state = d_state.apply_gradients(grads=d_grads)
  g_value, d_fake = jax.value_and_grad(
      lambda x: g_loss_fn(d_state.apply_fn({'params': d_state.params}, x)))(
          fake)
  (g_grads,) = generator_vjp(d_fake)
  if axis_name:
    g_grads = lax.pmean(g_grads, axis_name)
  metrics = {'d_loss': d_value, 'g_loss': g_value,
             'd_real': jnp.mean(real_logits), 'd_fake': jnp.mean(fake_logits),
             'd_grad_norm': global_norm(d_grads),
             'g_grad_norm': global_norm(g_grads)}
  if axis_name:
    metrics = lax.pmean(metrics, axis_name)
  return {'g': g_state.apply_gradients(grads=g_grads), 'd': d_state}, metrics


def make_train_step(config: Config):
  """The step of ``config.model``: step(states, batch, rng, *, axis_name)."""
  if config.model == 'autoencoder':
    step_fn = functools.partial(autoencoder_step,
                                reconstruction=config.reconstruction_loss,
                                stft_weight=config.stft_weight)
  elif config.model == 'gan':
    step_fn = functools.partial(gan_step, latent_dim=config.latent_dim,
                                gan_loss=config.gan_loss)
  else:
    step_fn = functools.partial(
        segan_step, l1_weight=config.l1_weight,
        adversarial_weight=config.adversarial_weight,
        stft_weight=config.stft_weight,
        latent_shape=(train_state.latent_shape(config) if config.use_z
                      else None))
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


def train_and_evaluate(config: Config, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) a run in ``workdir``; returns the final host states.

  The returned dict holds ``states`` (``{'g': ..., 'd': ...}``, host numpy;
  also as ``g_state`` and ``d_state``), ``step``, ``epoch``, ``history``
  (the metrics logged in this invocation), ``preempted`` (True when a
  SIGTERM stopped the run early, after saving a checkpoint at ``step``)
  and ``best`` (with --keep_best: ``{'metric', 'value', 'step'}`` of the best
  checkpoint so far, kept in ``WORKDIR/best``; else None).

  A run without a checkpoint of its own starts from ``config.init_from``'s
  parameters when set (``checkpoints.warm_start``); once it has saved one,
  it resumes from its own and init_from is ignored.
  """
  if config.keep_best and (config.model == 'gan' or
                           not config.validation_files):
    raise ValueError(
        f'--keep_best={config.keep_best} needs validation scores at each '
        'checkpoint: ' + ('the basic GAN has none (it generates)'
                          if config.model == 'gan' else
                          'set --validation_files to 1 or more'))
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
  reference = None
  if config.model == 'segan':
    reference = input_pipeline.vbn_reference(data, config.vbn_reference_size,
                                             config.seed)
  states = train_state.create_states(config, init_rng, reference,
                                     total_steps)

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
    on_checkpoint = make_checkpoint_hook(config, workdir, writer)
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


def make_checkpoint_hook(config: Config, workdir: str,
                         writer: logging_utils.MetricWriter):
  """What runs after each checkpoint: validation scores or GAN samples."""
  if jax.process_index() != 0:
    return None
  if config.model == 'gan':
    from segan_jax import plots  # pylint: disable=g-import-not-at-top
    return plots.gan_sampler(config, workdir, writer)
  validator = make_validator(config, workdir, writer)
  if validator is None and config.keep_best:
    raise ValueError(f'--keep_best={config.keep_best}: {config.dataset} has '
                     'no validation or test split to score checkpoints on')
  return validator


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


# Validation examples shown as audio and spectrograms at each checkpoint.
NUM_SAMPLE_EXAMPLES = 3


def make_validator(config: Config, workdir: str,
                   writer: logging_utils.MetricWriter | None = None):
  """Scores G on a few validation files at each checkpoint (or None).

  Returns ``validate(g_params, step) -> {'val_pesq': ..., ...}``; results
  also go to ``WORKDIR/validation/step_<N>.json`` with a per-file CSV. The
  first window of the first few validation files, noisy / enhanced / clean,
  is saved as WAV and as one spectrogram picture in
  ``WORKDIR/samples/step_<N>*`` and in TensorBoard.
  """
  if not config.validation_files:
    return None
  from segan_jax import enhance, evaluate  # pylint: disable=g-import-not-at-top
  source = None
  for split in ('validation', 'test'):
    try:
      source = input_pipeline.load_source(config, split)
      break
    except ValueError:
      continue
  if source is None:
    logging.warning('No validation or test split in %s: no validation.',
                    config.dataset)
    return None
  enhancer = None
  examples = []
  for i in range(min(NUM_SAMPLE_EXAMPLES, len(source))):
    example = source[i]
    examples.append({k: example[k][:config.window] for k in ('noisy', 'clean')}
                    | {'id': example['id']})

  def validate(g_params, step):
    nonlocal enhancer
    generator = enhance.Generator(config, g_params, step)
    if enhancer is None:
      enhancer = enhance.Enhancer(generator)
    summary, _ = evaluate.evaluate_checkpoint(
        generator, source, label=config.model, max_files=config.validation_files,
        results=os.path.join(workdir, 'validation', f'step_{step}.json'),
        enhancer=enhancer)
    scores = {f'val_{k}': float(summary[k])
              for k in evaluate.TABLE_COLUMNS}
    _save_examples(enhancer, examples, workdir, step, writer)
    logging.info('step %d validation (%d files, %s split): %s', step,
                 summary['n_files'], split, ', '.join(
                     f'{k}={v:.3f}' for k, v in scores.items()))
    return scores

  return validate


def _save_examples(enhancer, examples, workdir: str, step: int,
                   writer: logging_utils.MetricWriter | None) -> None:
  """noisy / enhanced / clean of each example: WAVs, one PNG, TensorBoard."""
  from segan_jax import audio, files, plots  # pylint: disable=g-import-not-at-top
  stem = os.path.join(workdir, 'samples', f'step_{step}')
  shown = []
  for i, example in enumerate(examples):
    signals = {'noisy': example['noisy'], 'clean': example['clean'],
               'enhanced': enhancer.enhance_signal(example['noisy'])}
    shown.append(signals)
    for kind, wave in signals.items():
      files.write_wav(f'{stem}_{i}_{kind}.wav', wave, audio.SAMPLE_RATE)
      if writer is not None:
        writer.write_audio(f'example_{i}/{kind}', np.clip(wave, -1, 1), step,
                           audio.SAMPLE_RATE)
  picture = plots.enhancement_figure(
      shown, stem + '.png', f'step {step}: ' + ', '.join(
          e['id'] for e in examples))
  if writer is not None:
    writer.write_image('spectrograms', picture, step)
