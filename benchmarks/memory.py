r"""Memory XLA plans for the train step, against what the networks need.

  python -m benchmarks.memory --model_size=paper --batch_size=400 \
      --conv_backend=gpu --remat=conv_outputs --json

Compiles the real train step (segan_jax.train.make_train_step, jitted with
its states donated as parallel.make_strategy('none') does) WITHOUT running
it: jit(...).lower(...).compile() on abstract inputs (jax.eval_shape /
jax.ShapeDtypeStruct), so nothing paper-size is allocated, and the conv
forms are those `ConvPolicy(backend=--conv_backend)` chooses, whatever
backend compiles them (on the CPU, 'gpu' plans the GPU policy's forms with
XLA:CPU's buffer assignment; on a GPU, XLA:GPU's). --remat is the run's
(Config.remat): what the backward passes keep of the forward passes.

XLA:CPU's default instruction scheduler orders the step for concurrency,
not memory: it starts the next layer's work (and a checkpoint's
recomputation) early, so that more is live at once than the computation
needs. XLA:GPU schedules under the device's memory limit instead. So that
the plan on the CPU stands for what a memory-bound accelerator needs,
--memory_scheduler (on by default; it only concerns XLA:CPU) compiles with
XLA:CPU's memory-minimising scheduler
(--xla_cpu_enable_concurrency_optimized_scheduler=false in $XLA_FLAGS,
set before the backend starts).

  planned_bytes: compiled.memory_analysis(): argument + output + temp -
    alias bytes (what the executable holds at once).
  bound_bytes: the analytic bound from the layer shapes (`analytic_bound`):
    the states (parameters, optimizer state, reference batch), one gradient
    per parameter, the batch, and the activations a backward pass must keep
    (every leaf module's output, found by running G and D abstractly with
    Flax's capture_intermediates) for the costlier of the D and G updates.

With --top_buffers=N the N largest allocations of XLA's buffer assignment
(--xla_dump_to=...*buffer-assignment.txt) are printed, with the op and
shape of their biggest value: the buffers that dominate the plan.
The last line printed with --json is one JSON object.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys
import tempfile
import time
from typing import Any, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from segan_jax import models
from segan_jax import systems
from segan_jax import train
from segan_jax.config import Config
from segan_jax.config import MODEL_SIZES
from segan_jax.config import REMAT_POLICIES
from segan_jax.ops import conv

CONV_BACKENDS = ('cpu', 'gpu', 'tpu')
DTYPES = ('float32', 'bfloat16')


def _bytes(tree) -> int:
  return int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize
                 for x in jax.tree.leaves(tree)))


def _leaf_output_bytes(intermediates) -> int:
  """Bytes of the outputs of the leaf modules in a capture_intermediates
  tree (a module is a leaf when its entry holds only its own outputs)."""
  total = 0
  for key, value in intermediates.items():
    if key == '__call__':
      continue
    if set(value) == {'__call__'}:
      total += _bytes(value['__call__'])
    else:
      total += _leaf_output_bytes(value)
  return total


def _config(model_size: str, batch_size: int, dtype: str,
            remat: str = 'none') -> Config:
  return Config(model_size=model_size, batch_size=batch_size,
                parallelism='none', dtype=dtype, remat=remat)


def _abstract_inputs(config: Config):
  """ShapeDtypeStructs of (states, batch, rng) of the train step."""
  states = jax.eval_shape(
      lambda key: systems.create_states(config, key), jax.random.key(0))
  window = (config.batch_size, config.window)
  batch = {'noisy': jax.ShapeDtypeStruct(window, jnp.float32),
           'clean': jax.ShapeDtypeStruct(window, jnp.float32)}
  return states, batch, jax.eval_shape(lambda: jax.random.key(0))


def activation_bytes(config: Config, states, batch_size: int) -> dict:
  """Leaf-module output bytes of G on ``batch_size`` examples, and of D on
  ``batch_size`` pairs and its reference batch, from the layer shapes."""
  g_state, d_state = states['g'], states['d']
  window = jax.ShapeDtypeStruct((batch_size, config.window), jnp.float32)
  z_shape = systems.latent_shape(config)
  z = (None if z_shape is None else
       jax.ShapeDtypeStruct((batch_size,) + tuple(z_shape), jnp.float32))

  def g_intermediates(params, noisy, z):
    _, captured = g_state.apply_fn({'params': params}, noisy, z,
                                   capture_intermediates=True,
                                   mutable=['intermediates'])
    return captured['intermediates']

  def d_intermediates(params, signal, noisy, reference):
    _, captured = d_state.apply_fn(
        {'params': params}, models.make_pair(signal, noisy), reference,
        split_reference=True, capture_intermediates=True,
        mutable=['intermediates'])
    return captured['intermediates']

  g = jax.eval_shape(g_intermediates, g_state.params, window, z)
  d = jax.eval_shape(d_intermediates, d_state.params, window, window,
                     d_state.reference)
  return {'g': _leaf_output_bytes(g), 'd': _leaf_output_bytes(d)}


def analytic_bound(config: Config, states, batch) -> dict[str, int]:
  """The bytes a train step cannot do without, by part.

  The D update differentiates D over the real and fake pairs (2B, and the
  reference batch); the G update differentiates G (B) and D over the fake
  pairs (B, and the reference). Each keeps its leaf activations for its
  backward pass; the updates run one after the other, so the bound takes
  the larger.
  """
  b = config.batch_size
  act = activation_bytes(config, states, b)
  d_update = activation_bytes(config, states, 2 * b)['d']
  params = _bytes({'g': states['g'].params, 'd': states['d'].params})
  parts = {
      'states_bytes': _bytes(states),
      'gradient_bytes': params,
      'batch_bytes': _bytes(batch),
      'g_activation_bytes': act['g'],
      'd_activation_bytes': act['d'],
      'd_update_activation_bytes': d_update,
      'activation_bytes': max(d_update, act['g'] + act['d']),
  }
  parts['bound_bytes'] = (parts['states_bytes'] + parts['gradient_bytes'] +
                          parts['batch_bytes'] + parts['activation_bytes'])
  return parts


_ALLOCATION = re.compile(r'^allocation (\d+): size (\d+)(.*)$')
_VALUE = re.compile(r'^\s+value: <\d+ ([^ ]+) @\d+> \(size=(\d+),offset=\d+\):'
                    r' (.*)$')


def largest_allocations(text: str, top: int) -> list[dict[str, Any]]:
  """The ``top`` largest allocations of an XLA buffer-assignment dump, each
  with its size, its kind (parameter, output, temp...) and its largest
  value's op name and shape."""
  allocations, current = [], None
  for line in text.splitlines():
    match = _ALLOCATION.match(line)
    if match:
      current = {'index': int(match.group(1)), 'bytes': int(match.group(2)),
                 'kind': match.group(3).strip(' ,:'), 'value': None,
                 'value_bytes': -1}
      allocations.append(current)
      continue
    match = _VALUE.match(line)
    if match and current is not None and int(
        match.group(2)) > current['value_bytes']:
      current['value'] = f'{match.group(1)} {match.group(3)}'
      current['value_bytes'] = int(match.group(2))
  allocations.sort(key=lambda a: -a['bytes'])
  return allocations[:top]


