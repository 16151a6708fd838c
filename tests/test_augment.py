"""On-the-fly augmentation (segan_jax/augment.py) and its place in the input
pipeline: invariants of speed, remix and gain, determinism in (seed, step),
independence of the process split, and a bit-identical resume."""

import jax
import numpy as np
import pytest

from segan_jax import augment
from segan_jax import input_pipeline
from segan_jax.config import Config

WINDOW, HOP = 128, 64


def _augmentation(**changes) -> augment.Augmentation:
  """Config's defaults (where they are written) with these changes."""
  return augment.Augmentation.from_config(Config(**changes))


ALL_ON = _augmentation(remix_prob=0.5, gain_db=6.0, speed_prob=0.5,
                       speed_range=(0.8, 1.2))


class _Pairs:
  """Utterances of additive mixtures: noisy = clean + noise."""

  def __init__(self, lengths):
    rng = np.random.default_rng(0)
    self.items = []
    for i, n in enumerate(lengths):
      clean = rng.standard_normal(n).astype(np.float32)
      noise = 0.3 * rng.standard_normal(n).astype(np.float32)
      self.items.append({'noisy': clean + noise, 'clean': clean, 'id': str(i)})

  def __len__(self):
    return len(self.items)

  def __getitem__(self, i):
    return self.items[i]


@pytest.fixture(scope='module')
def data():
  return input_pipeline.WindowedPairs(_Pairs([300, 1000, 64, 513]), WINDOW,
                                      HOP, 0.95)


def _schedule(data, batch=8, process_index=0, process_count=1, seed=3):
  return input_pipeline.BatchSchedule(len(data), batch, seed,
                                      process_index=process_index,
                                      process_count=process_count)


def _batches(data, schedule, start, end, augmentation=None):
  return list(input_pipeline.batches(data, schedule, start, end,
                                     augmentation=augmentation))


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    for key in ('noisy', 'clean'):
      np.testing.assert_array_equal(x[key], y[key])


def test_remix_with_its_own_noise_at_0_db_gives_back_the_noisy(data):
  for i in range(len(data)):
    pair = data[i]
    noise = pair[0].astype(np.float64) - pair[1]
    out = augment.remix(pair, noise, 0.0).astype(np.float32)
    np.testing.assert_array_equal(out, pair)


def test_remix_keeps_clean_and_mixes_another_windows_scaled_noise(data):
  augmentation = _augmentation(remix_prob=1.0, remix_gain_db=(-5, 5))
  seen_gains = []
  for index in range(len(data)):
    position = 2 * index + 1
    out = augment.augment_window(data, index, position, seed=0, step=4,
                                 augmentation=augmentation)
    choice = augment.draw(augmentation, 0, 4, position, index, len(data))
    assert choice.partner is not None and choice.partner != index
    original, other = data[index], data[choice.partner]
    np.testing.assert_array_equal(out[1], original[1])  # clean untouched
    g = 10**(choice.remix_gain_db / 20)
    assert 10**(-5 / 20) <= g <= 10**(5 / 20)
    np.testing.assert_allclose(out[0] - out[1], g * (other[0] - other[1]),
                               rtol=0, atol=1e-5)
    if np.any(original[0] != original[1]):
      assert not np.allclose(out[0] - out[1], original[0] - original[1])
    seen_gains.append(g)
  assert np.ptp(seen_gains) > 0.5  # the gain is drawn, not fixed


def test_gain_scales_noisy_and_clean_together_within_the_range(data):
  augmentation = _augmentation(gain_db=6.0)
  factors = []
  for index in range(len(data)):
    original = data[index]
    if not np.any(original):
      continue
    out = augment.augment_window(data, index, index, seed=1, step=0,
                                 augmentation=augmentation)
    big = np.abs(original) > 0.1
    ratio = out[big] / original[big]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)  # one factor
    assert 10**(-6 / 20) * (1 - 1e-6) <= ratio[0] <= 10**(6 / 20) * (1 + 1e-6)
    factors.append(ratio[0])
  assert np.ptp(factors) > 0.2


def test_extreme_gains_stay_finite(data):
  pair = data[0]
  for db in (-3000.0, 0.0, 3000.0):
    assert np.isfinite(augment.gain(pair, db).astype(np.float32)).all()
    noise = pair[0].astype(np.float64) - pair[1]
    assert np.isfinite(augment.remix(pair, noise, db).astype(np.float32)).all()
  silence = np.zeros((2, WINDOW), np.float32)
  np.testing.assert_array_equal(augment.gain(silence, 3000.0), silence)


