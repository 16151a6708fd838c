"""The best checkpoint of a run (--keep_best): WORKDIR/best.

``<workdir>/best/`` holds a copy of the best validated checkpoint
(``best/checkpoints/<step>/``, the layout of checkpoints.py) and
``best/best.json`` ({metric, value, step}).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import numpy as np
from absl import logging

from segan_jax import files
from segan_jax.checkpoints import CheckpointError
from segan_jax.checkpoints import Checkpointer
from segan_jax.checkpoints import checkpoint_dir
from segan_jax.checkpoints import steps
from segan_jax.config import Config

BEST_DIR = 'best'
BEST_JSON = 'best.json'


def best_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), BEST_DIR)


def read_best(workdir: str) -> dict[str, Any] | None:
  """``{'metric', 'value', 'step'}`` of WORKDIR/best/best.json, or None."""
  path = os.path.join(best_dir(workdir), BEST_JSON)
  try:
    with open(path) as f:
      best = json.load(f)
    return {'metric': str(best['metric']), 'value': float(best['value']),
            'step': int(best['step'])}
  except FileNotFoundError:
    return None
  except (OSError, ValueError, KeyError, TypeError) as e:
    logging.warning('Ignoring %s: %s', path, e)
    return None


def describe_best(best: dict[str, Any]) -> str:
  return (f'best checkpoint (step {best["step"]}, {best["metric"]} '
          f'{best["value"]:.4g})')


def save_best(workdir: str, step: int, metric: str, value: float) -> dict:
  """Keeps checkpoint ``step`` of ``workdir`` as its best.

  Its files are hard-linked (copied where links are not possible) into
  ``WORKDIR/best/checkpoints/<step>`` under a temporary name and renamed
  when complete; then ``best.json`` is replaced atomically: it is what
  names the best, so a crash at any point leaves the previous best (or the
  new one) whole. Older copies are removed last. Rotation by
  --keep_checkpoints never touches WORKDIR/best.
  """
  src = os.path.join(checkpoint_dir(workdir), str(step))
  root = best_dir(workdir)
  kept = checkpoint_dir(root)
  os.makedirs(kept, exist_ok=True)
  target = os.path.join(kept, str(step))
  partial = os.path.join(root, f'.partial-{step}')
  if os.path.exists(partial):
    shutil.rmtree(partial)
  shutil.copytree(src, partial, copy_function=_link_or_copy)
  if os.path.exists(target):  # an older copy of that step: set it aside
    old = os.path.join(root, f'.partial-old-{step}')
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
  os.replace(partial, target)
  best = {'metric': metric, 'value': float(value), 'step': int(step)}
  with files.atomic_open(os.path.join(root, BEST_JSON)) as f:
    f.write(json.dumps(best, indent=1, sort_keys=True) + '\n')
  for name in os.listdir(kept):
    if name != str(step):
      shutil.rmtree(os.path.join(kept, name), ignore_errors=True)
  for name in os.listdir(root):
    if name.startswith('.partial-'):
      shutil.rmtree(os.path.join(root, name), ignore_errors=True)
  return best


def _link_or_copy(src: str, dst: str) -> None:
  # Orbax never rewrites a finished checkpoint's files, so a hard link is a
  # copy that costs no space; other file systems get a real copy.
  try:
    os.link(src, dst)
  except OSError:
    shutil.copy2(src, dst)


def best_checkpointer(workdir: str) -> tuple[Checkpointer, dict] | None:
  """A read-only Checkpointer of WORKDIR/best and best.json, or None."""
  best = read_best(workdir)
  if best is None:
    return None
  try:
    ckpt = Checkpointer(best_dir(workdir), create=False)
  except CheckpointError:
    return None
  if best['step'] not in ckpt.all_steps():
    logging.warning('%s names step %d, which is missing there; ignoring it.',
                    os.path.join(best_dir(workdir), BEST_JSON), best['step'])
    ckpt.close()
    return None
  return ckpt, best


# --- The best-keeper of a training run -----------------------------------------


def keeper_for(config: Config, workdir: str, *, evaluated: bool):
  """The run's best-keeper: a BestKeeper with --keep_best, else a NoBest.

  ``evaluated`` says whether the caller hands the loop evaluators, which
  score the checkpoints the keeper picks from.
  """
  if not config.keep_best:
    return NoBest()
  if not (config.validation_files and evaluated):
    raise ValueError(
        f'--keep_best={config.keep_best} needs validation scores at each '
        'checkpoint: ' + ('set --validation_files to 1 or more'
                          if not config.validation_files else
                          'this caller hands the loop no evaluators'))
  return BestKeeper(workdir, config.keep_best)


class NoBest:
  """The keeper of a run that keeps no best checkpoint."""

  def update(self, step: int, scores: dict[str, float],
             checkpointer: Checkpointer) -> None:
    del step, scores, checkpointer

  def final(self) -> None:
    return None


class BestKeeper:
  """Keeps the checkpoint with the highest ``metric`` in WORKDIR/best.

  Every process makes one (Orbax finishes a save collectively, so every
  process waits for it before the copy); only the process that evaluates
  has scores to act on. Every validation metric is better higher.
  """

  def __init__(self, workdir: str, metric: str):
    self.workdir = workdir
    self.metric = metric
    # A run that resumes remembers its best; a new one starts afresh.
    self.best = read_best(workdir) if steps(workdir) else None
    if self.best is not None and self.best['metric'] != metric:
      logging.warning('%s kept the best by %s; this run keeps the best by '
                      '%s: the next validated checkpoint replaces it.',
                      best_dir(workdir), self.best['metric'], metric)
      self.best = None
    if self.best is not None:
      logging.info('Best so far: step %d, %s=%.4g.', self.best['step'],
                   metric, self.best['value'])

  def update(self, step: int, scores: dict[str, float],
             checkpointer: Checkpointer) -> None:
    """Keeps checkpoint ``step`` when its score beats the best so far."""
    # The checkpoint is copied once it is complete.
    checkpointer.wait()
    if not scores:  # a process that does not evaluate, or none was due
      return
    value = scores.get(self.metric)
    if value is None or not np.isfinite(value):
      logging.warning('step %d: %s is %s; not a candidate for the best.',
                      step, self.metric, value)
      return
    if self.best is not None and value <= self.best['value']:
      return
    self.best = save_best(self.workdir, step, self.metric, value)
    logging.info('step %d is the best so far (%s=%.4g): kept in %s.', step,
                 self.metric, value, best_dir(self.workdir))

  def final(self) -> dict[str, Any] | None:
    """The best at the end of the run (read from WORKDIR/best by a process
    that does not evaluate)."""
    if self.best is None:
      self.best = read_best(self.workdir)
    if self.best is not None:
      logging.info('Best checkpoint so far: step %d, %s=%.4g, kept in %s.',
                   self.best['step'], self.best['metric'], self.best['value'],
                   best_dir(self.workdir))
    return self.best
