"""The registry of systems and the layering it keeps (no model-kind dispatch
or hidden imports elsewhere)."""

import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from segan_jax import config as config_lib
from segan_jax import systems

PACKAGE = pathlib.Path(systems.__file__).parents[1]
INTERFACE = ('NETWORKS', 'ENHANCES', 'WARM_START_FAMILY', 'generator',
             'latent_shape', 'signature', 'create_states', 'make_step')


def test_every_model_kind_is_a_system_with_the_interface():
  assert tuple(systems.SYSTEMS) == config_lib.MODELS
  for name, system in systems.SYSTEMS.items():
    missing = [a for a in INTERFACE if not hasattr(system, a)]
    assert not missing, f'{name} lacks {missing}'
  with pytest.raises(ValueError, match="unknown model 'vae'"):
    systems.get('vae')


@pytest.mark.parametrize('model', config_lib.MODELS)
def test_create_states_gives_the_networks_the_system_names(model):
  config = config_lib.Config(model=model, model_size='tiny', latent_dim=8)
  system = systems.of(config)
  states = jax.eval_shape(
      lambda: systems.create_states(config, jax.random.key(0)))
  assert set(states) == set(system.NETWORKS)
  assert systems.signature(config)['model'] == model
  latent = systems.latent_shape(config)
  assert (latent is None) == (model == 'autoencoder')


def test_autoencoder_ignores_use_z():
  config = config_lib.Config(model='autoencoder', model_size='tiny',
                             use_z=True)
  assert not systems.generator(config).use_z
  states = systems.create_states(config, jax.random.key(0))
  out = states['g'].apply_fn({'params': states['g'].params},
                             np.zeros((1, config.window), np.float32))
  assert out.shape == (1, config.window)
  # Its checkpoints are told apart from a SEGAN G's by use_z and by having
  # no D, not by anything else of G's shape.
  segan_like = config_lib.Config(model='segan', model_size='tiny',
                                 use_z=False)
  expected = dict(systems.signature(segan_like), model='autoencoder')
  del expected['discriminator_features']
  assert systems.signature(config) == expected


def _modules():
  return sorted(p for p in PACKAGE.rglob('*.py'))


def test_model_kind_is_chosen_only_in_the_registry():
  # Comparisons of config.model with a kind's name belong in systems/.
  offenders = []
  for path in _modules():
    if path.parent.name == 'systems':
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if (isinstance(node, ast.Compare) and
          isinstance(node.left, ast.Attribute) and node.left.attr == 'model'):
        offenders.append(f'{path.relative_to(PACKAGE)}:{node.lineno}')
  assert not offenders


# Function-level imports of the package that remain, each for a stated
# reason other than a cycle: the CLI imports what its modes need
# (segan_jax/modes.py) once the flags are parsed, so that --help answers
# without loading JAX; TFDS is loaded only for file-backed datasets; the
# package's own `segan_jax.Enhancer` is loaded on first use (for the CLI's
# --help too, which imports the package first).
ALLOWED_LATE_IMPORTS = {'cli.py', 'datasets/__init__.py', '__init__.py'}


def _imports_of_the_package(tree):
  """(line, imported module, in a function) of each import of segan_jax."""
  in_function = set()
  for function in ast.walk(tree):
    if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
      in_function.update(id(node) for node in ast.walk(function))
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.level == 0 and (
        node.module or '').startswith('segan_jax'):
      names = ([f'segan_jax.{a.name}' for a in node.names]
               if node.module == 'segan_jax' else [node.module])
    elif isinstance(node, ast.Import):
      names = [a.name for a in node.names if a.name.startswith('segan_jax')]
    else:
      continue
    for name in names:
      yield node.lineno, name, id(node) in in_function


def _unit(module: str) -> str:
  """The layer an import counts for: a subpackage as a whole (its modules
  may import each other), a top-level module by itself."""
  parts = module.split('.')
  return parts[1] if len(parts) > 1 else '__init__'


def _unit_of_path(path) -> str:
  parts = path.relative_to(PACKAGE).with_suffix('').parts
  if parts == ('__init__',):
    return '__init__'
  return _unit('.'.join(('segan_jax',) + parts))


