"""The band above 8 kHz of an input at more than 16 kHz, gated by G's gain.

G runs at 16 kHz, so what it gives back holds nothing above 8 kHz. For input
at a higher rate, the output adds back the input's own band above the
model's (the input minus the input through the same resampler pair that G's
signal takes, so that a gain of 1 gives the input back exactly), attenuated
frame by frame by the gain G applied to its top band: per 32 ms Hann frame
(hop 8 ms) at 16 kHz, sqrt(E_enhanced / E_noisy) of the energy above
`BAND_HZ`, limited to [floor, 1] (floor: the attenuation limit's least
gain), interpolated linearly between frame centres. Where G keeps its top
band (speech, fricatives) the high band is kept; where G removes it (noise
between words) the high band goes too. `HighBandGate` streams this in
blocks of any size, as `enhance_files.enhance_file` reads a file.

Why 5 kHz: of G's top bands from 4 to 7 kHz, 5-8 kHz's gain gives
vbd_test_48k's output the band SNR above 8 kHz closest to the best and its
energy there closest to clean's (docs/enhance_and_evaluate.md,
experiments/high_band_check.py).

Plain NumPy (and soxr), like audio.py.
"""

from __future__ import annotations

import numpy as np
import soxr

from segan_jax import audio

# The settings of `OutputSettings.output_high_band`: gated (this module) or
# none (the output holds only what G gives back, nothing above 8 kHz).
HIGH_BANDS = ('gated', 'none')
# G's top band whose gain the input's band above 8 kHz takes.
BAND_HZ = 5000.0
# Frames of that gain at 16 kHz: 32 ms, hop 8 ms (fine enough in time for a
# fricative's onset).
FRAME = 512
HOP = 128


def band_gain(noisy: np.ndarray, enhanced: np.ndarray,
              floor: float = 0.0) -> np.ndarray:
  """G's gain above `BAND_HZ` in each frame: ``[frames, FRAME, C]`` of the
  16 kHz input and of G's output for it -> ``[frames, C]``.

  sqrt of the ratio of their energies above `BAND_HZ` (Hann window),
  limited to [floor, 1]; 1 where the input's band is silent (nothing there
  for G to have removed).
  """
  window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FRAME) / FRAME))
  band = np.fft.rfftfreq(FRAME, 1 / audio.SAMPLE_RATE) >= BAND_HZ
  energy = lambda x: np.sum(np.abs(np.fft.rfft(
      x * window[:, None], axis=1)[:, band])**2, axis=1)
  noisy_energy, enhanced_energy = energy(noisy), energy(enhanced)
  ratio = np.where(noisy_energy > 1e-20,
                   enhanced_energy / np.maximum(noisy_energy, 1e-20), 1.0)
  return np.clip(np.sqrt(ratio), floor, 1.0).astype(np.float32)


