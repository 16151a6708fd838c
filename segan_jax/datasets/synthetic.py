"""Embedded synthetic speech-in-noise dataset (no files, no download).

Clean "speech" comes from a tiny source-filter synthesiser: a glottal pulse
train with a moving pitch drives a cascade of formant resonators whose
frequencies drift slowly, interleaved with band-passed noise (fricatives,
plosive bursts) and pauses. It is mixed with one of several noise kinds at a
fixed set of SNRs. Every utterance is a pure function of
`(seed, split, index)`, so the data is reproducible and randomly accessible.
"""

import dataclasses
import math
import operator

import numpy as np
from scipy import fft as sp_fft
from scipy import signal

from segan_jax import audio

SR = audio.SAMPLE_RATE

# name -> (split id used in the RNG entropy, default number of utterances).
SPLITS = {'train': (0, 96), 'validation': (1, 8), 'test': (2, 16)}
NOISE_KINDS = ('white', 'pink', 'brown', 'babble', 'hum', 'modulated',
               'bursts')
SNRS_DB = (0.0, 5.0, 10.0, 15.0)

# Leading words of the RNG entropy, one per independent random stream. Every
# entropy list has the same length: SeedSequence pads short lists with zeros,
# so lists of different lengths could otherwise collide.
_UTTERANCE_STREAM = 1
_NOISE_KIND_STREAM = 2
_SNR_STREAM = 3

_MIN_SECONDS, _MAX_SECONDS = 1.5, 4.0
_MIN_PEAK, _MAX_PEAK = 0.3, 0.9
_MAX_MIX_PEAK = 0.99

# Time-varying filtering is done frame by frame in the frequency domain:
# periodic Hann windows at 50% overlap sum to one, and zero-padding each
# frame to twice its length keeps most of each resonator's decaying impulse
# response from wrapping around (the error is ~30 dB down for the narrowest
# bandwidths used).
_FRAME = 256
_HOP = _FRAME // 2
_NFFT = 2 * _FRAME
_HANN = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_FRAME) / _FRAME)).astype(
    np.float32)
_PULSE_TABLE = 1024  # Samples per tabulated period (glottal pulse, hum).
_PITCH_STEP = 32  # Samples between pitch control points (2 ms).

# Nominal formant ranges (Hz) of an adult male voice, and their bandwidths.
_FORMANT_RANGES = ((300., 850.), (850., 2300.), (2300., 3100.),
                   (3300., 4000.))
_BANDWIDTH_RANGES = ((50., 110.), (70., 160.), (100., 250.), (150., 300.))


def _seconds(rng: np.random.Generator, low: float, high: float) -> int:
  """Uniform random duration in samples."""
  return int(round(rng.uniform(low, high) * SR))


def _raised_cosine(n: int) -> np.ndarray:
  """Smooth 0 -> 1 ramp of `n` samples."""
  return 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)


