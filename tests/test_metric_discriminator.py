"""The metric discriminator (--metric_discriminator): its module, its PESQ
labels, its update and a tiny SEGAN trained, resumed and repeated with it."""

import concurrent.futures

import jax
import numpy as np
import optax
import pytest

from segan_jax import audio
from segan_jax import checkpoints
from segan_jax import metric_labels
from segan_jax import metrics
from segan_jax import models
from segan_jax import optimizers
from segan_jax import systems
from segan_jax import train
from segan_jax.config import Config
from segan_jax.systems import common
from segan_jax.systems import segan

from conftest import speechlike

WINDOW = 4096  # PESQ scores 0.25 s at least


def _windows(count, seed=0, window=WINDOW):
  """Pre-emphasised (clean, noisy) windows [count, window] of a voiced tone."""
  clean = np.stack([speechlike(16000, window / 16000, 1, seed + i)[:, 0]
                    for i in range(count)])
  rng = np.random.default_rng(seed)
  noisy = clean + 0.05 * rng.standard_normal(clean.shape)
  return (audio.preemphasis(clean).astype(np.float32),
          audio.preemphasis(noisy).astype(np.float32))


def test_module_scores_pairs_in_the_unit_interval():
  module = models.MetricDiscriminator(features=(4, 8))
  clean, noisy = _windows(3, window=2048)  # any length
  params = {'params': common.init_params(module, jax.random.key(0), noisy,
                                         clean)}
  apply = jax.jit(module.apply)
  scores = apply(params, noisy, clean)
  assert scores.shape == (3,)
  assert np.all((scores > 0) & (scores < 1))
  # A pair's score is its own: the same window scores the same in any batch.
  np.testing.assert_allclose(apply(params, noisy[1:2], clean[1:2]),
                             scores[1:2], rtol=1e-5)
  assert not np.allclose(apply(params, clean, clean), scores)


def test_labels_are_normalised_pesq_and_a_silent_window_is_dropped():
  assert metric_labels.normalised_pesq(1.0) == 0.0
  assert metric_labels.normalised_pesq(4.5) == 1.0
  assert metric_labels.normalised_pesq(4.64) == 1.0  # clipped
  assert metric_labels.normalised_pesq(2.75) == pytest.approx(0.5)
  clean, noisy = _windows(3)
  enhanced = 0.5 * clean + 0.5 * noisy
  clean[2] = 0.0  # no utterance: PESQ cannot score it
  labels, valid, cpu_seconds = metric_labels.label_windows(
      enhanced, clean, noisy, audio.PREEMPHASIS)
  assert cpu_seconds > 0
  np.testing.assert_array_equal(valid, [[1, 1, 1], [1, 1, 1], [0, 0, 0]])
  np.testing.assert_array_equal(labels[2], 0.0)
  np.testing.assert_array_equal(labels[:2, 1], 1.0)
  for i in range(2):
    expected = (metrics.pesq_wb(audio.deemphasis(clean[i]),
                                audio.deemphasis(enhanced[i])) - 1) / 3.5
    assert labels[i, 0] == pytest.approx(expected, abs=1e-6)
  # Half the noise scores better than all of it.
  assert np.all(labels[:2, 0] > labels[:2, 2])


def _config(**changes):
  return Config(**{
      'model_size': 'tiny', 'window_size': WINDOW, 'dataset': 'synthetic',
      'dataset_size': 1, 'num_epochs': 2, 'batch_size': 4,
      'vbn_reference_size': 2, 'checkpoint_every_epochs': 1,
      'log_every_steps': 1, 'validation_files': 0, 'parallelism': 'none',
      'metric_discriminator': True, 'metric_windows_per_step': 2,
      'metric_workers': 0, **changes})


def test_update_fits_the_valid_labels_only():
  clean, noisy = _windows(2, window=2048)
  module = models.MetricDiscriminator(features=(4, 8))
  state = common.new_state(
      module, common.init_params(module, jax.random.key(0), clean, clean),
      optax.adam(3e-3), optimizers.MetricDiscriminatorState, queue={})
  batch = {'metric_enhanced': 0.5 * (clean + noisy), 'metric_clean': clean,
           'metric_noisy': noisy,
           'metric_labels': np.array([[0.3, 1.0, 0.1], [0.4, 1.0, 0.2]],
                                     np.float32),
           'metric_valid': np.array([[1, 1, 1], [1, 1, 0]], np.float32)}
  update = jax.jit(segan.metric_update)
  first = None
  for _ in range(40):
    state, step_metrics = update(state, batch)
    first = first or step_metrics
  assert step_metrics['dm_loss'] < 0.25 * first['dm_loss']
  assert step_metrics['dm_pred_clean'] > first['dm_pred_clean']
  assert step_metrics['dm_label_noisy'] == pytest.approx(0.1)  # valid only
  assert step_metrics['dm_labelled'] == pytest.approx(5 / 6)
  # An invalid label has no effect on the update.
  changed = dict(batch, metric_labels=batch['metric_labels'].copy())
  changed['metric_labels'][1, 2] = 0.9
  a, _ = update(state, batch)
  b, _ = update(state, changed)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(x, y)


