"""Training input: utterances -> pre-emphasis -> 50 %-overlap windows -> seeded batches.

Batches are a pure function of (seed, step): the order of windows in epoch
``e`` is a permutation seeded by ``(seed, e)``, and step ``s`` reads the
``s % steps_per_epoch``-th slice of it. A Grain pipeline over the range of
steps reads and assembles the batches in background threads. Its position is
the global step, which every checkpoint records, so a resumed run continues
with exactly the batches the uninterrupted run would have seen. Each process
reads only its own slice of every global batch.

Optional on-the-fly augmentation (see augment.py) is a pure function of
(seed, step, position in the global batch) too, so it keeps all of the above.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import jax
import numpy as np
from absl import logging

from segan_jax import audio
from segan_jax import augment
from segan_jax import datasets
from segan_jax import noise_mix
from segan_jax import config as config_lib
from segan_jax.config import Config

# Utterances are kept in memory (pre-emphasised float32) while they fit in
# this budget; larger datasets are read from their source for every window.
DEFAULT_CACHE_BYTES = 1 << 30


class WindowedPairs:
  """Random access to the training windows of a source of utterance pairs.

  ``self[i]`` is float32 ``[2, window]`` (noisy, clean), pre-emphasised. The
  last partial window of each utterance is zero-padded (see
  audio.num_windows): every sample is trained on, and utterances shorter
  than one window still count.

  Utterances from ``clean_only_from`` on (None: none) are clean speech
  alone, their noisy a copy of the clean (see `CleanSpeech`): the noise mix
  gives their windows a noisy input (``clean_only``).
  """

  def __init__(self, source, window: int, hop: int, preemphasis: float,
               cache_bytes: int = DEFAULT_CACHE_BYTES,
               clean_only_from: int | None = None):
    self.source = source
    self.window = window
    self.preemphasis = preemphasis
    # One pass over the data for the window index; utterances are kept while
    # they fit the cache budget.
    cache, cached_bytes, index = [], 0, []
    for u in range(len(source)):
      pair = self._pair(source[u])
      if cache is not None:
        cached_bytes += pair.nbytes
        if cached_bytes <= cache_bytes:
          cache.append(pair)
        else:
          cache = None
      for start in audio.window_starts(pair.shape[-1], window, hop):
        index.append((u, start))
    if not index:
      raise ValueError('the dataset has no audio to cut into windows')
    self.cache = cache
    self.index = np.asarray(index, np.int64)
    self.num_utterances = len(source)
    if clean_only_from is None:
      clean_only_from = len(source)
    # Windows [0, num_pair_windows) are those of real pairs: the utterances
    # come in order.
    self.num_pair_windows = int(np.sum(self.index[:, 0] < clean_only_from))
    if cache is None:
      logging.info('Dataset larger than %d bytes: reading windows from the '
                   'source.', cache_bytes)

  def _pair(self, example) -> np.ndarray:
    pair = np.stack([example['noisy'], example['clean']]).astype(np.float32)
    return audio.preemphasis(pair, self.preemphasis)

  def __len__(self) -> int:
    return self.index.shape[0]

  def __getitem__(self, i: int) -> np.ndarray:
    return self.read(i, self.window)

  def read(self, i: int, length: int) -> np.ndarray:
    """``[2, length]`` from window ``i``'s start, zero-padded only past the
    end of its utterance (speed augmentation reads more than a window)."""
    u, start = self.index[i]
    pair = self.cache[u] if self.cache is not None else self._pair(
        self.source[int(u)])
    return audio.extract_window(pair, int(start), length)

  def windows(self, indices: np.ndarray) -> np.ndarray:
    return np.stack([self[int(i)] for i in indices])

  def clean_only(self, i: int) -> bool:
    return i >= self.num_pair_windows


class CleanSpeech:
  """The audio files of folders of clean speech as a source of pairs whose
  noisy is the clean itself, read as the models see it (mono, 16 kHz);
  one-line ValueError for a missing folder or one without audio."""

  def __init__(self, folders, flag: str = 'extra_speech_dirs'):
    self.paths = noise_mix.audio_files(tuple(folders), flag)

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> dict[str, Any]:
    clean = audio.read_mono_16k(self.paths[index])
    return {'noisy': clean, 'clean': clean, 'id': self.paths[index]}


class Concatenated:
  """Sources one after another, as one."""

  def __init__(self, *sources):
    self.sources = sources
    self.starts = np.cumsum([0] + [len(s) for s in sources])

  def __len__(self) -> int:
    return int(self.starts[-1])

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < len(self):
      raise IndexError(index)
    k = int(np.searchsorted(self.starts, index, side='right')) - 1
    return self.sources[k][index - int(self.starts[k])]


def load_source(config: Config, split: str):
  kwargs = {}
  if config.dataset == 'synthetic':
    # --dataset_size sizes the train split; the others keep their defaults.
    kwargs = dict(seed=config.seed, num_utterances=(
        config.dataset_size if split == 'train' else None))
  return datasets.get_source(config.dataset, split, data_dir=config.data_dir,
                             manual_dir=config.manual_dir,
                             tfds_data_dir=config.tfds_data_dir,
                             skip_bad_files=config.skip_bad_files, **kwargs)


def load_validation_source(config: Config):
  """(source, where) of the files validation scores, or (None, None).

  ``--validation_dir`` when given, else the dataset's validation split, else
  its test split.
  """
  if config.validation_dir:
    return (_pair_folder_source(config, config.validation_dir),
            config.validation_dir)
  for split in ('validation', 'test'):
    try:
      return load_source(config, split), f'{split} split'
    except ValueError:
      continue
  return None, None


def load_extra_validation_sources(config: Config) -> list[tuple[str, Any]]:
  """(name, source) of each --extra_validation_dirs folder, in order (a
  one-line ValueError for a folder that is not a pair folder)."""
  folders = config.extra_validation_dirs or ()
  return [(name, _pair_folder_source(config, folder)) for name, folder in
          zip(config_lib.extra_validation_names(folders), folders)]


def _pair_folder_source(config: Config, folder: str):
  """The validation source of a folder of noisy/ and clean/ pairs."""
  return datasets.get_source('wav_pairs', 'validation', data_dir=folder,
                             tfds_data_dir=config.tfds_data_dir,
                             skip_bad_files=config.skip_bad_files)


def load_train_windows(config: Config, split: str = 'train') -> WindowedPairs:
  """The windows of the dataset's ``split``, followed on the train split by
  those of --extra_speech_dirs (clean speech whose noisy input the noise mix
  always makes)."""
  source = load_source(config, split)
  clean_only_from = None
  if split == 'train' and config.extra_speech_dirs:
    clean_only_from = len(source)
    source = Concatenated(source, CleanSpeech(config.extra_speech_dirs))
  return WindowedPairs(source, config.window, config.hop, config.preemphasis,
                       clean_only_from=clean_only_from)


def make_augmentation(config: Config, data: WindowedPairs
                      ) -> augment.Augmentation:
  """The run's augmentation, with its noise and rooms loaded (one-line
  ValueError for a bad folder or file)."""
  return dataclasses.replace(
      augment.Augmentation.from_config(config),
      noise=noise_mix.NoiseMixer.build(
          noise_mix.NoiseSettings.from_config(config), data,
          config.preemphasis))


class BatchSchedule:
  """Maps a global step to the windows of its batch, for this process."""

  def __init__(self, num_windows: int, global_batch_size: int, seed: int,
               process_index: int | None = None,
               process_count: int | None = None):
    self.num_windows = num_windows
    self.global_batch_size = global_batch_size
    self.seed = seed
    self.process_index = (jax.process_index() if process_index is None
                          else process_index)
    self.process_count = (jax.process_count() if process_count is None
                          else process_count)
    # The incomplete last batch of an epoch is dropped: every step has the
    # same shape (one compiled program) and splits evenly over devices.
    self.steps_per_epoch = num_windows // global_batch_size
    if self.steps_per_epoch == 0:
      raise ValueError(f'batch_size {global_batch_size} is larger than the '
                       f'{num_windows} training windows of the dataset')

  def epoch_order(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(
        self.num_windows)

  def global_indices(self, step: int) -> np.ndarray:
    epoch, index = divmod(step, self.steps_per_epoch)
    start = index * self.global_batch_size
    return self.epoch_order(epoch)[start:start + self.global_batch_size]

  def local_positions(self) -> np.ndarray:
    """This process's positions in every global batch."""
    per_process = self.global_batch_size // self.process_count
    return self.process_index * per_process + np.arange(per_process)

  def local_indices(self, step: int) -> np.ndarray:
    return self.global_indices(step)[self.local_positions()]


