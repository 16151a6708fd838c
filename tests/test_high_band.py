"""The band above 8 kHz of input above 16 kHz, gated by G's gain (high_band.py)."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from conftest import speechlike  # pylint: disable=g-bad-import-order

from segan_jax import config as config_lib
from segan_jax import enhance
from segan_jax import enhance_files
from segan_jax import high_band
from segan_jax.output_settings import OutputSettings

RATE = 48000


class GainEnhancer(enhance.WindowEnhancer):
  """G that scales its input: 1 keeps every band, 0 removes every one."""

  def __init__(self, scale, high_band_setting='gated', limit_db=0.0):
    super().__init__(1024, preemphasis=0.95, batch_size=4,
                     output_settings=OutputSettings(
                         output_high_band=high_band_setting,
                         attenuation_limit_db=limit_db))
    self.scale = scale

  def enhance_batch(self, batch, index):
    return self.scale * batch


def band_energy(x, rate, low, high):
  spectrum = np.fft.rfft(x, axis=0)
  freq = np.fft.rfftfreq(x.shape[0], 1 / rate)
  return float(np.sum(np.abs(spectrum[(freq >= low) & (freq < high)])**2))


def with_high_band(seconds=1.5, channels=1):
  """Speech-like low band, plus noise (which also reaches G's band above
  5 kHz) and a 12 kHz tone above 8 kHz."""
  x = speechlike(RATE, seconds, channels)
  t = np.arange(x.shape[0])[:, None] / RATE
  return (x + 0.05 * np.sin(2 * np.pi * 12000 * t)).astype(np.float32)


def enhance_to(tmp_path, enhancer, x, rate=RATE, name='out.wav'):
  soundfile.write(tmp_path / 'in.wav', x, rate, subtype='FLOAT')
  enhance_files.enhance_file(enhancer, str(tmp_path / 'in.wav'),
                             str(tmp_path / name))
  return soundfile.read(tmp_path / name, dtype='float32', always_2d=True)[0]


@pytest.mark.parametrize('scale, limit_db, kept_db', [
    (1.0, 0.0, 0.0),     # G keeps its band: the high band is kept
    (0.0, 0.0, None),    # G removes it: so is the high band
    (0.0, 14.0, -14.0),  # ... down to the attenuation limit
])
def test_high_band_follows_gs_gain(tmp_path, scale, limit_db, kept_db):
  x = with_high_band()
  y = enhance_to(tmp_path, GainEnhancer(scale, limit_db=limit_db), x)
  inner = slice(RATE // 10, -RATE // 10)  # frames and resampler edges
  ratio_db = 10 * np.log10(1e-30 + band_energy(y[inner], RATE, 9000, 20000) /
                           band_energy(x[inner], RATE, 9000, 20000))
  if kept_db is None:
    assert ratio_db < -60
  else:
    assert abs(ratio_db - kept_db) < 0.2
  none = enhance_to(tmp_path, GainEnhancer(scale, 'none', limit_db), x,
                    name='none.wav')
  assert band_energy(none[inner], RATE, 9000, 20000) < 1e-6 * band_energy(
      x[inner], RATE, 9000, 20000)


def test_gate_streams_independently_of_block_sizes():
  rng = np.random.default_rng(0)
  x = with_high_band(1.0, 2)
  x16 = rng.standard_normal((16000, 2)).astype(np.float32) * 0.1
  y16 = x16 * np.linspace(0, 1, 16000)[:, None].astype(np.float32)
  y = np.zeros_like(x)  # G's output at 48 kHz: only the gated band is left

  def run(cuts):
    gate = high_band.HighBandGate(RATE, 2, floor=0.1)
    out = []
    for a, b in zip(cuts[:-1], cuts[1:]):
      gate.push_input(x[3 * a:3 * b], x16[a:b], last=b == 16000)
    for a, b in zip(cuts[:-1], cuts[1:]):
      out.append(gate.push_output(y16[a:b], y[3 * a:3 * b], last=b == 16000))
    return np.concatenate(out)

  whole, pieces = run([0, 16000]), run([0, 1, 700, 701, 9000, 16000])
  assert whole.shape[0] > RATE - 100
  np.testing.assert_allclose(pieces, whole[:pieces.shape[0]], atol=1e-6)
  assert abs(pieces.shape[0] - whole.shape[0]) < 100
  # The gain rises with G's: little of the high band early, most late.
  assert np.std(whole[:RATE // 4]) < 0.5 * np.std(whole[-RATE // 4:])


def test_16k_input_is_unchanged_by_the_setting(tmp_path):
  x = speechlike(16000, 1.2, 1)
  gated = enhance_to(tmp_path, GainEnhancer(0.5, 'gated'), x, 16000, 'a.wav')
  none = enhance_to(tmp_path, GainEnhancer(0.5, 'none'), x, 16000, 'b.wav')
  np.testing.assert_array_equal(gated, none)


def test_bad_setting_is_one_line_and_older_contracts_read():
  for make in (lambda: OutputSettings(output_high_band='full'),
               lambda: config_lib.Config(output_high_band='full'),
               lambda: OutputSettings().with_overrides(output_high_band='x')):
    with pytest.raises(ValueError, match='output_high_band') as e:
      make()
    assert '\n' not in str(e.value)
  flag = subprocess.run(
      [sys.executable, '-m', 'segan_jax', '--mode=enhance', '--input=a.wav',
       '--output=b.wav', '--output_high_band=full'],
      cwd=pathlib.Path(__file__).resolve().parents[1], capture_output=True,
      text=True, timeout=120)
  assert flag.returncode != 0 and 'Traceback' not in flag.stderr
  assert ('flag --output_high_band=full: value should be one of <gated|none>'
          in flag.stderr)
  terms = OutputSettings(output_high_band='none').to_contract()
  assert OutputSettings.from_contract(terms).output_high_band == 'none'
  del terms['output_high_band']  # a file exported before the setting
  assert OutputSettings.from_contract(terms) == OutputSettings()


def test_gated_output_is_written_atomically(tmp_path, monkeypatch):
  x = with_high_band(0.6)
  soundfile.write(tmp_path / 'in.wav', x, RATE, subtype='FLOAT')

  def broken(self, *args, **kwargs):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(high_band.HighBandGate, 'push_output', broken)
  with pytest.raises(enhance_files.EnhanceError, match='out.wav') as e:
    enhance_files.enhance_file(GainEnhancer(1.0), str(tmp_path / 'in.wav'),
                               str(tmp_path / 'out.wav'))
  assert '\n' not in str(e.value)
  assert sorted(p.name for p in tmp_path.iterdir()) == ['in.wav']
  monkeypatch.undo()
  enhance_files.enhance_file(GainEnhancer(1.0), str(tmp_path / 'in.wav'),
                             str(tmp_path / 'out.wav'))
  assert sorted(p.name for p in tmp_path.iterdir()) == ['in.wav', 'out.wav']