def test_speed_resamples_clean_keeps_noise_and_length():
  window = 64
  # A ramp: resampling by f gives the ramp of slope f, exactly.
  length = augment.stretch_length(window, 1.25)
  clean = np.arange(length, dtype=np.float32)
  noise = np.random.default_rng(0).standard_normal(length).astype(np.float32)
  pair = np.stack([clean + noise, clean])
  out = augment.speed(pair, window, 1.25)
  assert out.shape == (2, window)
  np.testing.assert_allclose(out[1], 1.25 * np.arange(window), rtol=1e-12)
  np.testing.assert_allclose(out[0] - out[1], noise[:window], atol=1e-5)
  slower = augment.speed(pair, window, 0.8)
  np.testing.assert_allclose(slower[1], 0.8 * np.arange(window), rtol=1e-12)
  # Factor 1 gives the window back bit for bit.
  same = augment.speed(pair, window, 1.0).astype(np.float32)
  np.testing.assert_array_equal(same, pair[:, :window])
  with pytest.raises(ValueError, match='needs'):
    augment.speed(pair[:, :window], window, 1.25)


def test_speed_reads_the_utterance_beyond_the_window(data):
  # Window 1 starts at 64 in the 300-sample utterance: a faster window reads
  # past its own end instead of padding with zeros.
  augmentation = _augmentation(speed_prob=1.0, speed_range=(1.2, 1.2))
  out = augment.augment_window(data, 1, 0, seed=0, step=0,
                               augmentation=augmentation)
  original = data[1]
  assert out.shape == original.shape and out.dtype == np.float32
  assert not np.allclose(out[1], original[1])
  assert np.all(out[1, -8:] != 0)
  stretch = data.read(1, augment.stretch_length(WINDOW, 1.2))
  np.testing.assert_allclose(out[1, ::5], stretch[1, ::6], atol=1e-6)
  np.testing.assert_allclose(out[0] - out[1], original[0] - original[1],
                             atol=1e-5)


def test_speed_by_one_and_augmentation_off_give_todays_batches(data):
  schedule = _schedule(data)
  end = 2 * schedule.steps_per_epoch + 1
  today = [input_pipeline.batch_from_windows(
      data.windows(schedule.local_indices(s))) for s in range(end)]
  _assert_batches_equal(list(input_pipeline.batches(data, schedule, 0, end)),
                        today)
  off = augment.Augmentation.from_config(Config())
  assert not off.enabled and not Config().augments
  _assert_batches_equal(_batches(data, schedule, 0, end, off), today)
  identity = _augmentation(speed_prob=1.0, speed_range=(1.0, 1.0),
                           remix_prob=0.0)
  assert identity.enabled
  _assert_batches_equal(_batches(data, schedule, 0, end, identity), today)


def test_same_seed_and_step_same_batch_and_resume_matches(data):
  schedule = _schedule(data)
  end = 2 * schedule.steps_per_epoch + 1
  straight = _batches(data, schedule, 0, end, ALL_ON)
  _assert_batches_equal(_batches(data, schedule, 0, end, ALL_ON), straight)
  resume_at = schedule.steps_per_epoch + 1
  _assert_batches_equal(_batches(data, schedule, resume_at, end, ALL_ON),
                        straight[resume_at:])
  plain = _batches(data, schedule, 0, end)
  assert not np.array_equal(straight[0]['noisy'], plain[0]['noisy'])
  # Another step augments the same windows differently.
  one = input_pipeline.load_batch(data, schedule, 0, ALL_ON)
  same_windows = _schedule(data)
  same_windows.global_indices = lambda step: schedule.global_indices(0)
  later = input_pipeline.load_batch(data, same_windows, 5, ALL_ON)
  np.testing.assert_array_equal(
      input_pipeline.load_batch(data, same_windows, 0, ALL_ON)['noisy'],
      one['noisy'])
  assert not np.array_equal(one['noisy'], later['noisy'])
  other_seed = input_pipeline.load_batch(data, _schedule(data, seed=4), 0,
                                         ALL_ON)
  assert not np.array_equal(one['noisy'], other_seed['noisy'])


def test_two_processes_compute_the_one_process_batch(data):
  augmentation = _augmentation(remix_prob=1.0, gain_db=6.0,
                               speed_prob=0.5)
  single = _batches(data, _schedule(data), 0, 6, augmentation)
  halves = [_batches(data, _schedule(data, process_index=p, process_count=2),
                     0, 6, augmentation) for p in (0, 1)]
  for whole, first, second in zip(single, *halves):
    assert first['noisy'].shape == (4, WINDOW)
    for key in ('noisy', 'clean'):
      np.testing.assert_array_equal(
          np.concatenate([first[key], second[key]]), whole[key])