class HighBandGate:
  """Adds the gated band above 8 kHz to G's output at the input's rate.

  The caller pushes the input (at ``rate``) with its 16 kHz version as it
  reads them (`push_input`), and G's 16 kHz output with that output
  resampled to ``rate`` as they come (`push_output`, ``last`` for the final
  one), and gets back the full-band output, in order, as far as the gains
  are known; the last push gives back the rest. Frames and the resampler
  keep their state across pushes, so the result does not depend on the
  block sizes.
  """

  def __init__(self, rate: int, channels: int, floor: float = 0.0):
    if rate <= audio.SAMPLE_RATE:
      raise ValueError(f'the high band needs a rate above '
                       f'{audio.SAMPLE_RATE} Hz, got {rate}')
    self.rate, self.channels, self.floor = rate, channels, floor
    # The input through the resampler pair G's signal takes: its low band.
    self.up = soxr.ResampleStream(audio.SAMPLE_RATE, rate, channels,
                                  dtype='float32', quality='VHQ')
    empty = np.zeros((0, channels), np.float32)
    self.inputs, self.lows, self.outputs = empty, empty, empty  # at rate
    # 16 kHz, led by half a frame of zeros: frame k is centred on sample
    # k * HOP and starts at k * HOP of these buffers (whose first sample
    # is number `start16` of them).
    lead = np.zeros((FRAME // 2, channels), np.float32)
    self.noisy16, self.enhanced16, self.start16 = lead, lead.copy(), 0
    self.gains = np.zeros((0, channels), np.float32)
    self.first_gain = 0   # the frame of gains[0]
    self.emitted = 0      # samples given back (at rate)

  def push_input(self, x: np.ndarray, x16: np.ndarray,
                 last: bool = False) -> None:
    """The input ``[T, C]`` at its rate, and its 16 kHz version (what G
    sees), either possibly empty; ``last``: no more input comes."""
    x, x16 = self._2d(x), self._2d(x16)
    self.inputs = np.concatenate([self.inputs, x])
    self.lows = np.concatenate([self.lows,
                                self.up.resample_chunk(x16, last=last)])
    self.noisy16 = np.concatenate([self.noisy16, x16])

  def push_output(self, y16: np.ndarray, y: np.ndarray,
                  last: bool = False) -> np.ndarray:
    """G's 16 kHz output and it at the input's rate, the next samples of
    each; returns the next full-band output samples ``[n, C]``. ``last``
    (after the last `push_input`): returns all that is left."""
    self.enhanced16 = np.concatenate([self.enhanced16, self._2d(y16)])
    self.outputs = np.concatenate([self.outputs, self._2d(y)])
    if last:  # zeros after the end, so that every sample has its frames
      pad = lambda b: np.pad(b, ((0, FRAME), (0, 0)))
      self.noisy16, self.enhanced16 = pad(self.noisy16), pad(self.enhanced16)
    self._frames()
    n = min(len(self.inputs), len(self.lows), len(self.outputs))
    if not last:
      # Sample m lies between frames floor(p / HOP) and the next, at
      # p = m * 16000 / rate; both must be known.
      known = self.first_gain + len(self.gains) - 1
      n = min(n, max(0, -(-known * HOP * self.rate // audio.SAMPLE_RATE)
                     - self.emitted))
    m = self.emitted + np.arange(n)
    position = m * audio.SAMPLE_RATE / self.rate / HOP - self.first_gain
    k = np.minimum(np.floor(position).astype(np.int64),
                   max(len(self.gains) - 2, 0))
    if n:
      fraction = np.clip(position - k, 0.0, 1.0)[:, None]
      gain = (1 - fraction) * self.gains[k] + fraction * self.gains[
          np.minimum(k + 1, len(self.gains) - 1)]
    else:
      gain = np.zeros((0, self.channels), np.float32)
    out = self.outputs[:n] + gain * (self.inputs[:n] - self.lows[:n])
    self.inputs, self.lows, self.outputs = (
        self.inputs[n:], self.lows[n:], self.outputs[n:])
    self.emitted += n
    # Gains before the frame of the next sample are no longer needed.
    drop = max(0, min(len(self.gains) - 2, int(
        self.emitted * audio.SAMPLE_RATE / self.rate // HOP)
                      - self.first_gain))
    self.gains, self.first_gain = self.gains[drop:], self.first_gain + drop
    return out.astype(np.float32)

  def _frames(self) -> None:
    """The gains of the frames whose samples are all here."""
    have = min(len(self.noisy16), len(self.enhanced16))
    first = self.first_gain + len(self.gains)  # the next frame
    offset = first * HOP - self.start16
    count = max(0, (have - offset - FRAME) // HOP + 1)
    if not count:
      return
    starts = offset + np.arange(count) * HOP
    take = lambda b: np.stack([b[s:s + FRAME] for s in starts])
    gains = band_gain(take(self.noisy16), take(self.enhanced16), self.floor)
    self.gains = np.concatenate([self.gains, gains])
    consumed = offset + count * HOP  # the next frame starts here
    self.noisy16 = self.noisy16[consumed:]
    self.enhanced16 = self.enhanced16[consumed:]
    self.start16 += consumed

  def _2d(self, x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32).reshape(-1, self.channels)
