"""Training input: utterances -> pre-emphasis -> 50 %-overlap windows -> seeded batches.

Batches are a pure function of (seed, step): the order of windows in epoch
``e`` is a permutation seeded by ``(seed, e)``, and step ``s`` reads the
``s % steps_per_epoch``-th slice of it. A resumed run therefore sees exactly
the batches the uninterrupted run would have, with no iterator state to save.
Each process reads only its own slice of every global batch.
"""

from __future__ import annotations

import jax
import numpy as np

from segan_jax import audio
from segan_jax import datasets
from segan_jax.config import Config


class WindowedPairs:
  """All training windows of a dataset split, pre-emphasised, in memory.

  ``windows`` is float32 ``[num_windows, 2, window]``: noisy then clean. The
  last partial window of each utterance is zero-padded (see audio.num_windows).
  """

  def __init__(self, source, window: int, hop: int, preemphasis: float):
    windows = []
    for index in range(len(source)):
      example = source[index]
      pair = np.stack([example['noisy'], example['clean']]).astype(np.float32)
      pair = audio.preemphasis(pair, preemphasis)
      for start in audio.window_starts(pair.shape[-1], window, hop):
        windows.append(audio.extract_window(pair, int(start), window))
    if not windows:
      raise ValueError('the dataset has no audio to cut into windows')
    self.windows = np.stack(windows)

  def __len__(self) -> int:
    return self.windows.shape[0]


def load_train_windows(config: Config, split: str = 'train') -> WindowedPairs:
  kwargs = {}
  if config.dataset == 'synthetic':
    kwargs = dict(seed=config.seed, num_utterances=config.dataset_size)
  source = datasets.get_source(config.dataset, split, data_dir=config.data_dir,
                               **kwargs)
  return WindowedPairs(source, config.window, config.hop, config.preemphasis)


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

  def local_indices(self, step: int) -> np.ndarray:
    per_process = self.global_batch_size // self.process_count
    start = self.process_index * per_process
    return self.global_indices(step)[start:start + per_process]


def batch_from_windows(windows: np.ndarray) -> dict[str, np.ndarray]:
  return {'noisy': windows[:, 0], 'clean': windows[:, 1]}


def vbn_reference(data: WindowedPairs, size: int, seed: int) -> np.ndarray:
  """The fixed reference batch of (clean, noisy) pairs, ``[size, T, 2]``.

  Drawn from the training windows with its own seed stream, identically on
  every process, so all replicas normalise with the same reference.
  """
  rng = np.random.default_rng([seed, 0x7B4])
  picks = rng.choice(len(data), size=size, replace=size > len(data))
  windows = data.windows[picks]
  return np.stack([windows[:, 1], windows[:, 0]], axis=-1)
