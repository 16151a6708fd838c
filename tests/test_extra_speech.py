"""Extra clean speech (--extra_speech_dirs): its windows join the training
windows after the pairs', always take new noise at an SNR in range whatever
--noise_mix_prob, deterministically; bad settings answer in one line; and
the pieces of experiments/make_tts_voices.py that need no TTS tool."""

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
import soundfile

from segan_jax import audio
from segan_jax import augment
from segan_jax import input_pipeline
from segan_jax import noise_mix
from segan_jax.config import Config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = audio.SAMPLE_RATE
# The tiny size's window (1024): a few windows per utterance.
CONFIG = Config(model_size='tiny', dataset='synthetic', dataset_size=2,
                noise_kinds=('coloured', 'hum'), noise_snr_db=(0.0, 10.0),
                batch_size=4)


def _tone(seconds, hz, rate=RATE):
  t = np.arange(int(seconds * rate)) / rate
  return 0.3 * np.sin(2 * np.pi * hz * t) * (1 + np.sin(2 * np.pi * 4 * t)) / 2


@pytest.fixture(scope='module')
def speech_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp('speech')
  soundfile.write(folder / 'a.wav', _tone(0.3, 220), RATE, subtype='PCM_16')
  # 22.05 kHz, as espeak-ng writes: resampled at load.
  soundfile.write(folder / 'b.wav', _tone(0.2, 330, 22050), 22050,
                  subtype='PCM_16')
  (folder / 'MANIFEST.json').write_text('{}')  # not audio: skipped
  return str(folder)


@pytest.fixture(scope='module')
def data(speech_dir):
  return input_pipeline.load_train_windows(
      CONFIG.replace(extra_speech_dirs=(speech_dir,)))


def test_extra_windows_follow_the_pairs(data, speech_dir):
  plain = input_pipeline.load_train_windows(CONFIG)
  extra = input_pipeline.WindowedPairs(
      input_pipeline.CleanSpeech((speech_dir,)), CONFIG.window, CONFIG.hop,
      CONFIG.preemphasis)
  assert data.num_pair_windows == len(plain) > 0
  assert len(data) == len(plain) + len(extra) > len(plain)
  assert not any(data.clean_only(i) for i in range(len(plain)))
  assert all(data.clean_only(i) for i in range(len(plain), len(data)))
  np.testing.assert_array_equal(data[0], plain[0])
  np.testing.assert_array_equal(data[len(plain)], extra[0])
  # Clean only: the stored noisy is the clean, at 16 kHz (b.wav resampled).
  np.testing.assert_array_equal(data[len(plain)][0], data[len(plain)][1])
  assert extra.source[1]['clean'].shape[0] == round(0.2 * RATE)
  # Only pairs are in D's reference batch.
  assert input_pipeline.vbn_reference(data, 64, 0).shape[0] == 64
  np.testing.assert_array_equal(input_pipeline.vbn_reference(data, 8, 3),
                                input_pipeline.vbn_reference(plain, 8, 3))


def _snr_db(pair, preemphasis):
  noisy, clean = audio.deemphasis(np.asarray(pair, np.float64), preemphasis)
  return 10 * np.log10(np.sum(clean.astype(np.float64)**2) /
                       np.sum((noisy.astype(np.float64) - clean)**2))


@pytest.mark.parametrize('prob', [0.0, 0.5])
def test_extra_windows_always_take_noise_in_range(data, speech_dir, prob):
  config = CONFIG.replace(extra_speech_dirs=(speech_dir,), noise_mix_prob=prob)
  augmentation = input_pipeline.make_augmentation(config, data)
  assert augmentation.enabled and config.augments
  extra = range(data.num_pair_windows, len(data))
  for step in range(3):
    for i in extra:
      out = augment.augment_window(data, i, i % 4, seed=1, step=step,
                                   augmentation=augmentation)
      assert not np.allclose(out[0], out[1])
      np.testing.assert_allclose(out[1], data[i][1], atol=1e-6)
      # Loud windows: their SNR is the drawn one, within the range.
      if np.std(audio.deemphasis(data[i][1], 0.95)) > 0.05:
        assert -0.05 <= _snr_db(out, config.preemphasis) <= 10.05
  if prob == 0.0:  # the pairs keep their noisy input
    out = augment.augment_window(data, 0, 0, seed=1, step=0,
                                 augmentation=augmentation)
    np.testing.assert_array_equal(out, data[0])