def _envelope(n: int, attack: int, release: int) -> np.ndarray:
  """Flat-top envelope with raised-cosine attack and release."""
  env = np.ones(n)
  attack = min(attack, n // 2)
  release = min(release, n - attack)
  if attack:
    env[:attack] = _raised_cosine(attack)
  if release:
    env[n - release:] = _raised_cosine(release)[::-1]
  return env


def _uniform_noise(rng: np.random.Generator, n: int) -> np.ndarray:
  """Zero-mean, unit-variance white noise.

  Uniform draws are several times cheaper than Gaussian ones, and once the
  noise is filtered or enveloped its distribution hardly matters.
  """
  return (rng.random(n) - 0.5) * math.sqrt(12.0)


def _read_periodic(table: np.ndarray, phase: np.ndarray) -> np.ndarray:
  """Reads one tabulated period (`table[-1] == table[0]`) at `phase` cycles.

  Linear interpolation by hand, since np.interp is slow for unsorted
  queries; in-place updates keep large temporaries to a minimum.
  """
  size = table.shape[0] - 1
  pos = phase - np.floor(phase)
  pos *= size
  idx = np.minimum(pos.astype(np.int32), size - 1)
  pos -= idx
  out = table[idx]
  out += pos * np.diff(table)[idx]
  return out


def _bandpass(rng: np.random.Generator, x: np.ndarray, low_hz: float,
              high_hz: float, q_range: tuple[float, float]) -> np.ndarray:
  """Filters `x` with two cascaded band-pass biquads at a random centre."""
  fc = math.exp(rng.uniform(math.log(low_hz), math.log(high_hz)))
  q = rng.uniform(*q_range)
  w0 = 2 * math.pi * fc / SR
  alpha = math.sin(w0) / (2 * q)
  b = np.array([alpha, 0., -alpha])
  a = np.array([1 + alpha, -2 * math.cos(w0), 1 - alpha])
  # Squaring the biquad (one 4th-order filter) gives steeper skirts at the
  # cost of a single lfilter call.
  return signal.lfilter(np.convolve(b, b), np.convolve(a, a), x)


def _slow_curve(rng: np.random.Generator, n: int, rate_hz: float, low: float,
                high: float, sample_rate: float = SR) -> np.ndarray:
  """Random piecewise-linear curve with ~`rate_hz` breakpoints per second."""
  num_points = max(2, int(n / sample_rate * rate_hz) + 2)
  knots = np.linspace(0, n, num_points)
  return np.interp(np.arange(n), knots, rng.uniform(low, high, num_points))


@dataclasses.dataclass(frozen=True)
class _Speaker:
  """Per-utterance voice characteristics."""
  f0: float  # Median pitch (Hz).
  tract_scale: float  # Formant scale; short vocal tracts -> high formants.
  bandwidths: np.ndarray  # [num_formants] formant bandwidths (Hz).
  open_quotient: float  # Fraction of a glottal cycle spent opening.
  closing_quotient: float  # Fraction spent closing (sets the spectral tilt).
  breathiness: float  # Level of aspiration noise mixed into the source.


def _random_speaker(rng: np.random.Generator) -> _Speaker:
  """Draws a voice: pitch, vocal-tract scale and glottal parameters."""
  f0 = math.exp(rng.uniform(math.log(90.), math.log(240.)))
  # Higher voices tend to come with shorter vocal tracts.
  tract_scale = (1.0 + 0.2 * math.log(f0 / 90.) / math.log(240. / 90.) +
                 rng.uniform(-0.05, 0.05))
  num_formants = int(rng.integers(2, 5))
  bandwidths = np.array(
      [rng.uniform(*r) for r in _BANDWIDTH_RANGES[:num_formants]])
  return _Speaker(
      f0=f0,
      tract_scale=tract_scale,
      bandwidths=bandwidths,
      open_quotient=rng.uniform(0.35, 0.5),
      closing_quotient=rng.uniform(0.1, 0.2),
      breathiness=rng.uniform(0.01, 0.08),
  )


def _plan_segments(
    rng: np.random.Generator, n: int, lead: int, trail: int,
    pause_prob: float) -> list[tuple[str, int, int]]:
  """Lays out `(kind, start, stop)` segments as a sequence of syllables.

  Kinds are 'voiced', 'fricative' and 'burst'; anything not covered is a
  pause. Syllables are only placed if they fit entirely, so nothing is cut
  off abruptly at the end of the utterance.
  """
  segments = []
  pos, end = lead, n - trail
  while True:
    syllable = []
    onset = rng.random()
    if onset < 0.35:
      syllable.append(('fricative', _seconds(rng, 0.05, 0.15)))
    elif onset < 0.55:
      syllable.append(('burst', _seconds(rng, 0.008, 0.025)))
      syllable.append(('gap', _seconds(rng, 0.005, 0.02)))
    syllable.append(('voiced', _seconds(rng, 0.08, 0.3)))
    if rng.random() < 0.25:
      syllable.append(('fricative', _seconds(rng, 0.04, 0.12)))
    if pos + sum(d for _, d in syllable) > end:
      break
    for kind, duration in syllable:
      if kind != 'gap':
        segments.append((kind, pos, pos + duration))
      pos += duration
    # Either a pause between "words" or a short gap within one.
    if rng.random() < pause_prob:
      pos += _seconds(rng, 0.08, 0.3)
    else:
      pos += _seconds(rng, 0.0, 0.03)
  return segments


def _glottal_source(rng: np.random.Generator, f0: np.ndarray,
                    speaker: _Speaker) -> np.ndarray:
  """Differentiated Rosenberg-style glottal flow for a per-sample pitch."""
  # One cycle of the flow pulse is tabulated and read out by phase; this is
  # several times cheaper than evaluating the piecewise cosines per sample.
  op, cl = speaker.open_quotient, speaker.closing_quotient
  grid = np.linspace(0.0, 1.0, _PULSE_TABLE + 1)
  opening = 0.5 - 0.5 * np.cos(np.pi * grid / op)
  closing = np.cos(0.5 * np.pi * np.minimum(grid - op, cl) / cl)
  table = np.where(grid < op, opening, np.where(grid < op + cl, closing, 0.0))
  flow = _read_periodic(table, np.cumsum(f0 / SR) + rng.random())
  # Lip radiation roughly differentiates the flow; the abrupt closure is what
  # gives voiced speech its harmonic-rich spectrum. Rescaling by 1/f0 keeps
  # the level independent of pitch.
  source = np.zeros_like(flow)
  np.subtract(flow[1:], flow[:-1], out=source[1:])
  source *= SR / f0
  aspiration = _uniform_noise(rng, f0.shape[0]) * flow
  return source + speaker.breathiness * aspiration


def _formant_tracks(rng: np.random.Generator, num_frames: int,
                    speaker: _Speaker) -> np.ndarray:
  """Slowly drifting formant frequencies, `[num_frames, num_formants]`."""
  frame_rate = SR / _HOP
  tracks = []
  for low, high in _FORMANT_RANGES[:speaker.bandwidths.shape[0]]:
    # One vowel target every 80-200 ms, linearly interpolated in between.
    spacing = rng.uniform(0.08, 0.2) * frame_rate
    num_knots = int(num_frames / spacing) + 2
    knots = np.arange(num_knots) * spacing
    targets = rng.uniform(low, high, num_knots) * speaker.tract_scale
    tracks.append(np.interp(np.arange(num_frames), knots, targets))
  return np.stack(tracks, axis=-1)


def _formant_filter(x: np.ndarray, formants: np.ndarray,
                    bandwidths: np.ndarray) -> np.ndarray:
  """Applies a time-varying cascade of unit-DC-gain 2-pole resonators.

  Args:
    x: input signal, `[T]`.
    formants: formant frequencies per frame, `[num_frames, K]`, where frame
      `k` is centred on sample `k * _HOP` and `num_frames` is
      `ceil(T / _HOP) + 1`.
    bandwidths: `[K]` resonance bandwidths in Hz.

  Returns:
    The filtered signal, `[T]`.
  """
  n = x.shape[0]
  num_frames = formants.shape[0]
  padded = np.zeros((num_frames + 1) * _HOP, np.float32)
  padded[_HOP:_HOP + n] = x
  blocks = padded.reshape(num_frames + 1, _HOP)
  # Zero-padded frames are written in place so the FFT need not re-pad them.
  frames = np.zeros((num_frames, _NFFT), np.float32)
  np.multiply(blocks[:-1], _HANN[:_HOP], out=frames[:, :_HOP])
  np.multiply(blocks[1:], _HANN[_HOP:], out=frames[:, _HOP:_FRAME])

  # Each frame's all-pole denominator polynomial (cascade of the resonators).
  radius = np.exp(-np.pi * bandwidths / SR)
  c1 = 2 * radius * np.cos(2 * np.pi * formants / SR)  # [num_frames, K]
  c2 = radius**2
  num_formants = formants.shape[1]
  denom = np.zeros((num_frames, 2 * num_formants + 1))
  denom[:, 0] = 1.0
  for k in range(num_formants):
    prev = denom.copy()
    denom[:, 1:] -= c1[:, k:k + 1] * prev[:, :-1]
    denom[:, 2:] += c2[k] * prev[:, :-2]
  denom = denom.astype(np.float32)
  gain = denom.sum(axis=1, keepdims=True)  # Denominator at DC.
  poly = sp_fft.rfft(denom, _NFFT)  # Denominator on the FFT grid.
  # gain / poly, written out: NumPy's complex division is comparatively slow.
  response = poly.conj() * (gain / (poly.real**2 + poly.imag**2))

  spectrum = sp_fft.rfft(frames) * response
  out_frames = sp_fft.irfft(spectrum, _NFFT)
  # Overlap-add: each output frame spans 4 hops.
  out = np.zeros((num_frames + 3, _HOP))
  for j in range(_NFFT // _HOP):
    out[j:j + num_frames] += out_frames[:, j * _HOP:(j + 1) * _HOP]
  return out.reshape(-1)[_HOP:_HOP + n]


def _speech(rng: np.random.Generator, n: int, speaker: _Speaker,
            lead: int, trail: int, pause_prob: float) -> np.ndarray:
  """Synthesises `n` samples of (unnormalised) speech-like signal."""
  segments = _plan_segments(rng, n, lead, trail, pause_prob)

  # Pitch: declination over the utterance, a glide per voiced segment, and
  # vibrato plus slow jitter on top. It is built on a coarse control grid
  # and interpolated, since pitch moves far slower than the sample rate.
  ctrl = np.arange(0, n + _PITCH_STEP, _PITCH_STEP)
  t = ctrl / SR
  decline = rng.uniform(0.0, 0.2)
  f0 = speaker.f0 * (1 + decline / 2 - decline * ctrl / n)
  f0 *= 1 + rng.uniform(0.005, 0.02) * np.sin(
      2 * np.pi * rng.uniform(4., 7.) * t + rng.uniform(0, 2 * np.pi))
  f0 *= _slow_curve(rng, t.shape[0], 20., 0.98, 1.02, SR / _PITCH_STEP)
  voiced_env = np.zeros(n)
  for kind, start, stop in segments:
    if kind == 'voiced':
      lo, hi = np.searchsorted(ctrl, [start, stop])
      # Glide by at most ~17 semitones per second, as in lively intonation.
      begin = rng.uniform(-0.15, 0.15)
      end = begin + rng.uniform(-1.0, 1.0) * (stop - start) / SR
      f0[lo:hi] *= np.exp(np.linspace(begin, end, hi - lo))
      voiced_env[start:stop] = rng.uniform(0.6, 1.0) * _envelope(
          stop - start, _seconds(rng, 0.01, 0.04), _seconds(rng, 0.02, 0.08))
  f0 = np.interp(np.arange(n), ctrl, np.clip(f0, 60., 400.))

  num_frames = -(-n // _HOP) + 1
  formants = _formant_tracks(rng, num_frames, speaker)
  source = _glottal_source(rng, f0, speaker) * voiced_env
  speech = _formant_filter(source, formants, speaker.bandwidths)

  # Unvoiced sounds are set relative to the voiced level so they stay
  # secondary, as in real speech.
  voiced_rms = math.sqrt(
      np.sum(speech**2) / max(1., np.sum(voiced_env > 0.5))) or 1.0
  for kind, start, stop in segments:
    if kind == 'voiced':
      continue
    length = stop - start
    noise = _uniform_noise(rng, length)
    if kind == 'fricative':
      noise = _bandpass(rng, noise, 1800., 6500., (0.8, 2.5))
      env = _envelope(length, _seconds(rng, 0.01, 0.03),
                      _seconds(rng, 0.02, 0.05))
      level = rng.uniform(0.05, 0.3)
    else:  # A plosive release: short, loud-ish, broad.
      noise = _bandpass(rng, noise, 1000., 4000., (0.5, 0.9))
      env = np.exp(-np.arange(length) / (0.3 * length))
      level = rng.uniform(0.2, 0.5)
    noise *= level * voiced_rms / (np.std(noise) + 1e-12)
    speech[start:stop] += noise * env
  return speech


def _colored_noise(rng: np.random.Generator, n: int,
                   exponent: float) -> np.ndarray:
  """Noise with a `1 / f**exponent` power spectrum above 20 Hz."""
  size = sp_fft.next_fast_len(n, real=True)  # Avoid slow prime-length FFTs.
  spectrum = sp_fft.rfft(_uniform_noise(rng, size))
  freqs = np.maximum(sp_fft.rfftfreq(size, 1 / SR), 20.)
  spectrum *= freqs**(-exponent / 2)
  spectrum[0] = 0.0
  return sp_fft.irfft(spectrum, size)[:n]


def _babble(rng: np.random.Generator, n: int) -> np.ndarray:
  """Several other synthetic talkers speaking at once."""
  noise = np.zeros(n)
  for _ in range(int(rng.integers(3, 5))):
    talker = _speech(rng, n, _random_speaker(rng), lead=_seconds(rng, 0, 0.2),
                     trail=0, pause_prob=0.1)
    noise += rng.uniform(0.5, 1.0) * talker / (np.std(talker) + 1e-12)
  return noise


def _hum(rng: np.random.Generator, n: int) -> np.ndarray:
  """Mains hum: 50/60 Hz plus decaying harmonics, with a little hiss."""
  mains = rng.choice([50., 60.]) * (1 + rng.uniform(-0.002, 0.002))
  # Build one period as a lookup table and read it out by phase, which is
  # much cheaper than summing dozens of full-length sinusoids.
  phase_grid = np.linspace(0.0, 1.0, _PULSE_TABLE + 1)
  harmonics = np.arange(1, int(rng.integers(4, 25)) + 1)
  amps = harmonics**-rng.uniform(0.5, 1.5) * rng.uniform(0.3, 1.0,
                                                         len(harmonics))
  phases = rng.uniform(0, 2 * np.pi, len(harmonics))
  period = np.sum(
      amps[:, None] *
      np.sin(2 * np.pi * harmonics[:, None] * phase_grid + phases[:, None]),
      axis=0)
  period = np.tanh(rng.uniform(0.5, 3.0) * period / np.max(np.abs(period)))
  hum = _read_periodic(period, np.arange(n) * (mains / SR) + rng.random())
  hum *= _slow_curve(rng, n, 1., 0.8, 1.0)
  return hum + rng.uniform(0.005, 0.03) * _uniform_noise(rng, n)


def _modulated(rng: np.random.Generator, n: int) -> np.ndarray:
  """Band noise whose level swells and fades a few times per second."""
  band = _bandpass(rng, _uniform_noise(rng, n), 150., 4000., (0.5, 2.0))
  return band * _slow_curve(rng, n, rng.uniform(2., 8.), 0.0, 1.0)**2


def _bursts(rng: np.random.Generator, n: int) -> np.ndarray:
  """Sharp-onset, decaying noise events (clatter, knocks) on a quiet bed."""
  noise = _colored_noise(rng, n, 1.0)
  noise *= 0.05 / (np.std(noise) + 1e-12)
  for _ in range(1 + rng.poisson(2.0 * n / SR)):
    length = _seconds(rng, 0.02, 0.3)
    start = int(rng.integers(0, max(1, n - length)))
    length = min(length, n - start)
    event = _bandpass(rng, _uniform_noise(rng, length), 300., 6000.,
                      (0.5, 3.0))
    decay = np.exp(-np.arange(length) / (rng.uniform(0.1, 0.4) * length))
    envelope = np.minimum(1.0, np.arange(length) / (0.002 * SR)) * decay
    noise[start:start + length] += (rng.uniform(0.3, 1.0) * envelope * event /
                                    (np.std(event) + 1e-12))
  return noise


def _noise(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
  """`n` samples of noise of the given kind (arbitrary scale)."""
  if kind == 'white':
    return rng.standard_normal(n)
  if kind == 'pink':
    return _colored_noise(rng, n, 1.0)
  if kind == 'brown':
    return _colored_noise(rng, n, 2.0)
  if kind == 'babble':
    return _babble(rng, n)
  if kind == 'hum':
    return _hum(rng, n)
  if kind == 'modulated':
    return _modulated(rng, n)
  if kind == 'bursts':
    return _bursts(rng, n)
  raise ValueError(f'Unknown noise kind {kind!r}.')


def _balanced_choice(options: tuple, stream: int, seed: int, split_id: int,
                     index: int):
  """Picks an option so that each block of len(options) indices uses all.

  Unlike independent draws this guarantees every option shows up (equally
  often) even in small splits, while staying a pure function of the index.
  """
  block, offset = divmod(index, len(options))
  rng = np.random.default_rng([stream, seed, split_id, block])
  return options[rng.permutation(len(options))[offset]]


def generate_utterance(seed: int, split: str, index: int) -> dict:
  """Generates one `(noisy, clean)` pair; a pure function of its arguments.

  Args:
    seed: non-negative dataset seed.
    split: one of `SPLITS`.
    index: non-negative utterance index.

  Returns:
    A dict with float32 `noisy` and `clean` waveforms of equal length, an
    `id`, the mixing `snr_db` and the `noise` kind.
  """
  split_id = _split_id(split)
  rng = np.random.default_rng([_UTTERANCE_STREAM, seed, split_id, index])
  kind = _balanced_choice(NOISE_KINDS, _NOISE_KIND_STREAM, seed, split_id,
                          index)
  snr_db = _balanced_choice(SNRS_DB, _SNR_STREAM, seed, split_id, index)

  n = _seconds(rng, _MIN_SECONDS, _MAX_SECONDS)
  clean = _speech(rng, n, _random_speaker(rng),
                  lead=_seconds(rng, 0.1, 0.3), trail=_seconds(rng, 0.1, 0.3),
                  pause_prob=0.2)
  peak = np.max(np.abs(clean))
  # A faint floor, ~70 dB down, so pauses are near (not digital) silence.
  clean += 3e-4 * peak * _uniform_noise(rng, n)
  clean *= rng.uniform(_MIN_PEAK, _MAX_PEAK) / np.max(np.abs(clean))

  noise = _noise(rng, kind, n)
  noise *= math.sqrt(
      np.sum(clean**2) / (np.sum(noise**2) * 10**(snr_db / 10)))
  noisy = clean + noise
  # Scaling both signals by the same factor avoids clipping without changing
  # the SNR.
  mix_peak = np.max(np.abs(noisy))
  if mix_peak > _MAX_MIX_PEAK:
    noisy *= _MAX_MIX_PEAK / mix_peak
    clean *= _MAX_MIX_PEAK / mix_peak
  return {
      'noisy': noisy.astype(np.float32),
      'clean': clean.astype(np.float32),
      'id': f'synthetic_{split}_{index:05d}',
      'snr_db': float(snr_db),
      'noise': kind,
  }


def _split_id(split: str) -> int:
  """The split's RNG id; raises ValueError for unknown splits."""
  if split not in SPLITS:
    raise ValueError(
        f'Unknown split {split!r}; valid splits are {", ".join(SPLITS)}.')
  return SPLITS[split][0]


class SyntheticSpeech:
  """Random-access source of (noisy, clean) utterance pairs; len() and [i]."""

  def __init__(self, split: str = 'train', num_utterances: int | None = None,
               seed: int = 0):
    _split_id(split)  # Fail early on unknown splits.
    self.split = split
    if num_utterances is None:
      num_utterances = SPLITS[split][1]
    if num_utterances < 0:
      raise ValueError(
          f'num_utterances must be >= 0, got {num_utterances}.')
    if seed < 0:
      raise ValueError(f'seed must be >= 0, got {seed}.')
    self.num_utterances = int(num_utterances)
    self.seed = int(seed)

  def __len__(self) -> int:
    return self.num_utterances

  def __getitem__(self, index: int) -> dict:
    position = operator.index(index)
    if position < 0:
      position += self.num_utterances  # Sequence-style negative indexing.
    if not 0 <= position < self.num_utterances:
      raise IndexError(
          f'Index {index} out of range for {self.num_utterances} utterances.')
    return generate_utterance(self.seed, self.split, position)

  def __repr__(self) -> str:
    return (f'SyntheticSpeech(split={self.split!r}, '
            f'num_utterances={self.num_utterances}, seed={self.seed})')
