import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from segan_jax import checkpoint_evaluators
from segan_jax import checkpoints
from segan_jax import generators
from segan_jax import parallel
from segan_jax import systems
from segan_jax import train


def _batches(config, count, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(config.window) / 16000.0
  out = []
  for _ in range(count):
    freq = rng.uniform(100, 400, (config.batch_size, 1))
    clean = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    noisy = clean + 0.1 * rng.standard_normal(clean.shape).astype(np.float32)
    out.append({'noisy': noisy, 'clean': clean})
  return out


def _init(config, seed=0):
  rng = np.random.default_rng(seed + 100)
  reference = rng.normal(0, 0.3, (config.vbn_reference_size, config.window, 2))
  states = systems.create_states(config, jax.random.key(seed))
  states['d'] = states['d'].replace(reference=reference.astype(np.float32))
  return states


def _run(config, parallelism, batches, states):
  strategy = parallel.make_strategy(parallelism, config.batch_size)
  step_fn = strategy.compile(train.make_train_step(config))
  states = strategy.put_state(jax.device_get(states))
  history = []
  for batch in batches:
    states, metrics = step_fn(states, strategy.put_batch(batch),
                              jax.random.key(7))
    history.append(strategy.get_metrics(metrics))
  host = strategy.get_state(states)
  return (host['g'], host.get('d')), history


def test_overfit_one_batch_l1_falls(tiny_config):
  config = tiny_config.replace(learning_rate=1e-3)
  batch = _batches(config, 1)[0]
  _, history = _run(config, 'none', [batch] * 40, _init(config))
  assert np.isfinite([h['g_loss'] for h in history]).all()
  assert history[-1]['g_l1'] < 0.5 * history[0]['g_l1']
  assert set(history[0]) >= {'d_real', 'd_fake', 'd_loss', 'g_adv', 'g_l1',
                             'g_loss', 'd_grad_norm', 'g_grad_norm'}


def test_pmap_and_sharding_match_one_device(tiny_config):
  assert jax.device_count() == 2, 'conftest simulates two CPU devices'
  config = tiny_config.replace(batch_size=4)
  batches = _batches(config, 3)
  states = _init(config)
  (g1, d1), m1 = _run(config, 'none', batches, states)
  for parallelism in ('pmap', 'sharding'):
    (g2, d2), m2 = _run(config, parallelism, batches, states)
    assert int(g2.step) == int(g1.step) == 3
    for a, b in zip(jax.tree.leaves((g1.params, d1.params)),
                    jax.tree.leaves((g2.params, d2.params))):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                                 err_msg=parallelism)
    np.testing.assert_allclose(m1[-1]['g_l1'], m2[-1]['g_l1'], rtol=1e-4)
  # The states really moved: equality above is not between two no-ops.
  assert not np.allclose(jax.tree.leaves(states['g'].params)[0],
                         jax.tree.leaves(g1.params)[0])


def test_batch_not_divisible_by_devices(tiny_config):
  with pytest.raises(ValueError, match='not divisible by the 2 devices'):
    parallel.make_strategy('pmap', 3)


def test_checkpoint_save_restore_identity(tiny_config, tmp_path):
  config = tiny_config
  (g, d), _ = _run(config, 'none', _batches(config, 2), _init(config))
  rng = jax.random.key(42)
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  ckpt.save(2, {'g': g, 'd': d}, rng, epoch=1, config=config)
  ckpt.wait()
  fresh = jax.device_get(_init(config, seed=5))
  restored, rng2, meta = ckpt.restore(fresh, jax.random.key(0), config)
  g2, d2 = restored['g'], restored['d']
  assert meta['step'] == 2 and meta['epoch'] == 1
  assert meta['config']['model_size'] == 'tiny'
  assert int(g2.step) == 2
  for a, b in zip(jax.tree.leaves((g, d)), jax.tree.leaves((g2, d2))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(jax.random.key_data(rng2),
                                jax.random.key_data(rng))
  with pytest.raises(checkpoints.CheckpointError, match='available: 2'):
    ckpt.restore(fresh, rng, config, step=7)
  other = config.replace(encoder_features=(4, 8, 8, 16, 32))
  with pytest.raises(checkpoints.CheckpointError, match='written for model'):
    ckpt.restore(fresh, rng, other)


def _params(result):
  return jax.tree.leaves((result['states']['g'].params, result['states']['d'].params,
                          result['states']['g'].opt_state))


def test_seeded_runs_are_bit_identical_and_resume_exactly(tiny_config,
                                                         tmp_path):
  config = tiny_config  # 2 epochs, checkpoint every epoch
  straight = train.train_and_evaluate(config, str(tmp_path / 'a'))
  again = train.train_and_evaluate(config, str(tmp_path / 'b'))
  for a, b in zip(_params(straight), _params(again)):
    np.testing.assert_array_equal(a, b)
  assert checkpoints.Checkpointer(str(tmp_path / 'a')).all_steps() == [
      straight['step'] // 2, straight['step']]

  # Stop after epoch 1, relaunch in the same workdir for 2 epochs in total.
  train.train_and_evaluate(config.replace(num_epochs=1), str(tmp_path / 'c'))
  resumed = train.train_and_evaluate(config, str(tmp_path / 'c'))
  assert len(resumed['history']) < len(straight['history'])  # it did resume
  for a, b in zip(_params(straight), _params(resumed)):
    np.testing.assert_array_equal(a, b)

  other_seed = train.train_and_evaluate(config.replace(seed=1),
                                        str(tmp_path / 'd'))
  assert not np.array_equal(_params(straight)[0], _params(other_seed)[0])


def _tiny_system(tiny_config, model, **changes):
  return tiny_config.replace(**{'model': model, 'dataset_size': 1,
                                'num_epochs': 2, **changes})


@pytest.mark.parametrize('loss', ['l1', 'l2'])
def test_autoencoder_trains_checkpoints_and_resumes(tiny_config, tmp_path,
                                                   loss):
  # Adam with beta1 0.5, as santi-pdp/segan trains its autoencoder (SEAE).
  config = _tiny_system(tiny_config, 'autoencoder', reconstruction_loss=loss,
                        learning_rate=1e-3, optimizer='adam')
  assert systems.latent_shape(config) is None  # never a z
  straight = train.train_and_evaluate(config, str(tmp_path / 'a'))
  assert set(straight['states']) == {'g'}
  assert straight['history'][-1]['g_l1'] < straight['history'][0]['g_l1']
  train.train_and_evaluate(config.replace(num_epochs=1), str(tmp_path / 'b'))
  resumed = train.train_and_evaluate(config, str(tmp_path / 'b'))
  for a, b in zip(jax.tree.leaves(straight['states']),
                  jax.tree.leaves(resumed['states'])):
    np.testing.assert_array_equal(a, b)
  # Its checkpoints enhance like SEGAN's (no z).
  from segan_jax import enhance  # pylint: disable=g-import-not-at-top
  generator = generators.restore_generator(str(tmp_path / 'a'))
  assert generator.config.model == 'autoencoder'
  noisy = np.random.default_rng(0).normal(0, 0.1, 3000).astype(np.float32)
  assert enhance.Enhancer(generator).enhance_signal(noisy).shape == (3000,)


@pytest.mark.parametrize('gan_loss', ['bce', 'lsgan'])
def test_basic_gan_trains_and_writes_sample_pictures(tiny_config, tmp_path,
                                                     gan_loss):
  config = _tiny_system(tiny_config, 'gan', gan_loss=gan_loss, latent_dim=8)
  result = train.train_and_evaluate(config, str(tmp_path),
                                    checkpoint_evaluators.make_evaluators)
  assert set(result['states']) == {'g', 'd'}
  assert all(np.isfinite(h['d_loss']) for h in result['history']
             if 'd_loss' in h)
  steps = checkpoints.Checkpointer(str(tmp_path)).all_steps()
  for step in steps:
    png = tmp_path / 'samples' / f'step_{step}.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert (tmp_path / 'samples' / f'step_{step}.wav').is_file()
  # G moved between the checkpoints: the pictures are not all the same.
  pictures = [(tmp_path / 'samples' / f'step_{s}.png').read_bytes()
              for s in steps]
  assert pictures[0] != pictures[1]
  if gan_loss == 'bce':  # resuming works for the GAN too
    train.train_and_evaluate(config.replace(num_epochs=1),
                             str(tmp_path / 'resumed'))
    resumed = train.train_and_evaluate(config, str(tmp_path / 'resumed'))
    for a, b in zip(jax.tree.leaves(result['states']),
                    jax.tree.leaves(resumed['states'])):
      np.testing.assert_array_equal(a, b)


def test_gan_checkpoint_cannot_enhance(tiny_config, tmp_path):
  config = _tiny_system(tiny_config, 'gan', num_epochs=1, latent_dim=8)
  train.train_and_evaluate(config, str(tmp_path))
  with pytest.raises(checkpoints.CheckpointError,
                     match='generates rather than enhances'):
    generators.restore_generator(str(tmp_path))


def test_global_norm_equals_optax():
  rng = np.random.default_rng(0)
  tree = {'a': jnp.asarray(rng.normal(size=(31, 4, 3)), jnp.float32),
          'b': [jnp.asarray(rng.normal(size=(5,)), jnp.float32),
                jnp.float32(-2.0)]}
  np.testing.assert_allclose(systems.common.global_norm(tree), optax.tree.norm(tree),
                             rtol=1e-6)