def test_batches_with_extra_speech_are_deterministic(data, speech_dir):
  config = CONFIG.replace(extra_speech_dirs=(speech_dir,))
  augmentation = input_pipeline.make_augmentation(config, data)
  schedule = input_pipeline.BatchSchedule(len(data), 4, 2, 0, 1)
  runs = [list(input_pipeline.batches(data, schedule, 0, 4,
                                      augmentation=augmentation))
          for _ in range(2)]
  for a, b in zip(*runs):
    np.testing.assert_array_equal(a['noisy'], b['noisy'])
    np.testing.assert_array_equal(a['clean'], b['clean'])
  # Every batch's clean-only windows were given noise.
  for step, batch in enumerate(runs[0]):
    for k, i in enumerate(schedule.local_indices(step)):
      if data.clean_only(int(i)):
        assert not np.allclose(batch['noisy'][k], batch['clean'][k])


def test_bad_extra_speech_settings_answer_in_one_line(tmp_path):
  with pytest.raises(ValueError, match=r'^--extra_speech_dirs needs noise '
                     r'.*--noise_dirs or --noise_kinds$'):
    CONFIG.replace(extra_speech_dirs=('x',), noise_kinds=())
  (tmp_path / 'notes.txt').write_text('no audio')
  with pytest.raises(ValueError, match=f'^--extra_speech_dirs: {tmp_path}: '
                     'no audio files in it$'):
    input_pipeline.load_train_windows(
        CONFIG.replace(extra_speech_dirs=(str(tmp_path),)))
  with pytest.raises(ValueError, match='nowhere: not a folder$'):
    input_pipeline.load_train_windows(
        CONFIG.replace(extra_speech_dirs=(str(tmp_path / 'nowhere'),)))


def test_extra_speech_alone_loads_no_clips_until_asked():
  settings = noise_mix.NoiseSettings(extra_speech_dirs=('x',))
  assert settings.mixes and settings.enabled
  assert not noise_mix.NoiseSettings().mixes


def _script():
  spec = importlib.util.spec_from_file_location(
      'make_tts_voices', os.path.join(REPO, 'experiments',
                                      'make_tts_voices.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_sentences_are_seeded_distinct_and_enough():
  tts = _script()
  first = tts.sentences(400, seed=0)
  assert first == tts.sentences(400, seed=0)
  assert len(set(first)) == 400
  assert tts.sentences(400, seed=1) != first
  assert all(s[0].isupper() and s[-1] in '.?' for s in first)
  # Every voice's share of the default run is its own text.
  assert len(tts.VOICES) * 30 <= 400


def test_manifest_records_packages_and_seconds(tmp_path, monkeypatch):
  tts = _script()
  voices = [{'voice': 'v', 'command': ['flite', '-voice', 'slt'],
             'seconds': 2.5, 'files': [{'file': 'v_000.wav', 'seconds': 2.5,
                                        'text': 'A b.'}]}]
  path = tts.write_manifest(str(tmp_path), {'flite': '2.2-5'}, voices, 0)
  manifest = json.loads(open(path).read())
  assert os.path.basename(path) == 'MANIFEST.json'
  assert manifest['packages'] == {'flite': '2.2-5'}
  assert manifest['total_seconds'] == 2.5 and manifest['sample_rate'] == RATE
  assert not audio.is_audio_file_name(path)
  # A missing tool: one line naming its apt package.
  monkeypatch.setattr(tts.shutil, 'which', lambda name: None)
  with pytest.raises(SystemExit, match=r'^error: espeak-ng not found: '
                     r'apt-get install -y espeak-ng$'):
    tts.check_tools()
  assert tts.package_versions() == {}


def test_trim_and_level():
  tts = _script()
  x = np.concatenate([np.zeros(8000), _tone(0.5, 200), np.zeros(8000)])
  y = tts.trim_and_level(x, -23.0)
  # The silent ends go, but for a margin of 0.1 s each.
  assert 0.5 * RATE - 400 <= y.shape[0] <= 0.5 * RATE + 2 * 1600 + 1
  assert abs(20 * np.log10(np.sqrt(np.mean(y**2))) + 23.0) < 0.1
  with pytest.raises(ValueError, match='silent'):
    tts.trim_and_level(np.zeros(100), -23.0)


@pytest.mark.skipif(not (shutil.which('flite') and shutil.which('espeak-ng')),
                    reason='flite and espeak-ng not installed (apt-get '
                    'install -y flite espeak-ng); CI need not have them')
def test_tools_synthesise_16k_speech(tmp_path):
  tts = _script()
  for tool, args in (('flite', ('-voice', 'slt')),
                     ('espeak-ng', ('-v', 'en-us+f3'))):
    speech = tts.synthesise(tool, args, 'The birch canoe slid.',
                            str(tmp_path / 'out.wav'))
    assert 0.5 * RATE < speech.shape[0] < 4 * RATE
    assert np.std(speech) > 0.01
  assert set(tts.package_versions()) >= {'flite', 'espeak-ng'}
