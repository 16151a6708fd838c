"""Logging: quiet library logs, metrics.jsonl + TensorBoard, the run record."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging as std_logging
import os
import platform
import sys
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from tensorboardX import SummaryWriter

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
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._jsonl = None
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
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


def fingerprint(states: dict[str, Any]) -> str:
  """sha256 of every parameter's bytes: equal only for bit-identical runs.

  Printed at the end of training by every process, so the processes of a
  multi-host run (and a resumed run against an uninterrupted one) can be
  compared at a glance.
  """
  digest = hashlib.sha256()
  for name in sorted(states):
    for leaf in jax.tree.leaves(states[name].params):
      digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()
