"""Logging: quiet library logs, metrics.jsonl + TensorBoard, the run record."""

from __future__ import annotations

import json
import logging as std_logging
import os
import sys
import time
from typing import Any

from absl import logging

from segan_jax import files

# Libraries whose INFO lines drown the run's own (Orbax logs every file it
# renames while saving a checkpoint).
_CHATTY_PACKAGES = (os.sep + 'orbax' + os.sep,)


class _QuietLibraries(std_logging.Filter):

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.levelno >= std_logging.WARNING:
      return True
    return not any(p in record.pathname for p in _CHATTY_PACKAGES)


def quiet_library_logs() -> None:
  """Keeps only warnings and errors from chatty libraries in absl's log."""
  logging.get_absl_handler().addFilter(_QuietLibraries())


class MetricWriter:
  """Writes flat metric dicts to ``metrics.jsonl`` and TensorBoard events.

  Only process 0 writes (on other processes every call is a no-op), so a
  multi-host run has one record. ``tensorboard --logdir WORKDIR`` shows the
  curves; ``metrics.jsonl`` has one JSON object per line: ``{"step": N, ...}``.
  """

  def __init__(self, workdir: str, enabled: bool | None = None):
    import jax  # pylint: disable=g-import-not-at-top
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._jsonl = None
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    self._jsonl.write(json.dumps({'step': int(step), **{
        k: float(v) for k, v in metrics.items()}}) + '\n')
    self._jsonl.flush()
    for name, value in metrics.items():
      self._tb.add_scalar(name, float(value), int(step))
    self._tb.flush()

  def write_image(self, tag: str, picture, step: int) -> None:
    """An RGB uint8 picture ``[H, W, 3]`` to TensorBoard's images tab."""
    if self.enabled:
      self._tb.add_image(tag, picture, int(step), dataformats='HWC')
      self._tb.flush()

  def write_audio(self, tag: str, waveform, step: int,
                  sample_rate: int) -> None:
    if self.enabled:
      self._tb.add_audio(tag, waveform, int(step), sample_rate=sample_rate)
      self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def versions() -> dict[str, str]:
  """Versions of what a run depends on, for its run record."""
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  import platform  # pylint: disable=g-import-not-at-top
  out = {'python': platform.python_version()}
  for package in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint',
                  'tensorflow-datasets', 'grain', 'numpy', 'segan-jax'):
    try:
      out[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      out[package] = 'not installed'
  return out


def write_run_record(workdir: str, config_dict: dict[str, Any]) -> str:
  """``WORKDIR/run.json``: the config, versions, devices and command line."""
  import jax  # pylint: disable=g-import-not-at-top
  record = {
      'config': config_dict,
      'versions': versions(),
      'devices': {'platform': jax.devices()[0].platform,
                  'count': jax.device_count(),
                  'local_count': jax.local_device_count(),
                  'kinds': sorted({d.device_kind for d in jax.devices()}),
                  'process_count': jax.process_count()},
      'command': sys.argv,
      'started': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
  }
  path = os.path.join(workdir, 'run.json')
  if jax.process_index() == 0:
    with files.atomic_open(path) as f:
      json.dump(record, f, indent=1)
  return path


def training_summary(config, workdir: str, result: dict[str, Any]) -> str:
  """What a finished run left and the commands that use it, for stdout."""
  import jax  # pylint: disable=g-import-not-at-top
  from segan_jax import checkpoints  # pylint: disable=g-import-not-at-top
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
      f'  parameters:  sha256 {fingerprint(result["states"])[:16]} '
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
  if config.model == 'gan':
    lines.append(f'  samples:     {os.path.join(workdir, "samples")}')
  else:
    lines.append(f'  enhance:     python launch.py --mode=enhance '
                 f'--workdir={workdir} --input=NOISY --output=ENHANCED')
  return '\n'.join(lines)


def fingerprint(states: dict[str, Any]) -> str:
  """sha256 of every parameter's bytes: equal only for bit-identical runs.

  Printed at the end of training by every process, so the processes of a
  multi-host run (and a resumed run against an uninterrupted one) can be
  compared at a glance.
  """
  import hashlib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  digest = hashlib.sha256()
  for name in sorted(states):
    for leaf in jax.tree.leaves(states[name].params):
      digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()
