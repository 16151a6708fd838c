"""What the training loop runs after checkpoints (on process 0): scores on a
few validation files for a system that enhances, sample pictures and audio
for the basic GAN.

The caller hands ``make_evaluators`` to ``train.train_and_evaluate``; the
loop itself knows nothing of enhancement or metrics.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import numpy as np
from absl import logging

from segan_jax import audio
from segan_jax import enhance
from segan_jax import generators
from segan_jax import evaluate
from segan_jax import files
from segan_jax import input_pipeline
from segan_jax import logging_utils
from segan_jax import plots
from segan_jax import systems
from segan_jax.config import Config


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """``run(host_states, step) -> flat metrics``, after each checkpoint of the
  run (every --checkpoint_every_epochs epochs) and after its last."""

  name: str
  run: Callable[[dict[str, Any], int], dict[str, float]]

  def due(self, epoch: int, config: Config, *, last: bool) -> bool:
    """Whether the checkpoint saved at the end of ``epoch`` is scored."""
    return last or epoch % config.checkpoint_every_epochs == 0


def _of_generator(name: str, hook) -> Evaluator:
  """An Evaluator of ``hook(g_params, step)``, which sees G only."""
  return Evaluator(name, lambda states, step: hook(states['g'].params, step))


def make_evaluators(config: Config, workdir: str,
                    writer: logging_utils.MetricWriter) -> list[Evaluator]:
  """The run's evaluators: validation scores, or GAN samples."""
  if not systems.of(config).ENHANCES:
    if config.keep_best:
      raise ValueError(f'--keep_best={config.keep_best}: the {config.model} '
                       'model generates rather than enhances, so it has no '
                       'validation scores')
    return [_of_generator('samples', plots.gan_sampler(config, workdir,
                                                       writer))]
  validator = make_validator(config, workdir, writer)
  if validator is None:
    if config.keep_best:
      raise ValueError(f'--keep_best={config.keep_best}: {config.dataset} '
                       'has no validation or test split to score checkpoints '
                       'on')
    return []
  return [_of_generator('validation', validator)]


# Validation examples shown as audio and spectrograms at each checkpoint.
NUM_SAMPLE_EXAMPLES = 3


def make_validator(config: Config, workdir: str,
                   writer: logging_utils.MetricWriter | None = None):
  """Scores G on a few validation files at each checkpoint (or None).

  Returns ``validate(g_params, step) -> {'val_pesq': ..., ...}``; results
  also go to ``WORKDIR/validation/step_<N>.json`` with a per-file CSV. Each
  --extra_validation_dirs set adds ``val_<name>_<metric>`` (results in
  ``WORKDIR/validation/<name>/``) and all the sets' mean ``val_mean_<metric>``
  (each set counts once, whatever its size). The first window of the first
  few files of the main set, noisy / enhanced / clean, is saved as WAV and
  as one spectrogram picture in ``WORKDIR/samples/step_<N>*`` and in
  TensorBoard.
  """
  if not config.validation_files:
    return None
  source, where = input_pipeline.load_validation_source(config)
  if source is None:
    logging.warning('No validation or test split in %s: no validation.',
                    config.dataset)
    return None
  # (metric prefix, results folder, source); the main set first.
  sets = [('val_', os.path.join(workdir, 'validation'), source)] + [
      (f'val_{name}_', os.path.join(workdir, 'validation', name), extra)
      for name, extra in input_pipeline.load_extra_validation_sources(config)]
  where += ''.join(f' + {folder}'
                   for folder in config.extra_validation_dirs or ())
  enhancer = None
  noisy_rows = {}  # per set, the noisy inputs' scores: the same every time
  examples = []
  for i in range(min(NUM_SAMPLE_EXAMPLES, len(source))):
    example = source[i]
    examples.append({k: example[k][:config.window] for k in ('noisy', 'clean')}
                    | {'id': example['id']})

  def validate(g_params, step):
    nonlocal enhancer
    generator = generators.TrainedGenerator(config, g_params, step)
    if enhancer is None:
      enhancer = enhance.Enhancer(generator)
      noisy_rows.update({prefix: evaluate.score_noisy(
          set_source, config.validation_files)
                         for prefix, _, set_source in sets})
    scores = {}
    for prefix, folder, set_source in sets:
      summary, _ = evaluate.evaluate_generator(
          generator, set_source, label=config.model,
          max_files=config.validation_files,
          results=os.path.join(folder, f'step_{step}.json'),
          enhancer=enhancer, noisy_rows=noisy_rows[prefix])
      scores |= {f'{prefix}{k}': float(summary[k])
                 for k in evaluate.TABLE_COLUMNS}
    if len(sets) > 1:
      scores |= {f'val_mean_{k}': float(np.mean(
          [scores[f'{prefix}{k}'] for prefix, _, _ in sets]))
                 for k in evaluate.TABLE_COLUMNS}
    _save_examples(enhancer, examples, workdir, step, writer)
    logging.info('step %d validation (%s): %s', step, where, ', '.join(
        f'{k}={v:.3f}' for k, v in scores.items()))
    return scores

  return validate


def _save_examples(enhancer, examples, workdir: str, step: int,
                   writer: logging_utils.MetricWriter | None) -> None:
  """noisy / enhanced / clean of each example: WAVs, one PNG, TensorBoard."""
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
