"""--init_from (warm start from another run) and --keep_best (WORKDIR/best).

To stay quick, only autoencoder runs train (two programs: learning rate
1e-3, and 0 where parameters must stay what they were loaded as); SEGAN
warm starts are checked on checkpoints written without training.
"""

import glob
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO  # pylint: disable=g-bad-import-order

from segan_jax import best_checkpoint
from segan_jax import checkpoint_evaluators
from segan_jax import checkpoints
from segan_jax import generators
from segan_jax import models
from segan_jax import systems
from segan_jax import train
from segan_jax import warm_start


def _assert_trees_equal(a, b):
  a, b = jax.tree.map(np.asarray, a), jax.tree.map(np.asarray, b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def _steps(workdir):
  return checkpoints.Checkpointer(str(workdir), create=False).all_steps()


@pytest.fixture
def segan(tiny_config):
  return tiny_config.replace(dataset_size=1, num_epochs=1)


@pytest.fixture
def autoencoder(tiny_config):
  return tiny_config.replace(model='autoencoder', dataset_size=1,
                             num_epochs=2, learning_rate=1e-3)


@pytest.fixture(scope='module')
def autoencoder_run(tmp_path_factory):
  """A tiny autoencoder trained 2 epochs (checkpoints at both)."""
  from segan_jax.config import Config  # pylint: disable=g-import-not-at-top
  config = Config(model='autoencoder', model_size='tiny', dataset_size=1,
                  num_epochs=2, batch_size=8, vbn_reference_size=4,
                  checkpoint_every_epochs=1, log_every_steps=5,
                  validation_files=0, parallelism='none', learning_rate=1e-3)
  workdir = str(tmp_path_factory.mktemp('autoencoder'))
  return workdir, train.train_and_evaluate(config, workdir)


def _random_states(config, seed, step=0):
  """States of ``config``'s networks filled with random numbers (nothing
  compiled: the tests need shapes and values, not an initialisation)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(
      lambda: systems.create_states(config, jax.random.key(0)))
  return jax.tree.map(
      lambda s: (np.full(s.shape, step, s.dtype)
                 if np.issubdtype(s.dtype, np.integer)
                 else rng.normal(0, 0.1, s.shape).astype(s.dtype)), shapes)


def test_segan_from_segan_takes_g_and_d_keeps_its_reference(segan, tmp_path):
  # The other run: a SEGAN checkpoint at step 7.
  source = _random_states(segan, 0, step=7)
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  ckpt.save(7, source, jax.random.key(0), epoch=1, config=segan)
  ckpt.wait()
  ckpt.close()
  config = segan.replace(seed=1, init_from=str(tmp_path))
  own = _random_states(config, 1)
  states, info = warm_start.warm_start(own, config)
  assert info['step'] == 7 and sorted(info['loaded']) == ['d', 'g']
  assert info['fresh'] == [] and not info['loaded']['g']['padded']
  for name in ('g', 'd'):
    assert not np.array_equal(jax.tree.leaves(own[name].params)[0],
                              jax.tree.leaves(source[name].params)[0])
    _assert_trees_equal(states[name].params, source[name].params)
    # A fresh optimizer state for the loaded parameters, at step 0.
    assert int(states[name].step) == 0
    _assert_trees_equal(states[name].opt_state,
                        own[name].tx.init(source[name].params))
  # D's VBN reference batch is data of this run, not a parameter.
  np.testing.assert_array_equal(states['d'].reference, own['d'].reference)


def test_training_warm_starts_then_resumes_its_own(autoencoder_run,
                                                    autoencoder, tmp_path):
  source_dir = str(tmp_path / 'source')
  shutil.copytree(autoencoder_run[0], source_dir)
  source = autoencoder_run[1]
  # Learning rate 0: the parameters stay those it started from.
  config = autoencoder.replace(seed=1, num_epochs=1, learning_rate=0.0,
                               init_from=source_dir)
  target_dir = str(tmp_path / 'target')
  target = train.train_and_evaluate(config, target_dir)
  _assert_trees_equal(target['states']['g'].params, source['states']['g'].params)
  # Its own step count, from 0.
  assert _steps(target_dir) == [target['step']]
  assert int(target['states']['g'].step) == target['step'] < source['step']

  # Once it has a checkpoint, a relaunch resumes it: init_from is not even
  # read (that run is gone), and the steps go on from the run's own.
  shutil.rmtree(source_dir)
  train.train_and_evaluate(config.replace(num_epochs=2), target_dir)
  assert _steps(target_dir) == [target['step'], 2 * target['step']]
  # Without a checkpoint of its own, the missing run is a one-line error.
  with pytest.raises(checkpoints.CheckpointError,
                     match='no such run folder') as e:
    train.train_and_evaluate(config, str(tmp_path / 'other'))
  assert '\n' not in str(e.value) and source_dir in str(e.value)


def test_autoencoder_to_segan_computes_the_same_g(autoencoder_run, segan):
  source_dir, source = autoencoder_run
  steps = _steps(source_dir)
  config = segan.replace(init_from=f'{source_dir}:{steps[0]}')
  fresh = _random_states(config, 3)
  states, info = warm_start.warm_start(fresh, config)
  assert info['step'] == steps[0] and info['fresh'] == ['d']
  assert [p.split()[0] for p in info['loaded']['g']['padded']] == [
      'dec_0/kernel']
  assert int(states['g'].step) == 0
  _assert_trees_equal(states['d'].params, fresh['d'].params)  # D untouched
  # STEP picks that checkpoint, not the latest.
  old = generators.restore_generator(source_dir, steps[0]).params
  latest = source['states']['g'].params
  assert not np.array_equal(old['enc_0']['kernel'], latest['enc_0']['kernel'])
  np.testing.assert_array_equal(states['g'].params['enc_0']['kernel'],
                                old['enc_0']['kernel'])

  # SEGAN's G (z concatenated after the code, its kernel rows at zero)
  # computes what the autoencoder did, whatever z is.
  noisy = jnp.asarray(np.random.default_rng(0).normal(
      0, 0.3, (2, config.window)), jnp.float32)
  expected = systems.generator(
      config.replace(model='autoencoder')).apply({'params': old}, noisy)
  generator = systems.generator(config)
  for seed in (0, 1):
    z = models.sample_latent(jax.random.key(seed), jnp.arange(2),
                             systems.latent_shape(config))
    got = generator.apply({'params': states['g'].params}, noisy, z)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
  # ... which a fresh SEGAN G does not (so the check above can fail).
  assert not np.allclose(
      generator.apply({'params': fresh['g'].params}, noisy, z), expected,
      atol=1e-3)


def test_bad_init_from_is_one_line_error(autoencoder_run, segan, tmp_path):
  source_dir, source = autoencoder_run
  (tmp_path / 'empty').mkdir()
  for spec, message in [
      (str(tmp_path / 'missing'), 'no such run folder'),
      (str(tmp_path / 'empty'), 'no checkpoint in'),
      (f'{source_dir}:999', 'no checkpoint for step 999'),
  ]:
    with pytest.raises(checkpoints.CheckpointError, match=message) as e:
      warm_start.check_init_from(spec)
    assert '\n' not in str(e.value) and spec in str(e.value)
  # A model kind that cannot start from it (checked before any state).
  gan = segan.replace(model='gan', latent_dim=8, init_from=source_dir)
  with pytest.raises(checkpoints.CheckpointError,
                     match='holds a autoencoder model, which cannot start a '
                     'gan run'):
    warm_start.warm_start({}, gan)

  # Mismatches name the run and the parameter.
  params = jax.tree.map(np.asarray, source['states']['g'].params)
  wider = dict(params, enc_4=dict(params['enc_4'],
                                  kernel=np.zeros((15, 16, 32), np.float32)))
  for target, message in [
      (wider, r'parameter G/enc_4/kernel has shape \(15, 16, 16\) there but '
       r'\(15, 16, 32\) in this run'),
      ({k: v for k, v in params.items() if k != 'enc_4'},
       'parameter G/enc_4/bias of that run has no counterpart in this one'),
      (dict(params, extra={'w': np.zeros(3)}),
       'parameter G/extra/w of this run is missing there'),
  ]:
    with pytest.raises(checkpoints.CheckpointError, match=message) as e:
      warm_start.transfer_params(target, params, where='W', network='G')
    assert str(e.value).startswith('--init_from=W: ')
  # SEGAN -> autoencoder would drop z's input channels: not silently.
  segan_g = _random_states(segan, 0)['g'].params
  with pytest.raises(checkpoints.CheckpointError,
                     match='parameter G/dec_0/kernel has shape'):
    warm_start.transfer_params(params, segan_g, where='W', network='G')


def test_launch_init_from_error_is_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, 'launch.py', '--model_size=tiny', '--dataset_size=1',
       '--batch_size=8', f'--workdir={tmp_path / "run"}',
       f'--init_from={tmp_path / "nowhere"}:5'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: --init_from={tmp_path / "nowhere"}:5: no such run folder '
      f'{tmp_path / "nowhere"}')
  assert 'Traceback' not in result.stderr


def test_save_best_copies_then_commits_with_best_json(tmp_path):
  def fake_checkpoint(step):
    folder = tmp_path / 'checkpoints' / str(step) / 'state'
    folder.mkdir(parents=True)
    (folder / 'data').write_text(f'step {step}')

  fake_checkpoint(5)
  best_checkpoint.save_best(str(tmp_path), 5, 'val_stoi', 0.5)
  assert best_checkpoint.read_best(str(tmp_path)) == {
      'metric': 'val_stoi', 'value': 0.5, 'step': 5}
  # What a crash mid-copy leaves: a partial copy and an orphan step that
  # best.json does not name. Neither changes which is the best.
  (tmp_path / 'best' / '.partial-9' / 'state').mkdir(parents=True)
  (tmp_path / 'best' / 'checkpoints' / '9').mkdir()
  assert best_checkpoint.read_best(str(tmp_path))['step'] == 5
  fake_checkpoint(7)
  best_checkpoint.save_best(str(tmp_path), 7, 'val_stoi', 0.75)
  shutil.rmtree(tmp_path / 'checkpoints')  # rotation
  assert sorted(os.listdir(tmp_path / 'best')) == ['best.json', 'checkpoints']
  assert os.listdir(tmp_path / 'best' / 'checkpoints') == ['7']
  assert (tmp_path / 'best' / 'checkpoints' / '7' / 'state' /
          'data').read_text() == 'step 7'
  assert json.loads((tmp_path / 'best' / 'best.json').read_text()) == {
      'metric': 'val_stoi', 'value': 0.75, 'step': 7}


def test_keep_best_needs_validation(segan, tmp_path):
  with pytest.raises(ValueError, match='--validation_files to 1 or more'):
    train.train_and_evaluate(segan.replace(keep_best='val_pesq'),
                             str(tmp_path), checkpoint_evaluators.make_evaluators)
  with pytest.raises(ValueError, match='no evaluators'):
    train.train_and_evaluate(segan.replace(keep_best='val_pesq',
                                           validation_files=1), str(tmp_path))
  with pytest.raises(ValueError, match='gan model generates'):
    train.train_and_evaluate(
        segan.replace(model='gan', keep_best='val_pesq', validation_files=1),
        str(tmp_path), checkpoint_evaluators.make_evaluators)


def test_keep_best_is_the_max_of_the_validations(autoencoder, tmp_path):
  run = autoencoder.replace(num_epochs=3, validation_files=1,
                            keep_best='val_pesq')
  result = train.train_and_evaluate(run, str(tmp_path),
                                    checkpoint_evaluators.make_evaluators)
  scores = {}
  for path in glob.glob(str(tmp_path / 'validation' / 'step_*.json')):
    with open(path) as f:
      saved = json.load(f)
    scores[saved['step']] = saved['pesq']
  assert len(scores) == 3 and len(set(scores.values())) > 1
  step = max(scores, key=scores.get)
  best = json.loads((tmp_path / 'best' / 'best.json').read_text())
  assert best == {'metric': 'val_pesq', 'value': pytest.approx(scores[step]),
                  'step': step}
  assert result['best'] == best
  assert os.listdir(tmp_path / 'best' / 'checkpoints') == [str(step)]


def test_best_survives_rotation_and_resume_and_is_restored_by_default(
    autoencoder, tmp_path, monkeypatch):
  # Scores chosen so that the best is neither the first nor the last
  # checkpoint: 1, 3, then (after resuming) 2, 2.5.
  planned = iter([1.0, 3.0, 2.0, 2.5])
  seen = {}

  def fake_validator(config, workdir, writer=None):
    del config, workdir, writer

    def validate(g_params, step):
      seen[step] = jax.device_get(g_params)
      return {'val_pesq': next(planned)}

    return validate

  monkeypatch.setattr(checkpoint_evaluators, 'make_validator', fake_validator)
  run = autoencoder.replace(validation_files=1, keep_best='val_pesq',
                            keep_checkpoints=1)
  first = train.train_and_evaluate(run, str(tmp_path),
                                   checkpoint_evaluators.make_evaluators)
  epoch = first['step'] // 2
  assert first['best'] == {'metric': 'val_pesq', 'value': 3.0,
                           'step': 2 * epoch}
  second = train.train_and_evaluate(run.replace(num_epochs=4), str(tmp_path),
                                    checkpoint_evaluators.make_evaluators)
  # Resuming remembered 3.0: neither 2.0 nor 2.5 replaced it.
  assert second['best'] == first['best'] and len(seen) == 4
  # The end-of-run summary names it.
  summary = train.training_summary(run, str(tmp_path), second)
  assert (f'  best:        step {2 * epoch}, val_pesq 3 in '
          f'{tmp_path / "best"}') in summary
  assert _steps(tmp_path) == [4 * epoch]  # the best's own was rotated away
  assert os.listdir(tmp_path / 'best' / 'checkpoints') == [str(2 * epoch)]

  # enhance/evaluate: the best by default, an explicit step otherwise.
  best = generators.restore_generator(str(tmp_path))
  assert best.step == 2 * epoch
  assert best.source == f'best checkpoint (step {2 * epoch}, val_pesq 3)'
  _assert_trees_equal(best.params, seen[2 * epoch])
  explicit = generators.restore_generator(str(tmp_path), 4 * epoch)
  assert explicit.step == 4 * epoch
  assert explicit.source == f'checkpoint step {4 * epoch}'
  _assert_trees_equal(explicit.params, seen[4 * epoch])
  assert not np.array_equal(best.params['enc_0']['kernel'],
                            explicit.params['enc_0']['kernel'])
  # So is --init_from=WORKDIR:STEP.
  warm = run.replace(init_from=f'{tmp_path}:{2 * epoch}')
  states, info = warm_start.warm_start(_random_states(warm, 0), warm)
  assert info['checkpoint'] == f'{tmp_path}/best/checkpoints/{2 * epoch}'
  _assert_trees_equal(states['g'].params, seen[2 * epoch])
  latest = generators.restore_generator(str(tmp_path), prefer_best=False)
  assert latest.source == f'latest checkpoint (step {4 * epoch})'
  # The best's step, rotated out of checkpoints/, is still found by step.
  assert generators.restore_generator(str(tmp_path), 2 * epoch).source == (
      best.source)
  with pytest.raises(checkpoints.CheckpointError,
                     match=f'no checkpoint for step {epoch} .*available: '
                     f'{4 * epoch}$'):
    generators.restore_generator(str(tmp_path), epoch)

  # launch.py says which checkpoint it used.
  result = subprocess.run(
      [sys.executable, 'launch.py', '--mode=evaluate', '--dataset=synthetic',
       '--split=test', '--max_files=1', f'--workdir={tmp_path}',
       f'--results={tmp_path / "eval.json"}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert (f'Using the best checkpoint (step {2 * epoch}, val_pesq 3) of '
          f'{tmp_path}.') in result.stdout
  saved = json.loads((tmp_path / 'eval.json').read_text())
  assert saved['step'] == 2 * epoch
  assert saved['checkpoint'].startswith('best checkpoint (step')