def largest_values(text: str, top: int) -> list[dict[str, Any]]:
  """The ``top`` largest values (HLO op outputs) of a buffer-assignment
  dump, each once: what fills XLA:CPU's one big temporary allocation."""
  sizes = {}
  for line in text.splitlines():
    match = _VALUE.match(line)
    if match:
      name = f'{match.group(1)} {match.group(3)}'
      sizes[name] = max(sizes.get(name, 0), int(match.group(2)))
  return [{'value': name, 'bytes': size} for name, size in
          sorted(sizes.items(), key=lambda item: -item[1])[:top]]


# XLA:CPU's scheduler that minimises memory instead of the default one. It
# is read from $XLA_FLAGS when the backend starts (as a per-executable
# compiler option it is accepted but has no effect).
MEMORY_SCHEDULER_FLAG = '--xla_cpu_enable_concurrency_optimized_scheduler=false'


def memory_scheduler_on() -> bool:
  """Whether this process compiles for the CPU with the memory scheduler."""
  return (jax.default_backend() == 'cpu' and
          MEMORY_SCHEDULER_FLAG in os.environ.get('XLA_FLAGS', '').split())


def compile_train_step(config: Config, conv_backend: str, states, batch,
                       rng):
  """The compiled (never run) train step, with ``conv_backend``'s forms."""
  step_fn = jax.jit(lambda s, b, r: train.make_train_step(config)(
      s, b, r, axis_name=None), donate_argnums=(0,))
  with conv.use_policy(conv.ConvPolicy(backend=conv_backend)):
    return step_fn.lower(states, batch, rng).compile()


