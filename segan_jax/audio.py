"""Waveform utilities: audio files, resampling, pre-/de-emphasis, windowing.

Everything here is plain NumPy (plus soundfile and soxr) so it can run inside
input pipelines without touching an accelerator.
"""

import os

import numpy as np
import soundfile
import soxr
from scipy import signal

SAMPLE_RATE = 16000
PREEMPHASIS = 0.95


def preemphasis(x: np.ndarray, coeff: float = PREEMPHASIS) -> np.ndarray:
  """Applies the first-order high-pass `y[n] = x[n] - coeff * x[n-1]`.

  Works along the last axis; the first sample is passed through unchanged
  (i.e. the signal is assumed to be preceded by silence).

  Args:
    x: waveform(s), shape `[..., T]`.
    coeff: pre-emphasis coefficient.

  Returns:
    float32 array with the same shape as `x`.
  """
  # Float64 internally so that the float32 result is the correctly rounded one
  # and `deemphasis` can invert it to well below 1e-5.
  x = np.asarray(x, dtype=np.float64)
  y = x.copy()
  y[..., 1:] -= coeff * x[..., :-1]
  return y.astype(np.float32)


def restoration_filter(coeff: float = PREEMPHASIS, highpass_hz: float = 0.0
                       ) -> tuple[np.ndarray, np.ndarray]:
  """``(b, a)`` of the filter that turns G's output back into audio.

  De-emphasis, the all-pole ``1 / (1 - coeff z^-1)`` that inverts
  `preemphasis`, followed (when ``highpass_hz`` > 0) by a 1st-order
  Butterworth high-pass at ``highpass_hz`` for SAMPLE_RATE audio, as one IIR
  filter (its state is then one array, carried across blocks by streaming
  enhancement).
  """
  b, a = np.array([1.0]), np.array([1.0, -coeff])
  if highpass_hz:
    high_b, high_a = signal.butter(1, highpass_hz, 'highpass', fs=SAMPLE_RATE)
    b, a = high_b, np.polymul(a, high_a)
  return b, a


def deemphasis(y: np.ndarray, coeff: float = PREEMPHASIS,
               highpass_hz: float = 0.0) -> np.ndarray:
  """Inverts `preemphasis` (then high-passes; see `restoration_filter`).

  Args:
    y: pre-emphasised waveform(s), shape `[..., T]`.
    coeff: the coefficient used for pre-emphasis.
    highpass_hz: cutoff of the optional high-pass (0: none).

  Returns:
    float32 array with the same shape as `y`.
  """
  y = np.asarray(y, dtype=np.float64)
  if y.shape[-1] == 0:
    # lfilter rejects empty axes; an empty signal is its own inverse.
    return y.astype(np.float32)
  b, a = restoration_filter(coeff, highpass_hz)
  return signal.lfilter(b, a, y, axis=-1).astype(np.float32)


# Frames of the output mask (segan_jax/output_settings.py) and of the loss on
# it: 64 ms (hop 16 ms), fine enough in frequency to separate a voice's
# harmonics from the noise between them.
MASK_FFT = 1024


def attenuation_floor(limit_db: float) -> float:
  """The least gain an attenuation limit of ``limit_db`` allows (0: none)."""
  if not limit_db:
    return 0.0
  return 10.0**(-limit_db / 20)


def _check_window_args(length: int, window: int, hop: int) -> None:
  if length < 0:
    raise ValueError(f'length must be >= 0, got {length}.')
  if window <= 0 or hop <= 0:
    raise ValueError(f'window and hop must be positive, got {window}, {hop}.')


