"""Bundled pretrained models: writing, loading (checksum checked), the
Enhancer one-liners, enhance without a workdir, and validation on a folder."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

import segan_jax
from segan_jax import bundling
from segan_jax import checkpoints
from segan_jax import evaluate
from segan_jax import files
from segan_jax import generators
from segan_jax import pretrained
from segan_jax import train
from segan_jax.config import Config
from segan_jax.output_settings import OutputSettings
from conftest import REPO, SHARED_DATA, speechlike


@pytest.fixture(scope='module')
def tiny_bundle(trained, tmp_path_factory):
  """The session's tiny trained run, bundled."""
  workdir, _ = trained
  root = tmp_path_factory.mktemp('bundles')
  path, digest = bundling.bundle_run(workdir, 'tiny', '0', str(root))
  return workdir, path, digest


def _noisy_file(path, seconds=1.5):
  files.write_wav(str(path), speechlike(16000, seconds, 1)[:, 0], 16000)
  return str(path)


def test_bundle_round_trip_keeps_config_and_params(tiny_bundle):
  workdir, path, digest = tiny_bundle
  restored = generators.restore_generator(workdir)
  loaded = pretrained.load(path)
  manifest = json.load(open(os.path.join(path, pretrained.MANIFEST_FILE)))
  assert manifest['sha256'] == digest == pretrained.sha256(
      os.path.join(path, pretrained.PARAMS_FILE))
  assert loaded.config == restored.config and loaded.step == restored.step
  assert 'bundled pretrained model tiny v0' in loaded.source
  assert manifest['trained_from'].startswith('latest checkpoint')
  flat_loaded = dict(zip(*_leaves(loaded.params)))
  names, values = _leaves(restored.params)
  assert sorted(flat_loaded) == sorted(names)
  for name, value in zip(names, values):
    assert flat_loaded[name].dtype == np.float32
    # Stored as float16: 11 significant bits.
    np.testing.assert_allclose(flat_loaded[name], value, rtol=2e-3,
                               atol=1e-6, err_msg=name)


def _leaves(params):
  import jax  # pylint: disable=g-import-not-at-top
  paths, leaves = zip(*jax.tree_util.tree_flatten_with_path(params)[0])
  return [jax.tree_util.keystr(p) for p in paths], [np.asarray(v) for v in leaves]


def test_bundle_can_override_the_output_highpass_and_limit(trained, tmp_path):
  workdir, _ = trained
  path, _ = bundling.bundle_run(workdir, 'hp', '0', str(tmp_path),
                              output_highpass_hz=20.0,
                              attenuation_limit_db=14.0, output_mask=True,
                              mask_oversubtraction=3.0, mask_noise_frames=7)
  config = pretrained.load(path).config
  assert (config.output_highpass_hz, config.attenuation_limit_db,
          config.output_mask, config.mask_oversubtraction,
          config.mask_noise_frames) == (20.0, 14.0, True, 3.0, 7)
  config = generators.restore_generator(workdir).config
  assert (config.output_highpass_hz, config.attenuation_limit_db,
          config.output_mask, config.mask_oversubtraction,
          config.mask_noise_frames) == (0.0, 0.0, False, 0.0, 1)
  # Enhancers take the bundle's limit, unless given one.
  def settings(**kwargs):
    return segan_jax.Enhancer.from_pretrained(path, **kwargs).output_settings

  assert settings() == OutputSettings(
      output_highpass_hz=20.0, attenuation_limit_db=14.0, output_mask=True,
      mask_oversubtraction=3.0, mask_noise_frames=7)
  assert settings().least_gain == pytest.approx(10**(-14 / 20))
  assert settings(attenuation_limit_db=0.0).least_gain == 0.0
  assert not settings(output_mask=False).output_mask
  assert settings(mask_oversubtraction=0.0).mask_oversubtraction == 0.0
  assert settings(mask_noise_frames=1).mask_noise_frames == 1
  # None keeps the bundle's; a whole OutputSettings replaces them.
  assert settings(mask_noise_frames=None).mask_noise_frames == 7
  assert settings(output_settings=OutputSettings()) == OutputSettings()
  with pytest.raises(ValueError, match='not mask_frames'):
    settings(mask_frames=3)
  with pytest.raises(ValueError, match='mask_noise_frames must be an odd'):
    bundling.bundle_run(workdir, 'x', '0', str(tmp_path), mask_noise_frames=2)
  with pytest.raises(ValueError, match='mask_oversubtraction must be >= 0'):
    bundling.bundle_run(workdir, 'x', '0', str(tmp_path),
                      mask_oversubtraction=-1.0)
  # Only output settings: the model is what was trained.
  with pytest.raises(ValueError, match='not encoder_features'):
    bundling.bundle_run(workdir, 'x', '0', str(tmp_path),
                      encoder_features=(4,))


