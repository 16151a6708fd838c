"""Tests for segan_jax.audio."""

import numpy as np
import pytest
from scipy import signal

from segan_jax import audio
from segan_jax import output_settings


def test_constants():
  assert audio.SAMPLE_RATE == 16000
  assert audio.PREEMPHASIS == 0.95


def test_preemphasis_small_example():
  x = np.array([1.0, 2.0, 0.0, -1.0], np.float32)
  # y[0] = x[0]; y[n] = x[n] - 0.95 * x[n-1].
  expected = np.array([1.0, 2.0 - 0.95, -1.9, -1.0], np.float32)
  y = audio.preemphasis(x)
  assert y.dtype == np.float32
  np.testing.assert_allclose(y, expected, atol=1e-7)


def test_preemphasis_custom_coeff():
  y = audio.preemphasis(np.array([2.0, 4.0]), coeff=0.5)
  np.testing.assert_allclose(y, [2.0, 3.0])


@pytest.mark.parametrize('shape', [(1,), (1000,), (3, 257), (2, 2, 64)])
def test_deemphasis_inverts_preemphasis(shape):
  x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
  y = audio.deemphasis(audio.preemphasis(x))
  assert y.dtype == np.float32
  assert y.shape == x.shape
  np.testing.assert_allclose(y, x, atol=1e-5)


def test_preemphasis_works_along_last_axis():
  x = np.random.default_rng(1).normal(size=(4, 50))
  batched = audio.preemphasis(x)
  for row, out in zip(x, batched):
    np.testing.assert_array_equal(audio.preemphasis(row), out)


def test_emphasis_on_empty_signal():
  assert audio.preemphasis(np.zeros(0)).shape == (0,)
  assert audio.deemphasis(np.zeros(0)).shape == (0,)


@pytest.mark.parametrize('length, expected', [
    (0, 0),
    (1, 1),
    (100, 1),
    (16384, 1),
    (16385, 2),
    (24576, 2),
    (24577, 3),
    (32768, 3),
])
def test_num_windows(length, expected):
  assert audio.num_windows(length, 16384, 8192) == expected


def test_num_windows_validates_arguments():
  with pytest.raises(ValueError):
    audio.num_windows(-1, 16, 8)
  with pytest.raises(ValueError):
    audio.num_windows(10, 0, 8)
  with pytest.raises(ValueError):
    audio.num_windows(10, 16, 0)


@pytest.mark.parametrize('length, window, hop', [
    (0, 16, 8), (5, 16, 8), (16, 16, 8), (17, 16, 8), (100, 16, 8),
    (100, 16, 16), (100, 16, 5), (101, 10, 30),
])
def test_window_starts(length, window, hop):
  starts = audio.window_starts(length, window, hop)
  assert starts.dtype == np.int64
  assert len(starts) == audio.num_windows(length, window, hop)
  np.testing.assert_array_equal(starts, np.arange(len(starts)) * hop)
  if length:
    # The last window reaches the end of the signal.
    assert starts[-1] + window >= length
  if length and hop <= window:
    # With overlapping (or abutting) windows none is pure padding.
    assert np.all(starts < length)


def test_extract_window_pads_with_zeros():
  x = np.arange(1, 11, dtype=np.float32)
  w = audio.extract_window(x, 6, 8)
  assert w.dtype == np.float32
  np.testing.assert_array_equal(w, [7, 8, 9, 10, 0, 0, 0, 0])
  np.testing.assert_array_equal(audio.extract_window(x, 0, 4), [1, 2, 3, 4])
  np.testing.assert_array_equal(audio.extract_window(x, 20, 3), [0, 0, 0])
  # Windows are copies, not views into the signal.
  audio.extract_window(x, 0, 4)[0] = 100.0
  assert x[0] == 1.0


@pytest.mark.parametrize('length, window, hop', [
    (100, 16, 8), (100, 16, 16), (7, 16, 8), (1000, 64, 24),
])
def test_windows_reassemble_signal(length, window, hop):
  x = np.random.default_rng(2).normal(size=length).astype(np.float32)
  starts = audio.window_starts(length, window, hop)
  total = np.zeros(starts[-1] + window, np.float32)
  counts = np.zeros_like(total)
  for start in starts:
    total[start:start + window] += audio.extract_window(x, start, window)
    counts[start:start + window] += 1
  # Every sample is covered, and averaging the overlaps gives it back.
  assert np.all(counts[:length] > 0)
  np.testing.assert_allclose(total[:length] / counts[:length], x, atol=1e-6)
  # Everything beyond the signal is zero padding.
  np.testing.assert_array_equal(total[length:], 0.0)


def test_restoration_filter_is_deemphasis_then_highpass():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 4000)).astype(np.float32)
  emphasised = audio.preemphasis(x, 0.95)
  np.testing.assert_allclose(audio.deemphasis(emphasised, 0.95), x, atol=1e-5)
  b, a = signal.butter(1, 80.0, 'highpass', fs=audio.SAMPLE_RATE)
  np.testing.assert_allclose(audio.deemphasis(emphasised, 0.95, 80.0),
                             signal.lfilter(b, a, x, axis=-1), atol=1e-4)
  # A DC offset in G's output is amplified 20x by de-emphasis alone, and
  # removed with the high-pass.
  offset = np.full(16000, 0.01, np.float32)
  assert audio.deemphasis(offset, 0.95)[-1] == pytest.approx(0.2, rel=1e-3)
  assert abs(audio.deemphasis(offset, 0.95, 80.0)[-1]) < 1e-4


