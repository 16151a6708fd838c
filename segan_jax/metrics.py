"""Objective speech-quality metrics used in the SEGAN paper.

PESQ (ITU-T P.862.2 wide-band, package `pesq`), STOI (package `pystoi`) and
the measures of Hu & Loizou (2008), "Evaluation of objective quality measures
for speech enhancement": segmental SNR, log-likelihood ratio (LLR), weighted
spectral slope (WSS) and the composite regressions CSIG, CBAK and COVL.

Framing follows Loizou's composite-measure code: 30 ms Hann-windowed frames
every 7.5 ms (75 % overlap), whole frames only, his frame count (the final
7.5 ms are never framed). SSNR averages every frame's SNR clipped to
[-10, 35] dB, so digitally silent clean frames count as -10 dB. LLR (LPC order
10 below 10 kHz, 16 above; not clipped) and WSS average the best (lowest) 95 %
of frames, the count rounded half to even. These match the reference scores
in shared/data/reference_metrics.json to their 6 printed decimals.

All inputs are float 1-D signals at the same rate (16 kHz for PESQ-WB) and
equal length, `clean` being the reference. Everything is NumPy on the CPU;
`evaluate_pairs` spreads files over processes.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pesq as pesq_lib
import pystoi

from segan_jax.audio import SAMPLE_RATE

METRIC_NAMES = ('pesq', 'stoi', 'ssnr', 'llr', 'wss', 'csig', 'cbak', 'covl')

# Hu & Loizou conventions.
_FRAME_MS = 30
_SSNR_MIN_DB = -10.0
_SSNR_MAX_DB = 35.0
_BEST_FRACTION = 0.95  # LLR and WSS drop the worst 5 % of frames.
_EPS = np.finfo(np.float64).eps

# Klatt (1982) critical bands for WSS: centre frequencies and bandwidths, Hz.
_WSS_CENTRE_HZ = np.array([
    50.0, 120.0, 190.0, 260.0, 330.0, 400.0, 470.0, 540.0, 617.372, 703.378,
    798.717, 904.128, 1020.38, 1148.30, 1288.72, 1442.54, 1610.70, 1794.16,
    1993.93, 2211.08, 2446.71, 2701.97, 2978.04, 3276.17, 3597.63])
_WSS_BANDWIDTH_HZ = np.array([
    70.0, 70.0, 70.0, 70.0, 70.0, 70.0, 70.0, 77.3724, 86.0056, 95.3398,
    105.411, 116.256, 127.914, 140.423, 153.823, 168.154, 183.457, 199.776,
    217.153, 235.631, 255.255, 276.072, 298.126, 321.465, 346.136])
_WSS_KMAX = 20.0
_WSS_KLOCMAX = 1.0


# ----------------------------------------------------------------------------
# Input checks.


def _validate(clean: np.ndarray, processed: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
  """Returns both signals as float64 1-D arrays or raises a one-line error."""
  clean = np.asarray(clean, dtype=np.float64)
  processed = np.asarray(processed, dtype=np.float64)
  for name, x in (('clean', clean), ('processed', processed)):
    if x.ndim != 1:
      raise ValueError(f'{name} signal must be 1-D, got shape {x.shape}.')
    if x.size == 0:
      raise ValueError(f'{name} signal is empty.')
    if not np.all(np.isfinite(x)):
      raise ValueError(f'{name} signal has non-finite (NaN or inf) samples.')
  if clean.shape != processed.shape:
    raise ValueError(f'clean and processed lengths differ: {clean.size} vs '
                     f'{processed.size} samples.')
  if not np.any(clean):
    raise ValueError('clean signal is all zeros (silence).')
  return clean, processed


def _frame_geometry(sample_rate: int) -> tuple[int, int]:
  """Frame length and hop in samples: 30 ms frames, 75 % overlap."""
  length = int(round(_FRAME_MS * sample_rate / 1000))
  return length, length // 4


def _frames(x: np.ndarray, sample_rate: int) -> np.ndarray:
  """Hann-windowed frames, shape `[num_frames, frame_length]`."""
  length, hop = _frame_geometry(sample_rate)
  # Loizou's count: len/hop - length/hop frames, i.e. never the last full hop.
  num_frames = x.size // hop - length // hop
  if num_frames < 1:
    raise ValueError(f'signal too short: {x.size} samples, need at least '
                     f'{length + hop} at {sample_rate} Hz.')
  starts = np.arange(num_frames) * hop
  frames = x[starts[:, None] + np.arange(length)]
  # MATLAB's `hanning`: no zero end points.
  window = 0.5 * (1.0 - np.cos(2.0 * np.pi * np.arange(1, length + 1) /
                               (length + 1)))
  return frames * window


def _mean_of_best(values: np.ndarray, fraction: float = _BEST_FRACTION
                  ) -> float:
  """Mean of the lowest `fraction` of `values`."""
  # Python's round (half to even), as the reference scores do: it differs from
  # MATLAB's round only when size * fraction ends in exactly .5.
  count = round(values.size * fraction)
  return float(np.mean(np.sort(values)[:max(count, 1)]))


# ----------------------------------------------------------------------------
# PESQ and STOI.


def pesq_wb(clean: np.ndarray, processed: np.ndarray,
            sample_rate: int = SAMPLE_RATE) -> float:
  """Wide-band PESQ (P.862.2 MOS-LQO, about 1.04 to 4.64)."""
  clean, processed = _validate(clean, processed)
  if sample_rate != 16000:
    raise ValueError(f'PESQ wide-band needs 16000 Hz, got {sample_rate}.')
  if not np.any(processed):
    # The package would fail with an unhelpful NaN conversion error.
    raise ValueError('PESQ failed: processed signal is all zeros (silence).')
  try:
    return float(pesq_lib.pesq(sample_rate, clean, processed, 'wb'))
  except Exception as e:  # pylint: disable=broad-except
    # The package raises its own error types, often with a bytes message;
    # callers want one ValueError line they can prefix with the file name.
    detail = e.args[0] if len(e.args) == 1 else str(e)
    if isinstance(detail, bytes):
      detail = detail.decode(errors='replace')
    message = ' '.join(str(detail).split()) or type(e).__name__
    raise ValueError(f'PESQ failed: {message}') from e


def stoi(clean: np.ndarray, processed: np.ndarray,
         sample_rate: int = SAMPLE_RATE) -> float:
  """Short-time objective intelligibility (Taal et al. 2011), 0 to 1."""
  clean, processed = _validate(clean, processed)
  return float(pystoi.stoi(clean, processed, sample_rate, extended=False))


# ----------------------------------------------------------------------------
# Segmental SNR.


def _segmental_snr_frames(clean: np.ndarray, processed: np.ndarray,
                          sample_rate: int) -> np.ndarray:
  """Per-frame SNR in dB, clipped to [-10, 35]."""
  clean_frames = _frames(clean, sample_rate)
  # Framing is linear, so the windowed error is the difference of frames.
  error_frames = clean_frames - _frames(processed, sample_rate)
  signal_energy = np.sum(clean_frames**2, axis=1)
  noise_energy = np.sum(error_frames**2, axis=1)
  # The eps terms keep silent or perfect frames finite; clipping does the rest.
  snr = 10.0 * np.log10(signal_energy / (noise_energy + _EPS) + _EPS)
  return np.clip(snr, _SSNR_MIN_DB, _SSNR_MAX_DB)


def segmental_snr(clean: np.ndarray, processed: np.ndarray,
                  sample_rate: int = SAMPLE_RATE) -> float:
  """Segmental SNR in dB: mean over all frames of the clipped frame SNR."""
  clean, processed = _validate(clean, processed)
  return float(np.mean(_segmental_snr_frames(clean, processed, sample_rate)))


# ----------------------------------------------------------------------------
# Log-likelihood ratio.


def _lpc_order(sample_rate: int) -> int:
  return 10 if sample_rate < 10000 else 16


def _autocorrelation(frames: np.ndarray, order: int) -> np.ndarray:
  """Biased autocorrelation at lags 0..order, shape `[num_frames, order+1]`."""
  n = frames.shape[1]
  return np.stack([np.sum(frames[:, :n - k] * frames[:, k:], axis=1)
                   for k in range(order + 1)], axis=1)


def _levinson(r: np.ndarray, order: int) -> np.ndarray:
  """Prediction-error filters `[1, -a_1, ..., -a_p]` from autocorrelations."""
  num_frames = r.shape[0]
  a = np.zeros((num_frames, order))
  error = r[:, 0].copy()
  for i in range(order):
    # Reflection coefficient of step i+1 (a holds predictor coefficients).
    k = (r[:, i + 1] - np.sum(a[:, :i] * r[:, i:0:-1], axis=1)) / error
    a_prev = a[:, :i].copy()
    a[:, i] = k
    a[:, :i] = a_prev - k[:, None] * a_prev[:, ::-1]
    error = (1.0 - k * k) * error
  return np.concatenate([np.ones((num_frames, 1)), -a], axis=1)


def _llr_frames(clean: np.ndarray, processed: np.ndarray,
                sample_rate: int) -> np.ndarray:
  """Per-frame LLR: log of the clean-spectrum residual energy ratio."""
  order = _lpc_order(sample_rate)
  r_clean = _autocorrelation(_frames(clean, sample_rate), order)
  r_processed = _autocorrelation(_frames(processed, sample_rate), order)
  a_clean = _levinson(r_clean, order)
  a_processed = _levinson(r_processed, order)
  # Both filters are scored on the clean autocorrelation (Toeplitz) matrix.
  lags = np.abs(np.arange(order + 1)[:, None] - np.arange(order + 1))
  toeplitz = r_clean[:, lags]
  numerator = np.einsum('fi,fij,fj->f', a_processed, toeplitz, a_processed)
  denominator = np.einsum('fi,fij,fj->f', a_clean, toeplitz, a_clean)
  return np.log(numerator / denominator)


def llr(clean: np.ndarray, processed: np.ndarray,
        sample_rate: int = SAMPLE_RATE) -> float:
  """Log-likelihood ratio (0 is best), mean of the best 95 % of frames."""
  clean, processed = _validate(clean, processed)
  # Loizou adds eps to both signals so that silent frames keep an invertible
  # autocorrelation; it is far below 16-bit resolution otherwise.
  return _mean_of_best(_llr_frames(clean + _EPS, processed + _EPS,
                                   sample_rate))


# ----------------------------------------------------------------------------
# Weighted spectral slope.


def _critical_band_filters(sample_rate: int, fft_size: int) -> np.ndarray:
  """Gaussian-shaped Klatt band filters on the FFT bins, `[25, fft_size/2]`."""
  nyquist = sample_rate / 2
  half = fft_size // 2
  centre_bins = np.floor(_WSS_CENTRE_HZ / nyquist * half)
  widths = _WSS_BANDWIDTH_HZ / nyquist * half
  # Wider bands get lower peaks so each band integrates similar energy.
  norm = np.log(_WSS_BANDWIDTH_HZ[0]) - np.log(_WSS_BANDWIDTH_HZ)
  bins = np.arange(half)
  filters = np.exp(-11.0 * ((bins - centre_bins[:, None]) / widths[:, None])**2
                   + norm[:, None])
  # Cut each filter off 30 dB below its peak.
  min_factor = np.exp(-30.0 / (2.0 * 2.303))
  return filters * (filters > min_factor)


def _band_energies_db(frames: np.ndarray, filters: np.ndarray,
                      fft_size: int) -> np.ndarray:
  spectrum = np.abs(np.fft.fft(frames, fft_size, axis=1))**2
  energy = spectrum[:, :fft_size // 2] @ filters.T
  return 10.0 * np.log10(np.maximum(energy, 1e-10))


def _nearest_peaks(energy: np.ndarray) -> np.ndarray:
  """Energy of the spectral peak nearest to each band, `[frames, bands-1]`.

  Follows Loizou's search exactly: on a rising slope it walks right while the
  slope stays positive and takes the band *before* where it stopped; on a
  falling or flat slope it walks left to the last rise and takes the band after.
  """
  slope = np.diff(energy, axis=1)
  num_frames, num_slopes = slope.shape
  rising = slope > 0
  # First index >= i with a non-rising slope (num_slopes if none).
  next_stop = np.empty((num_frames, num_slopes), dtype=np.int64)
  stop = np.full(num_frames, num_slopes)
  for i in range(num_slopes - 1, -1, -1):
    stop = np.where(rising[:, i], stop, i)
    next_stop[:, i] = stop
  # Last index <= i with a rising slope (-1 if none).
  prev_rise = np.empty((num_frames, num_slopes), dtype=np.int64)
  rise = np.full(num_frames, -1)
  for i in range(num_slopes):
    rise = np.where(rising[:, i], i, rise)
    prev_rise[:, i] = rise
  index = np.where(rising, next_stop - 1, prev_rise + 1)
  return np.take_along_axis(energy, index, axis=1)


def _wss_frames(clean: np.ndarray, processed: np.ndarray,
                sample_rate: int) -> np.ndarray:
  """Per-frame weighted spectral slope distance."""
  length, _ = _frame_geometry(sample_rate)
  fft_size = 1 << int(np.ceil(np.log2(2 * length)))
  filters = _critical_band_filters(sample_rate, fft_size)
  energies = [_band_energies_db(_frames(x, sample_rate), filters, fft_size)
              for x in (clean, processed)]
  weights = []
  for energy in energies:
    # Bands near the frame's global maximum and near a local peak count most.
    w_max = _WSS_KMAX / (_WSS_KMAX + energy.max(axis=1, keepdims=True)
                         - energy[:, :-1])
    w_local = _WSS_KLOCMAX / (_WSS_KLOCMAX + _nearest_peaks(energy)
                              - energy[:, :-1])
    weights.append(w_max * w_local)
  w = 0.5 * (weights[0] + weights[1])
  slope_diff = np.diff(energies[0], axis=1) - np.diff(energies[1], axis=1)
  return np.sum(w * slope_diff**2, axis=1) / np.sum(w, axis=1)


def wss(clean: np.ndarray, processed: np.ndarray,
        sample_rate: int = SAMPLE_RATE) -> float:
  """Weighted spectral slope (0 is best), mean of the best 95 % of frames."""
  clean, processed = _validate(clean, processed)
  return _mean_of_best(_wss_frames(clean + _EPS, processed + _EPS,
                                   sample_rate))


# ----------------------------------------------------------------------------
# Composite measures.


# pylint: disable-next=redefined-outer-name
def composite_from(pesq: float, llr: float, wss: float,
                   ssnr: float) -> dict[str, float]:
  """Hu & Loizou (2008) regressions, each clipped to the MOS range [1, 5]."""
  csig = 3.093 - 1.029 * llr + 0.603 * pesq - 0.009 * wss
  cbak = 1.634 + 0.478 * pesq - 0.007 * wss + 0.063 * ssnr
  covl = 1.594 + 0.805 * pesq - 0.512 * llr - 0.007 * wss
  return {name: float(np.clip(value, 1.0, 5.0))
          for name, value in (('csig', csig), ('cbak', cbak), ('covl', covl))}


def composite(clean: np.ndarray, processed: np.ndarray,
              sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
  """CSIG (signal distortion), CBAK (background) and COVL (overall), 1 to 5."""
  values = _composite_inputs(clean, processed, sample_rate)
  return composite_from(**values)


def _composite_inputs(clean: np.ndarray, processed: np.ndarray,
                      sample_rate: int) -> dict[str, float]:
  """PESQ, LLR, WSS and SSNR: what the composite regressions need."""
  return {
      'pesq': pesq_wb(clean, processed, sample_rate),
      'llr': llr(clean, processed, sample_rate),
      'wss': wss(clean, processed, sample_rate),
      'ssnr': segmental_snr(clean, processed, sample_rate),
  }


def all_metrics(clean: np.ndarray, processed: np.ndarray,
                sample_rate: int = SAMPLE_RATE) -> dict[str, float]:
  """Every metric for one pair: a flat dict with keys `METRIC_NAMES`."""
  clean, processed = _validate(clean, processed)
  values = _composite_inputs(clean, processed, sample_rate)
  values.update(composite_from(**values))
  values['stoi'] = stoi(clean, processed, sample_rate)
  return {name: values[name] for name in METRIC_NAMES}


def _indexed_metrics(index: int, clean: np.ndarray, processed: np.ndarray
                     ) -> dict[str, float]:
  """`all_metrics` whose errors say which pair failed."""
  try:
    return all_metrics(clean, processed)
  except ValueError as e:
    raise ValueError(f'pair {index}: {e}') from None


def evaluate_pairs(pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                   num_workers: int | None = None) -> list[dict[str, float]]:
  """`all_metrics` of each (clean, processed) pair, in input order.

  Files run in parallel processes (PESQ and STOI are single-threaded). Scripts
  calling this must guard their entry point with `if __name__ == '__main__'`,
  as worker processes re-import the main module.

  Args:
    pairs: (clean, processed) signals at 16 kHz.
    num_workers: processes to use; defaults to `os.cpu_count()`. With one
      worker or one pair everything runs in this process.

  Returns:
    One dict per pair, keys `METRIC_NAMES`.

  Raises:
    ValueError: for the first bad pair, its message starting 'pair <index>:'.
  """
  pairs = list(pairs)
  if num_workers is not None and num_workers < 1:
    raise ValueError(f'num_workers must be >= 1, got {num_workers}.')
  workers = min(num_workers or os.cpu_count() or 1, len(pairs))
  if workers <= 1:
    return [_indexed_metrics(i, c, p) for i, (c, p) in enumerate(pairs)]
  # forkserver, not fork: callers (training loops) may have JAX threads and
  # accelerator state that a plain fork would copy in an inconsistent state.
  context = multiprocessing.get_context('forkserver')
  with concurrent.futures.ProcessPoolExecutor(workers,
                                              mp_context=context) as pool:
    return list(pool.map(_indexed_metrics, range(len(pairs)),
                         [c for c, _ in pairs], [p for _, p in pairs]))


def mean_metrics(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
  """Mean of each metric over `rows`, plus `n_files`."""
  if not rows:
    raise ValueError('no rows to average.')
  means = {name: float(np.mean([row[name] for row in rows]))
           for name in rows[0] if name != 'n_files'}
  means['n_files'] = len(rows)
  return means
