"""What real runs meet: odd and broken audio files, folders and flags.

Every case must end in one of two ways: correct output (an enhanced file with
the input's rate, channels and length and finite samples; an evaluation
table; a dataset holding the pair), or one line starting with ``error:``
naming the file and the problem (absl's own line for a bad flag value) and a
non-zero exit — never a traceback, never a changed input, never a partial
output.

To stay fast, the audio cases share work: one launch.py enhance run over a
folder holding all of them (per-file outcomes are read from that one run),
and in-process evaluate / dataset calls, which raise what launch.py turns
into its ``error:`` line. A handful of launch.py runs prove that path end to
end.
"""

import dataclasses
import os
import pathlib
from typing import Callable

import jax
import numpy as np
import pytest
import soundfile
import soxr
from conftest import speechlike  # pylint: disable=g-bad-import-order
from test_launch import launch  # pylint: disable=g-bad-import-order

from segan_jax import checkpoints
from segan_jax import datasets
from segan_jax import enhance
from segan_jax import enhance_files
from segan_jax import evaluate
from segan_jax import generators
from segan_jax import systems
from segan_jax.config import Config

OK = 'ok'            # correct output expected
IGNORED = 'ignored'  # not audio by name: left alone without a word


@dataclasses.dataclass(frozen=True)
class Case:
  """An input file and what enhance, evaluate and dataset building make of it.

  Each outcome is OK, IGNORED, or a substring of the expected error line.
  """
  name: str
  make: Callable[[pathlib.Path], None]
  enhance: str = OK
  evaluate: str = OK
  dataset: str = OK


def _tone(rate=16000, seconds=1.0, channels=1, subtype='PCM_16', scale=1.0):
  def make(path):
    soundfile.write(path, scale * speechlike(rate, seconds, channels), rate,
                    subtype=subtype)
  return make


def _samples(x, subtype='PCM_16'):
  return lambda path: soundfile.write(path, x, 16000, subtype=subtype)


def _truncated(keep_bytes):
  def make(path):
    _tone()(path)
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes(len(data))])
  return make


NOT_READABLE = 'not a readable audio file'
NAN = 'contains NaN or infinite samples'
EMPTY_AUDIO = 'empty audio (0 samples)'
SQUARE = np.sign(np.sin(2 * np.pi * 200 * np.arange(16000) / 16000))
SQUARE[SQUARE == 0] = 1.0

