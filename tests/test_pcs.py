"""Perceptual contrast stretching (segan_jax.pcs) as an output setting."""

import numpy as np
import pytest
from conftest import speechlike  # pylint: disable=g-bad-import-order

from segan_jax import config as config_lib
from segan_jax import enhance
from segan_jax import pcs
from segan_jax.output_settings import OutputSettings


def _tone(hz, amplitude, seconds=1.0):
  t = np.arange(int(16000 * seconds)) / 16000
  return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_strength_zero_is_exactly_the_identity():
  x = speechlike(16000, 0.7, 2).T
  assert pcs.stretch(x, 0.0) is not None
  np.testing.assert_array_equal(pcs.stretch(x, 0.0), x)
  np.testing.assert_array_equal(
      OutputSettings().apply(x, x, preemphasis=0.95), x)


def test_a_band_is_stretched_by_its_weight():
  # A tone in bin 40 (1.6 kHz, weight 1.4): the unscaled frame magnitude M
  # becomes expm1(1.4 log1p(M)), M / 2 in the two bins beside it (Hamming's
  # main lobe), so the tone's gain lies between those bins' gains; in bin 1
  # (40 Hz, weight 1) nothing changes.
  window_sum = np.hamming(pcs.N_FFT + 1)[:-1].sum()
  middle = slice(2000, 14000)
  peak = 0.05 * window_sum / 2  # a tone's magnitude in its bin

  def gain_of(hz):
    x = _tone(hz, 0.05)
    return np.std(pcs.stretch(x, 1.0)[middle]) / np.std(x[middle])

  def stretched(m):
    return np.expm1(1.4 * np.log1p(m)) / m

  assert stretched(peak / 2) < gain_of(1600.0) < stretched(peak)
  assert gain_of(40.0) == pytest.approx(1.0, abs=1e-3)
  assert pcs.band_weights(0.5)[40] == pytest.approx(1.2)
  assert pcs.band_weights(1.0)[[0, 4, 150, 200]] == pytest.approx(
      [1.0, 1.070175439, 1.238596491, 1.077192982])


def test_preemphasised_windows_stretch_like_the_signal():
  x = _tone(1000.0, 0.05)
  shifted = np.concatenate([[0.0], x[:-1]]).astype(np.float32)
  emphasised = x - 0.95 * shifted
  y = pcs.stretch(emphasised, 1.0, preemphasis=0.95)
  middle = slice(2000, 14000)
  assert np.std(y[middle]) / np.std(emphasised[middle]) == pytest.approx(
      np.std(pcs.stretch(x, 1.0)[middle]) / np.std(x[middle]), rel=0.02)


def test_streams_without_seams_at_window_boundaries():
  class Identity(enhance.WindowEnhancer):

    def __init__(self):
      super().__init__(1024, preemphasis=0.95, batch_size=4, overlap=0.5,
                       output_settings=OutputSettings(output_pcs=1.0))

    def enhance_batch(self, batch, index):
      return batch

  x = _tone(1600.0, 0.05, 2.0)[:, None]
  y = Identity().enhance_signal(x)[:, 0]
  envelope = np.abs(y[4000:28000]).reshape(-1, 100).max(axis=1)
  # A steady tone stays steady: no dips or bumps where windows meet.
  assert envelope.max() / envelope.min() < 1.05
  assert envelope.mean() > 1.3 * 0.05


def test_contract_round_trip_and_older_contracts():
  settings = OutputSettings(output_pcs=0.5, output_mask=True)
  terms = settings.to_contract()
  assert OutputSettings.from_contract(terms) == settings
  older = {k: v for k, v in terms.items() if k != 'output_pcs'}
  assert OutputSettings.from_contract(older).output_pcs == 0.0
  config = config_lib.Config(output_pcs=0.25)
  assert OutputSettings.from_config(config).output_pcs == 0.25
  assert OutputSettings().with_overrides(output_pcs=1.0).output_pcs == 1.0


@pytest.mark.parametrize('value', [-0.1, 2.5, float('nan')])
def test_bad_strength_is_one_line(value):
  with pytest.raises(ValueError, match=r'^output_pcs must be in \[0, 2\]'):
    OutputSettings(output_pcs=value)
