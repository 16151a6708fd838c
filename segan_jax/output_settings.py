"""How G's output becomes audio: one frozen `OutputSettings`, and the gain
per STFT bin (`mask_gain`, `mask_with`) that its mask applies.

The settings are saved with a run (as Config fields of the same names) and
with its bundles and exported files (in their contract); an enhancer takes
them from its model, and enhance-time overrides replace some of them
(`OutputSettings.with_overrides`). Adding a setting is a field here, its
Config field (config.py, `output_option`), and the code that uses it.

Plain NumPy and SciPy, like audio.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from scipy import ndimage
from scipy import signal

from segan_jax import audio
from segan_jax import high_band
from segan_jax import pcs


@dataclasses.dataclass(frozen=True)
class OutputSettings:
  """How G's output windows become the output signal; validated once, here.

  Config's fields of the same names hold a run's; their help says what each
  does (config.py).
  """

  output_mask: bool = False
  mask_oversubtraction: float = 0.0
  mask_noise_frames: int = 1
  attenuation_limit_db: float = 0.0
  output_highpass_hz: float = 0.0
  output_high_band: str = 'gated'
  output_pcs: float = 0.0

  def __post_init__(self):
    if self.output_high_band not in high_band.HIGH_BANDS:
      raise ValueError(f'output_high_band must be one of '
                       f'{", ".join(high_band.HIGH_BANDS)}, got '
                       f'{self.output_high_band!r}')
    if not self.attenuation_limit_db >= 0.0:
      raise ValueError('attenuation_limit_db must be >= 0 (0: no limit), got '
                       f'{self.attenuation_limit_db}')
    if not 0.0 <= self.output_highpass_hz < 4000.0:
      raise ValueError('output_highpass_hz must be in [0, 4000), got '
                       f'{self.output_highpass_hz}')
    _check_mask(self.mask_oversubtraction, self.mask_noise_frames)
    pcs.check_strength(self.output_pcs)
    # One type per field whatever the source (flags, JSON, NumPy scalars).
    object.__setattr__(self, 'output_mask', bool(self.output_mask))
    object.__setattr__(self, 'mask_noise_frames', int(self.mask_noise_frames))
    for name in ('mask_oversubtraction', 'attenuation_limit_db',
                 'output_highpass_hz', 'output_pcs'):
      object.__setattr__(self, name, float(getattr(self, name)))

  @classmethod
  def from_config(cls, config: Any) -> OutputSettings:
    """A run's settings: the Config fields of the same names."""
    return cls(**{name: getattr(config, name) for name in NAMES})

  @classmethod
  def from_contract(cls, terms: dict[str, Any]) -> OutputSettings:
    """The settings an exported file's contract records; a setting that an
    older file lacks takes its default (off)."""
    return cls(**{name: terms[name] for name in NAMES if name in terms})

  def to_contract(self) -> dict[str, Any]:
    """The settings for an exported file's contract, each with what the
    caller of the program does with it."""
    return {
        **dataclasses.asdict(self),
        'output_highpass': '1st-order Butterworth high-pass (0: off), '
                           'applied by the caller after the program',
        'attenuation_limit': 'the caller mixes the (pre-emphasised) input '
                             'back: out = (1 - g) * enhanced + g * input, '
                             'g = 10**(-attenuation_limit_db / 20); 0: off',
        'high_band': 'above 16 kHz, when output_high_band is gated, the '
                     "caller adds the input's band above 8 kHz gated by G's "
                     'gain above 5 kHz (segan_jax.high_band)',
        'mask': 'when output_mask: instead of the mix, the caller filters '
                'each input window X by a gain per bin, at least g '
                '(1024-point Hann frames, hop 256; '
                'segan_jax.output_settings.mask_with): with E = '
                'STFT(enhanced), min(1, |E| / |X|) when mask_oversubtraction '
                'is 0, else |E|^2 / (|E|^2 + mask_oversubtraction * N), N = '
                '|X - E|^2 averaged over the mask_noise_frames frames '
                'centred on each (scipy.ndimage.uniform_filter1d, mode '
                'reflect)',
        'pcs': 'when output_pcs s > 0: after the mask or mix, the caller '
               'stretches each output window (segan_jax.pcs.stretch, '
               'preemphasis as the model\'s): 400-point Hamming frames, hop '
               '100, |Y| of the de-emphasised spectrum -> expm1(w '
               'log1p(|Y|)), w = 1 + s (PCS400 weight - 1), phase kept',
    }

  def with_overrides(self, **overrides: Any) -> OutputSettings:
    """These settings with those of ``overrides`` that are not None."""
    unknown = set(overrides) - set(NAMES)
    if unknown:
      raise ValueError(f'the output settings are {", ".join(NAMES)}; not '
                       f'{", ".join(sorted(unknown))}')
    return dataclasses.replace(self, **{
        name: value for name, value in overrides.items() if value is not None})

  @property
  def least_gain(self) -> float:
    """The least gain on the input that the attenuation limit allows (0:
    none): the share of it mixed back, or the floor of the mask's gain."""
    return audio.attenuation_floor(self.attenuation_limit_db)

  def apply(self, noisy: np.ndarray, enhanced: np.ndarray,
            preemphasis: float = 0.0) -> np.ndarray:
    """The output windows for pre-emphasised input windows ``noisy`` and
    G's output for them, ``enhanced`` (both ``[..., window]``).

    On pre-emphasised windows: the mask's gain in a bin is a ratio of two
    signals through the same filter, so it is the de-emphasised one's; and
    the mix is linear, like the filters after it, so mixing windows equals
    mixing the restored signals. PCS (`output_pcs`) is not linear: it is
    computed on the spectrum that ``preemphasis`` restores (pcs.stretch).
    """
    return pcs.stretch(self._unstretched(noisy, enhanced), self.output_pcs,
                       preemphasis)

  def _unstretched(self, noisy: np.ndarray,
                   enhanced: np.ndarray) -> np.ndarray:
    floor = self.least_gain
    if self.output_mask:
      return mask_with(noisy, enhanced, floor=floor,
                       oversubtraction=self.mask_oversubtraction,
                       noise_frames=self.mask_noise_frames)
    if floor:
      return (1.0 - floor) * enhanced + floor * noisy
    return enhanced