CASES = [
    Case('empty_file.wav', lambda p: p.write_bytes(b''),
         *['empty file (0 bytes)'] * 3),
    Case('zero_length.wav', _samples(np.zeros((0, 1))), *[EMPTY_AUDIO] * 3),
    # Enhancing silence is fine; it cannot be scored or learned from.
    Case('silence.wav', _samples(np.zeros(16000)),
         evaluate='processed signal is all zeros',
         dataset='all-zero (silent) noisy audio'),
    Case('nan.wav', _samples(np.full(16000, np.nan), 'FLOAT'), *[NAN] * 3),
    Case('inf.wav', _samples(np.where(np.arange(16000) == 9, np.inf, 0.1),
                             'FLOAT'), *[NAN] * 3),
    Case('clipping_square.wav', _samples(SQUARE)),
    Case('float_above_full_scale.wav', _tone(subtype='FLOAT', scale=3.0)),
    Case('pcm_u8.wav', _tone(subtype='PCM_U8')),
    Case('pcm_24.wav', _tone(subtype='PCM_24')),
    Case('pcm_32.wav', _tone(subtype='PCM_32')),
    Case('float64.wav', _tone(subtype='DOUBLE')),
    Case('mu_law.wav', _tone(subtype='ULAW')),
    Case('stereo.wav', _tone(channels=2)),
    Case('six_channels.wav', _tone(channels=6)),
    Case('rate_8000.wav', _tone(rate=8000)),
    Case('rate_22050.wav', _tone(rate=22050)),
    Case('rate_44100.wav', _tone(rate=44100, subtype='PCM_24')),
    Case('rate_48000.wav', _tone(rate=48000, channels=2)),
    Case('rate_96000.wav', _tone(rate=96000)),
    Case('flac.flac', _tone(rate=24000)),
    Case('vorbis.ogg', _tone(subtype=None)),  # soundfile's default: VORBIS
    Case('upper_case.WAV', _tone()),
    # Too short for PESQ, fine for everything else.
    Case('one_sample.wav', _samples(np.array([0.25])),
         evaluate='at least 1/4 of a second'),
    Case('text.wav', lambda p: p.write_text('hello, I am not audio\n'),
         *[NOT_READABLE] * 3),
    Case('truncated_header.wav', _truncated(lambda n: 20),
         *[NOT_READABLE] * 3),
    # A header promising more data than the file holds: what is there counts.
    Case('truncated_data.wav', _truncated(lambda n: n // 2)),
    # macOS metadata beside x.wav; not audio, so not looked at.
    Case('._appledouble.wav', lambda p: p.write_bytes(b'\x00\x05\x16\x07' * 8),
         *[IGNORED] * 3),
]
CASE_IDS = [c.name for c in CASES]


def snapshot(*roots):
  """Bytes and mtime of every file under the roots: inputs must not change."""
  return {p: (p.read_bytes(), p.stat().st_mtime_ns)
          for root in roots for p in sorted(pathlib.Path(root).rglob('*'))
          if p.is_file()}


def length_at_16k(path):
  """Frames the file has once read as mono 16 kHz (16000 when unreadable)."""
  try:
    info = soundfile.info(path)
  except soundfile.LibsndfileError:
    return 16000
  if info.frames == 0:
    return 16000
  if info.samplerate == 16000:
    return info.frames
  return soxr.resample(np.zeros(info.frames, np.float32), info.samplerate,
                       16000).shape[0]


def write_pair(root, case, case_kind):
  """root/<case_kind>/<case> from the case and root/clean/<case> partner
  (speech of the same length at 16 kHz), plus one good pair beside them."""
  (root / case_kind).mkdir(parents=True)
  (root / 'clean').mkdir()
  case.make(root / case_kind / case.name)
  clean = speechlike(16000, length_at_16k(root / case_kind / case.name) / 16000,
                     1, seed=1)
  soundfile.write(root / 'clean' / case.name, clean, 16000)
  good = speechlike(16000, 1.0, 1, seed=2)
  soundfile.write(root / case_kind / 'good.wav', good + 0.05, 16000)
  soundfile.write(root / 'clean' / 'good.wav', good, 16000)


def assert_one_line(error, path, expected):
  message = str(error)
  assert '\n' not in message, message
  assert str(path) in message and expected in message, message


# --------------------------------------------------------------- enhance
@pytest.fixture(scope='module')
def enhanced_folder(trained, tmp_path_factory):
  """One launch.py enhance over a folder holding every case."""
  workdir, _ = trained
  root = tmp_path_factory.mktemp('enhance')
  src, out = root / 'in', root / 'out'
  src.mkdir()
  for case in CASES:
    case.make(src / case.name)
  before = snapshot(src)
  result = launch('--mode=enhance', f'--workdir={workdir}', f'--input={src}',
                  f'--output={out}')
  return src, out, before, result


@pytest.mark.slow
@pytest.mark.parametrize('case', CASES, ids=CASE_IDS)
def test_enhance_folder_case(enhanced_folder, case):
  src, out, before, result = enhanced_folder
  # The run as a whole: the bad files fail it, without a traceback.
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert result.returncode == 2, result.stderr[-3000:]
  assert snapshot(src) == before
  assert not list(out.rglob('*.partial'))
  errors = [line for line in result.stderr.splitlines()
            if line.startswith('error:')]
  assert all(line.count('error:') == 1 for line in errors)
  mine = [line for line in errors if f'{src / case.name}:' in line]
  if case.enhance in (OK, IGNORED):
    assert not mine
    if case.enhance == IGNORED:
      assert not (out / case.name).exists()
      return
    info_in = soundfile.info(src / case.name)
    info_out = soundfile.info(out / case.name)
    assert (info_out.samplerate, info_out.channels, info_out.frames,
            info_out.subtype) == (info_in.samplerate, info_in.channels,
                                  info_in.frames, info_in.subtype)
    y, _ = soundfile.read(out / case.name, always_2d=True)
    assert np.isfinite(y).all()
  else:
    assert len(mine) == 1, errors
    assert case.enhance in mine[0], mine[0]
    assert not (out / case.name).exists()


# -------------------------------------------------------------- evaluate
@pytest.mark.parametrize('case', CASES, ids=CASE_IDS)
def test_evaluate_folder_case(tmp_path, case):
  root = tmp_path / 'data'
  write_pair(root, case, 'enhanced')
  before = snapshot(root)
  results = tmp_path / 'eval.json'
  try:
    summary, table = evaluate.evaluate_folders(
        str(root / 'clean'), str(root / 'enhanced'), results=str(results),
        num_workers=1)
  except ValueError as e:  # what launch.py prints as its error: line
    assert case.evaluate not in (OK, IGNORED), e
    assert_one_line(e, root / 'enhanced' / case.name, case.evaluate)
    assert not results.exists()
  else:
    assert case.evaluate in (OK, IGNORED), table
    assert summary['n_files'] == (2 if case.evaluate == OK else 1)
    assert 'PESQ' in table and np.isfinite(summary['pesq'])
  assert snapshot(root) == before


# ------------------------------------------------------- dataset building
@pytest.mark.parametrize('case', CASES, ids=CASE_IDS)
def test_dataset_case(tmp_path, case):
  root = tmp_path / 'data'
  write_pair(root, case, 'noisy')
  before = snapshot(root)
  kwargs = dict(tfds_data_dir=str(tmp_path / 'tfds'))
  try:
    source = datasets.get_source('wav_pairs', 'train', str(root), **kwargs)
  except ValueError as e:
    assert case.dataset not in (OK, IGNORED), e
    assert_one_line(e, root / 'noisy' / case.name, case.dataset)
    assert '--skip_bad_files' in str(e)
    # Left out on request: the good pair remains.
    source = datasets.get_source('wav_pairs', 'train', str(root),
                                 skip_bad_files=True, **kwargs)
    assert [source[i]['id'] for i in range(len(source))] == ['good.wav']
  else:
    assert case.dataset in (OK, IGNORED)
    examples = {source[i]['id']: source[i] for i in range(len(source))}
    expected = {'good.wav'} | ({case.name} if case.dataset == OK else set())
    assert set(examples) == expected
    for example in examples.values():
      assert example['noisy'].shape == example['clean'].shape
      assert np.isfinite(example['noisy']).all()
  assert snapshot(root) == before


# ------------------------------------------- folders, paths, checkpoints
def _good_wav(path, seconds=1.0, seed=0):
  path.parent.mkdir(parents=True, exist_ok=True)
  soundfile.write(path, speechlike(16000, seconds, 1, seed=seed), 16000)


def _pairs(root, names=('a.wav',), kinds=('noisy', 'clean'), lengths=None):
  for i, name in enumerate(names):
    for kind in kinds:
      seconds = (lengths or {}).get((kind, name), 1.0)
      _good_wav(root / kind / name, seconds, seed=i)
  return root


def _enhancer(workdir):
  return enhance.Enhancer(generators.restore_generator(workdir))


def _enhance_into_input_folder(tmp, workdir):
  _good_wav(tmp / 'in' / 'a.wav')
  enhance_files.enhance_paths(_enhancer(workdir), str(tmp / 'in'), str(tmp / 'in'))


def _enhance_onto_own_file(tmp, workdir):
  _good_wav(tmp / 'in' / 'a.wav')
  enhance_files.enhance_paths(_enhancer(workdir), str(tmp / 'in' / 'a.wav'),
                        str(tmp / 'in' / 'a.wav'))


def _enhance_folder_into_a_file(tmp, workdir):
  _good_wav(tmp / 'in' / 'a.wav')
  (tmp / 'out.wav').write_text('x')
  enhance_files.enhance_paths(_enhancer(workdir), str(tmp / 'in'),
                        str(tmp / 'out.wav'))


def _enhance_under_a_file(tmp, workdir):
  _good_wav(tmp / 'in' / 'a.wav')
  (tmp / 'file').write_text('x')
  enhance_files.enhance_paths(_enhancer(workdir), str(tmp / 'in' / 'a.wav'),
                        str(tmp / 'file' / 'sub' / 'a.wav'))


def _enhance_missing_input(tmp, workdir):
  enhance_files.enhance_paths(_enhancer(workdir), str(tmp / 'nothing.wav'),
                        str(tmp / 'out'))


def _enhance_folder_without_audio(tmp, workdir):
  (tmp / 'in').mkdir()
  (tmp / 'in' / 'notes.txt').write_text('x')
  enhance_files.enhance_paths(_enhancer(workdir), str(tmp / 'in'), str(tmp / 'out'))


def _enhance_batch_size_zero(tmp, workdir):
  del tmp
  enhance.Enhancer(generators.restore_generator(workdir), batch_size=0)


def _missing_checkpoint_step(tmp, workdir):
  del tmp
  generators.restore_generator(workdir, 999)


def _checkpoint_of_another_model_size(tmp, workdir):
  # What a resumed run with other model flags meets (launch.py --mode=train).
  del tmp
  config = Config(model_size='demo', parallelism='none',
                  vbn_reference_size=4)
  # Shapes only: building a demo-size model's states would take seconds.
  template = jax.eval_shape(
      lambda: systems.create_states(config, jax.random.key(0)))
  checkpoints.Checkpointer(workdir).restore(template, jax.random.key(0),
                                            config)


def _evaluate(tmp, **kwargs):
  return evaluate.evaluate_folders(str(tmp / 'clean'), str(tmp / 'enhanced'),
                                   results=str(tmp / 'r.json'), num_workers=1,
                                   **kwargs)


def _evaluate_no_pairs(tmp, workdir):
  del workdir
  (tmp / 'clean').mkdir()
  (tmp / 'enhanced').mkdir()
  _evaluate(tmp)


def _evaluate_missing_clean(tmp, workdir):
  del workdir
  _pairs(tmp, kinds=('clean', 'enhanced'))
  _good_wav(tmp / 'enhanced' / 'b.wav')
  _evaluate(tmp)


def _evaluate_missing_enhanced(tmp, workdir):
  del workdir
  _pairs(tmp, kinds=('clean', 'enhanced'))
  _good_wav(tmp / 'clean' / 'b.wav')
  _evaluate(tmp)


def _evaluate_lengths_differ(tmp, workdir):
  del workdir
  _pairs(tmp, kinds=('clean', 'enhanced'),
         lengths={('enhanced', 'a.wav'): 0.9})
  _evaluate(tmp)


def _evaluate_missing_clean_dir(tmp, workdir):
  del workdir
  _good_wav(tmp / 'enhanced' / 'a.wav')
  _evaluate(tmp)


def _evaluate_noisy_file_missing(tmp, workdir):
  del workdir
  _pairs(tmp, kinds=('clean', 'enhanced'))
  (tmp / 'noisy').mkdir()
  _evaluate(tmp, noisy_dir=str(tmp / 'noisy'))


def _evaluate_skips_bad_files_on_request(tmp, workdir):
  del workdir
  _pairs(tmp, names=('a.wav', 'b.wav'), kinds=('clean', 'enhanced'),
         lengths={('enhanced', 'b.wav'): 0.5})
  _good_wav(tmp / 'enhanced' / 'orphan.wav')
  summary, table = _evaluate(tmp, skip_bad_files=True)
  assert summary['n_files'] == 1 and 'PESQ' in table


def _dataset(tmp):
  return datasets.get_source('wav_pairs', 'train', str(tmp / 'data'),
                             tfds_data_dir=str(tmp / 'tfds'))


def _dataset_no_pairs(tmp, workdir):
  del workdir
  (tmp / 'data' / 'noisy').mkdir(parents=True)
  (tmp / 'data' / 'clean').mkdir()
  _dataset(tmp)


def _dataset_missing_clean(tmp, workdir):
  del workdir
  _pairs(tmp / 'data')
  _good_wav(tmp / 'data' / 'noisy' / 'b.wav')
  _dataset(tmp)


def _dataset_lengths_differ(tmp, workdir):
  del workdir
  _pairs(tmp / 'data', lengths={('clean', 'a.wav'): 0.7})
  _dataset(tmp)


def _dataset_silent_clean(tmp, workdir):
  del workdir
  _pairs(tmp / 'data')
  soundfile.write(tmp / 'data' / 'clean' / 'a.wav', np.zeros(16000), 16000)
  _dataset(tmp)


def _dataset_without_noisy_folder(tmp, workdir):
  del workdir
  _good_wav(tmp / 'data' / 'clean' / 'a.wav')
  _dataset(tmp)


IN_PROCESS = {
    'enhance: output folder = input folder': (
        _enhance_into_input_folder, 'output folder is the input folder'),
    'enhance: output file = input file': (
        _enhance_onto_own_file, 'output would overwrite its input'),
    'enhance: folder into an existing file': (
        _enhance_folder_into_a_file, 'is a file, but the input'),
    'enhance: output under a file': (
        _enhance_under_a_file, 'is a file, not a folder'),
    'enhance: missing input': (_enhance_missing_input,
                               'no such file or folder'),
    'enhance: folder without audio': (_enhance_folder_without_audio,
                                      'no audio files'),
    'enhance: batch size 0': (_enhance_batch_size_zero,
                              '--enhance_batch_size must be a positive'),
    'checkpoint step that does not exist': (
        _missing_checkpoint_step, 'no checkpoint for step 999'),
    'checkpoint of another model size': (
        _checkpoint_of_another_model_size, 'was written for model'),
    'evaluate: no pairs': (_evaluate_no_pairs, 'no (enhanced, clean) pairs'),
    'evaluate: missing clean partner': (_evaluate_missing_clean,
                                        'no clean partner'),
    'evaluate: missing enhanced partner': (_evaluate_missing_enhanced,
                                           'no enhanced partner'),
    'evaluate: lengths differ': (_evaluate_lengths_differ,
                                 'samples at 16 kHz but'),
    'evaluate: missing clean folder': (_evaluate_missing_clean_dir,
                                       'no such folder'),
    'evaluate: noisy file missing': (_evaluate_noisy_file_missing,
                                     'no such file'),
    'evaluate: --skip_bad_files scores the rest': (
        _evaluate_skips_bad_files_on_request, OK),
    'dataset: no pairs': (_dataset_no_pairs, 'no (noisy, clean) pairs'),
    'dataset: missing clean partner': (_dataset_missing_clean,
                                       'no clean partner'),
    'dataset: lengths differ': (_dataset_lengths_differ,
                                'samples at 16 kHz but its clean partner'),
    'dataset: silent clean': (_dataset_silent_clean,
                              'all-zero (silent) clean audio'),
    'dataset: no noisy/ folder': (_dataset_without_noisy_folder,
                                  'expected noisy/ and clean/'),
}


@pytest.mark.parametrize('name', list(IN_PROCESS))
def test_in_process_case(trained, tmp_path, name):
  workdir, _ = trained
  action, expected = IN_PROCESS[name]
  checkpoints_before = snapshot(pathlib.Path(workdir) / 'checkpoints')
  if expected == OK:
    action(tmp_path, workdir)
  else:
    # The errors launch.py turns into one `error:` line.
    with pytest.raises((ValueError, checkpoints.CheckpointError)) as e:
      action(tmp_path, workdir)
    message = str(e.value)
    assert '\n' not in message and expected in message, message
    # It names what to fix: a path, or the flag.
    assert any(s in message for s in (str(tmp_path), workdir, '--')), message
  assert not list(tmp_path.rglob('*.partial'))
  assert snapshot(pathlib.Path(workdir) / 'checkpoints') == checkpoints_before


# ------------------------------------------------ launch.py end to end
def _missing_partner_data(tmp):
  _good_wav(tmp / 'data' / 'noisy' / 'b.wav')
  return _pairs(tmp / 'data')


def _bad_pairs_data(tmp):
  return _pairs(tmp / 'data', lengths={('clean', 'a.wav'): 0.5})


LAUNCHED = {
    '--model=nope': (lambda tmp, w: ['--model=nope', f'--workdir={tmp}'],
                     'flag --model=nope: value should be one of'),
    '--parallelism=bogus': (
        lambda tmp, w: ['--parallelism=bogus', f'--workdir={tmp}'],
        'flag --parallelism=bogus: value should be one of'),
    '--enhance_overlap=0.3': (
        lambda tmp, w: ['--mode=enhance', '--enhance_overlap=0.3'],
        'flag --enhance_overlap=0.3: value should be one of'),
    'enhance without --output': (
        lambda tmp, w: ['--mode=enhance', f'--workdir={w}',
                        f'--input={tmp}'], 'needs --input and --output'),
    'enhance: --checkpoint_step=999': (
        lambda tmp, w: ['--mode=enhance', f'--workdir={w}',
                        '--checkpoint_step=999',
                        f'--input={_pairs(tmp / "d") / "noisy"}',
                        f'--output={tmp / "out"}'],
        'no checkpoint for step 999'),
    'enhance: workdir without checkpoints': (
        lambda tmp, w: ['--mode=enhance', f'--workdir={tmp / "run"}',
                        f'--input={_pairs(tmp / "d") / "noisy"}',
                        f'--output={tmp / "out"}'], 'no checkpoint in'),
    'evaluate: --clean_dir alone': (
        lambda tmp, w: ['--mode=evaluate', f'--clean_dir={tmp}'],
        '--clean_dir and --enhanced_dir go together'),
    'evaluate folders: NaN file': (
        lambda tmp, w: (_pairs(tmp / 'd', kinds=('clean', 'enhanced')),
                        soundfile.write(tmp / 'd' / 'enhanced' / 'a.wav',
                                        np.full(16000, np.nan), 16000,
                                        subtype='FLOAT'),
                        ['--mode=evaluate', f'--clean_dir={tmp / "d/clean"}',
                         f'--enhanced_dir={tmp / "d/enhanced"}'])[-1],
        f'{os.sep}enhanced{os.sep}a.wav: {NAN}'),
    'evaluate --workdir: dataset lengths differ': (
        lambda tmp, w: ['--mode=evaluate', f'--workdir={w}',
                        '--dataset=wav_pairs',
                        f'--data_dir={_bad_pairs_data(tmp)}',
                        f'--tfds_data_dir={tmp / "tfds"}',
                        f'--results={tmp / "r.json"}'],
        'samples at 16 kHz but its clean partner'),
    'evaluate --workdir: --max_files=0': (
        lambda tmp, w: ['--mode=evaluate', f'--workdir={w}',
                        '--dataset=wav_pairs', '--max_files=0',
                        f'--data_dir={_pairs(tmp / "data")}',
                        f'--tfds_data_dir={tmp / "tfds"}',
                        f'--results={tmp / "r.json"}'],
        'nothing to evaluate'),
    'train on wav_pairs: missing clean partner': (
        lambda tmp, w: ['--model_size=tiny', '--batch_size=8',
                        '--dataset=wav_pairs', f'--workdir={tmp / "run"}',
                        f'--data_dir={_missing_partner_data(tmp)}',
                        f'--tfds_data_dir={tmp / "tfds"}'],
        'no clean partner'),
}


@pytest.mark.slow
@pytest.mark.parametrize('name', list(LAUNCHED))
def test_launch_case(trained, tmp_path, name):
  workdir, _ = trained
  make_args, expected = LAUNCHED[name]
  args = make_args(tmp_path, workdir)
  before = snapshot(tmp_path, pathlib.Path(workdir) / 'checkpoints')
  result = launch(*args)
  assert result.returncode != 0
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  if name.startswith('--'):  # absl rejects the value before main runs
    assert expected in result.stderr, result.stderr[-3000:]
  else:
    errors = [line for line in result.stderr.splitlines()
              if line.startswith('error:')]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-3000:]
    assert result.returncode == 2
  after = snapshot(tmp_path, pathlib.Path(workdir) / 'checkpoints')
  assert {p: v for p, v in after.items() if p in before} == before
  assert not list(tmp_path.rglob('*.partial'))
