"""Perceptual contrast stretching (PCS) of a 16 kHz signal's spectrum.

Chao et al., 2022, "Perceptual Contrast Stretching on Target Feature for
Speech Enhancement" (arXiv 2203.17152): each STFT bin's log-magnitude
log(1 + |X|) is multiplied by a weight of its band, and the stretched
magnitude exp(L) - 1 is resynthesised with the bin's own phase. The weights
(PCS400: 400-point Hamming frames, hop 100, 201 bins) rise above 1 where
hearing is most sensitive (bins 10-109, 0.4-4.4 kHz), so loud bins grow more
than quiet ones there: the contrast between speech and residual noise is
stretched. ``strength`` s scales the stretch, weight 1 + s (w - 1): 0 is the
identity (returned unchanged), 1 the paper's PCS400.

Plain NumPy and SciPy, like output_settings.py.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

N_FFT = 400
HOP = 100

# PCS400's weight per band of 400-point bins [first, last + 1), from the
# paper's definition (data, cited above); the bins not listed weigh 1.
_BAND_WEIGHTS = (
    (3, 5, 1.070175439), (5, 8, 1.182456140), (8, 10, 1.287719298),
    (10, 110, 1.4), (110, 130, 1.322807018), (130, 160, 1.238596491),
    (160, 190, 1.161403509), (190, 201, 1.077192982))


def band_weights(strength: float = 1.0) -> np.ndarray:
  """The weight of each of the 201 bins, 1 + strength (w - 1)."""
  weights = np.ones(N_FFT // 2 + 1)
  for first, end, weight in _BAND_WEIGHTS:
    weights[first:end] = weight
  return 1.0 + strength * (weights - 1.0)


def check_strength(strength: float) -> None:
  """ValueError unless `stretch` can take ``strength``."""
  if not 0.0 <= strength <= 2.0:
    raise ValueError('output_pcs must be in [0, 2] (0: off, 1: PCS400), got '
                     f'{strength}')


def stretch(x: np.ndarray, strength: float = 1.0,
            preemphasis: float = 0.0) -> np.ndarray:
  """``x`` (``[..., T]``, 16 kHz) with its spectrum contrast-stretched.

  With ``preemphasis`` c, ``x`` is taken to be pre-emphasised (x[t] -
  c x[t-1]): the stretch is computed on the magnitude of the signal it
  restores to, |X| / |1 - c e^(-jw)| (what PCS is defined on), and applied to
  ``x`` as the gain it implies, so that stretching pre-emphasised windows
  equals stretching the signal. Phase is kept. Strength 0 gives ``x`` back
  unchanged.
  """
  check_strength(strength)
  x = np.asarray(x, np.float32)
  if not strength:
    return x
  length = x.shape[-1]
  if length < N_FFT:
    raise ValueError(f'PCS: {N_FFT}-sample frames need signals at least that '
                     f'long, got {length}')
  frames = dict(fs=1.0, nperseg=N_FFT, noverlap=N_FFT - HOP,
                window='hamming')
  _, _, spectrum = signal.stft(x, axis=-1, **frames)
  omega = np.pi * np.arange(N_FFT // 2 + 1) / (N_FFT // 2)
  emphasis = np.abs(1.0 - preemphasis * np.exp(-1j * omega))[:, None]
  # scipy's STFT scales frames by 1 / sum(window); PCS's log1p acts on the
  # unscaled magnitude of librosa's, so undo it for the gain.
  scale = signal.get_window('hamming', N_FFT).sum()
  magnitude = np.abs(spectrum) * scale / emphasis
  weights = band_weights(strength)[:, None]
  stretched = np.expm1(weights * np.log1p(magnitude))
  gain = np.where(magnitude > 0, stretched / np.maximum(magnitude, 1e-30), 1.0)
  _, y = signal.istft(gain * spectrum, time_axis=-1, freq_axis=-2, **frames)
  return y[..., :length].astype(np.float32)
