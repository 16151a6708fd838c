"""Tests for segan_jax.metrics."""

import json
import pathlib

import numpy as np
import pytest
import soundfile as sf

from segan_jax import metrics

DATA = pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'data'
VBD_TEST = DATA / 'vbd_test'
REFERENCE = DATA / 'reference_metrics.json'

# Required per-file agreement with the reference implementation.
TOLERANCE = {'pesq': 0.01, 'stoi': 0.01, 'ssnr': 0.1, 'llr': 0.02, 'wss': 0.5,
             'csig': 0.05, 'cbak': 0.05, 'covl': 0.05}
# The NumPy-only measures follow the reference's conventions exactly, so they
# must agree far more closely; this catches framing or 95 %-count slips that
# the loose bounds above let through.
TIGHT_TOLERANCE = {'ssnr': 1e-3, 'llr': 1e-3, 'wss': 1e-3}


def _require_data():
  if not (REFERENCE.is_file() and (VBD_TEST / 'clean').is_dir()):
    pytest.skip(f'shared VoiceBank-DEMAND test data not found under {DATA}')


def _read(path: pathlib.Path) -> np.ndarray:
  x, rate = sf.read(path, dtype='float64')
  assert rate == metrics.SAMPLE_RATE
  return x


def _speech_like(seconds: float = 2.0) -> np.ndarray:
  """A harmonic tone with syllable-rate envelope and no digital silence.

  No exact zeros: silent clean frames count as -10 dB in SSNR by convention,
  which would hide the clip-top check.
  """
  t = np.arange(int(seconds * metrics.SAMPLE_RATE)) / metrics.SAMPLE_RATE
  f0 = 140.0 + 30.0 * np.sin(2 * np.pi * 0.7 * t)
  phase = 2 * np.pi * np.cumsum(f0) / metrics.SAMPLE_RATE
  voiced = sum(np.sin(k * phase) / k for k in range(1, 21))
  envelope = 0.05 + np.sin(2 * np.pi * 2 * t)**2
  x = voiced * envelope
  return 0.3 * x / np.max(np.abs(x))