def test_rebundling_keeps_params_and_changes_the_settings(tiny_bundle,
                                                         tmp_path):
  _, path, _ = tiny_bundle
  again, _ = bundling.rebundle(path, 'again', '1', str(tmp_path),
                             attenuation_limit_db=10.0)
  first, second = pretrained.load(path), pretrained.load(again)
  assert second.config == first.config.replace(attenuation_limit_db=10.0)
  assert (second.step, second.version) == (first.step, '1')
  names, values = _leaves(first.params)
  assert _leaves(second.params)[0] == names
  for a, b in zip(values, _leaves(second.params)[1]):
    np.testing.assert_array_equal(a, b)
  manifest = json.loads((tmp_path / 'again' / 'manifest.json').read_text())
  assert manifest['rebundled_from'] == first.source
  original = json.loads((pathlib.Path(path) / 'manifest.json').read_text())
  assert manifest['trained_from'] == original['trained_from']


def test_bundle_averages_g_over_checkpoints(trained, tmp_path):
  workdir, _ = trained
  ckpt = checkpoints.Checkpointer(workdir, create=False)
  steps = ckpt.all_steps()
  ckpt.close()
  assert len(steps) == 2
  path, _ = bundling.bundle_run(workdir, 'mean', '0', str(tmp_path),
                              average_steps=steps)
  loaded = pretrained.load(path)
  assert loaded.step == max(steps)
  names, first = _leaves(generators.restore_generator(workdir, steps[0]).params)
  _, second = _leaves(generators.restore_generator(workdir, steps[1]).params)
  averaged = dict(zip(*_leaves(loaded.params)))
  assert any(not np.allclose(a, b) for a, b in zip(first, second))
  for name, a, b in zip(names, first, second):
    np.testing.assert_allclose(averaged[name], (a + b) / 2, rtol=2e-3,
                               atol=1e-6, err_msg=name)
  manifest = json.loads((tmp_path / 'mean' / 'manifest.json').read_text())
  assert manifest['trained_from'] == (
      f'mean of G over checkpoint steps {steps[0]}, {steps[1]}')
  # One step averages to that checkpoint's G.
  one, _ = bundling.bundle_run(workdir, 'one', '0', str(tmp_path),
                             average_steps=[steps[0]])
  for name, value in zip(*_leaves(pretrained.load(one).params)):
    np.testing.assert_array_equal(value, dict(zip(names, first))[name]
                                  .astype(np.float16).astype(np.float32))
  with pytest.raises(ValueError, match='not both'):
    bundling.bundle_run(workdir, 'x', '0', str(tmp_path), step=steps[0],
                      average_steps=steps)


def test_from_pretrained_and_from_workdir_enhance_alike(tiny_bundle, tmp_path):
  workdir, path, _ = tiny_bundle
  src = _noisy_file(tmp_path / 'noisy.wav')
  from_bundle = segan_jax.Enhancer.from_pretrained(path)
  from_run = segan_jax.Enhancer.from_workdir(workdir)
  assert from_run.source.startswith('latest checkpoint')
  assert from_bundle.source.startswith('bundled pretrained model tiny')
  seconds = from_bundle.enhance_file(src, str(tmp_path / 'a.wav'))
  from_run.enhance_file(src, str(tmp_path / 'b.wav'))
  assert seconds == pytest.approx(1.5)
  a, rate = soundfile.read(tmp_path / 'a.wav')
  b, _ = soundfile.read(tmp_path / 'b.wav')
  x, _ = soundfile.read(src)
  assert rate == 16000 and a.shape == b.shape == x.shape
  # The same model up to float16 parameters: far closer to each other than
  # to the input.
  assert np.max(np.abs(a - b)) < 0.1 * np.max(np.abs(a - x))
  # A folder works too.
  (tmp_path / 'in').mkdir()
  shutil.copy(src, tmp_path / 'in' / 'one.wav')
  written = from_bundle.enhance_paths(str(tmp_path / 'in'),
                                      str(tmp_path / 'out'))
  assert written == [str(tmp_path / 'out' / 'one.wav')]


