"""Scoring enhancement with the paper's metrics: a checkpoint on a dataset
split, or any folder of enhanced files against their clean references.

Writes a JSON summary (top level: the mean of each metric of the evaluated
system, and ``n_files``) and a per-file CSV beside it, and returns the table
that launch.py prints (rows: Noisy and the system; columns as in the paper).
"""

from __future__ import annotations

import csv
import json
import os
import re
from typing import Any, Sequence

import numpy as np
from absl import logging

from segan_jax import audio
from segan_jax import enhance
from segan_jax import files
from segan_jax import generators
from segan_jax import metrics
from segan_jax.config import VALIDATION_METRICS as TABLE_COLUMNS
from segan_jax.datasets import pairs as pairs_lib


def _score(references: Sequence[np.ndarray], signals: Sequence[np.ndarray],
           ids: Sequence[str], num_workers: int | None) -> list[dict]:
  try:
    return metrics.evaluate_pairs(list(zip(references, signals)),
                                  num_workers=num_workers)
  except ValueError as e:
    # evaluate_pairs says 'pair <i>: ...'; users want the file's name.
    match = re.match(r'pair (\d+): (.*)', str(e))
    if match:
      raise ValueError(f'{ids[int(match.group(1))]}: {match.group(2)}') from None
    raise


def _examples(source, max_files: int | None) -> list[dict]:
  """The first ``max_files`` (default: all) utterances of ``source``."""
  count = len(source) if max_files is None else min(max_files, len(source))
  if count < 1:
    raise ValueError(f'nothing to evaluate: the split has {len(source)} '
                     f'file(s) and --max_files is {max_files}')
  return [source[i] for i in range(count)]


def score_noisy(source, max_files: int | None = None,
                num_workers: int | None = None) -> list[dict]:
  """The scores of the noisy inputs themselves (rows as `enhance_and_score`
  gives), which do not change from one checkpoint to the next."""
  examples = _examples(source, max_files)
  return _score([e['clean'] for e in examples], [e['noisy'] for e in examples],
                [e['id'] for e in examples], num_workers)


def enhance_and_score(enhancer: enhance.WindowEnhancer, source,
                      max_files: int | None = None,
                      num_workers: int | None = None,
                      noisy_rows: list[dict] | None = None
                      ) -> dict[str, list[dict]]:
  """Enhances each utterance of ``source``; scores noisy and enhanced.

  Returns ``{'ids': [...], 'noisy': rows, 'model': rows}`` (rows: one flat
  metrics dict per file). ``noisy_rows`` (`score_noisy` of the same files),
  when given, are used instead of scoring the noisy inputs again.
  """
  examples = _examples(source, max_files)
  ids = [e['id'] for e in examples]
  cleans = [e['clean'] for e in examples]
  enhanced = [enhancer.enhance_signal(e['noisy']) for e in examples]
  if noisy_rows is None:
    noisy_rows = score_noisy(source, max_files, num_workers)
  elif len(noisy_rows) != len(examples):
    raise ValueError(f'{len(noisy_rows)} noisy rows for {len(examples)} '
                     'files')
  return {'ids': ids, 'noisy': noisy_rows,
          'model': _score(cleans, enhanced, ids, num_workers)}


def format_table(rows: dict[str, dict[str, float]]) -> str:
  """The paper's table: one row per system, PESQ CSIG CBAK COVL SSNR STOI."""
  header = f'{"":<24}' + ''.join(f'{c.upper():>8}' for c in TABLE_COLUMNS)
  lines = [header]
  for name, means in rows.items():
    lines.append(f'{name:<24}' + ''.join(
        f'{means[c]:>8.3f}' if c in means else f'{"-":>8}'
        for c in TABLE_COLUMNS))
  return '\n'.join(lines)