def planned_bytes(compiled) -> dict[str, int]:
  stats = compiled.memory_analysis()
  out = {'argument_bytes': stats.argument_size_in_bytes,
         'output_bytes': stats.output_size_in_bytes,
         'temp_bytes': stats.temp_size_in_bytes,
         'alias_bytes': stats.alias_size_in_bytes}
  out['planned_bytes'] = (out['argument_bytes'] + out['output_bytes'] +
                          out['temp_bytes'] - out['alias_bytes'])
  return out


def report(model_size: str = 'paper', batch_size: int = 400,
           conv_backend: str = 'gpu', dtype: str = 'float32',
           top_buffers: int = 0, remat: str = 'none') -> dict[str, Any]:
  """The memory report as a dict (see the module docstring).

  Whether XLA:CPU's memory scheduler plans it is the process's (see
  `memory_scheduler_on`; `main` asks for it before the backend starts).

  ``top_buffers`` > 0 needs XLA's dump, so it must be asked for before the
  backend starts (`main` sets XLA_FLAGS); here it reads the newest dump in
  $SEGAN_JAX_MEMORY_DUMP_DIR when that is set.
  """
  if conv_backend not in CONV_BACKENDS:
    raise ValueError(f'conv_backend must be one of {CONV_BACKENDS}, got '
                     f'{conv_backend!r}')
  config = _config(model_size, batch_size, dtype, remat)
  states, batch, rng = _abstract_inputs(config)
  start = time.perf_counter()
  compiled = compile_train_step(config, conv_backend, states, batch, rng)
  compile_s = time.perf_counter() - start
  result: dict[str, Any] = {
      'model_size': model_size, 'batch_size': batch_size,
      'conv_backend': conv_backend, 'dtype': dtype, 'remat': remat,
      'memory_scheduler': memory_scheduler_on(),
      'compiled_on': jax.default_backend(),
      'device_kind': jax.devices()[0].device_kind, 'compile_s': compile_s}
  result.update(planned_bytes(compiled))
  result.update(analytic_bound(config, states, batch))
  result['ratio'] = result['planned_bytes'] / result['bound_bytes']
  dump_dir = os.environ.get('SEGAN_JAX_MEMORY_DUMP_DIR')
  if top_buffers and dump_dir:
    dumps = sorted(glob.glob(os.path.join(dump_dir,
                                          '*buffer-assignment.txt')),
                   key=os.path.getsize)
    # The train step's module is the biggest of the dumped ones.
    if dumps:
      with open(dumps[-1]) as f:
        text = f.read()
      result['top_buffers'] = largest_allocations(text, top_buffers)
      result['top_values'] = largest_values(text, top_buffers)
  return result


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  kw = dict(flag_values=flag_values)
  flags.DEFINE_enum('model_size', 'paper', list(MODEL_SIZES),
                    'Named model size (segan_jax.config).', **kw)
  flags.DEFINE_integer('batch_size', 400, 'Examples per step.', **kw)
  flags.DEFINE_enum('conv_backend', 'gpu', list(CONV_BACKENDS),
                    "Whose conv policy's forms to compile (ConvPolicy's "
                    'backend), whatever backend compiles them.', **kw)
  flags.DEFINE_enum('dtype', 'float32', list(DTYPES),
                    'Compute dtype (Config.dtype).', **kw)
  flags.DEFINE_enum('remat', 'none', list(REMAT_POLICIES),
                    "What the backward passes keep (Config.remat; "
                    "paper.flags: conv_outputs).", **kw)
  flags.DEFINE_bool('memory_scheduler', True,
                    "On the CPU, compile with XLA:CPU's memory-minimising "
                    'scheduler (see the module docstring).', **kw)
  flags.DEFINE_integer('top_buffers', 0, 'Print the N largest allocations '
                       "of XLA's buffer assignment (dumps the HLO).", **kw)
  flags.DEFINE_bool('json', False, 'Print one JSON object as the last line.',
                    **kw)