def test_draws_of_one_augmentation_ignore_the_others():
  alone = _augmentation(remix_prob=0.5)
  together = _augmentation(remix_prob=0.5, gain_db=3.0, speed_prob=0.5,
                           eq_prob=0.5, pitch_prob=0.5)
  partners = []
  for position in range(32):
    a = augment.draw(alone, 0, 7, position, 5, 100)
    b = augment.draw(together, 0, 7, position, 5, 100)
    assert (a.partner, a.remix_gain_db) == (b.partner, b.remix_gain_db)
    assert a.speed is None and a.gain_db is None
    partners.append(a.partner)
  assert 5 < partners.count(None) < 27  # about half are remixed


def test_from_config_and_validation():
  config = Config(remix_prob=0.25, remix_gain_db=(-3, 2), gain_db=4,
                  speed_prob=0.5, speed_range=(0.95, 1.05))
  augmentation = augment.Augmentation.from_config(config)
  assert config.augments and augmentation.enabled
  assert augmentation == augment.Augmentation(0.25, (-3.0, 2.0), 4.0, 0.5,
                                              (0.95, 1.05), 0.0, 6.0, 0.0,
                                              (0.8, 1.25))
  with pytest.raises(ValueError, match='eq_prob'):
    _augmentation(eq_prob=2.0)
  with pytest.raises(ValueError, match='eq_gain_db'):
    _augmentation(eq_gain_db=-1.0)
  with pytest.raises(ValueError, match='gain_db'):
    _augmentation(gain_db=-1)
  with pytest.raises(ValueError, match='speed_range'):
    _augmentation(speed_range=(0.0, 1.0))
  with pytest.raises(ValueError, match='remix_prob'):
    _augmentation(remix_prob=1.5)
  with pytest.raises(ValueError, match='pitch_range'):
    _augmentation(pitch_range=(-1.0, 1.0))
  with pytest.raises(ValueError, match='pitch_prob'):
    _augmentation(pitch_prob=-0.1)


# train_and_evaluate must pass the run's augmentation to
# input_pipeline.batches; without it the spy sees none and this test fails.
def test_augmented_training_resumes_bit_identically(tiny_config, tmp_path,
                                                    passed_augmentations):
  from segan_jax import train  # pylint: disable=g-import-not-at-top
  config = tiny_config.replace(model='autoencoder', dataset_size=1,
                               num_epochs=2, remix_prob=0.5, gain_db=6.0,
                               speed_prob=0.5)
  straight = train.train_and_evaluate(config, str(tmp_path / 'straight'))
  assert passed_augmentations and passed_augmentations[-1] == (
      augment.Augmentation.from_config(config))
  train.train_and_evaluate(config.replace(num_epochs=1),
                           str(tmp_path / 'resumed'))
  resumed = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  assert len(resumed['history']) < len(straight['history'])  # it did resume
  leaves = jax.tree.leaves(straight['states'])
  for a, b in zip(leaves, jax.tree.leaves(resumed['states']), strict=True):
    np.testing.assert_array_equal(a, b)


def test_eq_filters_noisy_and_clean_alike_by_its_gain_at_its_centre():
  t = np.arange(16384) / 16000
  clean = np.sin(2 * np.pi * 1000 * t)
  noise = 0.1 * np.sin(2 * np.pi * 3000 * t)
  pair = np.stack([clean + noise, clean])
  boosted = augment.peaking_eq(pair, 1000.0, 6.0)
  # Linear and the same filter on both: the noise is filtered as the noisy.
  np.testing.assert_allclose(boosted[0] - boosted[1],
                             augment.peaking_eq(np.stack([noise, noise]),
                                                1000.0, 6.0)[0], atol=1e-12)
  # +6 dB at the centre (after the filter's start from rest).
  steady = slice(4000, None)
  ratio = np.std(boosted[1, steady]) / np.std(clean[steady])
  assert 20 * np.log10(ratio) == pytest.approx(6.0, abs=0.05)
  # Zero gain passes the signal on; a cut of the same size undoes the boost.
  np.testing.assert_allclose(augment.peaking_eq(pair, 1000.0, 0.0), pair,
                             atol=1e-12)
  undone = augment.peaking_eq(boosted, 1000.0, -6.0)
  np.testing.assert_allclose(undone, pair, atol=1e-9)