def _add_noise(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
  noise = np.random.default_rng(seed).normal(size=x.shape)
  scale = np.sqrt(np.mean(x**2) / np.mean(noise**2) / 10**(snr_db / 10))
  return x + scale * noise


# ----------------------------------------------------------------------------
# Agreement with the reference implementation.


def test_matches_reference_on_vbd_test():
  _require_data()
  reference = json.loads(REFERENCE.read_text())['files']
  names = sorted(reference)
  assert len(names) == 25
  pairs = [(_read(VBD_TEST / 'clean' / n), _read(VBD_TEST / 'noisy' / n))
           for n in names]
  # Two workers: exercises the process pool and its ordering of results.
  rows = metrics.evaluate_pairs(pairs, num_workers=2)
  assert len(rows) == len(names)
  failures = []
  for name, row in zip(names, rows):
    assert set(row) == set(metrics.METRIC_NAMES)
    for key, tol in (*TOLERANCE.items(), *TIGHT_TOLERANCE.items()):
      if abs(row[key] - reference[name][key]) > tol:
        failures.append(f'{name} {key}: {row[key]:.4f} vs '
                        f'{reference[name][key]:.4f}')
  assert not failures, '\n'.join(failures)

  means = metrics.mean_metrics(rows)
  assert means['n_files'] == 25
  expected_means = json.loads(REFERENCE.read_text())['mean']
  for key, tol in TOLERANCE.items():
    assert means[key] == pytest.approx(expected_means[key], abs=tol), key


# ----------------------------------------------------------------------------
# Sanity checks.


def test_identical_signals_score_best():
  x = _speech_like()
  row = metrics.all_metrics(x, x)
  assert list(row) == list(metrics.METRIC_NAMES)
  assert all(isinstance(v, float) for v in row.values())
  assert row['ssnr'] == 35.0
  assert row['llr'] == pytest.approx(0.0, abs=1e-9)
  assert row['wss'] == pytest.approx(0.0, abs=1e-9)
  assert row['pesq'] > 4.5
  assert row['stoi'] > 0.999
  assert row['csig'] == row['cbak'] == row['covl'] == 5.0
  assert metrics.composite(x, x) == {'csig': 5.0, 'cbak': 5.0, 'covl': 5.0}


@pytest.mark.parametrize('gain, expected_db', [
    (0.9, 20.0),  # Error 0.1 x in every frame.
    (0.5, 20 * np.log10(2.0)),
    (-1.0, -20 * np.log10(2.0)),
    (0.99, 35.0),  # 40 dB, clipped.
    (10.0, -10.0),  # -19 dB, clipped.
])
def test_segmental_snr_of_scaled_signal(gain, expected_db):
  x = _speech_like()
  assert metrics.segmental_snr(x, gain * x) == pytest.approx(expected_db,
                                                             abs=1e-6)


def test_llr_and_wss_ignore_gain():
  # Both compare spectral shapes, so a pure gain change costs (almost) nothing.
  x = _speech_like()
  assert abs(metrics.llr(x, 0.5 * x)) < 1e-3
  assert abs(metrics.wss(x, 0.5 * x)) < 1e-2


def test_more_noise_scores_worse():
  if (VBD_TEST / 'clean' / 'p232_016.wav').is_file():
    # PESQ gives synthetic tones low scores that barely move with noise.
    clean = _read(VBD_TEST / 'clean' / 'p232_016.wav')
  else:
    pytest.skip(f'no real speech under {VBD_TEST} for PESQ')
  # White noise is harsh on PESQ: below ~20 dB CSIG and COVL clip at 1.
  rows = [metrics.all_metrics(clean, _add_noise(clean, snr))
          for snr in (40.0, 30.0, 20.0)]
  for better, worse in zip(rows, rows[1:]):
    for key in ('pesq', 'stoi', 'ssnr', 'csig', 'cbak', 'covl'):
      assert worse[key] < better[key], key
    for key in ('llr', 'wss'):
      assert worse[key] > better[key], key


def test_more_noise_scores_worse_synthetic():
  # Same idea without data, for the measures that work on a synthetic tone.
  x = _speech_like()
  scores = [(metrics.stoi(x, y), metrics.segmental_snr(x, y),
             metrics.wss(x, y))
            for y in (_add_noise(x, snr) for snr in (20.0, 10.0, 0.0))]
  for (stoi1, ssnr1, wss1), (stoi2, ssnr2, wss2) in zip(scores, scores[1:]):
    assert stoi2 < stoi1
    assert ssnr2 < ssnr1
    assert wss2 > wss1


@pytest.mark.parametrize('inputs, expected', [
    # CSIG = 3.093 - 1.029 LLR + 0.603 PESQ - 0.009 WSS, etc., by hand.
    ((2.5, 0.6, 30.0, 5.0), (3.7131, 2.934, 3.0893)),
    ((1.2, 1.5, 60.0, -5.0), (1.7331, 1.4726, 1.372)),
    ((3.0, 0.3, 20.0, 10.0), (4.4133, 3.558, 3.7154)),
])
def test_composite_formulas(inputs, expected):
  pesq, llr, wss, ssnr = inputs
  got = metrics.composite_from(pesq=pesq, llr=llr, wss=wss, ssnr=ssnr)
  assert got == pytest.approx(dict(zip(('csig', 'cbak', 'covl'), expected)),
                              abs=1e-9)


def test_composite_clipped_to_mos_range():
  assert metrics.composite_from(4.5, 0.0, 0.0, 35.0) == {
      'csig': 5.0, 'cbak': 5.0, 'covl': 5.0}
  assert metrics.composite_from(1.0, 3.0, 150.0, -10.0) == {
      'csig': 1.0, 'cbak': 1.0, 'covl': 1.0}
  # Only the out-of-range one is clipped: CSIG 5.1159, CBAK 3.9498.
  got = metrics.composite_from(3.6, 0.1, 5.0, 10.0)
  assert got['csig'] == 5.0
  assert got['cbak'] == pytest.approx(1.634 + 0.478 * 3.6 - 0.035 + 0.63)


def test_composite_agrees_with_parts():
  x = _speech_like()
  y = _add_noise(x, 10.0)
  row = metrics.all_metrics(x, y)
  assert metrics.composite(x, y) == pytest.approx(metrics.composite_from(
      row['pesq'], row['llr'], row['wss'], row['ssnr']))
  assert {k: row[k] for k in ('csig', 'cbak', 'covl')} == pytest.approx(
      metrics.composite(x, y))


def test_evaluate_pairs_inline_and_mean():
  x = _speech_like()
  pairs = [(x, _add_noise(x, 5.0)), (x, x)]
  rows = metrics.evaluate_pairs(pairs, num_workers=1)
  assert rows == [metrics.all_metrics(c, p) for c, p in pairs]
  assert metrics.evaluate_pairs([]) == []
  means = metrics.mean_metrics(rows)
  assert means['n_files'] == 2
  for key in metrics.METRIC_NAMES:
    assert means[key] == pytest.approx((rows[0][key] + rows[1][key]) / 2)


# ----------------------------------------------------------------------------
# Errors.


def _bad_inputs():
  x = _speech_like(0.5)
  nan = x.copy()
  nan[100] = np.nan
  inf = x.copy()
  inf[7] = np.inf
  return {
      'length': ((x, x[:-1]), 'lengths differ'),
      'nan': ((x, nan), 'non-finite'),
      'inf_clean': ((inf, x), 'non-finite'),
      'empty': ((np.zeros(0), np.zeros(0)), 'empty'),
      'silent_clean': ((np.zeros_like(x), x), 'all zeros'),
      'two_dim': ((x[None], x[None]), '1-D'),
      # PESQ's own errors, made one-line ValueErrors.
      'silent_processed': ((x, np.zeros_like(x)), 'PESQ failed'),
      'too_short': ((x[:2000], x[:2000]), 'PESQ failed'),
  }


@pytest.mark.parametrize('case', list(_bad_inputs()))
def test_bad_input_raises_one_line_value_error(case):
  (clean, processed), pattern = _bad_inputs()[case]
  with pytest.raises(ValueError, match=pattern) as info:
    metrics.all_metrics(clean, processed)
  message = str(info.value)
  assert message and '\n' not in message


@pytest.mark.parametrize('fn', [metrics.pesq_wb, metrics.stoi,
                                metrics.segmental_snr, metrics.llr,
                                metrics.wss, metrics.composite])
def test_each_metric_validates(fn):
  x = _speech_like(0.5)
  with pytest.raises(ValueError, match='lengths differ'):
    fn(x, x[:-1])
  with pytest.raises(ValueError, match='all zeros'):
    fn(np.zeros_like(x), x)


def test_too_short_for_one_frame():
  with pytest.raises(ValueError, match='too short'):
    metrics.segmental_snr(np.ones(500), np.ones(500))


def test_evaluate_pairs_names_failing_pair():
  x = _speech_like(0.5)
  with pytest.raises(ValueError, match=r'^pair 1: .*lengths differ'):
    metrics.evaluate_pairs([(x, x), (x, x[:-1])], num_workers=1)


def test_mean_metrics_needs_rows():
  with pytest.raises(ValueError):
    metrics.mean_metrics([])