def batch_from_windows(windows: np.ndarray) -> dict[str, np.ndarray]:
  return {'noisy': windows[:, 0], 'clean': windows[:, 1]}


def load_batch(data: WindowedPairs, schedule: BatchSchedule, step: int,
               augmentation: augment.Augmentation | None = None
               ) -> dict[str, np.ndarray]:
  """This process's batch of ``step``, augmented when ``augmentation`` is on."""
  indices = schedule.local_indices(step)
  if augmentation is None or not augmentation.enabled:
    return batch_from_windows(data.windows(indices))
  return batch_from_windows(augment.augment_batch(
      data, indices, schedule.local_positions(), seed=schedule.seed, step=step,
      augmentation=augmentation))


def batches(data: WindowedPairs, schedule: BatchSchedule, start_step: int,
            end_step: int, num_threads: int = 2, prefetch: int = 4,
            augmentation: augment.Augmentation | None = None):
  """Iterates this process's batches for steps [start_step, end_step).

  Grain assembles upcoming batches in background threads while the devices
  work on the current one; the order is that of the steps whatever the
  number of threads. ``augmentation`` (e.g.
  ``augment.Augmentation.from_config(config)``; None: off) is seeded by
  ``schedule.seed``.
  """
  pipeline = grain.MapDataset.range(start_step, end_step).map(
      lambda step: load_batch(data, schedule, step, augmentation))
  return iter(pipeline.to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads,
                        prefetch_buffer_size=prefetch)))


def vbn_reference(data: WindowedPairs, size: int, seed: int) -> np.ndarray:
  """The fixed reference batch of (clean, noisy) pairs, ``[size, T, 2]``.

  Drawn from the training windows with its own seed stream, identically on
  every process, so all replicas normalise with the same reference. Only
  windows of real pairs: a clean-only window's noisy is not an input.
  """
  rng = np.random.default_rng([seed, 0x7B4])
  count = data.num_pair_windows
  picks = rng.choice(count, size=size, replace=size > count)
  windows = data.windows(picks)
  return np.stack([windows[:, 1], windows[:, 0]], axis=-1)