def test_eq_draws_centres_and_gains_within_their_ranges(data):
  augmentation = _augmentation(eq_prob=1.0, eq_gain_db=4.0)
  draws = [augment.draw(augmentation, 0, 3, p, 0, 10).eq for p in range(64)]
  centres, gains = np.array(draws).T
  assert centres.min() >= augment.EQ_LOW_HZ
  assert centres.max() <= augment.EQ_HIGH_HZ
  assert np.all(np.abs(gains) <= 4.0) and gains.min() < 0 < gains.max()
  assert augment.draw(_augmentation(), 0, 3, 0, 0, 10).eq is None
  batch = augment.augment_batch(data, np.array([0, 1]), np.array([0, 1]),
                                seed=0, step=3, augmentation=augmentation)
  plain = augment.augment_batch(data, np.array([0, 1]), np.array([0, 1]),
                                seed=0, step=3,
                                augmentation=_augmentation())
  assert batch.dtype == np.float32 and batch.shape == plain.shape
  assert not np.allclose(batch, plain)


def _harmonics(f0, n, rate=16000):
  t = np.arange(n) / rate
  return 0.1 * sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))


def _peak_hz(x, rate=16000):
  spectrum = np.abs(np.fft.rfft(x * np.hanning(x.shape[-1])))
  return np.fft.rfftfreq(x.shape[-1], 1 / rate)[np.argmax(spectrum)]


@pytest.mark.parametrize('factor', [0.8, 1.25])
def test_pitch_moves_the_pitch_and_keeps_noise_and_length(factor):
  window = 16384
  clean = _harmonics(150.0, window + augment.PITCH_MARGIN)
  noise = 0.01 * np.random.default_rng(0).standard_normal(clean.shape[-1])
  out = augment.pitch(np.stack([clean + noise, clean]), window, factor)
  assert out.shape == (2, window)
  assert _peak_hz(out[1]) == pytest.approx(150.0 * factor, abs=2.0)
  np.testing.assert_allclose(out[0] - out[1], noise[:window], atol=1e-12)
  same = augment.pitch(np.stack([clean + noise, clean]), window, 1.0)
  np.testing.assert_array_equal(same, np.stack([clean + noise,
                                                clean])[:, :window])


def test_pitch_keeps_the_tempo():
  # Tone bursts every 4,000 samples stay every 4,000 samples (a resampling
  # alone would move them to every 3,200 at factor 1.25).
  n = 16384 + augment.PITCH_MARGIN
  bursts = np.zeros(n)
  bursts[::4000] = 1.0
  envelope = np.convolve(bursts, np.hanning(400), 'same')
  tone = envelope * np.sin(2 * np.pi * 200 * np.arange(n) / 16000)
  shifted = augment.pitch(np.stack([tone, tone]), 16384, 1.25)[1]
  level = np.convolve(np.abs(shifted), np.ones(200) / 200, 'same')
  peaks = [i for i in range(1, 16383)
           if level[i] >= level[i - 1] and level[i] > level[i + 1]
           and level[i] > 0.5 * level.max()]
  starts = [p for k, p in enumerate(peaks) if k == 0 or p - peaks[k - 1] > 2000]
  assert len(starts) == 5
  # WSOLA moves grains by up to its tolerance (128 samples) each.
  np.testing.assert_allclose(np.diff(starts), 4000, atol=300)
  # The stretch itself keeps the pitch: a 200 Hz tone stays at 200 Hz.
  tone = np.sin(2 * np.pi * 200 * np.arange(8000) / 16000)
  longer = augment.time_stretch(tone, 16000, 2.0)
  assert longer.shape == (16000,)
  assert _peak_hz(longer) == pytest.approx(200.0, abs=2.0)


def test_pitch_in_the_pipeline_by_one_is_today_and_otherwise_not(data):
  schedule = _schedule(data)
  end = 2 * schedule.steps_per_epoch
  today = _batches(data, schedule, 0, end)
  identity = _augmentation(pitch_prob=1.0, pitch_range=(1.0, 1.0),
                           speed_prob=1.0, speed_range=(1.0, 1.0))
  _assert_batches_equal(_batches(data, schedule, 0, end, identity), today)
  lower = _batches(data, schedule, 0, end,
                   _augmentation(pitch_prob=1.0, pitch_range=(0.8, 0.8),
                                 speed_prob=0.5))
  for shifted, plain in zip(lower, today):
    assert not np.array_equal(shifted['clean'], plain['clean'])
    assert shifted['noisy'].shape == plain['noisy'].shape
