"""Noise and room augmentation: a training window's clean speech, optionally
reverberated, plus noise of another kind at a drawn SNR.

Like augment.py, everything is plain NumPy and a pure function of ``(seed,
step, position)`` (``position``: the window's place in the global batch of
``step``), drawn from its own random stream, so turning this on changes no
draw of the other augmentations.

What a mixed window is (``mix_window``):

* the noisy input is **replaced**: noisy = speech + g * noise, where speech is
  the window's clean speech, reverberated when a room is drawn, and g sets
  the SNR to the drawn one. Replacing rather than adding to the corpus noise
  keeps the drawn SNR the real one (an added noise would stack on DEMAND's at
  an SNR nobody chose); the corpus noise stays in the other windows, which
  keep their noisy input with probability 1 - ``noise_mix_prob``.
* the target stays the **dry** clean speech, aligned with the direct path of
  the room (each impulse response is cut to start at its peak): the
  validation and test references are dry, so G learns to remove the
  reverberation as it removes noise. ``room_target_early_ms`` > 0 keeps the
  first milliseconds of the response in the target instead (the early
  reflections, which a listener hears as part of the voice).

The SNR is that of the waveforms (before pre-emphasis, which would weigh the
high band up and make low-frequency noise such as hum far louder than asked)
over the window: ``10 log10(sum speech^2 / sum (g noise)^2)``. A window of
(near) silence takes the noise at the level it would have under speech of
``_REFERENCE_FLOOR_RMS``, not a level scaled to its silence.

The noise kinds: clips read from ``noise_dirs`` (a random part, looped where
a clip is shorter than the window), and generated ones:

* ``coloured``: a power spectrum of 1 / f**e, e uniform in _COLOUR_EXPONENTS
  (0 white, 1 pink, 2 brown);
* ``babble``: the sum of _BABBLE_TALKERS other training windows' clean speech
  (the training voices themselves, many utterances at once);
* ``speech_shaped``: white noise through the long-term spectrum of the
  training speech (measured once, when the mixer is built);
* ``hum``: 50 or 60 Hz mains and its harmonics, with a little hiss;
* ``clicks``: sparse decaying clicks on near silence.

A room is an impulse response read from ``rir_dirs`` or a simulated one
(``simulated_rir``: exponentially decaying noise with an RT60 drawn in
``room_rt60``, after a unit direct path); with files, half of the rooms are
simulated. The reverberated window is the first ``window`` samples of the
convolution, so its length is kept; the reverberation of speech before the
window's start is not there (the window is read from its start).

Clips and responses named in ``noise_holdout`` / ``rir_holdout`` are never
loaded for training: they make the unseen-noise validation set
(experiments/make_unseen_noise_val.py).
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
from scipy import signal

from segan_jax import audio

# Seeds this stream apart from augment.py's (0xA06), the batch order and VBN.
STREAM = 0x401

NOISE_KINDS = ('coloured', 'babble', 'speech_shaped', 'hum', 'clicks')

_COLOUR_EXPONENTS = (0.0, 2.0)
_BABBLE_TALKERS = (3, 7)  # other windows summed, low and high (inclusive)
_HUM_HARMONICS = (3, 20)
_CLICKS_PER_SECOND = (1.0, 10.0)
_REFERENCE_FLOOR_RMS = 1e-2  # -40 dBFS: the speech level a silent window takes
# Direct-to-reverberant ratio of the simulated rooms, dB.
_DRR_DB = (-3.0, 10.0)
# Share of the rooms that are simulated when rir_dirs gives files too.
_SIMULATED_SHARE = 0.5
# Windows whose spectra average into the long-term speech spectrum.
_SPECTRUM_WINDOWS = 64
_SPECTRUM_FFT = 512


@dataclasses.dataclass(frozen=True)
class NoiseSettings:
  """The noise and room parameters of a run, from a Config (``from_config``),
  whose fields hold their defaults and help. Checked on construction."""

  noise_mix_prob: float = 0.0
  noise_snr_db: tuple[float, float] = (-5.0, 20.0)
  noise_kinds: tuple[str, ...] = NOISE_KINDS
  noise_dirs: tuple[str, ...] = ()
  noise_holdout: tuple[str, ...] = ()
  room_prob: float = 0.0
  room_rt60: tuple[float, float] = (0.2, 0.8)
  rir_dirs: tuple[str, ...] = ()
  rir_holdout: tuple[str, ...] = ()
  room_target_early_ms: float = 0.0
  # Folders of clean speech only (input_pipeline.load_train_windows joins
  # their windows to the pairs'): their windows always take new noise.
  extra_speech_dirs: tuple[str, ...] = ()

  def __post_init__(self):
    for name in ('noise_mix_prob', 'room_prob'):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f'{name} must be in [0, 1], got {getattr(self, name)}')
    for name in ('noise_snr_db', 'room_rt60'):
      low, high = (float(v) for v in getattr(self, name))
      if not low <= high:
        raise ValueError(f'{name} must be LOW,HIGH with LOW <= HIGH, got '
                         f'{getattr(self, name)}')
      object.__setattr__(self, name, (low, high))
    if not self.room_rt60[0] > 0:
      raise ValueError(f'room_rt60 must be positive, got {self.room_rt60}')
    for name in ('noise_kinds', 'noise_dirs', 'noise_holdout', 'rir_dirs',
                 'rir_holdout', 'extra_speech_dirs'):
      object.__setattr__(self, name, tuple(getattr(self, name) or ()))
    unknown = set(self.noise_kinds) - set(NOISE_KINDS)
    if unknown:
      raise ValueError(f'unknown noise_kinds {", ".join(sorted(unknown))}; '
                       f'known: {", ".join(NOISE_KINDS)}')
    if not self.room_target_early_ms >= 0:
      raise ValueError('room_target_early_ms must be >= 0, got '
                       f'{self.room_target_early_ms}')
    if self.noise_mix_prob and not (self.noise_kinds or self.noise_dirs):
      raise ValueError('noise_mix_prob > 0 needs --noise_dirs or '
                       '--noise_kinds')
    if self.extra_speech_dirs and not (self.noise_kinds or self.noise_dirs):
      raise ValueError('--extra_speech_dirs needs noise to mix into its clean '
                       'speech: give --noise_dirs or --noise_kinds')

  @classmethod
  def from_config(cls, config) -> 'NoiseSettings':
    return cls(**{f.name: getattr(config, f.name)
                  for f in dataclasses.fields(cls)})

  @property
  def mixes(self) -> bool:
    """Whether any window may take new noise."""
    return bool(self.noise_mix_prob or self.extra_speech_dirs)

  @property
  def enabled(self) -> bool:
    return bool(self.mixes or self.room_prob)


def audio_files(folders: tuple[str, ...], flag: str) -> list[str]:
  """The audio files directly in each folder, in name order."""
  paths = []
  for folder in folders:
    if not os.path.isdir(folder):
      raise ValueError(f'--{flag}: {folder}: not a folder')
    found = sorted(os.path.join(folder, n) for n in os.listdir(folder)
                   if audio.is_audio_file_name(n))
    if not found:
      raise ValueError(f'--{flag}: {folder}: no audio files in it')
    paths += found
  return paths


def _training_files(folders, holdout, flag) -> list[str]:
  """The files of ``folders`` less those named in ``holdout``; a held-out
  name that matches no file is refused (a typo would train on the clip)."""
  paths = audio_files(folders, flag)
  names = {os.path.basename(p) for p in paths}
  missing = sorted(set(holdout) - names)
  if missing:
    raise ValueError(f'--{flag.replace("dirs", "holdout")}: '
                     f'{", ".join(missing)} not in --{flag}')
  kept = [p for p in paths if os.path.basename(p) not in set(holdout)]
  if folders and not kept:
    raise ValueError(f'--{flag}: every file is held out')
  return kept


def read_clip(path: str) -> np.ndarray:
  """float64 mono 16 kHz: a noise clip or impulse response, resampled (soxr)
  from a higher rate; one-line AudioError naming the file otherwise."""
  data, rate = audio.read_audio(path)
  if rate < audio.SAMPLE_RATE:
    raise audio.AudioError(
        f'{path}: {rate} Hz, below {audio.SAMPLE_RATE} Hz (upsampled, it '
        'would hold no noise in the top of the band)')
  clip = audio.resample(audio.to_mono(data), rate, audio.SAMPLE_RATE)
  if not np.any(clip):
    raise audio.AudioError(f'{path}: silent')
  return np.asarray(clip, np.float64)


def load_clips(folders, holdout, flag) -> list[tuple[str, np.ndarray]]:
  """(name, samples) of the training clips of ``folders``."""
  return [(os.path.basename(p), read_clip(p))
          for p in _training_files(tuple(folders), tuple(holdout), flag)]


def align_rir(rir: np.ndarray) -> np.ndarray:
  """The response from its peak (the direct path) on, peak scaled to 1."""
  rir = np.asarray(rir, np.float64)
  peak = int(np.argmax(np.abs(rir)))
  return rir[peak:] / rir[peak]


def simulated_rir(rng: np.random.Generator, rt60: float,
                  drr_db: float) -> np.ndarray:
  """A room: a unit direct path, then Gaussian noise whose amplitude decays
  by 60 dB in ``rt60`` seconds, at ``drr_db`` direct-to-reverberant energy."""
  length = max(2, int(1.2 * rt60 * audio.SAMPLE_RATE))
  t = np.arange(1, length) / audio.SAMPLE_RATE
  tail = rng.standard_normal(length - 1) * 10.0**(-3.0 * t / rt60)
  tail *= math.sqrt(10.0**(-drr_db / 10) / np.sum(tail**2))
  return np.concatenate([[1.0], tail])


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
  """float64: ``x`` through ``rir``, the first len(x) samples (length kept)."""
  return signal.fftconvolve(np.asarray(x, np.float64), rir)[..., :x.shape[-1]]


def rt60_of(rir: np.ndarray) -> float:
  """Seconds: the RT60 of a response from its Schroeder decay, by a line fit
  between -5 and -25 dB (T20, times 3)."""
  energy = np.cumsum(np.asarray(rir, np.float64)[::-1]**2)[::-1]
  decay_db = 10 * np.log10(energy / energy[0] + 1e-300)
  fit = (decay_db <= -5) & (decay_db >= -25)
  slope = np.polyfit(np.nonzero(fit)[0] / audio.SAMPLE_RATE, decay_db[fit],
                     1)[0]
  return -60.0 / slope


def coloured_noise(rng: np.random.Generator, n: int,
                   exponent: float) -> np.ndarray:
  """Gaussian noise of power spectrum 1 / f**exponent (flat below 20 Hz)."""
  spectrum = np.fft.rfft(rng.standard_normal(n))
  freqs = np.maximum(np.fft.rfftfreq(n, 1 / audio.SAMPLE_RATE), 20.0)
  spectrum *= freqs**(-exponent / 2)
  spectrum[0] = 0.0
  return np.fft.irfft(spectrum, n)


def shaped_noise(rng: np.random.Generator, n: int,
                 power_spectrum: np.ndarray) -> np.ndarray:
  """White noise through ``power_spectrum`` (one value per rfft bin of
  _SPECTRUM_FFT samples, interpolated to ``n``'s bins)."""
  spectrum = np.fft.rfft(rng.standard_normal(n))
  grid = np.linspace(0, audio.SAMPLE_RATE / 2, power_spectrum.shape[-1])
  freqs = np.fft.rfftfreq(n, 1 / audio.SAMPLE_RATE)
  spectrum *= np.sqrt(np.interp(freqs, grid, power_spectrum))
  return np.fft.irfft(spectrum, n)


def hum(rng: np.random.Generator, n: int, mains_hz: float,
        harmonics: int) -> np.ndarray:
  """Mains hum: ``harmonics`` multiples of ``mains_hz`` at random phases,
  amplitudes falling as 1/k, with hiss 40 dB below."""
  t = np.arange(n) / audio.SAMPLE_RATE
  k = np.arange(1, harmonics + 1)
  k = k[k * mains_hz < audio.SAMPLE_RATE / 2]
  phases = rng.uniform(0, 2 * np.pi, k.shape[0])
  tone = np.sum(np.sin(2 * np.pi * mains_hz * k[:, None] * t +
                       phases[:, None]) / k[:, None], axis=0)
  return tone + 0.01 * np.std(tone) * rng.standard_normal(n)


def clicks(rng: np.random.Generator, n: int, per_second: float) -> np.ndarray:
  """Clicks (decaying noise bursts of 1-4 ms) at Poisson times on a bed 60 dB
  below them; at least one."""
  out = 1e-3 * rng.standard_normal(n)
  count = max(1, int(rng.poisson(per_second * n / audio.SAMPLE_RATE)))
  for start in rng.integers(0, n, count):
    length = int(rng.integers(16, 64))
    burst = rng.standard_normal(length) * np.exp(-np.arange(length) /
                                                 (length / 4))
    stop = min(n, start + length)
    out[start:stop] += rng.uniform(0.3, 1.0) * burst[:stop - start]
  return out


def loop_segment(clip: np.ndarray, n: int, start: int) -> np.ndarray:
  """``n`` samples of ``clip`` from ``start``, looped past its end."""
  reps = -(-(start + n) // clip.shape[-1])
  return np.tile(clip, reps)[start:start + n]


def scale_to_snr(speech: np.ndarray, noise: np.ndarray,
                 snr_db: float) -> np.ndarray:
  """``noise`` scaled so that speech / noise energy is ``snr_db`` (speech
  energy floored at _REFERENCE_FLOOR_RMS; silent noise stays silent)."""
  speech_power = max(float(np.mean(np.square(speech))),
                     _REFERENCE_FLOOR_RMS**2)
  noise_power = float(np.mean(np.square(noise)))
  if noise_power == 0:
    return np.zeros_like(noise)
  return noise * math.sqrt(speech_power / noise_power / 10**(snr_db / 10))


def long_term_spectrum(clean_windows: np.ndarray) -> np.ndarray:
  """Mean Welch power spectrum (_SPECTRUM_FFT bins) of waveforms [N, T]."""
  _, power = signal.welch(clean_windows, nperseg=_SPECTRUM_FFT, axis=-1)
  power = power.mean(axis=0)
  return power / max(float(power.max()), 1e-300)


@dataclasses.dataclass(frozen=True)
class Draw:
  """What happens to one window; None where that part is skipped."""

  kind: str | None  # 'file' or a generated kind; None: the noisy is kept
  snr_db: float
  room: str | None  # 'file' or 'simulated'; None: dry
  rng_seed: tuple[int, ...]  # seeds the noise and room samples


class NoiseMixer:
  """The settings with what they need loaded: the training clips, responses
  and the long-term speech spectrum. Built once per run (``build``)."""

  def __init__(self, settings: NoiseSettings, clips, rirs,
               speech_spectrum: np.ndarray | None, preemphasis: float):
    self.settings = settings
    self.preemphasis = preemphasis  # that of the windows mixed
    self.clips = clips  # [(name, float64 samples)]
    self.rirs = [(name, align_rir(r)) for name, r in rirs]
    self.speech_spectrum = speech_spectrum
    self.kinds = (('file',) if clips else ()) + tuple(
        settings.noise_kinds if settings.mixes else ())

  @classmethod
  def build(cls, settings: NoiseSettings, data, preemphasis: float
            ) -> 'NoiseMixer | None':
    """The mixer for ``data`` (input_pipeline.WindowedPairs), or None when
    the settings are off. Bad folders or files: one-line ValueError."""
    if not settings.enabled:
      return None
    clips = load_clips(settings.noise_dirs, settings.noise_holdout,
                       'noise_dirs') if settings.mixes else []
    rirs = load_clips(settings.rir_dirs, settings.rir_holdout,
                      'rir_dirs') if settings.room_prob else []
    spectrum = None
    if settings.mixes and 'speech_shaped' in settings.noise_kinds:
      picks = np.linspace(0, len(data) - 1,
                          min(len(data), _SPECTRUM_WINDOWS)).astype(int)
      clean = np.stack([data[int(i)][1] for i in picks])
      spectrum = long_term_spectrum(audio.deemphasis(clean, preemphasis))
    return cls(settings, clips, rirs, spectrum, preemphasis)

  def draw(self, seed: int, step: int, position: int,
           clean_only: bool = False) -> Draw:
    """``clean_only``: the window has no noise of its own (one of
    --extra_speech_dirs), so it takes new noise whatever noise_mix_prob."""
    s = self.settings
    u = np.random.default_rng([seed, STREAM, step, position]).random(4)
    kind = None
    if (clean_only or u[0] < s.noise_mix_prob) and self.kinds:
      kind = self.kinds[min(int(u[1] * len(self.kinds)), len(self.kinds) - 1)]
    snr = s.noise_snr_db[0] + u[2] * (s.noise_snr_db[1] - s.noise_snr_db[0])
    room = None
    if u[3] < s.room_prob:
      # A second number for the choice of room keeps u[3]'s meaning.
      v = np.random.default_rng([seed, STREAM, step, position, 1]).random()
      room = 'file' if self.rirs and v >= _SIMULATED_SHARE else 'simulated'
    return Draw(kind, float(snr), room, (seed, STREAM, step, position, 2))

  def noise(self, kind: str, rng: np.random.Generator, n: int, data,
            index: int) -> np.ndarray:
    """float64 ``[n]`` waveform of ``kind``, at an arbitrary level."""
    if kind == 'file':
      _, clip = self.clips[int(rng.integers(len(self.clips)))]
      return loop_segment(clip, n, int(rng.integers(clip.shape[-1])))
    if kind == 'coloured':
      return coloured_noise(rng, n, rng.uniform(*_COLOUR_EXPONENTS))
    if kind == 'speech_shaped':
      return shaped_noise(rng, n, self.speech_spectrum)
    if kind == 'hum':
      return hum(rng, n, float(rng.choice([50.0, 60.0])),
                 int(rng.integers(_HUM_HARMONICS[0], _HUM_HARMONICS[1] + 1)))
    if kind == 'clicks':
      return clicks(rng, n, rng.uniform(*_CLICKS_PER_SECOND))
    if kind == 'babble':
      talkers = int(rng.integers(_BABBLE_TALKERS[0], _BABBLE_TALKERS[1] + 1))
      # Any windows but this one (itself only if it is the only one).
      if len(data) > 1:
        others = rng.integers(0, len(data) - 1, talkers)
        others = [int(i) + (int(i) >= index) for i in others]
      else:
        others = [index]
      total = np.zeros(n)
      for i in others:
        # Window reads are pre-emphasised; de-emphasis from rest gives the
        # waveform (exact after its first samples).
        speech = np.asarray(audio.deemphasis(data.read(i, n)[1],
                                             self.preemphasis),
                            np.float64)
        total += speech / max(float(np.std(speech)), 1e-6)
      return total
    raise ValueError(f'unknown noise kind {kind!r}')

  def room_response(self, room: str, rng: np.random.Generator) -> np.ndarray:
    if room == 'file':
      return self.rirs[int(rng.integers(len(self.rirs)))][1]
    return simulated_rir(rng, rng.uniform(*self.settings.room_rt60),
                         rng.uniform(*_DRR_DB))

  def mix_window(self, pair: np.ndarray, data, index: int,
                 choice: Draw) -> np.ndarray:
    """float64 ``[2, T]`` pre-emphasised (noisy, target) of the
    pre-emphasised ``pair``, as ``choice`` says (module docstring)."""
    pair = np.asarray(pair, np.float64)
    if choice.kind is None and choice.room is None:
      return pair
    rng = np.random.default_rng(list(choice.rng_seed))
    preemphasis = self.preemphasis
    # Waveforms: the SNR and the noise are those of the audio, not of its
    # pre-emphasised form.
    noisy, clean = (np.asarray(x, np.float64)
                    for x in audio.deemphasis(pair, preemphasis))
    speech = target = clean
    if choice.room is not None:
      rir = self.room_response(choice.room, rng)
      speech = reverberate(clean, rir)
      early = int(self.settings.room_target_early_ms * audio.SAMPLE_RATE /
                  1000)
      if early:
        target = reverberate(clean, rir[:early + 1])
    if choice.kind is not None:
      noise = self.noise(choice.kind, rng, clean.shape[-1], data, index)
      noisy = speech + scale_to_snr(speech, noise, choice.snr_db)
    else:  # a room alone: the window's own noise, added to the room's speech
      noisy = speech + (noisy - clean)
    return np.stack([audio.preemphasis(noisy, preemphasis),
                     audio.preemphasis(target, preemphasis)]).astype(
                         np.float64)