def _gib(n: int) -> str:
  return f'{n / 2**30:.3f} GiB' if n >= 2**30 else f'{n / 2**20:.3f} MiB'


def main(argv: Sequence[str],
         flag_values: flags.FlagValues = flags.FLAGS) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  fv = flag_values
  result = report(fv.model_size, fv.batch_size, fv.conv_backend, fv.dtype,
                  fv.top_buffers, fv.remat)
  scheduler = ', memory scheduler' if result['memory_scheduler'] else ''
  print(f"{fv.model_size} batch {fv.batch_size}, {fv.conv_backend} policy, "
        f"{fv.dtype}, remat {fv.remat}{scheduler}, compiled on "
        f"{result['compiled_on']} in {result['compile_s']:.1f} s")
  for key in ('argument_bytes', 'output_bytes', 'temp_bytes', 'alias_bytes',
              'planned_bytes', 'states_bytes', 'gradient_bytes',
              'batch_bytes', 'g_activation_bytes', 'd_activation_bytes',
              'd_update_activation_bytes', 'activation_bytes',
              'bound_bytes'):
    print(f'  {key:30s} {_gib(result[key])}')
  print(f"  planned / bound: {result['ratio']:.2f}x")
  for a in result.get('top_buffers', []):
    print(f"  allocation {a['index']}: {_gib(a['bytes'])} {a['kind']}: "
          f"{a['value']}")
  for v in result.get('top_values', []):
    print(f"  value {_gib(v['bytes'])}: {v['value']}")
  if fv.json:
    print(json.dumps(result), flush=True)


def _xla_flags_for(argv: Sequence[str], xla_flags: str) -> str:
  """$XLA_FLAGS for a run with command line ``argv``: with the memory
  scheduler unless --nomemory_scheduler (XLA reads them when the backend
  starts, before absl parses the flags)."""
  if '--nomemory_scheduler' in argv or '--memory_scheduler=false' in argv:
    return xla_flags
  if MEMORY_SCHEDULER_FLAG in xla_flags.split():
    return xla_flags
  return f'{xla_flags} {MEMORY_SCHEDULER_FLAG}'.strip()


if __name__ == '__main__':
  define_flags()
  os.environ['XLA_FLAGS'] = _xla_flags_for(sys.argv,
                                           os.environ.get('XLA_FLAGS', ''))
  # XLA reads its flags when the backend starts: ask for the dump before.
  if any(a.startswith('--top_buffers=') and a != '--top_buffers=0'
         for a in sys.argv):
    dump = tempfile.mkdtemp(prefix='segan_memory_')
    os.environ['SEGAN_JAX_MEMORY_DUMP_DIR'] = dump
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               f' --xla_dump_to={dump} --xla_dump_hlo_as_text'
                               ' --xla_dump_hlo_module_re=.*train.*|.*lambda.*')
  app.run(main)