# The settings' names: the Config fields, flags and enhance-time overrides of
# the same names.
NAMES = tuple(field.name for field in dataclasses.fields(OutputSettings))


def _check_mask(oversubtraction: float, noise_frames: int) -> None:
  """ValueError unless `mask_gain` can take these settings. A centred
  average needs an odd count of frames."""
  if not oversubtraction >= 0.0:
    raise ValueError('mask_oversubtraction must be >= 0 (0: the ratio gain), '
                     f'got {oversubtraction}')
  if not (isinstance(noise_frames, (int, np.integer)) and noise_frames >= 1
          and noise_frames % 2 == 1):
    raise ValueError('mask_noise_frames must be an odd count >= 1 (1: no '
                     f'smoothing), got {noise_frames}')


def mask_gain(x: np.ndarray, e: np.ndarray, oversubtraction: float = 0.0,
              noise_frames: int = 1) -> np.ndarray:
  """The gain per STFT bin that G's output ``e`` implies for the input ``x``.

  With ``oversubtraction`` 0, the ratio min(1, |e| / |x|). With α > 0, the
  Wiener gain |e|² / (|e|² + α N): what G removed, N = |x − e|², taken as the
  noise estimate and weighted by α (over-subtraction, as in spectral
  subtraction), so that a bin G only partly cleaned is attenuated further.
  With ``noise_frames`` k > 1, N is first averaged over the k frames centred
  on each (the last axis is time): noise changes more slowly than speech, and
  a smoothed estimate does not swing from frame to frame into the isolated
  tones of "musical noise". The ratio gain has no noise estimate and ignores
  it. Both gains lie in [0, 1]. A bin where the input is silent stays silent
  whatever its gain.
  """
  _check_mask(oversubtraction, noise_frames)
  if not oversubtraction:
    return np.minimum(1.0, np.abs(e) / np.maximum(np.abs(x), 1e-12))
  speech = np.abs(e)**2
  noise = np.abs(x - e)**2
  if noise_frames > 1:
    noise = ndimage.uniform_filter1d(noise, noise_frames, axis=-1,
                                     mode='reflect')
  total = speech + oversubtraction * noise
  return np.where(total > 0, speech / np.maximum(total, 1e-30), 1.0)


def mask_with(noisy: np.ndarray, enhanced: np.ndarray, floor: float = 0.0,
              n_fft: int = audio.MASK_FFT, oversubtraction: float = 0.0,
              noise_frames: int = 1) -> np.ndarray:
  """``noisy`` filtered by the gain that ``enhanced`` implies, per STFT bin.

  The gain is `mask_gain` of the STFTs of ``noisy`` and ``enhanced`` (the
  ratio min(1, |E| / |X|), or the Wiener gain with ``oversubtraction``), at
  least ``floor``. The result keeps the input's phase and fine structure and
  only attenuates it, so where G distorts a voice it has not learned, the
  distortion does not reach the output; what G removes, it still removes. A
  gain of 1 everywhere gives ``noisy`` back exactly.

  Args:
    noisy: signals ``[..., T]``.
    enhanced: G's outputs for them, the same shape.
    floor: the least gain (the attenuation limit; 0: none).
    n_fft: frame length (Hann, 75 % overlap).
    oversubtraction: 0 for the ratio gain; α > 0 for the Wiener gain.
    noise_frames: frames the Wiener gain's noise estimate is averaged over
      (odd; 1: none).

  Returns:
    Float32 signals of ``noisy``'s shape.
  """
  noisy = np.asarray(noisy, np.float32)
  enhanced = np.asarray(enhanced, np.float32)
  if noisy.shape != enhanced.shape:
    raise ValueError(f'mask_with: shapes differ: {noisy.shape} and '
                     f'{enhanced.shape}')
  length = noisy.shape[-1]
  if n_fft > length:
    raise ValueError(f'mask_with: {n_fft}-sample frames need signals at '
                     f'least that long, got {length}')
  frames = dict(nperseg=n_fft, noverlap=3 * n_fft // 4, window='hann')
  _, _, x = signal.stft(noisy, axis=-1, **frames)
  _, _, e = signal.stft(enhanced, axis=-1, **frames)
  gain = np.maximum(mask_gain(x, e, oversubtraction, noise_frames), floor)
  _, y = signal.istft(gain * x, time_axis=-1, freq_axis=-2, **frames)
  return y[..., :length].astype(np.float32)
