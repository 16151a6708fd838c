"""Restoring a generator from a checkpoint and enhancing recordings with it.

Files of any length, sample rate, bit depth and channel count are enhanced in
bounded memory: blocks are read from disk, resampled to 16 kHz (soxr stream),
pre-emphasised, cut into the paper's non-overlapping windows (the last one
zero-padded), enhanced in device batches, de-emphasised, resampled back to
the file's rate and written in the input's format. Filters carry their state
across blocks, so the result does not depend on the block size. Outputs are
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from typing import Any, Callable, Iterator

import jax
import numpy as np
import soundfile
import soxr
import tqdm
from absl import logging
from scipy import signal

from segan_jax import audio
from segan_jax import best_checkpoint
from segan_jax import checkpoints
from segan_jax import files
from segan_jax import models
from segan_jax import parallel
from segan_jax import pretrained
from segan_jax import systems
from segan_jax.config import Config

# Samples (at the file's rate) read from disk at a time.
BLOCK_SECONDS = 20


class EnhanceError(audio.AudioError):
  """An output path (or input folder) enhancement cannot use; the message
  names it. Unreadable input files raise audio.AudioError, the base class, so
  callers catch that one type for "this path cannot be used"."""


@dataclasses.dataclass
class TrainedGenerator:
  """A trained generator ready to apply: config, parameters and step.

  ``source`` says which checkpoint it came from, for messages, e.g.
  ``best checkpoint (step 1200, val_pesq 2.31)``.
  """

  config: Config
  params: Any
  step: int
  source: str = ''


def restore_generator(workdir: str, step: int | None = None,
                      prefer_best: bool = True) -> TrainedGenerator:
  """Loads G's parameters from a checkpoint of ``workdir``.

  ``step`` picks that checkpoint (also when only the copy kept as the best
  is left of it). Without it: the run's best checkpoint (``WORKDIR/best``,
  kept by --keep_best) when there is one and ``prefer_best``, else the
  latest (or the newest one before it that can be read). The model is
  rebuilt from the config saved in the checkpoint, so no model flags are
  needed. ``TrainedGenerator.source`` (also logged) says which checkpoint was used.
  """
  if prefer_best or step is not None:
    generator = _restore_best(workdir, step)
    if generator is not None:
      return generator
  ckpt = checkpoints.Checkpointer(workdir, create=False)
  try:
    if step is not None:
      generator = _load_generator(ckpt, ckpt.resolve_step(step))
      generator.source = f'checkpoint step {generator.step}'
    else:
      # The latest, or the newest one before it that can be read.
      generator = ckpt.newest_readable(
          lambda s: _load_generator(ckpt, s), move_aside=False)
      generator.source = f'latest checkpoint (step {generator.step})'
  finally:
    ckpt.close()
  logging.info('Restored G from the %s of %s.', generator.source, workdir)
  return generator


def restore_pretrained(name: str | None = None) -> TrainedGenerator:
  """G of a bundled pretrained model (segan_jax/pretrained/; None: the
  default one), checksum checked; ``name`` may also be a bundle folder."""
  bundle = pretrained.load(name or pretrained.DEFAULT)
  logging.info('Loaded G from the %s.', bundle.source)
  return TrainedGenerator(bundle.config, bundle.params, bundle.step,
                          bundle.source)


def _restore_best(workdir: str, step: int | None) -> TrainedGenerator | None:
  """G of WORKDIR/best (when ``step`` is None or the best's), else None."""
  kept = best_checkpoint.best_checkpointer(workdir)
  if kept is None:
    return None
  ckpt, best = kept
  try:
    if step is not None and (step != best['step'] or
                             step in checkpoints.steps(workdir)):
      return None  # another step, or the run's own copy of it
    generator = _load_generator(ckpt, best['step'])
  except checkpoints.UnreadableCheckpointError as e:
    logging.warning('%s; not using it.', e)
    return None
  finally:
    ckpt.close()
  generator.source = best_checkpoint.describe_best(best)
  logging.info('Restored G from the %s of %s.', generator.source, workdir)
  return generator


def _load_generator(ckpt: checkpoints.Checkpointer, step: int) -> TrainedGenerator:
  config = checkpoints.config_from_meta(ckpt.read_meta(step))
  if not systems.of(config).ENHANCES:
    raise checkpoints.CheckpointError(
        f'{ckpt.directory}/{step} holds a {config.model} model, which '
        'generates rather than enhances; use a segan or autoencoder run')
  return TrainedGenerator(config, ckpt.restore_params(config, 'g', step), step)


# How G's output becomes audio: settings saved with a run or bundle, which an
# enhancer takes from the model unless it is given them (None: the model's).
OUTPUT_OVERRIDES = ('attenuation_limit_db', 'output_mask',
                    'mask_oversubtraction', 'mask_noise_frames')


class WindowEnhancer:
  """Enhances 16 kHz signals and audio files window by window, in batches.

  Subclasses run G on one batch (`enhance_batch`): `Enhancer` with JAX and
  the checkpoint's parameters, `segan_jax.export.ExportedEnhancer` through an
  exported file. The windowing, filters and file handling are this class's,
  so every engine treats a recording alike.
  """

  def __init__(self, window: int, preemphasis: float,
               output_highpass_hz: float, batch_size: int,
               overlap: float = 0.0, attenuation_limit_db: float = 0.0,
               output_mask: bool = False, mask_oversubtraction: float = 0.0,
               mask_noise_frames: int = 1):
    if attenuation_limit_db < 0:
      raise ValueError('--attenuation_limit_db must be >= 0 (0: no limit), '
                       f'got {attenuation_limit_db}')
    audio.check_mask_settings(mask_oversubtraction, mask_noise_frames, '--')
    if batch_size < 1:
      raise ValueError(f'--enhance_batch_size must be positive, got '
                       f'{batch_size}')
    if overlap not in (0.0, 0.5):
      raise ValueError(f'overlap must be 0 (the paper) or 0.5, got {overlap}')
    self.window = window
    self.hop = window if overlap == 0.0 else window // 2
    self.preemphasis = preemphasis
    self.output_highpass_hz = output_highpass_hz
    self.attenuation_limit_db = attenuation_limit_db
    self.output_mask = bool(output_mask)
    self.mask_oversubtraction = float(mask_oversubtraction)
    self.mask_noise_frames = int(mask_noise_frames)
    self.batch_size = batch_size

  @property
  def noisy_share(self) -> float:
    """The share of the noisy input in the output (0: none)."""
    return audio.attenuation_floor(self.attenuation_limit_db)

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
    return enhance_file(self, src, dst)

  def enhance_paths(self, src: str, dst: str, **kwargs: Any) -> list[str]:
    """A file into a file, or a folder (recursive) into a folder."""
    return enhance_paths(self, src, dst, **kwargs)

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
  process's devices."""

  def __init__(self, generator: TrainedGenerator, batch_size: int = 8,
               seed: int = 0, overlap: float = 0.0,
               attenuation_limit_db: float | None = None,
               output_mask: bool | None = None,
               mask_oversubtraction: float | None = None,
               mask_noise_frames: int | None = None):
    config = generator.config
    if attenuation_limit_db is None:  # the run's (or bundle's) own
      attenuation_limit_db = config.attenuation_limit_db
    if output_mask is None:
      output_mask = config.output_mask
    if mask_oversubtraction is None:
      mask_oversubtraction = config.mask_oversubtraction
    if mask_noise_frames is None:
      mask_noise_frames = config.mask_noise_frames
    if batch_size < 1 or batch_size % jax.local_device_count():
      raise ValueError(f'--enhance_batch_size must be a positive multiple of '
                       f'the {jax.local_device_count()} device(s), got '
                       f'{batch_size}')
    super().__init__(config.window, config.preemphasis,
                     config.output_highpass_hz, batch_size, overlap,
                     attenuation_limit_db, output_mask, mask_oversubtraction,
                     mask_noise_frames)
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
    # Shapes only: what `prepare_inference` splits kernels for.
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
    ``kwargs`` go to the constructor (batch_size, seed, overlap,
    attenuation_limit_db, output_mask, mask_oversubtraction,
    mask_noise_frames).
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

    The short layers' kernels are re-laid out here once
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
        self.coeff, enhancer.output_highpass_hz)
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
    share = self.enhancer.noisy_share
    if self.enhancer.output_mask:
      # On the pre-emphasised windows: the gain of a bin is a ratio of two
      # signals through the same filter, so it is the de-emphasised one's.
      y = audio.mask_with(windows, y, floor=share,
                          oversubtraction=self.enhancer.mask_oversubtraction,
                          noise_frames=self.enhancer.mask_noise_frames)
    elif share:
      # Linear, like the filters after it: mixing each window equals mixing
      # the restored signals.
      y = (1.0 - share) * y + share * windows
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


