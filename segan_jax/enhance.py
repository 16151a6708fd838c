"""The enhancers: G applied to a 16 kHz signal window by window, in batches,
and the stream that windows and filters a signal pushed in blocks.

`WindowEnhancer` holds what every engine shares (windowing, filters, output
settings, files through segan_jax/enhance_files.py); `Enhancer` runs G with
JAX and a generator's parameters (segan_jax/generators.py), and
`segan_jax.export.ExportedEnhancer` runs an exported file. Filters carry
their state across blocks, so the result does not depend on the block size.

`TrainedGenerator` and `enhance_file` are importable from here too, as
scripts (benchmarks/) use them.
"""

from __future__ import annotations

from typing import Any, Iterator

import jax
import numpy as np
from scipy import signal

from segan_jax import audio
from segan_jax import enhance_files
from segan_jax import models
from segan_jax import parallel
from segan_jax import systems
from segan_jax.enhance_files import enhance_file  # pylint: disable=unused-import
from segan_jax.generators import TrainedGenerator
from segan_jax.generators import restore_generator
from segan_jax.generators import restore_pretrained
from segan_jax.output_settings import OutputSettings


class WindowEnhancer:
  """Enhances 16 kHz signals and audio files window by window, in batches.

  Subclasses run G on one batch (`enhance_batch`): `Enhancer` with JAX and
  the checkpoint's parameters, `segan_jax.export.ExportedEnhancer` through an
  exported file. The windowing, filters and file handling are this class's,
  so every engine treats a recording alike.
  """

  def __init__(self, window: int, preemphasis: float, batch_size: int,
               output_settings: OutputSettings = OutputSettings(),
               overlap: float = 0.0):
    if batch_size < 1:
      raise ValueError(f'--enhance_batch_size must be positive, got '
                       f'{batch_size}')
    if overlap not in (0.0, 0.5):
      raise ValueError(f'overlap must be 0 (the paper) or 0.5, got {overlap}')
    self.window = window
    self.hop = window if overlap == 0.0 else window // 2
    self.preemphasis = preemphasis
    self.output_settings = output_settings
    self.batch_size = batch_size

  @property
  def source(self) -> str:
    """Which model this is, e.g. 'best checkpoint (step 645, ...)'."""
    raise NotImplementedError

  def enhance_batch(self, batch: np.ndarray, index: np.ndarray) -> np.ndarray:
    """G on ``batch_size`` pre-emphasised windows numbered ``index``."""
    raise NotImplementedError

  def enhance_file(self, src: str, dst: str) -> float:
    """Enhances the audio file ``src`` into ``dst`` (same rate, channels
    and format); returns its duration in seconds."""
    return enhance_files.enhance_file(self, src, dst)

  def enhance_paths(self, src: str, dst: str, **kwargs: Any) -> list[str]:
    """A file into a file, or a folder (recursive) into a folder."""
    return enhance_files.enhance_paths(self, src, dst, **kwargs)

  def enhance_windows(self, windows: np.ndarray,
                      indices: np.ndarray | None = None) -> np.ndarray:
    """G on pre-emphasised windows ``[N, window]`` -> ``[N, window]``.

    ``indices`` (default 0..N-1) number the windows within their signal;
    they key each window's z.
    """
    if indices is None:
      indices = np.arange(windows.shape[0])
    out = []
    for start in range(0, windows.shape[0], self.batch_size):
      batch = windows[start:start + self.batch_size]
      index = np.asarray(indices[start:start + self.batch_size], np.int32)
      count = batch.shape[0]
      if count < self.batch_size:  # one compiled shape: pad the last batch
        batch = np.pad(batch, ((0, self.batch_size - count), (0, 0)))
        index = np.pad(index, (0, self.batch_size - count))
      out.append(np.asarray(self.enhance_batch(batch, index))[:count])
    return np.concatenate(out) if out else np.zeros((0, self.window),
                                                    np.float32)

  def stream(self, channels: int) -> 'SignalStream':
    return SignalStream(self, channels)

  def enhance_signal(self, x: np.ndarray) -> np.ndarray:
    """Enhances a whole 16 kHz signal ``[T]`` or ``[T, C]`` in memory."""
    two_d = x.reshape(x.shape[0], -1)
    stream = self.stream(two_d.shape[1])
    out = np.concatenate(list(stream.push(two_d)) + list(stream.finish()))
    return out.reshape(x.shape)


