"""Noise and room augmentation (segan_jax/noise_mix.py): the drawn SNR is the
mix's, each generated kind has its defining property, held-out clips never
train, rooms keep the length and their RT60, bad folders answer in one line,
and the pipeline is deterministic in (seed, step) end to end."""

import os

import numpy as np
import pytest
import soundfile
from scipy import signal

from segan_jax import audio
from segan_jax import input_pipeline
from segan_jax import noise_mix
from segan_jax.config import Config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_NOISE = os.path.join(os.path.dirname(REPO), 'shared', 'data', 'noise')
WINDOW, HOP = 4096, 2048
RATE = audio.SAMPLE_RATE


def _pairs(count=4, length=9000):
  """Utterances (a list is a source) of speech-like tones + white noise."""
  rng = np.random.default_rng(0)
  t = np.arange(length) / RATE
  items = []
  for i in range(count):
    clean = 0.2 * np.sin(2 * np.pi * (150 + 40 * i) * t) * (
        1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(length)
    noise = 0.05 * rng.standard_normal(length)
    items.append({'noisy': (clean + noise).astype(np.float32),
                  'clean': clean.astype(np.float32), 'id': str(i)})
  return items


@pytest.fixture(scope='module')
def data():
  return input_pipeline.WindowedPairs(_pairs(), WINDOW, HOP, 0.95)


def _write(path, x, rate=RATE):
  soundfile.write(path, np.asarray(x, np.float32), rate, subtype='PCM_16')


@pytest.fixture(scope='module')
def noise_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp('noise')
  rng = np.random.default_rng(1)
  _write(folder / 'white.wav', 0.1 * rng.standard_normal(RATE))
  _write(folder / 'short.wav', 0.1 * rng.standard_normal(500))  # looped
  # 48 kHz stereo: resampled and downmixed at load.
  _write(folder / 'tone48k.wav', np.stack(
      [0.2 * np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)] * 2, -1),
         rate=48000)
  _write(folder / 'heldout.wav', 0.1 * rng.standard_normal(RATE))
  return str(folder)


def _mixer(data, **changes):
  settings = noise_mix.NoiseSettings.from_config(Config(**changes))
  return noise_mix.NoiseMixer.build(settings, data, 0.95)


def _waveforms(pair):
  return (np.asarray(x, np.float64) for x in audio.deemphasis(pair, 0.95))


def test_the_mix_has_the_drawn_snr_and_keeps_the_clean_target(data,
                                                               noise_dir):
  mixer = _mixer(data, noise_mix_prob=1.0, noise_dirs=(noise_dir,),
                 noise_snr_db=(-5.0, 20.0))
  snrs, kinds = [], set()
  for position in range(30):
    index = position % len(data)
    choice = mixer.draw(seed=0, step=3, position=position)
    out = mixer.mix_window(data[index], data, index, choice)
    noisy, clean = _waveforms(out)
    _, original = _waveforms(data[index])
    np.testing.assert_allclose(clean, original, atol=1e-5)  # target kept
    measured = 10 * np.log10(np.sum(clean**2) / np.sum((noisy - clean)**2))
    assert measured == pytest.approx(choice.snr_db, abs=0.05)
    assert -5.0 <= choice.snr_db <= 20.0
    snrs.append(choice.snr_db)
    kinds.add(choice.kind)
  assert np.ptp(snrs) > 10  # drawn, not fixed
  assert kinds == {'file', *noise_mix.NOISE_KINDS}  # every kind is drawn


def test_draws_are_deterministic_in_seed_and_step(data, noise_dir):
  mixer = _mixer(data, noise_mix_prob=0.7, noise_dirs=(noise_dir,),
                 room_prob=0.5)

  def mixed(seed, step):
    return np.stack([mixer.mix_window(data[p % len(data)], data,
                                      p % len(data),
                                      mixer.draw(seed, step, p))
                     for p in range(8)])

  np.testing.assert_array_equal(mixed(0, 5), mixed(0, 5))
  assert not np.allclose(mixed(0, 5), mixed(0, 6))
  assert not np.allclose(mixed(0, 5), mixed(1, 5))
  # A rebuilt mixer (another process, a resumed run) draws the same.
  again = _mixer(data, noise_mix_prob=0.7, noise_dirs=(noise_dir,),
                 room_prob=0.5)
  assert again.draw(0, 5, 3) == mixer.draw(0, 5, 3)


def _log_psd(x):
  freqs, power = signal.welch(x, fs=RATE, nperseg=1024)
  return freqs, power