def test_altered_params_give_one_line_checksum_error(tiny_bundle, tmp_path):
  _, path, _ = tiny_bundle
  altered = tmp_path / 'altered'
  shutil.copytree(path, altered)
  params = altered / pretrained.PARAMS_FILE
  data = bytearray(params.read_bytes())
  data[len(data) // 2] ^= 0xFF
  params.write_bytes(bytes(data))
  with pytest.raises(pretrained.PretrainedError) as error:
    pretrained.load(str(altered))
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith(f'{params}: SHA-256')
  assert 'does not match' in message
  os.remove(params)
  with pytest.raises(pretrained.PretrainedError, match='params.npz: missing'):
    pretrained.load(str(altered))
  (altered / pretrained.MANIFEST_FILE).write_text('{not json')
  with pytest.raises(pretrained.PretrainedError,
                     match='manifest.json: not a readable bundle manifest'):
    pretrained.load(str(altered))


def test_init_from_pretrained_starts_g_from_the_bundle(tiny_bundle, tmp_path):
  import dataclasses  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from segan_jax import systems  # pylint: disable=g-import-not-at-top
  from segan_jax import warm_start  # pylint: disable=g-import-not-at-top
  _, path, _ = tiny_bundle
  loaded = pretrained.load(path)
  config = dataclasses.replace(loaded.config, init_from=f'pretrained:{path}')
  fresh = jax.device_get(systems.create_states(config, jax.random.key(7)))
  states, info = warm_start.warm_start(fresh, config)
  # G is the bundle's (as stored, float16 precision); D starts fresh.
  names, values = _leaves(states['g'].params)
  bundled = dict(zip(*_leaves(loaded.params)))
  for name, value in zip(names, values):
    np.testing.assert_array_equal(value, bundled[name], err_msg=name)
  assert info['fresh'] == ['d'] and info['checkpoint'] == loaded.source
  _, d_fresh = _leaves(fresh['d'].params)
  _, d_after = _leaves(states['d'].params)
  for before, after in zip(d_fresh, d_after):
    np.testing.assert_array_equal(before, after)
  # A bundle that is not there, or of another size, is one line.
  with pytest.raises(checkpoints.CheckpointError,
                     match=r"^--init_from=pretrained:nope: no pretrained "
                     r"model 'nope'"):
    warm_start.check_init_from('pretrained:nope')
  wider = dataclasses.replace(config, model_size='demo')
  with pytest.raises(checkpoints.CheckpointError, match='has shape'):
    warm_start.warm_start(
        jax.device_get(jax.eval_shape(
            lambda: systems.create_states(wider, jax.random.key(0)))), wider)
  # The bundled model by default.
  assert warm_start.bundle_of('pretrained') == pretrained.DEFAULT
  assert warm_start.bundle_of('workdirs/run:5') is None


def test_unknown_bundle_names_the_bundled_ones():
  with pytest.raises(pretrained.PretrainedError,
                     match=f"no pretrained model 'nope'.*{pretrained.DEFAULT}"):
    pretrained.load('nope')


@pytest.mark.slow
def test_cli_enhances_and_evaluates_without_workdir(tiny_bundle, tmp_path):
  _, path, _ = tiny_bundle
  (tmp_path / 'noisy').mkdir()
  src = _noisy_file(tmp_path / 'noisy' / 'a.wav')
  out = tmp_path / 'out'
  command = [sys.executable, str(REPO / 'launch.py'), '--mode=enhance',
             f'--input={tmp_path / "noisy"}', f'--output={out}',
             f'--pretrained={path}']
  run = subprocess.run(command, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'Using the bundled pretrained model tiny v0' in run.stdout
  assert '(no --workdir given)' in run.stdout
  assert os.path.isfile(out / 'a.wav')
  assert soundfile.info(str(out / 'a.wav')).frames == soundfile.info(src).frames
  # --attenuation_limit_db on the command line overrides the bundle's (none):
  # at 6 dB half of the input is mixed back.
  limited = tmp_path / 'limited'
  run = subprocess.run(command[:-2] + [f'--output={limited}',
                                       command[-1], '--attenuation_limit_db=6'],
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  share = 10**(-6 / 20)
  noisy = soundfile.read(src)[0]
  np.testing.assert_allclose(
      soundfile.read(str(limited / 'a.wav'))[0],
      (1 - share) * soundfile.read(str(out / 'a.wav'))[0] + share * noisy,
      atol=1e-3)
  # --output_mask: the input filtered by G's gain (at most 1 per bin) instead.
  masked = tmp_path / 'masked'
  run = subprocess.run(command[:-2] + [f'--output={masked}', command[-1],
                                       '--attenuation_limit_db=6',
                                       '--output_mask'],
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  masked = soundfile.read(str(masked / 'a.wav'))[0]
  assert np.sum(masked**2) <= 1.01 * np.sum(noisy**2)
  assert np.abs(masked - soundfile.read(str(limited / 'a.wav'))[0]).max() > 1e-4
  # --mask_oversubtraction: the Wiener gain instead of the ratio (no limit,
  # which would hide the difference where this untrained G removes most).
  gains = {}
  for oversubtraction in (0, 3):
    gains[oversubtraction] = tmp_path / f'gain{oversubtraction}'
    run = subprocess.run(
        command[:-2] + [f'--output={gains[oversubtraction]}', command[-1],
                        '--output_mask',
                        f'--mask_oversubtraction={oversubtraction}'],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
  ratio, wiener = (soundfile.read(str(gains[a] / 'a.wav'))[0] for a in (0, 3))
  # Where G keeps less than 3/4 of a bin, the Wiener gain (a = 3) is below
  # the ratio; this G keeps almost nothing.
  assert 0 < np.sum(wiener**2) < 0.5 * np.sum(ratio**2)
  assert np.sum(ratio**2) <= 1.01 * np.sum(noisy**2)
  # --mask_noise_frames: the Wiener gain's noise estimate averaged over frames.
  smoothed = tmp_path / 'smoothed'
  run = subprocess.run(
      command[:-2] + [f'--output={smoothed}', command[-1], '--output_mask',
                      '--mask_oversubtraction=3', '--mask_noise_frames=9'],
      capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-3000:]
  smoothed = soundfile.read(str(smoothed / 'a.wav'))[0]
  # This G keeps little, so both gains are small: compare them relatively.
  assert np.abs(smoothed - wiener).max() > 0.01 * np.abs(wiener).max(), (
      np.abs(smoothed - wiener).max(), np.abs(wiener).max())
  assert np.sum(smoothed**2) <= 1.01 * np.sum(noisy**2)
  for bad, message in (('--mask_noise_frames=2',
                         'mask_noise_frames must be an odd count'),
                        ('--mask_oversubtraction=-1',
                         'mask_oversubtraction must be >= 0')):
    run = subprocess.run(command + [bad], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 2
    assert message in run.stderr.strip().splitlines()[-1]
    assert 'Traceback' not in run.stderr
  # A step of a bundle is an error, not silently ignored.
  run = subprocess.run(command + ['--checkpoint_step=3'], capture_output=True,
                       text=True, timeout=300)
  assert run.returncode == 2
  assert run.stderr.strip().splitlines()[-1] == (
      'error: --checkpoint_step needs --workdir (the bundled pretrained model '
      'has one step)')


# --- The bundle shipped in the package -----------------------------------------


def test_shipped_bundle_loads_checked_and_small():
  path = pretrained.bundle_dir(pretrained.DEFAULT)
  size = os.path.getsize(os.path.join(path, pretrained.PARAMS_FILE))
  assert size <= 10 * 2**20
  model = pretrained.load()
  assert model.config.model in ('segan', 'autoencoder')
  card = open(os.path.join(path, pretrained.CARD_FILE)).read()
  manifest = json.load(open(os.path.join(path, pretrained.MANIFEST_FILE)))
  # The card states the checksum the loader checks, and the version.
  assert manifest['sha256'] in card
  assert f'version {manifest["version"]}' in card.lower()


def _vbd(name):
  folder = SHARED_DATA / name
  if not (folder / 'noisy').is_dir():
    pytest.skip(f'{folder} not found (the shared VoiceBank-DEMAND pairs)')
  return folder


# What the shipped bundle must keep doing (MODEL_CARD.md has its figures):
# every measure above the noisy input's, on the training speaker's other
# sentences and on an unseen voice in babble and cafeteria noise.
ALL_FIVE = ('pesq', 'csig', 'cbak', 'covl', 'ssnr')
MUST_BEAT_NOISY = {'vbd_test': ALL_FIVE, 'vbd_val': ALL_FIVE}


@pytest.mark.slow
@pytest.mark.parametrize('split', sorted(MUST_BEAT_NOISY))
def test_shipped_bundle_beats_noisy_on_real_speech(split, tmp_path):
  folder = _vbd(split)
  if split == 'vbd_test':
    # As a user would: the command line, no --workdir, no training.
    run = subprocess.run(
        [sys.executable, '-m', 'segan_jax', '--mode=enhance',
         f'--input={folder / "noisy"}', f'--output={tmp_path / "enhanced"}'],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (f'Using the bundled pretrained model {pretrained.DEFAULT}'
            in run.stdout), run.stdout
  else:
    segan_jax.Enhancer.from_pretrained().enhance_paths(
        str(folder / 'noisy'), str(tmp_path / 'enhanced'))
  summary, _ = evaluate.evaluate_folders(
      str(folder / 'clean'), str(tmp_path / 'enhanced'),
      results=str(tmp_path / 'scores.json'), noisy_dir=str(folder / 'noisy'))
  assert summary['n_files'] == len(os.listdir(folder / 'noisy'))
  for metric in MUST_BEAT_NOISY[split]:
    assert summary[metric] > summary['noisy'][metric], metric


# --- Validation on a folder ---------------------------------------------------


def _pair_folder(folder, names, seed, noise_level):
  for kind in ('noisy', 'clean'):
    (folder / kind).mkdir(parents=True)
  for i, name in enumerate(names):
    clean = speechlike(16000, 1.0, 1, seed=seed + i)[:, 0]
    noise = noise_level * np.random.default_rng(seed + 10 + i).standard_normal(
        clean.size)
    files.write_wav(str(folder / 'clean' / name), clean, 16000)
    files.write_wav(str(folder / 'noisy' / name), clean + noise, 16000)


def test_validation_dir_scores_its_files_and_keeps_best(tmp_path):
  folder = tmp_path / 'unseen'
  _pair_folder(folder, ('v1.wav', 'v2.wav'), 0, 0.05)
  config = Config(model_size='tiny', dataset='synthetic', dataset_size=2,
                  num_epochs=2, batch_size=8, vbn_reference_size=4,
                  checkpoint_every_epochs=1, log_every_steps=5,
                  validation_files=2, validation_dir=str(folder),
                  tfds_data_dir=str(tmp_path / 'tfds'), keep_best='val_pesq',
                  parallelism='none')
  from segan_jax import checkpoint_evaluators  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / 'run')
  result = train.train_and_evaluate(config, workdir,
                                    make_evaluators=checkpoint_evaluators.make_evaluators)
  assert result['best']['metric'] == 'val_pesq'
  scored = sorted(os.listdir(os.path.join(workdir, 'validation')))
  csvs = [n for n in scored if n.endswith('.csv')]
  assert len(csvs) == 2
  rows = open(os.path.join(workdir, 'validation', csvs[0])).read()
  # The folder's files were scored, not the synthetic dataset's.
  assert 'v1' in rows and 'v2' in rows
  assert 'synthetic' not in rows


def test_extra_validation_dirs_score_each_set_and_keep_best_by_mean(tmp_path):
  _pair_folder(tmp_path / 'voice', ('v1.wav', 'v2.wav'), 0, 0.05)
  _pair_folder(tmp_path / 'Unseen-Noise', ('n1.wav',), 5, 0.2)
  config = Config(model_size='tiny', dataset='synthetic', dataset_size=2,
                  num_epochs=2, batch_size=8, vbn_reference_size=4,
                  checkpoint_every_epochs=1, log_every_steps=5,
                  validation_files=2, validation_dir=str(tmp_path / 'voice'),
                  extra_validation_dirs=(str(tmp_path / 'Unseen-Noise'),),
                  tfds_data_dir=str(tmp_path / 'tfds'),
                  keep_best='val_mean_pesq', parallelism='none')
  from segan_jax import checkpoint_evaluators  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'run'
  result = train.train_and_evaluate(
      config, str(workdir), make_evaluators=checkpoint_evaluators.make_evaluators)
  main_dir, extra_dir = workdir / 'validation', workdir / 'validation' / 'unseen_noise'
  steps = sorted(int(n[5:-5]) for n in os.listdir(main_dir)
                 if n.endswith('.json'))
  assert len(steps) == 2
  means = {}
  for step in steps:
    pesq = [json.loads((d / f'step_{step}.json').read_text())['pesq']
            for d in (main_dir, extra_dir)]
    means[step] = (pesq[0] + pesq[1]) / 2
    # Each set scored its own files.
    assert 'n1' in (extra_dir / f'step_{step}.csv').read_text()
    assert 'n1' not in (main_dir / f'step_{step}.csv').read_text()
  best = max(means, key=means.get)
  assert result['best']['metric'] == 'val_mean_pesq'
  assert result['best']['step'] == best
  assert result['best']['value'] == pytest.approx(means[best], rel=1e-6)


def test_extra_validation_settings_that_cannot_work_are_one_line(tmp_path):
  with pytest.raises(ValueError, match='--extra_validation_dirs'):
    Config(model_size='tiny', keep_best='val_mean_pesq')
  with pytest.raises(ValueError, match='share a name'):
    Config(model_size='tiny', extra_validation_dirs=('a/set', 'b/set'))
  config = Config(model_size='tiny', tfds_data_dir=str(tmp_path / 'tfds'),
                  extra_validation_dirs=(str(tmp_path / 'none'),))
  from segan_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError) as error:
    input_pipeline.load_extra_validation_sources(config)
  assert str(tmp_path / 'none') in str(error.value)
  assert '\n' not in str(error.value)


def test_validation_dir_that_is_not_a_pair_folder_is_one_line(tmp_path):
  config = Config(model_size='tiny', validation_dir=str(tmp_path / 'none'),
                  tfds_data_dir=str(tmp_path / 'tfds'))
  from segan_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError) as error:
    input_pipeline.load_validation_source(config)
  assert str(tmp_path / 'none') in str(error.value)
  assert '\n' not in str(error.value)


def test_gpu_pretrain_script_is_stopped_bundles_and_scores(tmp_path):
  # experiments/gpu_pretrain.sh is for minutes on a lent GPU: it runs here
  # on a few files with a tiny model, stopped by its time limit (the SIGTERM
  # path a GPU run takes), so it cannot fail there on a typo.
  data = tmp_path / 'data'
  for split, n in (('vbd_train', 4), ('vbd_val', 1), ('vbd_test', 1)):
    source = _vbd(split)
    for kind in ('noisy', 'clean'):
      (data / split / kind).mkdir(parents=True)
      for wav in sorted((source / kind).glob('*.wav'))[:n]:
        (data / split / kind / wav.name).symlink_to(wav)
  out = tmp_path / 'out'
  env = dict(os.environ, OUT=str(out), DEVICE_DATA=str(data),
             PYTHON=sys.executable, TRAIN_S='30', EPOCHS='10000', BATCH='2',
             DTYPE='float32', VERSION='0.0-test',
             MODEL_FLAGS='--model_size=tiny --encoder_features= '
                         '--discriminator_features=')
  done = subprocess.run(['bash', str(REPO / 'experiments' / 'gpu_pretrain.sh')],
                        env=env, capture_output=True, text=True, timeout=600,
                        check=False)
  assert done.returncode == 0, done.stdout + done.stderr[-3000:]
  assert 'train: exit 124' in done.stdout  # cut short, yet bundled
  manifest = json.loads((out / 'manifest.json').read_text())
  assert manifest['version'] == '0.0-test' and manifest['step'] > 0
  assert manifest['config']['num_epochs'] == 10000
  for name in ('test', 'val'):
    summary = json.loads((out / f'{name}.json').read_text())
    assert summary['n_files'] == 1 and np.isfinite(summary['pesq'])
    assert 'pesq' in summary['noisy']
  # The bundle it returns loads as any other (its checksum checked).
  bundle_dir = tmp_path / 'returned' / 'segan_vbd'
  bundle_dir.mkdir(parents=True)
  for name in ('params.npz', 'manifest.json'):
    shutil.copy(out / name, bundle_dir / name)
  loaded = pretrained.load(str(bundle_dir))
  assert (loaded.version, loaded.step) == ('0.0-test', manifest['step'])


# --- An unseen voice in the training data's noises ----------------------------


def test_unseen_voice_mix_writes_seeded_pairs_at_the_test_snrs(tmp_path):
  _vbd('vbd_val'), _vbd('vbd_test')
  script = REPO / 'experiments' / 'unseen_voice_mix.py'
  outputs = []
  for name in ('a', 'b'):
    run = subprocess.run(
        [sys.executable, str(script), f'--data={SHARED_DATA}',
         f'--output={tmp_path / name}'],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    outputs.append(tmp_path / name)
  names = sorted(os.listdir(outputs[0] / 'noisy'))
  assert len(names) == 6 * 4
  assert names == sorted(os.listdir(outputs[0] / 'clean'))
  for name in names:
    noisy, rate = soundfile.read(outputs[0] / 'noisy' / name)
    clean, _ = soundfile.read(outputs[0] / 'clean' / name)
    assert rate == 16000 and noisy.shape == clean.shape
    snr = 10 * np.log10(np.sum(clean**2) / np.sum((noisy - clean)**2))
    wanted = float(name.rsplit('_', 1)[1].removesuffix('dB.wav'))
    assert snr == pytest.approx(wanted, abs=0.05), name
    # The voice is vbd_val's, scaled alike in both files (never clipped).
    source, _ = soundfile.read(SHARED_DATA / 'vbd_val' / 'clean' /
                               (name.split('_')[0] + '_' + name.split('_')[1]
                                + '.wav'))
    assert np.corrcoef(source, clean)[0, 1] > 0.999
    # Seeded: the same bytes again.
    assert ((outputs[0] / 'noisy' / name).read_bytes() ==
            (outputs[1] / 'noisy' / name).read_bytes())


def test_unseen_voice_mix_speeds_the_voice_up(tmp_path):
  _vbd('vbd_val'), _vbd('vbd_test')
  script = REPO / 'experiments' / 'unseen_voice_mix.py'
  run = subprocess.run(
      [sys.executable, str(script), f'--data={SHARED_DATA}',
       f'--output={tmp_path}', '--speed=1.25'],
      capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  name = sorted(os.listdir(tmp_path / 'clean'))[0]
  clean, _ = soundfile.read(tmp_path / 'clean' / name)
  source, _ = soundfile.read(SHARED_DATA / 'vbd_val' / 'clean' /
                             ('_'.join(name.split('_')[:2]) + '.wav'))
  assert len(clean) == pytest.approx(len(source) / 1.25, abs=2)

  def centroid(x):  # of the power: the voiced low band dominates it
    spectrum = np.abs(np.fft.rfft(x))**2
    return np.sum(np.fft.rfftfreq(len(x), 1 / 16000) * spectrum) / np.sum(
        spectrum)

  assert centroid(clean) == pytest.approx(1.25 * centroid(source), rel=0.08)
  bad = subprocess.run(
      [sys.executable, str(script), f'--data={SHARED_DATA}',
       f'--output={tmp_path / "x"}', '--speed=3'],
      capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0 and '--speed must be in [0.5, 2]' in bad.stderr


def test_bundle_mode_writes_a_bundle_again_with_the_flags_given(tiny_bundle,
                                                               tmp_path):
  _, path, _ = tiny_bundle

  def bundle_mode(*args):
    return subprocess.run([sys.executable, '-m', 'segan_jax', '--mode=bundle',
                           *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO)

  run = bundle_mode(f'--pretrained={path}', '--attenuation_limit_db=9',
                    '--output_mask', '--bundle_name=again',
                    '--bundle_version=2', f'--bundle_root={tmp_path}')
  assert run.returncode == 0, run.stderr[-3000:]
  assert f'Wrote {tmp_path / "again"}' in run.stdout
  first, second = pretrained.load(path), pretrained.load(
      str(tmp_path / 'again'))
  # Only the settings given change; the flags' defaults do not override.
  assert second.config == first.config.replace(attenuation_limit_db=9.0,
                                               output_mask=True)
  assert second.version == '2'
  for args, message in (
      ((), '--mode=bundle needs --workdir (the run to bundle) or '
           '--pretrained (a bundle to write again), one of them'),
      ((f'--pretrained={path}', '--checkpoint_step=3'),
       '--checkpoint_step and --average_steps pick checkpoints of a '
       '--workdir, not of a bundle'),
      ((f'--pretrained={path}', '--mask_noise_frames=2',
        f'--bundle_root={tmp_path}'), 'mask_noise_frames must be an odd')):
    run = bundle_mode(*args)
    assert run.returncode == 2, (args, run.stderr[-2000:])
    assert message in run.stderr.strip().splitlines()[-1], run.stderr
    assert 'Traceback' not in run.stderr