class Enhancer(WindowEnhancer):
  """Applies a trained generator with JAX, its batches split over this
  process's devices.

  Its output settings are the generator's own (saved with its run or
  bundle), or ``output_settings``; ``overrides`` replace any of them by name
  (a field of `OutputSettings`; None keeps the setting), e.g.
  ``Enhancer(generator, mask_noise_frames=9)``.
  """

  def __init__(self, generator: TrainedGenerator, batch_size: int = 8,
               seed: int = 0, overlap: float = 0.0,
               output_settings: OutputSettings | None = None,
               **overrides: Any):
    config = generator.config
    settings = (output_settings or OutputSettings.from_config(config)
                ).with_overrides(**overrides)
    if batch_size < 1 or batch_size % jax.local_device_count():
      raise ValueError(f'--enhance_batch_size must be a positive multiple of '
                       f'the {jax.local_device_count()} device(s), got '
                       f'{batch_size}')
    super().__init__(config.window, config.preemphasis, batch_size, settings,
                     overlap)
    self.generator = generator
    self.config = config
    # Windows are batched onto this process's devices: the batch is split
    # over a 1-D mesh of them (one device is a mesh of one). Local, so that
    # process 0 of a multi-host run can validate alone.
    self.strategy = parallel.ShardingStrategy(batch_size, jax.local_devices())
    self.rng = jax.random.key(seed)
    model = systems.generator(config)
    latent = systems.latent_shape(config)

    def apply(variables, noisy, window_index):
      z = None
      if latent is not None:
        # The paper samples z at test time too: seeded, and keyed by window
        # so the output does not depend on batching or block sizes.
        z = models.sample_latent(self.rng, window_index, latent)
      return model.apply(variables, noisy, z)

    strategy = self.strategy
    self._apply = jax.jit(apply, in_shardings=(
        strategy.replicated, strategy.batch_sharding, strategy.batch_sharding))
    self._model = model
    # Shapes only: what `prepare_inference` lays the kernels out for.
    self._example_inputs = (
        np.zeros((batch_size, self.window), np.float32),
        None if latent is None else np.zeros((batch_size,) + tuple(latent),
                                             np.float32))
    self.set_params(generator.params)

  @classmethod
  def from_pretrained(cls, name: str | None = None,
                      **kwargs: Any) -> 'Enhancer':
    """An Enhancer with a bundled model: no training run needed.

    ``Enhancer.from_pretrained().enhance_file('noisy.wav', 'clean.wav')``.
    ``kwargs`` go to the constructor: batch_size, seed, overlap,
    output_settings, and any output setting by name (e.g.
    ``mask_noise_frames=9``; see `Enhancer`).
    """
    return cls(restore_pretrained(name), **kwargs)

  @classmethod
  def from_workdir(cls, workdir: str, step: int | None = None,
                   **kwargs: Any) -> 'Enhancer':
    """An Enhancer with G of a training run: its best checkpoint (kept by
    --keep_best) by default, else its latest, or checkpoint ``step``."""
    return cls(restore_generator(workdir, step), **kwargs)

  @property
  def source(self) -> str:
    return self.generator.source

  def set_params(self, params: Any) -> None:
    """Swaps in other parameters of the same model (no recompilation).

    Every conv kernel is laid out here once as its form reads it
    (`models.prepare_inference`), not on every batch.
    """
    self.variables = self.strategy.put_state(models.prepare_inference(
        self._model, params, *self._example_inputs))

  def enhance_batch(self, batch: np.ndarray, index: np.ndarray) -> np.ndarray:
    batch, index = self.strategy.put_batch((batch, index))
    return self._apply(self.variables, batch, index)