def _trained(result):
  states = result['states']
  return jax.tree.leaves((states['g'].params, states['d'].params,
                          states['dm'].params, states['dm'].opt_state))


def test_segan_trains_with_it_repeats_and_resumes_exactly(tmp_path):
  config = _config()
  straight = train.train_and_evaluate(config, str(tmp_path / 'a'))
  history = straight['history']
  assert {'dm_loss', 'dm_pred_enhanced', 'dm_label_enhanced', 'g_metric',
          'dm_labelled', 'metric_label_wait_s',
          'metric_label_cpu_s'} <= set(history[-1])
  assert all(np.isfinite(v) for h in history for v in h.values())
  # Steps 0 and 1 have no labels yet; later ones train on real ones.
  assert history[0]['dm_labelled'] == 0 and history[0]['dm_loss'] == 0
  assert max(h['dm_labelled'] for h in history[2:]) > 0
  assert max(h['metric_label_cpu_s'] for h in history) > 0

  # A second run, stopped after epoch 1, with the labels from a process
  # pool this time: its checkpoint equals the first run's of that step,
  # D_metric's state and the queue of labelled windows included.
  pooled = config.replace(metric_workers=1)
  train.train_and_evaluate(pooled.replace(num_epochs=1), str(tmp_path / 'c'))
  step = checkpoints.steps(str(tmp_path / 'c'))[-1]
  template = jax.device_get(systems.create_states(config, jax.random.key(1)))
  saved = [checkpoints.Checkpointer(str(tmp_path / run)).restore(
      template, jax.random.key(0), config, step=step)[0] for run in 'ac']
  assert np.any(saved[0]['dm'].queue['valid'])
  for a, b in zip(jax.tree.leaves(saved[0]), jax.tree.leaves(saved[1])):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(saved[0]['dm'].params['score']['kernel'],
                            template['dm'].params['score']['kernel'])

  # Resumed from there: the queue carries the labels of the two steps
  # before the checkpoint, so it trains as the uninterrupted run did.
  resumed = train.train_and_evaluate(pooled, str(tmp_path / 'c'))
  assert len(resumed['history']) < len(history)
  for a, b in zip(_trained(straight), _trained(resumed)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('changes, message', [
    (dict(metric_weight=-1.0), 'metric_weight must be >= 0'),
    (dict(metric_windows_per_step=0), 'metric_windows_per_step must be >= 1'),
    (dict(metric_workers=-1), 'metric_workers must be >= 0'),
    (dict(metric_learning_rate=0.0), 'metric_learning_rate must be > 0'),
    (dict(metric_features=()), 'metric_features must be one or more'),
    (dict(window_size=1024), 'at least 0.25 s'),
])
def test_bad_settings_are_one_line_errors(changes, message):
  with pytest.raises(ValueError, match=message):
    _config(**changes)


def test_it_is_a_segan_option_and_off_by_default():
  assert not Config().metric_discriminator
  assert 'dm' not in jax.eval_shape(
      lambda: systems.create_states(_config(metric_discriminator=False),
                                    jax.random.key(0)))
  for model in ('autoencoder', 'gan'):
    with pytest.raises(ValueError, match='metric_discriminator is a segan'):
      systems.of(_config(model=model)).make_step(_config(model=model))


def test_a_dead_worker_costs_the_pool_not_the_labels():
  clean, noisy = _windows(2)
  labeller = metric_labels.MetricLabeller(2, WINDOW, audio.PREEMPHASIS, 1)
  assert isinstance(labeller.pool, concurrent.futures.ProcessPoolExecutor)
  dead = concurrent.futures.Future()
  dead.set_exception(concurrent.futures.process.BrokenProcessPool('killed'))
  probe = {'metric_probe_enhanced': noisy, 'metric_probe_clean': clean,
           'metric_probe_noisy': noisy}
  labels, valid, _ = labeller._results(probe, [dead])  # pylint: disable=protected-access
  expected = metric_labels.label_windows(noisy, clean, noisy,
                                         audio.PREEMPHASIS)
  np.testing.assert_array_equal(labels, expected[0])
  np.testing.assert_array_equal(valid, expected[1])
  assert isinstance(labeller.pool, concurrent.futures.ThreadPoolExecutor)
  labeller.close()