def test_mask_with_gives_the_input_back_at_unit_gain_and_checks_shapes():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 4096)).astype(np.float32)
  np.testing.assert_allclose(output_settings.mask_with(x, x), x, atol=1e-5)
  # G louder than the input: the gain stays at 1 (a mask never amplifies).
  np.testing.assert_allclose(output_settings.mask_with(x, 3 * x), x, atol=1e-5)
  np.testing.assert_allclose(output_settings.mask_with(x, 0 * x, floor=0.5), 0.5 * x,
                             atol=1e-5)
  np.testing.assert_array_equal(output_settings.mask_with(0 * x, x), 0 * x)
  with pytest.raises(ValueError, match='shapes differ'):
    output_settings.mask_with(x, x[:, :2048])
  with pytest.raises(ValueError, match='at least that long'):
    output_settings.mask_with(x[:, :512], x[:, :512])


def test_wiener_gain_counts_what_g_removed_as_noise():
  x = np.array([1.0, 1.0, 1.0, 2.0, 0.0, 0.0], np.complex64)
  e = np.array([1.0, 0.5, 0.0, 1.0, 0.0, 1.0], np.complex64)
  # |e|^2 / (|e|^2 + a |x - e|^2), per bin; silent bins get 1.
  np.testing.assert_allclose(output_settings.mask_gain(x, e, 1.0),
                             [1.0, 0.5, 0.0, 0.5, 1.0, 0.5], atol=1e-6)
  np.testing.assert_allclose(output_settings.mask_gain(x, e, 3.0),
                             [1.0, 0.25, 0.0, 0.25, 1.0, 0.25], atol=1e-6)
  # 0 is the ratio gain min(1, |e| / |x|) (a silent input's bins: 0 or 1).
  np.testing.assert_allclose(output_settings.mask_gain(x, e, 0.0)[[0, 1, 2, 3, 5]],
                             [1.0, 0.5, 0.0, 0.5, 1.0], atol=1e-6)
  with pytest.raises(ValueError, match='oversubtraction must be >= 0'):
    output_settings.mask_gain(x, e, -1.0)

  rng = np.random.default_rng(2)
  noisy = rng.normal(size=(2, 4096)).astype(np.float32)
  # G that keeps half of the input: more over-subtraction attenuates more,
  # and the floor still bounds it; G's exact input passes at any weight.
  half = 0.5 * noisy
  energies = [np.sum(output_settings.mask_with(noisy, half, oversubtraction=a)**2)
              for a in (0.5, 1.0, 3.0, 6.0)]
  assert all(a > b for a, b in zip(energies, energies[1:]))
  np.testing.assert_allclose(
      output_settings.mask_with(noisy, half, oversubtraction=3.0), 0.25 * noisy,
      atol=1e-4)
  np.testing.assert_allclose(
      output_settings.mask_with(noisy, half, floor=0.5, oversubtraction=3.0),
      0.5 * noisy, atol=1e-4)
  np.testing.assert_allclose(
      output_settings.mask_with(noisy, noisy, oversubtraction=6.0), noisy, atol=1e-5)


def test_wiener_gain_can_average_the_noise_estimate_over_frames():
  # Bins x frames (time last). Bin 0: G removed a burst in frame 2 only;
  # bin 1: the same noise in every frame. Speech |e|^2 is 1 throughout.
  e = np.ones((2, 5), np.complex64)
  x = e + np.array([[0, 0, np.sqrt(3), 0, 0], [1, 1, 1, 1, 1]], np.complex64)
  np.testing.assert_allclose(output_settings.mask_gain(x, e, 1.0),
                             [[1, 1, 0.25, 1, 1], [0.5] * 5], atol=1e-6)
  # Over 3 frames the burst's noise, 3, is spread as 1 over frames 1-3
  # (edges reflected); steady noise keeps its gain.
  np.testing.assert_allclose(output_settings.mask_gain(x, e, 1.0, noise_frames=3),
                             [[1, 0.5, 0.5, 0.5, 1], [0.5] * 5], atol=1e-6)
  np.testing.assert_allclose(output_settings.mask_gain(x, e, 1.0, noise_frames=1),
                             output_settings.mask_gain(x, e, 1.0))
  # The ratio gain has no noise estimate to average.
  np.testing.assert_allclose(output_settings.mask_gain(x, e, 0.0, noise_frames=3),
                             output_settings.mask_gain(x, e, 0.0))
  for bad in (0, 2, -1):
    with pytest.raises(ValueError, match='must be an odd count >= 1'):
      output_settings.mask_gain(x, e, 1.0, noise_frames=bad)
  # Through the STFT: G's exact input still passes, and a G that removes a
  # burst of noise loses it less abruptly than frame by frame.
  rng = np.random.default_rng(3)
  noisy = rng.normal(size=(2, 8192)).astype(np.float32)
  np.testing.assert_allclose(
      output_settings.mask_with(noisy, noisy, oversubtraction=3.0, noise_frames=9),
      noisy, atol=1e-5)
  burst = noisy.copy()
  burst[:, 4000:4400] *= 4.0
  per_frame, averaged = (
      output_settings.mask_with(burst, noisy, oversubtraction=3.0, noise_frames=k)
      for k in (1, 9))
  # Near the burst, the averaged estimate attenuates more (it has seen the
  # burst), while away from it both gains leave the steady input alone.
  near = slice(3000, 4000)
  assert np.sum(averaged[:, near]**2) < 0.9 * np.sum(per_frame[:, near]**2)
  np.testing.assert_allclose(averaged[:, :1000], noisy[:, :1000], atol=1e-4)