def enhance_file(enhancer: WindowEnhancer, src: str, dst: str) -> float:
  """Enhances one file into ``dst`` (same rate, channels, format).

  Returns the audio duration in seconds. Never leaves a partial ``dst``.
  """
  info = audio.audio_info(src)
  if os.path.exists(dst) and os.path.samefile(src, dst):
    raise EnhanceError(f'{dst}: output would overwrite its input')
  if os.path.isdir(dst):
    raise EnhanceError(f'{dst}: output is a folder; name the output file')
  rate, channels = info.samplerate, info.channels
  folder = os.path.dirname(os.path.abspath(dst))
  existing = folder
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise EnhanceError(f'{dst}: cannot write the output: {existing} is a '
                       'file, not a folder')
  try:
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(dst) + '.',
                               suffix='.partial', dir=folder)
  except OSError as e:  # e.g. a parent that is a file, no permission
    raise EnhanceError(f'{dst}: cannot write the output ({e.strerror})'
                       ) from None
  os.close(fd)
  integer = info.subtype.startswith(('PCM', 'ULAW', 'ALAW'))
  try:
    down = up = None
    if rate != audio.SAMPLE_RATE:
      down = soxr.ResampleStream(rate, audio.SAMPLE_RATE, channels,
                                 dtype='float32', quality='VHQ')
      up = soxr.ResampleStream(audio.SAMPLE_RATE, rate, channels,
                               dtype='float32', quality='VHQ')
    stream = enhancer.stream(channels)
    written = 0

    def write(fout, y16, last=False):
      nonlocal written
      y = up.resample_chunk(y16, last=last) if up is not None else y16
      y = y[:max(0, info.frames - written)]  # resampler rounding at the end
      if integer:
        y = np.clip(y, -1.0, 1.0)
      fout.write(y)
      written += y.shape[0]

    with soundfile.SoundFile(src) as fin, soundfile.SoundFile(
        tmp, 'w', samplerate=rate, channels=channels, subtype=info.subtype,
        format=info.format) as fout:
      for block in fin.blocks(blocksize=BLOCK_SECONDS * rate, dtype='float32',
                              always_2d=True):
        audio.check_finite(block, src)
        x16 = down.resample_chunk(block) if down is not None else block
        for y16 in stream.push(x16):
          write(fout, y16)
      if down is not None:
        for y16 in stream.push(down.resample_chunk(
            np.zeros((0, channels), np.float32), last=True)):
          write(fout, y16)
      tail = list(stream.finish()) or [np.zeros((0, channels), np.float32)]
      for y16 in tail:
        write(fout, y16, last=True)
      if written < info.frames:  # resampler delivered a few samples short
        fout.write(np.zeros((info.frames - written, channels), np.float32))
    files.publish(tmp, dst)
  except soundfile.LibsndfileError as e:
    raise EnhanceError(f'{src}: {e}') from None
  except OSError as e:  # writing: disk full, output removed meanwhile, ...
    raise EnhanceError(f'{dst}: cannot write the output ({e.strerror})'
                       ) from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return info.frames / rate


