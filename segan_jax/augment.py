"""On-the-fly augmentation of training windows: speed, pitch, remix, noise
and room, EQ, gain.

Everything here is plain NumPy and a pure function of ``(seed, step,
position)``, where ``position`` is a window's place in the *global* batch of
``step``. That keeps batches reproducible (a resumed run sees exactly the
batches of an uninterrupted one) and makes the result independent of which
process computes a window (each process reads only its slice of the batch).

The five augmentations, applied in this order:

* speed: the clean speech of a window is resampled by a factor uniform in
  ``speed_range`` (> 1: faster and higher pitched) and the noisy rebuilt as
  resampled clean + the window's own noise, which is not resampled. It needs
  more of the utterance than the window (a faster window reads further), so
  it comes first, while the utterance is at hand.
* pitch: the clean speech is pitch-shifted by a factor uniform in
  ``pitch_range`` with its tempo kept (stretched by WSOLA, then resampled),
  and the window's own noise added back: other voices' pitch and formants
  at the rate of the original speech.
* remix: the noisy becomes clean + g * (the noise of another window), g
  uniform in ``remix_gain_db`` dB. VoiceBank-DEMAND mixes additively, so a
  window's noise is exactly ``noisy - clean``; pre-emphasis is a linear
  filter, so that still holds for the pre-emphasised windows used here.
* noise and room (noise_mix.py): the noisy becomes the clean speech,
  reverberated when a room is drawn, + new noise at a drawn SNR; when new
  noise is drawn, remix is skipped (its noise would be replaced).
* eq: noisy and clean go through the same peaking filter (RBJ's biquad, Q
  1), centred log-uniformly in 100 Hz-6 kHz with a gain uniform in
  ``+-eq_gain_db``: another microphone, room or voice's spectral tilt, which
  G should pass on rather than learn as speech. A linear filter, so the
  window's noise is filtered alike and pre-emphasis commutes with it.
* gain: noisy and clean scaled together by a gain uniform in
  ``+-gain_db`` dB (last, so it scales the final mixture as a whole).

Each draw uses its own uniform number from a fixed list per window, so
turning one augmentation on or off never changes the draws of the others.

Signals are combined in float64 and rounded to float32 once, at the end:
the difference of two float32 samples is then exact (for samples within
2**28, about 168 dB, of each other, or zero, i.e. for any audio), so
remixing a window with its own noise at 0 dB, or resampling it by a factor
of 1, gives back its noisy bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Protocol

import numpy as np
from scipy import signal

from segan_jax import audio
from segan_jax import noise_mix

# Seeds the augmentation's random stream apart from the batch order
# ([seed, epoch]) and the VBN reference ([seed, 0x7B4]).
STREAM = 0xA06

# Largest peak a gain may produce: far below float32's maximum (3.4e38), so
# that the sum in remix and the model's first layers stay finite too.
_PEAK_LIMIT = 1e30


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """The augmentation parameters of a run: built from a Config
  (``from_config``), whose fields hold their defaults and help."""

  remix_prob: float
  remix_gain_db: tuple[float, float]
  gain_db: float
  speed_prob: float
  speed_range: tuple[float, float]
  eq_prob: float
  eq_gain_db: float
  pitch_prob: float
  pitch_range: tuple[float, float]
  # The loaded noise and rooms (noise_mix.NoiseMixer.build, which needs the
  # training data, so from_config leaves it out); None: off.
  noise: noise_mix.NoiseMixer | None = None

  def __post_init__(self):
    for name in ('remix_prob', 'speed_prob', 'eq_prob', 'pitch_prob'):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f'{name} must be in [0, 1], got {getattr(self, name)}')
    for name in ('remix_gain_db', 'speed_range', 'pitch_range'):
      low, high = (float(v) for v in getattr(self, name))
      if not low <= high:
        raise ValueError(f'{name} must be (low, high) with low <= high, got '
                         f'{getattr(self, name)}')
      object.__setattr__(self, name, (low, high))
    for name in ('speed_range', 'pitch_range'):
      if not getattr(self, name)[0] > 0:
        raise ValueError(f'{name} must be positive, got {getattr(self, name)}')
    for name in ('gain_db', 'eq_gain_db'):
      if not getattr(self, name) >= 0:
        raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')

  @classmethod
  def from_config(cls, config) -> 'Augmentation':
    return cls(remix_prob=config.remix_prob,
               remix_gain_db=tuple(config.remix_gain_db),
               gain_db=config.gain_db, speed_prob=config.speed_prob,
               speed_range=tuple(config.speed_range),
               eq_prob=config.eq_prob, eq_gain_db=config.eq_gain_db,
               pitch_prob=config.pitch_prob,
               pitch_range=tuple(config.pitch_range))

  @property
  def enabled(self) -> bool:
    return bool(self.remix_prob or self.gain_db or self.speed_prob
                or self.pitch_prob or (self.eq_prob and self.eq_gain_db)
                or self.noise is not None)


@dataclasses.dataclass(frozen=True)
class Draw:
  """What happens to one window: None where that augmentation is skipped."""

  speed: float | None  # resampling factor
  partner: int | None  # the window whose noise is mixed in
  remix_gain_db: float
  gain_db: float | None
  eq: tuple[float, float] | None = None  # (centre Hz, gain dB)
  pitch: float | None = None  # pitch factor, tempo kept


def draw(augmentation: Augmentation, seed: int, step: int, position: int,
         index: int, num_windows: int) -> Draw:
  """The random choices for window ``index`` at ``position`` of ``step``'s
  global batch, out of ``num_windows`` training windows."""
  a = augmentation
  # random(n)'s first numbers are those of any shorter random(m): the EQ's
  # three and the pitch's two were appended without changing earlier draws.
  u = np.random.default_rng([seed, STREAM, step, position]).random(11)
  speed = None
  if u[0] < a.speed_prob:
    speed = a.speed_range[0] + u[1] * (a.speed_range[1] - a.speed_range[0])
  partner = None
  # The partner is any other training window: drawn from the whole dataset
  # rather than from the batch, so a process needs no other process's slice.
  if u[2] < a.remix_prob and num_windows > 1:
    partner = min(int(u[3] * (num_windows - 1)), num_windows - 2)
    partner += partner >= index  # skip the window itself
  remix_db = a.remix_gain_db[0] + u[4] * (a.remix_gain_db[1] -
                                          a.remix_gain_db[0])
  gain = a.gain_db * (2 * u[5] - 1) if a.gain_db else None
  eq = None
  if u[6] < a.eq_prob and a.eq_gain_db:
    eq = (float(EQ_LOW_HZ * (EQ_HIGH_HZ / EQ_LOW_HZ)**u[7]),
          float(a.eq_gain_db * (2 * u[8] - 1)))
  pitch = None
  if u[9] < a.pitch_prob:
    pitch = float(a.pitch_range[0] + u[10] * (a.pitch_range[1] -
                                              a.pitch_range[0]))
  return Draw(speed, partner, float(remix_db), gain, eq, pitch)


def _db_to_gain(db: float, peak: float) -> float:
  """10**(db/20), lowered if needed so that ``peak`` times it stays below
  _PEAK_LIMIT: extreme settings give loud audio, never inf (or 0 * inf)."""
  limit = _PEAK_LIMIT / peak if peak > 0 else _PEAK_LIMIT
  return float(10.0**(min(db, 20 * math.log10(limit)) / 20))


def stretch_length(window: int, factor: float) -> int:
  """Samples of the utterance (from the window's start) that speed() with
  ``factor`` reads: the last output sample interpolates between the samples
  around position (window - 1) * factor."""
  return max(window, math.floor((window - 1) * factor) + 2)


def speed(pair: np.ndarray, window: int, factor: float) -> np.ndarray:
  """Resamples the clean speech by ``factor`` and adds the original noise.

  Args:
    pair: ``[2, L]`` (noisy, clean) from the window's start, at least
      ``stretch_length(window, factor)`` samples (zero past the utterance's
      end).
    window: samples of the result.
    factor: > 1 plays the speech faster (higher pitched), < 1 slower.

  Returns:
    float64 ``[2, window]``: (resampled clean + noise, resampled clean),
    where noise is ``noisy - clean`` of the first ``window`` samples.

  Linear interpolation on the sample grid: cheap and exact for factor 1.
  Its anti-aliasing is only the interpolation's own low-pass; for factors
  near 1 the little that folds over lies at the top of the band. The clean
  is resampled after pre-emphasis (as stored in the windows), which equals
  pre-emphasising the resampled clean with the filter's response scaled by
  ``factor`` in frequency: a small change in the tilt for factors near 1.
  """
  pair = np.asarray(pair, np.float64)
  if pair.shape[-1] < stretch_length(window, factor):
    raise ValueError(f'speed by {factor} needs {stretch_length(window, factor)}'
                     f' samples, got {pair.shape[-1]}')
  clean = pair[1]
  noise = pair[0, :window] - clean[:window]
  resampled = np.interp(np.arange(window) * factor,
                        np.arange(clean.shape[-1]), clean)
  return np.stack([resampled + noise, resampled])


# WSOLA's grains (Verhelst & Roelands 1993): periodic Hann windows of _GRAIN
# samples (32 ms) at 50 % overlap, which sum to one; each grain is moved by up
# to _TOLERANCE samples to where it best continues the previous one, so
# periods line up and the stretched speech does not warble.
_GRAIN, _TOLERANCE = 512, 128

# Samples past the window that pitch() reads: its last grains look ahead.
PITCH_MARGIN = _GRAIN + _TOLERANCE


def time_stretch(x: np.ndarray, length: int, ratio: float) -> np.ndarray:
  """float64 ``[length]``: ``x`` played ``ratio`` times slower (> 1: longer),
  pitch kept, by WSOLA; zero past ``x``'s end."""
  x = np.asarray(x, np.float64)
  grain, hop = _GRAIN, _GRAIN // 2
  window = np.hanning(grain + 1)[:-1]
  frames = int(math.ceil(length / hop)) + 2
  analysis_hop = hop / ratio
  # The input padded so that every grain and its search range lie inside.
  front = grain // 2 + _TOLERANCE
  need = front + int(math.ceil(frames * analysis_hop)) + grain + 2 * _TOLERANCE
  padded = np.zeros(max(need, front + x.shape[-1]))
  padded[front:front + x.shape[-1]] = x
  out = np.zeros(frames * hop + grain)
  total = np.zeros_like(out)
  previous = None
  for k in range(frames):
    # Grain k is centred on output sample k * hop, nominally on input sample
    # k * analysis_hop.
    start = front - grain // 2 + int(round(k * analysis_hop))
    if previous is not None:
      natural = padded[previous + hop:previous + hop + grain]
      low = start - _TOLERANCE
      candidates = padded[low:low + grain + 2 * _TOLERANCE]
      start = low + int(np.argmax(np.correlate(candidates, natural, 'valid')))
    out[k * hop:k * hop + grain] += window * padded[start:start + grain]
    total[k * hop:k * hop + grain] += window
    previous = start
  begin = grain // 2
  return out[begin:begin + length] / np.maximum(total[begin:begin + length],
                                                1e-8)


def pitch(pair: np.ndarray, window: int, factor: float) -> np.ndarray:
  """Shifts the clean speech's pitch by ``factor``, tempo kept, and adds the
  original noise.

  Args:
    pair: ``[2, L]`` (noisy, clean) from the window's start, at least
      ``window`` samples; up to ``window + PITCH_MARGIN`` are read (zero
      past the end), so the last grains see real speech.
    window: samples of the result.
    factor: > 1 higher, < 1 lower.

  Returns:
    float64 ``[2, window]``: (shifted clean + noise, shifted clean), where
    noise is ``noisy - clean`` of the first ``window`` samples; the pair
    itself for factor 1.
  """
  pair = np.asarray(pair, np.float64)
  if pair.shape[-1] < window:
    raise ValueError(f'pitch needs {window} samples, got {pair.shape[-1]}')
  if factor == 1.0:
    return pair[:, :window].copy()
  clean = pair[1, :window + PITCH_MARGIN]
  noise = pair[0, :window] - pair[1, :window]
  # Stretched by the factor, then resampled by it: the tempo comes back, the
  # pitch (and the formants with it) moves by the factor.
  stretched = time_stretch(clean, stretch_length(window, factor), factor)
  shifted = np.interp(np.arange(window) * factor,
                      np.arange(stretched.shape[-1]), stretched)
  return np.stack([shifted + noise, shifted])


def remix(pair: np.ndarray, noise: np.ndarray, gain_db: float) -> np.ndarray:
  """float64 ``[2, T]``: (clean + g * noise, clean), g = 10**(gain_db/20)."""
  pair = np.asarray(pair, np.float64)
  noise = np.asarray(noise, np.float64)
  g = _db_to_gain(gain_db, float(np.max(np.abs(noise), initial=0.0)))
  return np.stack([pair[1] + g * noise, pair[1]])


# Where the EQ's centre frequency is drawn (log-uniformly), Hz.
EQ_LOW_HZ, EQ_HIGH_HZ = 100.0, 6000.0


def peaking_eq(pair: np.ndarray, centre_hz: float, gain_db: float,
               q: float = 1.0) -> np.ndarray:
  """float64 ``[2, T]``: noisy and clean through one peaking biquad (RBJ's
  audio EQ cookbook) of ``gain_db`` at ``centre_hz``, from rest."""
  pair = np.asarray(pair, np.float64)
  amplitude = 10.0**(gain_db / 40)
  w0 = 2 * math.pi * centre_hz / audio.SAMPLE_RATE
  alpha = math.sin(w0) / (2 * q)
  b = np.array([1 + alpha * amplitude, -2 * math.cos(w0),
                1 - alpha * amplitude])
  a = np.array([1 + alpha / amplitude, -2 * math.cos(w0),
                1 - alpha / amplitude])
  return signal.lfilter(b / a[0], a / a[0], pair, axis=-1)


def gain(pair: np.ndarray, gain_db: float) -> np.ndarray:
  """float64: noisy and clean both scaled by 10**(gain_db/20); nothing is
  clipped (the model sees the level), but the result stays finite."""
  pair = np.asarray(pair, np.float64)
  return pair * _db_to_gain(gain_db, float(np.max(np.abs(pair), initial=0.0)))


class Windows(Protocol):
  """What augment_batch reads: input_pipeline.WindowedPairs is one."""

  window: int

  def __len__(self) -> int:
    ...

  def read(self, index: int, length: int) -> np.ndarray:
    """``[2, length]`` (noisy, clean) from window ``index``'s start, zero
    past its utterance's end."""
    ...

  def clean_only(self, index: int) -> bool:
    """Whether window ``index`` is clean speech alone (noisy = clean), which
    must take new noise."""
    ...


def augment_window(data: Windows, index: int, position: int, *, seed: int,
                   step: int, augmentation: Augmentation) -> np.ndarray:
  """float32 ``[2, window]``: training window ``index``, augmented as at
  ``position`` of ``step``'s global batch."""
  window = data.window
  choice = draw(augmentation, seed, step, position, index, len(data))
  # The pitch shift reads past the window, so speed then makes that much more.
  length = window + (PITCH_MARGIN if choice.pitch is not None else 0)
  if choice.speed is not None:
    pair = speed(data.read(index, stretch_length(length, choice.speed)),
                 length, choice.speed)
  else:
    pair = np.asarray(data.read(index, length), np.float64)
  if choice.pitch is not None:
    pair = pitch(pair, window, choice.pitch)
  noise = None
  if augmentation.noise is not None:
    noise = augmentation.noise.draw(seed, step, position,
                                    clean_only=data.clean_only(index))
  if choice.partner is not None and (noise is None or noise.kind is None):
    other = np.asarray(data.read(choice.partner, window), np.float64)
    pair = remix(pair, other[0] - other[1], choice.remix_gain_db)
  if noise is not None:
    pair = augmentation.noise.mix_window(pair, data, index, noise)
  if choice.eq is not None:
    pair = peaking_eq(pair, *choice.eq)
  if choice.gain_db is not None:
    pair = gain(pair, choice.gain_db)
  return pair.astype(np.float32)


def augment_batch(data: Windows, indices: np.ndarray, positions: np.ndarray, *,
                  seed: int, step: int,
                  augmentation: Augmentation) -> np.ndarray:
  """float32 ``[B, 2, window]``: the windows ``indices`` (at ``positions`` of
  ``step``'s global batch), each augmented independently."""
  if len(indices) != len(positions):
    raise ValueError(f'{len(indices)} indices but {len(positions)} positions')
  return np.stack([
      augment_window(data, int(i), int(p), seed=seed, step=step,
                     augmentation=augmentation)
      for i, p in zip(indices, positions)])