class SignalStream:
  """Enhances a 16 kHz multi-channel signal pushed in blocks of any size.

  Windows start every ``hop`` samples: ``hop == window`` is the paper's
  non-overlapping chunking; ``hop == window / 2`` overlap-adds outputs
  weighted by a periodic Hann window (which sums to one at 50 % overlap; the
  signal is led by half a window of zeros so its first samples are covered
  twice too). Pre-emphasis and de-emphasis (with the optional output
  high-pass) keep their filter state across blocks; ``finish`` zero-pads the
  tail and the output is trimmed to the input's length.
  """

  def __init__(self, enhancer: WindowEnhancer, channels: int):
    self.enhancer = enhancer
    self.coeff = enhancer.preemphasis
    self.channels = channels
    window, hop = enhancer.window, enhancer.hop
    self.hop = hop
    self.synthesis = np.ones(window, np.float32) if hop == window else (
        0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)
    ).astype(np.float32)
    lead = window - hop
    self.buffer = np.zeros((lead, channels), np.float32)  # pre-emphasised
    self.carry = np.zeros((lead, channels), np.float32)   # overlap sums
    self.to_skip = lead        # output samples that belong to the lead
    self.pending = 0           # input samples not yet given back
    self.previous = np.zeros(channels, np.float32)   # pre-emphasis state
    # De-emphasis and the optional output high-pass, one filter.
    self.restore_b, self.restore_a = audio.restoration_filter(
        self.coeff, enhancer.output_settings.output_highpass_hz)
    self.restore_state = np.zeros((len(self.restore_a) - 1, channels))
    self.windows_done = 0

  def push(self, x: np.ndarray) -> Iterator[np.ndarray]:
    x = np.asarray(x, np.float32).reshape(-1, self.channels)
    if x.shape[0] == 0:
      return
    shifted = np.concatenate([self.previous[None], x[:-1]])
    self.previous = x[-1].copy()
    self.buffer = np.concatenate([self.buffer, x - self.coeff * shifted])
    self.pending += x.shape[0]
    yield from self._process()

  def finish(self) -> Iterator[np.ndarray]:
    if self.pending:
      # Zeros after the end: enough for every remaining sample's windows.
      self.buffer = np.pad(self.buffer, ((0, self.enhancer.window), (0, 0)))
      yield from self._process()

  def _process(self) -> Iterator[np.ndarray]:
    window, hop = self.enhancer.window, self.hop
    if self.buffer.shape[0] < window:
      return
    n = (self.buffer.shape[0] - window) // hop + 1
    # [n, window, C] -> [C * n, window]: channels are independent examples.
    starts = np.arange(n) * hop
    windows = np.stack([self.buffer[s:s + window] for s in starts])
    windows = windows.transpose(2, 0, 1).reshape(self.channels * n, window)
    # Window w of channel c is number w * channels + c of the signal.
    w = self.windows_done + np.arange(n)
    indices = (w[None, :] * self.channels + np.arange(self.channels)[:, None])
    self.windows_done += n
    y = self.enhancer.enhance_windows(windows, indices.reshape(-1))
    y = self.enhancer.output_settings.apply(windows, y, self.coeff)
    y = y.reshape(self.channels, n, window).transpose(1, 2, 0)
    y = y * self.synthesis[None, :, None]
    total = np.zeros(((n - 1) * hop + window, self.channels), np.float32)
    total[:window - hop] += self.carry
    for k, s in enumerate(starts):
      total[s:s + window] += y[k]
    ready, self.carry = total[:n * hop], total[n * hop:]
    self.buffer = self.buffer[n * hop:]
    skip = min(self.to_skip, ready.shape[0])
    self.to_skip -= skip
    ready = ready[skip:][:self.pending]
    self.pending -= ready.shape[0]
    if ready.shape[0]:
      ready, self.restore_state = signal.lfilter(
          self.restore_b, self.restore_a, ready, axis=0, zi=self.restore_state)
      yield ready.astype(np.float32)
