"""Tests for the embedded synthetic dataset and the dataset registry."""

import numpy as np
import pytest
from scipy import signal

from segan_jax import audio
from segan_jax import datasets
from segan_jax.datasets import synthetic

_NUM_CHECKED = 14  # Two full blocks of noise kinds.


@pytest.fixture(scope='module')
def train_examples():
  source = synthetic.SyntheticSpeech('train')
  return [source[i] for i in range(_NUM_CHECKED)]


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
  clean = clean.astype(np.float64)
  noise = noisy.astype(np.float64) - clean
  return 10 * np.log10(np.sum(clean**2) / np.sum(noise**2))


def _frame_energies(x: np.ndarray, frame: int) -> np.ndarray:
  x = x.astype(np.float64)
  frames = x[:len(x) // frame * frame].reshape(-1, frame)
  return np.mean(frames**2, axis=1)


def test_split_sizes():
  assert len(synthetic.SyntheticSpeech()) == 96
  assert len(synthetic.SyntheticSpeech('train')) == 96
  assert len(synthetic.SyntheticSpeech('validation')) == 8
  assert len(synthetic.SyntheticSpeech('test')) == 16
  assert len(synthetic.SyntheticSpeech('test', num_utterances=3)) == 3


def test_example_fields(train_examples):
  for i, ex in enumerate(train_examples):
    assert set(ex) == {'noisy', 'clean', 'id', 'snr_db', 'noise'}
    assert ex['id'] == f'synthetic_train_{i:05d}'
    assert ex['noise'] in synthetic.NOISE_KINDS
    assert ex['snr_db'] in synthetic.SNRS_DB
    assert isinstance(ex['snr_db'], float)


def test_shapes_dtypes_and_range(train_examples):
  sr = audio.SAMPLE_RATE
  for ex in train_examples:
    noisy, clean = ex['noisy'], ex['clean']
    assert noisy.dtype == np.float32 and clean.dtype == np.float32
    assert noisy.ndim == 1 and noisy.shape == clean.shape
    assert 1.5 * sr <= len(clean) <= 4.0 * sr
    assert np.all(np.isfinite(noisy)) and np.all(np.isfinite(clean))
    assert np.max(np.abs(noisy)) <= 0.99 + 1e-6
    # Peak-normalised to at most 0.9 (less if rescaled to avoid clipping).
    assert 0.05 < np.max(np.abs(clean)) <= 0.9 + 1e-6


def test_recorded_snr_matches_mixture(train_examples):
  for ex in train_examples:
    assert _snr_db(ex['clean'], ex['noisy']) == pytest.approx(
        ex['snr_db'], abs=0.1), ex['id']


def test_deterministic_random_access():
  a = synthetic.SyntheticSpeech('train')
  b = synthetic.SyntheticSpeech('train')
  # Access order and instance must not matter.
  first = [a[5], a[2]]
  second = [b[2], b[5]][::-1]
  for x, y in zip(first, second):
    np.testing.assert_array_equal(x['noisy'], y['noisy'])
    np.testing.assert_array_equal(x['clean'], y['clean'])
    assert x['snr_db'] == y['snr_db'] and x['noise'] == y['noise']
  np.testing.assert_array_equal(a[5]['noisy'], first[0]['noisy'])


def test_seed_changes_data():
  x = synthetic.SyntheticSpeech('train', seed=0)[0]
  y = synthetic.SyntheticSpeech('train', seed=1)[0]
  assert x['id'] == y['id']
  assert (x['clean'].shape != y['clean'].shape or
          not np.array_equal(x['clean'], y['clean']))


def test_splits_differ():
  fingerprints = set()
  for split in synthetic.SPLITS:
    source = synthetic.SyntheticSpeech(split, num_utterances=4)
    for i in range(len(source)):
      ex = source[i]
      assert ex['id'] == f'synthetic_{split}_{i:05d}'
      fingerprints.add(ex['clean'].tobytes())
  assert len(fingerprints) == 3 * 4


def test_clean_has_voiced_energy(train_examples):
  # Voiced speech concentrates its energy at low frequencies: far more than
  # the half below 4 kHz that white noise would have.
  for ex in train_examples:
    power = np.abs(np.fft.rfft(ex['clean'].astype(np.float64)))**2
    freqs = np.fft.rfftfreq(len(ex['clean']), 1 / audio.SAMPLE_RATE)
    assert np.sum(power[freqs < 4000]) / np.sum(power) > 0.8, ex['id']


def test_clean_has_harmonic_structure(train_examples):
  # A pitched source gives a periodic signal: the autocorrelation of the
  # loudest 40 ms has a clear peak at a lag in the 60-400 Hz pitch range.
  sr = audio.SAMPLE_RATE
  frame = int(0.04 * sr)
  peaks = []
  for ex in train_examples:
    clean = ex['clean'].astype(np.float64)
    loudest = np.argmax(_frame_energies(clean, frame))
    x = clean[loudest * frame:(loudest + 1) * frame]
    x = x - x.mean()
    corr = np.correlate(x, x, 'full')[frame - 1:]
    peaks.append(np.max(corr[sr // 400:sr // 60]) / corr[0])
  assert min(peaks) > 0.3
  assert np.mean(peaks) > 0.6


def test_formant_filter_matches_fixed_iir():
  # With constant formants the frame-wise filter must behave like the plain
  # recursive cascade of resonators.
  sr = audio.SAMPLE_RATE
  x = np.random.default_rng(0).normal(size=sr)
  freqs = np.array([500., 1500., 2500.])
  bandwidths = np.array([60., 90., 150.])
  num_frames = -(-len(x) // synthetic._HOP) + 1
  y = synthetic._formant_filter(x, np.tile(freqs, (num_frames, 1)),
                                bandwidths)
  denom = np.ones(1)
  for f, bw in zip(freqs, bandwidths):
    r = np.exp(-np.pi * bw / sr)
    denom = np.convolve(denom, [1, -2 * r * np.cos(2 * np.pi * f / sr), r * r])
  expected = signal.lfilter([denom.sum()], denom, x)
  rel_err = np.sqrt(np.mean((y - expected)**2) / np.mean(expected**2))
  assert rel_err < 0.05


def test_clean_has_pauses(train_examples):
  for ex in train_examples:
    energies = _frame_energies(ex['clean'], int(0.02 * audio.SAMPLE_RATE))
    # Some 20 ms frames are at least 40 dB below the loudest one.
    assert np.min(energies) < 1e-4 * np.max(energies), ex['id']


def test_all_noise_kinds_and_snrs_appear():
  source = synthetic.SyntheticSpeech('train')
  seen = [source[i] for i in range(40)]
  assert {ex['noise'] for ex in seen} == set(synthetic.NOISE_KINDS)
  assert {ex['snr_db'] for ex in seen} == set(synthetic.SNRS_DB)


def test_noise_kinds_have_distinct_spectra(train_examples):
  by_kind = {}
  for ex in train_examples:
    noise = ex['noisy'].astype(np.float64) - ex['clean']
    power = np.abs(np.fft.rfft(noise))**2
    freqs = np.fft.rfftfreq(len(noise), 1 / audio.SAMPLE_RATE)
    by_kind[ex['noise']] = np.sum(power[freqs < 1000]) / np.sum(power)
  # White noise spreads evenly; hum and brown noise live at low frequencies.
  assert by_kind['white'] == pytest.approx(1000 / 8000, abs=0.03)
  assert by_kind['hum'] > 0.7
  assert by_kind['brown'] > 0.9


def test_invalid_arguments():
  with pytest.raises(ValueError, match='train, validation, test'):
    synthetic.SyntheticSpeech('dev')
  with pytest.raises(ValueError):
    synthetic.SyntheticSpeech('train', num_utterances=-1)
  source = synthetic.SyntheticSpeech('validation')
  with pytest.raises(IndexError):
    source[len(source)]
  with pytest.raises(IndexError):
    source[-len(source) - 1]
  with pytest.raises(TypeError):
    source[1.5]
  np.testing.assert_array_equal(source[-1]['noisy'],
                                source[len(source) - 1]['noisy'])


def test_get_source():
  assert 'synthetic' in datasets.DATASETS
  source = datasets.get_source('synthetic', 'test', num_utterances=2, seed=3)
  assert isinstance(source, synthetic.SyntheticSpeech)
  assert len(source) == 2
  np.testing.assert_array_equal(
      source[1]['clean'],
      synthetic.SyntheticSpeech('test', seed=3)[1]['clean'])
  # data_dir is accepted (and ignored) for the generated dataset.
  assert len(datasets.get_source('synthetic', 'validation', data_dir='/x')) == 8


def test_get_source_errors():
  with pytest.raises(ValueError, match='synthetic') as excinfo:
    datasets.get_source('timit', 'train')
  assert '\n' not in str(excinfo.value)
  with pytest.raises(ValueError, match='valid splits'):
    datasets.get_source('synthetic', 'dev')
