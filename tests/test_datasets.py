"""Real-data sources (TFDS wav_pairs and voicebank_demand) and the input pipeline."""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import soundfile

from segan_jax import audio
from segan_jax import datasets
from segan_jax import input_pipeline

SHARED = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data'
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f'shared speech data not found at {SHARED}')


def _wav_names(folder):
  return sorted(p.name for p in pathlib.Path(folder).glob('*.wav'))


@needs_shared
def test_wav_pairs_counts_values_and_windows(tmp_path):
  source = datasets.get_source('wav_pairs', 'train', str(SHARED / 'vbd_test'),
                               tfds_data_dir=str(tmp_path))
  names = _wav_names(SHARED / 'vbd_test' / 'noisy')
  assert len(source) == len(names) == 25
  example = source[0]
  assert example['id'] in names and example['speaker'] == 'p232'
  # 16-bit 16 kHz files are stored bit-exactly.
  stored, _ = soundfile.read(SHARED / 'vbd_test' / 'noisy' / example['id'],
                             dtype='int16')
  np.testing.assert_array_equal(audio.to_int16(example['noisy']), stored)
  # Windows: 1 + ceil(max(0, L - W) / hop) per file, summed.
  lengths = [soundfile.info(SHARED / 'vbd_test' / 'noisy' / n).frames
             for n in names]
  expected = sum(1 + -(-max(0, n - 16384) // 8192) for n in lengths)
  windows = input_pipeline.WindowedPairs(source, 16384, 8192, 0.95)
  assert len(windows) == expected
  # Cached and streamed windows agree.
  streamed = input_pipeline.WindowedPairs(source, 16384, 8192, 0.95,
                                          cache_bytes=0)
  assert streamed.cache is None and windows.cache is not None
  np.testing.assert_array_equal(windows.windows(np.arange(0, expected, 7)),
                                streamed.windows(np.arange(0, expected, 7)))


def _link_pairs(src, dst, names):
  for kind in ('noisy', 'clean'):
    (dst / kind).mkdir(parents=True)
    for n in names:
      os.symlink(src / kind / n, dst / kind / n)


@needs_shared
def test_wav_pairs_train_test_layout(tmp_path):
  names = _wav_names(SHARED / 'vbd_test' / 'noisy')
  root = tmp_path / 'mine'
  _link_pairs(SHARED / 'vbd_test', root / 'train', names[:5])
  _link_pairs(SHARED / 'vbd_test', root / 'test', names[5:8])
  kwargs = dict(tfds_data_dir=str(tmp_path / 'tfds'))
  assert len(datasets.get_source('wav_pairs', 'train', str(root), **kwargs)) == 5
  assert len(datasets.get_source('wav_pairs', 'test', str(root), **kwargs)) == 3
  with pytest.raises(ValueError, match="no split 'validation'; available"):
    datasets.get_source('wav_pairs', 'validation', str(root), **kwargs)


def _fake_voicebank(root):
  """An official-layout manual dir from the 48 kHz pairs (one folder zipped)."""
  src = SHARED / '48k'
  train = [n for n in _wav_names(src / 'noisy') if n.startswith('p226')]
  test = [n for n in _wav_names(src / 'noisy') if n.startswith('p232')]
  for kind in ('clean', 'noisy'):
    train_dir = root / f'{kind}_trainset_28spk_wav'
    test_dir = root / f'{kind}_testset_wav'
    train_dir.mkdir(parents=True)
    test_dir.mkdir()
    for i, n in enumerate(train):
      # Two files play the held-out validation speakers p286 and p287.
      name = {8: 'p286_001.wav', 9: 'p287_001.wav'}.get(i, n)
      shutil.copy(src / kind / n, train_dir / name)
    for n in test:
      shutil.copy(src / kind / n, test_dir / n)
  # The official downloads are zips holding the folder.
  folder = root / 'noisy_testset_wav'
  with zipfile.ZipFile(str(folder) + '.zip', 'w') as z:
    for f in folder.iterdir():
      z.write(f, f'noisy_testset_wav/{f.name}')
  shutil.rmtree(folder)
  return len(train) - 2, 2, len(test)


@needs_shared
def test_voicebank_demand_from_manual_dir(tmp_path):
  manual = tmp_path / 'manual'
  n_train, n_val, n_test = _fake_voicebank(manual)
  kwargs = dict(manual_dir=str(manual), tfds_data_dir=str(tmp_path / 'tfds'))
  train = datasets.get_source('voicebank_demand', 'train', **kwargs)
  val = datasets.get_source('voicebank_demand', 'validation', **kwargs)
  test = datasets.get_source('voicebank_demand', 'test', **kwargs)
  assert (len(train), len(val), len(test)) == (n_train, n_val, n_test)
  assert {val[i]['speaker'] for i in range(len(val))} == {'p286', 'p287'}
  assert {train[i]['speaker'] for i in range(len(train))} == {'p226'}
  # 48 kHz -> 16 kHz: a third of the samples, and the same signal as the
  # corpus's own 16 kHz version of that file (soxr VHQ, 16-bit) in vbd_train.
  by_id = {test[i]['id']: test[i] for i in range(len(test))}
  example = by_id['p232_001.wav']
  frames48 = soundfile.info(SHARED / '48k' / 'noisy' / 'p232_001.wav').frames
  assert len(example["noisy"]) == -(-frames48 // 3)  # soxr rounds up
  reference16 = SHARED / 'vbd_train' / 'noisy' / 'p232_001.wav'
  if reference16.exists():
    ref, _ = soundfile.read(reference16, dtype='int16')
    diff = np.abs(audio.to_int16(example['noisy']).astype(int) - ref)
    assert diff.max() <= 2


def test_voicebank_demand_missing_manual_dir(tmp_path):
  with pytest.raises(ValueError, match='doi.org/10.7488/ds/2117') as e:
    datasets.get_source('voicebank_demand', 'train',
                        manual_dir=str(tmp_path / 'nothing'),
                        tfds_data_dir=str(tmp_path / 'tfds'))
  assert '\n' not in str(e.value)
  (tmp_path / 'partial' / 'clean_testset_wav').mkdir(parents=True)
  with pytest.raises(ValueError, match='missing clean_trainset_28spk_wav, '
                     'noisy_trainset_28spk_wav, noisy_testset_wav'):
    datasets.get_source('voicebank_demand', 'train',
                        manual_dir=str(tmp_path / 'partial'),
                        tfds_data_dir=str(tmp_path / 'tfds'))


def _write(path, data, rate=16000, subtype='PCM_16'):
  path.parent.mkdir(parents=True, exist_ok=True)
  soundfile.write(path, data, rate, subtype=subtype)


def _good(n=4000, seed=0):
  rng = np.random.default_rng(seed)
  clean = 0.3 * np.sin(np.arange(n) / 7.0)
  return clean + 0.05 * rng.standard_normal(n), clean


BAD_CASES = {
    'missing clean partner': ('no clean partner', lambda d: _write(
        d / 'noisy' / 'x.wav', _good()[0])),
    'lengths differ': ('samples at 16 kHz but its clean partner', lambda d: (
        _write(d / 'noisy' / 'x.wav', _good(4000)[0]),
        _write(d / 'clean' / 'x.wav', _good(3000)[1]))),
    'not audio': ('not a readable audio file', lambda d: (
        (d / 'noisy').mkdir(parents=True, exist_ok=True),
        (d / 'noisy' / 'x.wav').write_text('hello'),
        _write(d / 'clean' / 'x.wav', _good()[1]))),
    'empty audio': ('empty audio', lambda d: (
        _write(d / 'noisy' / 'x.wav', np.zeros(0)),
        _write(d / 'clean' / 'x.wav', np.zeros(0)))),
    'silent clean': ('all-zero (silent) clean', lambda d: (
        _write(d / 'noisy' / 'x.wav', _good()[0]),
        _write(d / 'clean' / 'x.wav', np.zeros(4000)))),
    'NaN samples': ('NaN or infinite', lambda d: (
        _write(d / 'noisy' / 'x.wav', np.full(4000, np.nan), subtype='FLOAT'),
        _write(d / 'clean' / 'x.wav', _good()[1]))),
}


@pytest.mark.parametrize('case', list(BAD_CASES))
def test_bad_pairs_fail_with_one_line_or_are_skipped(tmp_path, case):
  message, make = BAD_CASES[case]
  root = tmp_path / 'data'
  for i in range(2):  # two good pairs beside the bad one
    noisy, clean = _good(seed=i)
    _write(root / 'noisy' / f'good{i}.wav', noisy)
    _write(root / 'clean' / f'good{i}.wav', clean)
  make(root)
  kwargs = dict(tfds_data_dir=str(tmp_path / 'tfds'))
  with pytest.raises(ValueError, match=re.escape(message)) as e:
    datasets.get_source('wav_pairs', 'train', str(root), **kwargs)
  assert '\n' not in str(e.value) and 'x.wav' in str(e.value)
  assert '--skip_bad_files' in str(e.value)
  source = datasets.get_source('wav_pairs', 'train', str(root),
                               skip_bad_files=True, **kwargs)
  assert sorted(source[i]['id'] for i in range(len(source))) == [
      'good0.wav', 'good1.wav']


def test_stereo_24bit_48k_pairs_become_mono_16k(tmp_path):
  noisy, clean = _good(48000)
  root = tmp_path / 'data'
  _write(root / 'noisy' / 'a.wav', np.stack([noisy, noisy], 1), 48000, 'PCM_24')
  _write(root / 'clean' / 'a.wav', clean, 48000, 'FLOAT')
  source = datasets.get_source('wav_pairs', 'train', str(root),
                               tfds_data_dir=str(tmp_path / 'tfds'))
  example = source[0]
  assert example['noisy'].shape == example['clean'].shape == (16000,)


def test_no_pairs_and_missing_folder(tmp_path):
  (tmp_path / 'empty' / 'noisy').mkdir(parents=True)
  (tmp_path / 'empty' / 'clean').mkdir()
  kwargs = dict(tfds_data_dir=str(tmp_path / 'tfds'))
  with pytest.raises(ValueError, match='no \\(noisy, clean\\) pairs'):
    datasets.get_source('wav_pairs', 'train', str(tmp_path / 'empty'), **kwargs)
  with pytest.raises(ValueError, match='expected noisy/ and clean/'):
    datasets.get_source('wav_pairs', 'train', str(tmp_path), **kwargs)
  with pytest.raises(ValueError, match='needs --data_dir'):
    datasets.get_source('wav_pairs', 'train', None, **kwargs)


class _Counting:
  """A tiny in-memory source."""

  def __init__(self, lengths):
    rng = np.random.default_rng(0)
    self.items = [{'noisy': rng.standard_normal(n).astype(np.float32),
                   'clean': rng.standard_normal(n).astype(np.float32),
                   'id': str(i)} for i, n in enumerate(lengths)]

  def __len__(self):
    return len(self.items)

  def __getitem__(self, i):
    return self.items[i]


def test_resumed_pipeline_gives_the_same_batches():
  data = input_pipeline.WindowedPairs(_Counting([300, 1000, 64, 513]), 128,
                                      64, 0.95)
  schedule = input_pipeline.BatchSchedule(len(data), 4, seed=3,
                                          process_index=0, process_count=1)
  total = 3 * schedule.steps_per_epoch
  straight = list(input_pipeline.batches(data, schedule, 0, total))
  # Resume in the middle of the second epoch.
  resume_at = schedule.steps_per_epoch + 2
  resumed = list(input_pipeline.batches(data, schedule, resume_at, total))
  assert len(resumed) == total - resume_at
  for a, b in zip(straight[resume_at:], resumed):
    np.testing.assert_array_equal(a['noisy'], b['noisy'])
    np.testing.assert_array_equal(a['clean'], b['clean'])
  # Epochs are shuffled differently; windows are pre-emphasised.
  assert not np.array_equal(schedule.global_indices(0),
                            schedule.global_indices(schedule.steps_per_epoch))
  first = data[0]
  raw = data.source[0]['noisy'][:128]
  np.testing.assert_allclose(first[0], audio.preemphasis(raw), atol=1e-6)


def test_processes_read_disjoint_shards_of_each_global_batch():
  schedules = [input_pipeline.BatchSchedule(1000, 16, seed=0, process_index=p,
                                            process_count=2) for p in (0, 1)]
  for step in (0, 5, 62, 63, 64, 500):
    local = [s.local_indices(step) for s in schedules]
    assert len(local[0]) == len(local[1]) == 8
    assert not set(local[0]) & set(local[1])
    np.testing.assert_array_equal(np.concatenate(local),
                                  schedules[0].global_indices(step))


@needs_shared
def test_tensorflow_is_never_imported(tmp_path):
  code = f'''
import sys
from segan_jax import datasets, input_pipeline
source = datasets.get_source('wav_pairs', 'train', {str(SHARED / 'babble')!r},
                             tfds_data_dir={str(tmp_path)!r})
data = input_pipeline.WindowedPairs(source, 1024, 512, 0.95)
schedule = input_pipeline.BatchSchedule(len(data), 4, 0)
batch = next(input_pipeline.batches(data, schedule, 0, 2))
assert batch['noisy'].shape == (4, 1024)
print('tensorflow imported:', any(m == 'tensorflow' or m.startswith('tensorflow.') for m in sys.modules))
'''
  result = subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'tensorflow imported: False' in result.stdout


@needs_shared
def test_processes_building_the_same_dataset_together_both_succeed(tmp_path):
  # Two runs started together on new data: one builds, the other waits for
  # it (without the lock, the second failed renaming its copy into place).
  code = f'''
from segan_jax import datasets
source = datasets.get_source('wav_pairs', 'train', {str(SHARED / 'vbd_test')!r},
                             tfds_data_dir={str(tmp_path)!r})
print('pairs', len(source))
'''
  runs = [subprocess.Popen([sys.executable, '-c', code], text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
          for _ in range(2)]
  for run in runs:
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err[-2000:]
    assert 'pairs 25' in out