def test_coloured_noise_has_its_slope():
  rng = np.random.default_rng(0)
  for exponent in (0.0, 1.0, 2.0):
    freqs, power = _log_psd(noise_mix.coloured_noise(rng, 4 * RATE, exponent))
    band = (freqs > 100) & (freqs < 6000)
    slope = np.polyfit(np.log10(freqs[band]), np.log10(power[band]), 1)[0]
    assert slope == pytest.approx(-exponent, abs=0.15)


def test_hum_peaks_at_the_mains_harmonics():
  rng = np.random.default_rng(0)
  x = noise_mix.hum(rng, 4 * RATE, 60.0, 5)
  spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
  freqs = np.fft.rfftfreq(x.size, 1 / RATE)
  peaks = freqs[np.argsort(spectrum)[::-1]]
  top = []
  for f in peaks:  # the 5 largest separate peaks
    if all(abs(f - g) > 5 for g in top):
      top.append(f)
    if len(top) == 5:
      break
  np.testing.assert_allclose(sorted(top), 60.0 * np.arange(1, 6), atol=0.5)


def test_clicks_are_sparse():
  rng = np.random.default_rng(0)
  x = noise_mix.clicks(rng, 2 * RATE, 5.0)
  loud = np.abs(x) > 0.1 * np.max(np.abs(x))
  assert 0 < np.mean(loud) < 0.01
  kurtosis = np.mean(x**4) / np.mean(x**2)**2
  assert kurtosis > 50  # Gaussian noise: 3


def test_speech_shaped_noise_follows_the_speech_spectrum(data):
  mixer = _mixer(data, noise_mix_prob=1.0, noise_kinds=('speech_shaped',))
  x = noise_mix.shaped_noise(np.random.default_rng(0), 4 * RATE,
                             mixer.speech_spectrum)
  _, power = signal.welch(x, fs=RATE, nperseg=512)
  reference = np.log10(mixer.speech_spectrum + 1e-12)
  # Its spectrum is the speech's (the tones' low band dominates), far from
  # flat: the log spectra correlate closely.
  assert np.corrcoef(np.log10(power + 1e-12), reference)[0, 1] > 0.95
  assert np.ptp(reference) > 2


def test_babble_is_other_windows_speech(data):
  mixer = _mixer(data, noise_mix_prob=1.0, noise_kinds=('babble',))
  x = mixer.noise('babble', np.random.default_rng(0), WINDOW, data, 0)
  # Sum of the training tones: its energy lies at their pitches, below 400 Hz.
  freqs, power = _log_psd(x)
  assert np.sum(power[freqs < 400]) > 0.9 * np.sum(power)


def test_held_out_clips_are_never_drawn(data, noise_dir):
  mixer = _mixer(data, noise_mix_prob=1.0, noise_dirs=(noise_dir,),
                 noise_holdout=('heldout.wav',), noise_kinds=None)
  assert sorted(name for name, _ in mixer.clips) == [
      'short.wav', 'tone48k.wav', 'white.wav']
  assert mixer.kinds == ('file',)
  # Resampled once at load: 1 s at 48 kHz is 1 s at 16 kHz.
  clip = dict(mixer.clips)['tone48k.wav']
  assert clip.ndim == 1 and abs(clip.shape[0] - RATE) <= 1
  with pytest.raises(ValueError, match='typo.wav not in --noise_dirs'):
    _mixer(data, noise_mix_prob=1.0, noise_dirs=(noise_dir,),
           noise_holdout=('typo.wav',))


@pytest.mark.skipif(not os.path.isdir(SHARED_NOISE), reason='no shared data')
def test_the_recipes_holdout_names_shared_clips_that_never_train(data):
  lines = open(os.path.join(REPO, 'experiments', 'noise_holdout.flags')
               ).read().splitlines()
  holdout = next(l for l in lines if l.startswith('--noise_holdout='))
  names = tuple(holdout.split('=', 1)[1].split(','))
  mixer = _mixer(data, noise_mix_prob=1.0, noise_dirs=(SHARED_NOISE,),
                 noise_holdout=names, noise_kinds=None)
  trained = {name for name, _ in mixer.clips}
  assert trained and not trained & set(names)
  assert len(trained) + len(names) == len(
      [n for n in os.listdir(SHARED_NOISE) if n.endswith('.wav')])