def plan_outputs(input_path: str, output_path: str) -> list[tuple[str, str]]:
  """(source, destination) for a file, or for a folder tree (kept as is)."""
  if not os.path.exists(input_path):
    raise EnhanceError(f'{input_path}: no such file or folder')
  if os.path.isfile(input_path):
    if os.path.isdir(output_path):
      output_path = os.path.join(output_path, os.path.basename(input_path))
    return [(input_path, output_path)]
  src_root = os.path.abspath(input_path)
  dst_root = os.path.abspath(output_path)
  if dst_root == src_root:
    raise EnhanceError(f'{output_path}: output folder is the input folder; '
                       'choose another so inputs are never overwritten')
  if os.path.exists(dst_root) and not os.path.isdir(dst_root):
    raise EnhanceError(f'{output_path}: is a file, but the input '
                       f'{input_path} is a folder; name an output folder')
  plan = []
  for folder, dirs, names in os.walk(src_root):
    dirs.sort()
    if os.path.abspath(folder).startswith(dst_root + os.sep):
      continue  # an output folder inside the input folder
    for f in sorted(names):
      if audio.is_audio_file_name(f):
        src = os.path.join(folder, f)
        plan.append((src, os.path.join(dst_root,
                                       os.path.relpath(src, src_root))))
  if not plan:
    raise EnhanceError(f'{input_path}: no audio files (.wav, .flac, ...) found')
  return plan


def enhance_paths(enhancer: WindowEnhancer, input_path: str, output_path: str,
                  on_error: Callable[[audio.AudioError], None] | None = None
                  ) -> list[str]:
  """Enhances a file or a folder tree; returns the files written.

  A file that cannot be enhanced (unreadable, empty, NaN, unwritable output)
  raises audio.AudioError, or, when ``on_error`` is given, is passed to it and
  skipped so that one bad recording does not stop a folder of good ones. No
  output is left for a skipped file. Problems with the paths themselves
  (missing input, output = input) always raise.
  """
  plan = plan_outputs(input_path, output_path)
  done, seconds = [], 0.0
  with tqdm.tqdm(plan, unit='file', disable=not sys.stderr.isatty()) as bar:
    for src, dst in bar:
      try:
        seconds += enhance_file(enhancer, src, dst)
      except audio.AudioError as e:
        if on_error is None:
          raise
        on_error(e)
        continue
      done.append(dst)
      bar.set_postfix(audio=f'{seconds:.0f}s')
      logging.info('Enhanced %s -> %s (%d/%d files, %.1f s of audio).', src,
                   dst, len(done), len(plan), seconds)
  return done