def test_no_import_runs_upward():
  # Imports, at the top or in functions, form no cycle between the package's
  # modules and subpackages: every one runs down, from the entry point to
  # the leaves (e.g. pretrained/, the bundle loader, must not import what
  # restores or applies a generator).
  edges = {}
  for path in _modules():
    source = _unit_of_path(path)
    for _, module, _ in _imports_of_the_package(ast.parse(path.read_text())):
      target = _unit(module)
      if target != source:
        edges.setdefault(source, set()).add(target)

  def reachable(start):
    seen, todo = set(), [start]
    while todo:
      for nxt in edges.get(todo.pop(), ()):
        if nxt not in seen:
          seen.add(nxt)
          todo.append(nxt)
    return seen

  upward = sorted(f'{a} -> {b}' for a, targets in edges.items()
                  for b in targets if a in reachable(b))
  assert not upward
  assert 'enhance' in edges['modes'] and 'pretrained' in edges['generators']


def test_no_module_hides_an_import_of_the_package_in_a_function():
  offenders = []
  for path in _modules():
    name = str(path.relative_to(PACKAGE))
    for line, _, late in _imports_of_the_package(ast.parse(path.read_text())):
      if late and name not in ALLOWED_LATE_IMPORTS:
        offenders.append(f'{name}:{line}')
  assert not offenders


def _tiny_config(model, **overrides):
  return config_lib.Config(model=model, model_size='tiny', latent_dim=8,
                           batch_size=2, **overrides)


def _tiny_batch(config, seed=0):
  rng = np.random.default_rng(seed)
  clean = (0.3 * rng.standard_normal((2, config.window))).astype(np.float32)
  return {'clean': clean, 'noisy': clean + 0.1 * rng.standard_normal(
      clean.shape).astype(np.float32)}


@pytest.mark.parametrize('model', config_lib.MODELS)
def test_bfloat16_computes_close_to_float32_with_float32_state(model):
  fp32 = _tiny_config(model)
  bf16 = fp32.replace(dtype='bfloat16')
  # Parameters are float32 whatever the dtype, so one init serves both.
  states = systems.create_states(bf16, jax.random.key(0))
  batch = _tiny_batch(fp32)
  rng = np.random.default_rng(1)
  # The same parameters through both dtypes: close, and float32 out.
  g32, g16 = systems.generator(fp32), systems.generator(bf16)
  inputs = ((rng.standard_normal((2, 8)).astype(np.float32),)
            if model == 'gan' else
            (batch['noisy'],))
  if systems.latent_shape(fp32) is not None and model != 'gan':
    inputs += (np.ones((2,) + systems.latent_shape(fp32), np.float32),)
  variables = {'params': states['g'].params}
  out32 = jax.jit(g32.apply)(variables, *inputs)
  out16 = jax.jit(g16.apply)(variables, *inputs)
  assert out16.dtype == jnp.float32
  assert not np.array_equal(out16, out32)  # it did compute in bfloat16
  np.testing.assert_allclose(out16, out32, atol=0.05 * float(
      np.max(np.abs(out32))) + 1e-3)
  # A bfloat16 train step keeps parameters and optimizer states float32.
  new_states, metrics = jax.jit(systems.of(bf16).make_step(bf16))(
      states, batch, jax.random.key(1))
  for leaf in jax.tree.leaves(new_states):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
  assert all(np.isfinite(v) and v.dtype == jnp.float32
             for v in metrics.values())


@pytest.mark.parametrize('model', config_lib.MODELS)
def test_remat_conv_outputs_recomputes_and_gives_the_same_step(model):
  plain = _tiny_config(model)
  remat = plain.replace(remat='conv_outputs')
  states = systems.create_states(plain, jax.random.key(0))
  batch = _tiny_batch(plain)
  key = jax.random.key(1)

  def barriers(config):
    # jax.checkpoint's recomputation sits behind optimization barriers.
    lowered = jax.jit(systems.of(config).make_step(config)).lower(
        states, batch, key)
    return lowered.as_text().count('optimization_barrier')

  assert barriers(plain) == 0 and barriers(remat) > 0
  results = [jax.jit(systems.of(c).make_step(c))(states, batch, key)
             for c in (plain, remat)]
  (states_a, metrics_a), (states_b, metrics_b) = results
  assert metrics_a.keys() == metrics_b.keys()
  for name in metrics_a:
    np.testing.assert_allclose(metrics_b[name], metrics_a[name], rtol=1e-5,
                               atol=1e-6, err_msg=name)
  for a, b in zip(jax.tree.leaves(states_a), jax.tree.leaves(states_b)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_unknown_remat_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown remat 'all'; known: none, "
                     'conv_outputs'):
    config_lib.Config(remat='all')