def write_results(path: str, summary: dict[str, Any], ids: Sequence[str],
                  systems: dict[str, list[dict]]) -> str:
  """JSON summary at ``path``, per-file CSV beside it; both written atomically."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  with files.atomic_open(path) as f:
    f.write(json.dumps(summary, indent=1, sort_keys=True) + '\n')
  csv_path = os.path.splitext(path)[0] + '.csv'
  names = list(metrics.METRIC_NAMES)
  with files.atomic_open(csv_path, newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['file', 'system'] + names)
    for system, rows in systems.items():
      for file_id, row in zip(ids, rows):
        writer.writerow([file_id, system] + [f'{row[n]:.6f}' for n in names])
  return csv_path


def summarize(model_rows: list[dict], noisy_rows: list[dict] | None,
              **extra: Any) -> dict[str, Any]:
  summary = metrics.mean_metrics(model_rows)
  if noisy_rows is not None:
    summary['noisy'] = metrics.mean_metrics(noisy_rows)
  summary.update(extra)
  return summary


def evaluate_generator(generator: generators.TrainedGenerator, source, *,
                       results: str, label: str, batch_size: int = 8,
                       max_files: int | None = None,
                       num_workers: int | None = None,
                       enhancer: enhance.Enhancer | None = None,
                       noisy_rows: list[dict] | None = None
                       ) -> tuple[dict, str]:
  """Enhances a dataset split with ``generator`` and scores it; returns
  (summary, table). ``noisy_rows``: as for `enhance_and_score`."""
  if enhancer is None:
    enhancer = enhance.Enhancer(generator, batch_size=batch_size)
  else:  # reuse its compiled program (e.g. for validation during training)
    enhancer.set_params(generator.params)
  scored = enhance_and_score(enhancer, source, max_files, num_workers,
                             noisy_rows)
  extra = {'checkpoint': generator.source} if generator.source else {}
  summary = summarize(scored['model'], scored['noisy'], step=generator.step,
                      system=label, **extra)
  write_results(results, summary, scored['ids'],
                {'noisy': scored['noisy'], 'model': scored['model']})
  table = format_table({'Noisy': summary['noisy'], label: summary})
  return summary, table


def evaluate_folders(clean_dir: str, enhanced_dir: str, *,
                     results: str | None = None,
                     noisy_dir: str | None = None,
                     num_workers: int | None = None,
                     skip_bad_files: bool = False) -> tuple[dict, str]:
  """Scores files of ``enhanced_dir`` against equally named ``clean_dir`` files.

  A file without its partner, unreadable or of another length stops the
  evaluation with a ValueError naming it, or with ``skip_bad_files`` is
  reported and left out.
  """
  pairs = pairs_lib.find_pairs(enhanced_dir, clean_dir, skip_bad_files,
                               kinds=('enhanced', 'clean'))
  ids, names, noisy_names = [], [], []
  cleans, enhanced, noisies = [], [], []
  for pair in pairs:
    try:
      clean = audio.read_mono_16k(pair.clean)
      processed = audio.read_mono_16k(pair.degraded)
      if processed.shape != clean.shape:
        raise pairs_lib.PairError(
            f'{pair.degraded}: {processed.shape[0]} samples at 16 kHz but '
            f'{pair.clean} has {clean.shape[0]}')
      noisy = None
      if noisy_dir:
        noisy = audio.read_mono_16k(os.path.join(noisy_dir, pair.id))
    except (audio.AudioError, pairs_lib.PairError) as e:
      pairs_lib.report_or_raise([str(e)], skip_bad_files)
      continue
    ids.append(pair.id)
    # Metric errors name the enhanced file by its path, like read errors.
    names.append(pair.degraded)
    cleans.append(clean)
    enhanced.append(processed)
    if noisy_dir:
      noisies.append(noisy)
      noisy_names.append(os.path.join(noisy_dir, pair.id))
  if not ids:
    raise pairs_lib.PairError(f'{enhanced_dir}: no usable files to score')
  systems = {'enhanced': _score(cleans, enhanced, names, num_workers)}
  if noisy_dir:
    systems['noisy'] = _score(cleans, noisies, noisy_names, num_workers)
  summary = summarize(systems['enhanced'], systems.get('noisy'),
                      clean_dir=os.path.abspath(clean_dir),
                      enhanced_dir=os.path.abspath(enhanced_dir))
  if results is None:
    results = os.path.join(
        os.path.dirname(os.path.abspath(enhanced_dir.rstrip('/'))),
        'evaluation.json')
  write_results(results, summary, ids, systems)
  rows = {'Noisy': summary['noisy']} if noisy_dir else {}
  rows[os.path.basename(enhanced_dir.rstrip('/')) or 'enhanced'] = summary
  logging.info('Wrote %s.', results)
  return summary, format_table(rows)