def num_windows(length: int, window: int, hop: int) -> int:
  """Number of `window`-sample windows taken every `hop` samples.

  The last window is zero-padded rather than dropped, so every sample is
  covered and any non-empty utterance yields at least one window.

  Args:
    length: number of samples in the utterance.
    window: window size in samples.
    hop: distance between window starts in samples.

  Returns:
    `1 + ceil(max(0, length - window) / hop)`, or 0 for an empty utterance.
  """
  _check_window_args(length, window, hop)
  if length == 0:
    return 0
  # Integer ceil-division keeps this exact for very long inputs.
  return 1 + -(-max(0, length - window) // hop)


def window_starts(length: int, window: int, hop: int) -> np.ndarray:
  """Start offsets (int64) of the windows counted by `num_windows`."""
  n = num_windows(length, window, hop)
  return np.arange(n, dtype=np.int64) * hop


def extract_window(x: np.ndarray, start: int, window: int) -> np.ndarray:
  """Returns `x[..., start:start + window]`, zero-padded at the end.

  Args:
    x: waveform(s), shape `[..., T]`.
    start: first sample of the window (>= 0; may lie past the end of `x`).
    window: window size in samples.

  Returns:
    Array of shape `[..., window]` with the dtype of `x`.
  """
  if start < 0:
    raise ValueError(f'start must be >= 0, got {start}.')
  if window <= 0:
    raise ValueError(f'window must be positive, got {window}.')
  x = np.asarray(x)
  chunk = x[..., start:start + window]
  pad = window - chunk.shape[-1]
  if pad == 0:
    return chunk.copy()
  widths = [(0, 0)] * (x.ndim - 1) + [(0, pad)]
  return np.pad(chunk, widths)


# What enhance and the dataset builders take from a folder. Hidden files are
# left out: "._x.wav" beside x.wav is macOS metadata, not audio.
AUDIO_EXTENSIONS = ('.wav', '.flac', '.ogg', '.aiff', '.aif')


def is_audio_file_name(name: str) -> bool:
  name = os.path.basename(name)
  return name.lower().endswith(AUDIO_EXTENSIONS) and not name.startswith('.')


class AudioError(ValueError):
  """An audio file that cannot be used; the message names the file."""


def audio_info(path: str | os.PathLike) -> soundfile._SoundFileInfo:
  """The header of an audio file, checked: the one validation every reader
  (enhance, evaluate, dataset builders) goes through, so a bad file gets the
  same one-line AudioError everywhere.

  Raises AudioError for a missing path, a folder, an empty (0-byte) file, a
  file soundfile cannot parse (text, truncated header, unknown format) and
  audio without frames.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise AudioError(f'{path}: no such file')
  if not os.path.isfile(path):
    raise AudioError(f'{path}: not a file')
  if os.path.getsize(path) == 0:
    raise AudioError(f'{path}: empty file (0 bytes), not audio')
  try:
    info = soundfile.info(path)
  except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
    raise AudioError(f'{path}: not a readable audio file ({_reason(e)})'
                     ) from None
  if info.frames <= 0:
    raise AudioError(f'{path}: empty audio (0 samples)')
  if info.samplerate <= 0 or info.channels <= 0:
    raise AudioError(f'{path}: invalid header ({info.samplerate} Hz, '
                     f'{info.channels} channels)')
  return info


def check_finite(data: np.ndarray, path: str | os.PathLike) -> None:
  """AudioError unless every sample is finite (float files can hold NaN)."""
  if not np.isfinite(data).all():
    raise AudioError(f'{os.fspath(path)}: contains NaN or infinite samples')


def _reason(error: Exception) -> str:
  # libsndfile's messages end with the useful part after the last colon.
  return str(error).split(':')[-1].strip() or 'unreadable'


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
  """Reads any soundfile-supported file as float32 ``[frames, channels]``.

  Integer PCM is scaled to [-1, 1); float files are returned as stored.
  Raises AudioError (one line naming the file) for missing, unreadable,
  non-audio, empty or non-finite audio.
  """
  path = os.fspath(path)
  audio_info(path)
  try:
    data, rate = soundfile.read(path, dtype='float32', always_2d=True)
  except (soundfile.LibsndfileError, RuntimeError, TypeError) as e:
    raise AudioError(f'{path}: not a readable audio file ({_reason(e)})'
                     ) from None
  if data.shape[0] == 0:  # a header that promised frames the data lacks
    raise AudioError(f'{path}: empty audio (0 samples)')
  check_finite(data, path)
  return data, int(rate)


def to_mono(data: np.ndarray) -> np.ndarray:
  """Averages the channels of ``[frames, channels]`` into ``[frames]``."""
  return data.mean(axis=1) if data.ndim == 2 else data


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
  """Band-limited resampling (soxr, very high quality) along axis 0."""
  if rate_in == rate_out:
    return np.asarray(x, np.float32)
  return soxr.resample(np.asarray(x, np.float32), rate_in, rate_out,
                       quality='VHQ').astype(np.float32)


def read_mono_16k(path: str | os.PathLike) -> np.ndarray:
  """A file as the models see it: mono float32 at SAMPLE_RATE."""
  data, rate = read_audio(path)
  return resample(to_mono(data), rate, SAMPLE_RATE)


def to_int16(x: np.ndarray) -> np.ndarray:
  """Float [-1, 1] to 16-bit PCM, rounding and clipping like soundfile."""
  return np.clip(np.round(np.asarray(x) * 32768.0), -32768,
                 32767).astype(np.int16)


def from_int16(x: np.ndarray) -> np.ndarray:
  return np.asarray(x, np.float32) / 32768.0
