"""Registry of random-access (noisy, clean) utterance sources.

Every source supports ``len()`` and ``source[i]``, returning a dict with
float32 ``noisy`` and ``clean`` waveforms (mono, 16 kHz, equal length) and a
string ``id``:

- ``synthetic``: the embedded dataset, generated on the fly from a seed.
- ``wav_pairs``: any folder (``--data_dir``) of noisy/ and clean/ files with
  equal names, optionally under train/, validation/, test/.
- ``voicebank_demand``: the official VoiceBank-DEMAND zips or folders in
  ``--manual_dir``.

The two file-backed datasets are built once by TFDS into ``tfds_data_dir``
(array_record files) and read through ``as_data_source()``.
"""

from __future__ import annotations

import fcntl
import functools
import os
from typing import Any, Callable

from absl import logging

from segan_jax import audio
from segan_jax.datasets import synthetic

DATASETS = ('synthetic', 'wav_pairs', 'voicebank_demand')


class DatasetError(ValueError):
  """A dataset that cannot be built or read as asked (one-line message)."""


def default_tfds_data_dir() -> str:
  return os.environ.get('TFDS_DATA_DIR',
                        os.path.expanduser('~/tensorflow_datasets'))


class TfdsSource:
  """Adapts a TFDS data source (int16 audio, bytes ids) to the common dict."""

  def __init__(self, data_source):
    self._source = data_source

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    record = self._source[index]
    return {'noisy': audio.from_int16(record['noisy']),
            'clean': audio.from_int16(record['clean']),
            'id': _text(record['id']), 'speaker': _text(record['speaker'])}


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def get_source(name: str, split: str, data_dir: str | None = None, *,
               manual_dir: str | None = None,
               tfds_data_dir: str | None = None,
               skip_bad_files: bool = False, **kwargs: Any):
  """Returns the random-access source of dataset ``name``, split ``split``.

  Args:
    name: one of DATASETS.
    split: 'train', 'validation' or 'test' (a flat wav_pairs folder has one
      split that serves every name).
    data_dir: the folder of pairs for wav_pairs.
    manual_dir: the folder holding the VoiceBank-DEMAND downloads.
    tfds_data_dir: where TFDS writes prepared datasets.
    skip_bad_files: build with unusable files reported and left out instead
      of stopping at the first.
    **kwargs: for 'synthetic': seed, num_utterances.
  """
  if name == 'synthetic':
    return synthetic.SyntheticSpeech(split, **kwargs)
  if name not in DATASETS:
    raise ValueError(
        f'Unknown dataset {name!r}; known datasets: {", ".join(DATASETS)}.')
  # Imported here: TFDS is only needed for file-backed data.
  from segan_jax.datasets import builders  # pylint: disable=g-import-not-at-top
  tfds_data_dir = tfds_data_dir or default_tfds_data_dir()
  if name == 'wav_pairs':
    if not data_dir:
      raise DatasetError('--dataset=wav_pairs needs --data_dir=FOLDER holding '
                         'noisy/ and clean/')
    make_builder = functools.partial(builders.WavPairs, source_dir=data_dir,
                                     skip_bad_files=skip_bad_files,
                                     data_dir=tfds_data_dir)
    check_sources = None
  else:
    make_builder = functools.partial(builders.VoicebankDemand,
                                     skip_bad_files=skip_bad_files,
                                     data_dir=tfds_data_dir)
    check_sources = functools.partial(builders.check_voicebank_manual_dir,
                                      manual_dir)
  builder = prepare(make_builder, manual_dir or data_dir, check_sources)
  available = list(builder.info.splits.keys())
  if available == ['pairs']:  # a flat folder serves every split name
    split = 'pairs'
  if split not in available:
    raise DatasetError(f'{builder.data_dir}: no split {split!r}; available: '
                       f'{", ".join(available)}')
  return TfdsSource(builder.as_data_source(split=split))


def prepare(make_builder: Callable[[], Any], manual_dir: str | None,
            check_sources: Callable[[], None] | None = None) -> Any:
  """Builds the dataset once and returns a builder that reads it.

  Processes that start together (two runs on the same data, or the hosts of
  one run sharing a disk) take turns on a lock file beside the dataset: the
  first builds it, the others then find it ready. Without the lock each
  would build its own copy and all but the first would fail renaming it
  into place. ``check_sources``, when given, checks the files a build would
  read (raising with a clear message) before it waits for or starts one.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = make_builder()
  if builder.is_prepared():
    return builder
  if check_sources is not None:
    check_sources()
  lock_path = os.fspath(builder.data_dir).rstrip('/') + '.lock'
  os.makedirs(os.path.dirname(lock_path), exist_ok=True)
  with open(lock_path, 'a') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    # A builder made before another process finished building does not see
    # the dataset's splits: make a new one.
    builder = make_builder()
    if not builder.is_prepared():
      logging.info('Building %s into %s (once).', builder.name,
                   builder.data_dir)
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder
