"""Test session setup: two simulated CPU devices, shared tiny configs and paths."""

import os

# Must happen before JAX initialises its backends: every test sees two CPU
# devices, so data-parallel tests need no subprocess. Single-device tests ask
# for parallelism='none'.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
# Tests (and the launch.py subprocesses they start, which inherit this
# environment) compile the same tiny programs many times: a persistent
# compilation cache shared by the session saves most of those compiles. As
# launch.py's default cache folder, it also keeps the suite out of ~/.cache.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  import tempfile  # pylint: disable=g-import-not-at-top
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(
      prefix='segan_jax_test_xla_cache_')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')

import pathlib  # pylint: disable=g-import-not-at-top

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'


@pytest.fixture
def tiny_config():
  from segan_jax.config import Config  # pylint: disable=g-import-not-at-top
  return Config(model_size='tiny', dataset='synthetic', dataset_size=2,
                num_epochs=2, batch_size=8, vbn_reference_size=4,
                checkpoint_every_epochs=1, log_every_steps=5,
                validation_files=0,
                parallelism='none')


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
  """A tiny model trained for 2 epochs (checkpoints at both), made once per
  session for every test that restores a checkpoint; tests only read it."""
  from segan_jax import train  # pylint: disable=g-import-not-at-top
  from segan_jax.config import Config  # pylint: disable=g-import-not-at-top
  config = Config(model_size='tiny', dataset_size=1, num_epochs=2,
                  batch_size=8, vbn_reference_size=4,
                  checkpoint_every_epochs=1, validation_files=0,
                  parallelism='none')
  workdir = str(tmp_path_factory.mktemp('trained'))
  result = train.train_and_evaluate(config, workdir)
  return workdir, result


def speechlike(rate, seconds, channels, seed=0):
  """A voiced tone with a 3 Hz envelope plus a little noise, [T, channels]."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(rate * seconds)) / rate
  x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
  x = x[:, None] + 0.02 * rng.standard_normal((t.size, channels))
  return x.astype(np.float32)


@pytest.fixture
def passed_augmentations(monkeypatch):
  """The augmentation each training run passes to input_pipeline.batches,
  in order (the batches themselves are the real ones)."""
  from segan_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  from segan_jax import train  # pylint: disable=g-import-not-at-top
  real_batches = input_pipeline.batches
  passed = []

  def spy(*args, **kwargs):
    passed.append(kwargs.get('augmentation'))
    return real_batches(*args, **kwargs)

  monkeypatch.setattr(train.input_pipeline, 'batches', spy)
  return passed