def test_rooms_keep_the_length_and_their_rt60(data, tmp_path):
  rng = np.random.default_rng(0)
  for rt60 in (0.3, 0.7):
    rir = noise_mix.simulated_rir(rng, rt60, drr_db=0.0)
    assert noise_mix.rt60_of(rir) == pytest.approx(rt60, rel=0.15)
    # Direct to reverberant energy as asked.
    assert np.sum(rir[1:]**2) == pytest.approx(rir[0]**2, rel=1e-9)
  x = rng.standard_normal(1000)
  assert noise_mix.reverberate(x, rir).shape == x.shape
  # A response from a file is cut at its peak: the direct path at sample 0,
  # so the dry target stays aligned.
  delayed = np.concatenate([np.zeros(40), [0.5], 0.1 * rng.standard_normal(50)])
  np.testing.assert_allclose(noise_mix.align_rir(delayed)[0], 1.0)
  folder = tmp_path / 'rir'
  folder.mkdir()
  _write(folder / 'room.wav', delayed)
  mixer = _mixer(data, room_prob=1.0, rir_dirs=(str(folder),))
  rooms = {mixer.draw(0, 0, p).room for p in range(40)}
  assert rooms == {'file', 'simulated'}
  # Room alone: the speech reverberated, its own noise kept, target dry.
  choice = noise_mix.Draw(None, 0.0, 'simulated', (0, 1))
  out = mixer.mix_window(data[1], data, 1, choice)
  noisy, clean = _waveforms(out)
  original_noisy, original_clean = _waveforms(data[1])
  np.testing.assert_allclose(clean, original_clean, atol=1e-5)
  rir = mixer.room_response('simulated', np.random.default_rng([0, 1]))
  np.testing.assert_allclose(
      noisy - noise_mix.reverberate(original_clean, rir),
      original_noisy - original_clean, atol=1e-4)


def test_bad_folders_and_files_give_one_line(data, tmp_path):
  cases = []
  cases.append(((str(tmp_path / 'missing'),), 'not a folder'))
  empty = tmp_path / 'empty'
  empty.mkdir()
  cases.append(((str(empty),), 'no audio files in it'))
  broken = tmp_path / 'broken'
  broken.mkdir()
  (broken / 'bad.wav').write_text('not audio')
  cases.append(((str(broken),), 'bad.wav: not a readable audio file'))
  low = tmp_path / 'low'
  low.mkdir()
  _write(low / 'phone.wav', 0.1 * np.ones(800), rate=8000)
  cases.append(((str(low),), 'phone.wav: 8000 Hz, below 16000 Hz'))
  for dirs, message in cases:
    with pytest.raises(ValueError, match=message) as error:
      _mixer(data, noise_mix_prob=0.5, noise_dirs=dirs)
    assert '\n' not in str(error.value)
  with pytest.raises(ValueError, match='noise_mix_prob must be in'):
    Config(noise_mix_prob=2.0)
  with pytest.raises(ValueError, match='unknown noise_kinds rain'):
    Config(noise_kinds=('rain',))


def test_training_mixes_noise_end_to_end(tiny_config, tmp_path, noise_dir,
                                         passed_augmentations, monkeypatch):
  """A tiny run: the mixer reaches the batches and trains; a bad noise folder
  stops the run before any network is built."""
  from segan_jax import train  # pylint: disable=g-import-not-at-top
  config = tiny_config.replace(model='autoencoder', dataset_size=1,
                               num_epochs=1, noise_mix_prob=0.8,
                               room_prob=0.5, noise_snr_db=(0.0, 10.0),
                               noise_dirs=(noise_dir,))
  result = train.train_and_evaluate(config, str(tmp_path / 'run'))
  mixer = passed_augmentations[-1].noise
  assert mixer is not None and mixer.clips
  assert result['history'] and all(
      np.isfinite(v) for v in result['history'][-1].values())
  built = []
  monkeypatch.setattr(train, '_initial_states',
                      lambda *a: built.append(1))
  with pytest.raises(ValueError, match='nowhere: not a folder'):
    train.train_and_evaluate(
        config.replace(noise_dirs=(str(tmp_path / 'nowhere'),)),
        str(tmp_path / 'bad'))
  assert not built


def test_batches_with_noise_are_deterministic_and_mixed(data, noise_dir):
  config = Config(noise_mix_prob=1.0, noise_dirs=(noise_dir,))
  augmentation = input_pipeline.make_augmentation(config, data)
  assert augmentation.enabled and config.augments
  schedule = input_pipeline.BatchSchedule(len(data), 2, 3, 0, 1)
  first = list(input_pipeline.batches(data, schedule, 0, 3,
                                      augmentation=augmentation))
  second = list(input_pipeline.batches(data, schedule, 0, 3,
                                       augmentation=augmentation))
  plain = list(input_pipeline.batches(data, schedule, 0, 3))
  for a, b, c in zip(first, second, plain):
    np.testing.assert_array_equal(a['noisy'], b['noisy'])
    np.testing.assert_allclose(a['clean'], c['clean'], atol=1e-5)
    assert not np.allclose(a['noisy'], c['noisy'])
  off = input_pipeline.make_augmentation(Config(), data)
  assert off.noise is None and not off.enabled
