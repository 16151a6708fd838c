r"""Conv forms per layer, by measurement: the table `ConvPolicy` reads.

  python -m benchmarks.conv_forms --model_size=paper --batch_size=64 \
      [--dtype=float32|bfloat16] [--output=table.json] [--json]

Finds every distinct conv and transposed-conv layer of the SEGAN train step
(G and D, as `train.make_train_step` traces them: Flax's intercept_methods
records each `Conv1D` / `ConvTranspose1D` call of an abstract step), then
times, on the default backend, every form valid for that layer
(`policy.valid_forms`): forward and backward (jax.vjp, the train step's
use) and forward alone (inference), each compiled apart
(jit(...).lower(...).compile(), timed) and then run --repeats times
(median). Each form's output and gradients are checked against lax's
('xla').

Per layer it picks the fastest form, forward and backward, among those
whose compile time is at most --max_compile_ratio times the 'xla' form's:
the train step's speed without the compile time the CPU forms cost on a
GPU. The table it writes (--output; merged into a table already there, by
device kind and layer) is keyed by ``jax.devices()[0].device_kind`` and
`policy.layer_key`; ``--conv_forms_table=PATH`` (segan_jax's flag, and
benchmarks.throughput's) makes the policy use it. Past --time_limit_s no
more layers are measured: the table then holds those measured (the others
keep the policy's rule) and says it is incomplete. With --json the last
line printed is one JSON object (what was chosen, and where it went).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import memory
from benchmarks.throughput import _seconds
from segan_jax import train
from segan_jax.config import DTYPES
from segan_jax.config import MODEL_SIZES
from segan_jax.models import layers
from segan_jax.ops import conv
from segan_jax.ops.conv import policy as policy_lib

# What the table's measured times are (said in the JSON).
MEASURES = ('median wall ms of the compiled executable (block_until_ready), '
            'train: forward + backward by jax.vjp, inference: forward; '
            'compile_s: jit(...).lower(...).compile()')


def layer_shapes(config) -> dict[str, dict[str, Any]]:
  """Every distinct conv layer of ``config``'s train step, by `layer_key`:
  its kind, input shape, kernel shape, stride, padding and dtype."""
  found: dict[str, dict[str, Any]] = {}

  def record(next_fun, args, kwargs, context):
    module = context.module
    if (context.method_name == '__call__' and
        isinstance(module, (layers.Conv1D, layers.ConvTranspose1D))):
      x = args[0]
      kind = (policy_lib.CONV1D if isinstance(module, layers.Conv1D) else
              policy_lib.CONV_TRANSPOSE1D)
      padding = (layers.same_padding(module.kernel_size, module.stride)
                 if kind == policy_lib.CONV1D else None)
      kernel = (module.kernel_size, x.shape[-1], module.features)
      key = policy_lib.layer_key(kind, x.shape[0], x.shape[1], x.shape[2],
                                 module.features, module.kernel_size,
                                 module.stride, padding, module.dtype)
      found.setdefault(key, {
          'kind': kind, 'x_shape': tuple(x.shape), 'kernel_shape': kernel,
          'stride': module.stride, 'padding': padding,
          'dtype': jnp.dtype(module.dtype).name})
    return next_fun(*args, **kwargs)

  states, batch, rng = memory._abstract_inputs(config)  # pylint: disable=protected-access
  step = train.make_train_step(config)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda s, b, r: step(s, b, r, axis_name=None), states,
                   batch, rng)
  return found


def _layer_fn(layer: dict[str, Any], form: str,
              policy: conv.ConvPolicy) -> Callable[[jax.Array, jax.Array],
                                                   jax.Array]:
  if layer['kind'] == policy_lib.CONV1D:
    return lambda x, k: conv.conv1d(x, k, layer['stride'], layer['padding'],
                                    impl=form, policy=policy)
  return lambda x, k: conv.conv_transpose1d(x, k, layer['stride'], impl=form,
                                            policy=policy)


def _compiled(fn, *args) -> tuple[Any, float]:
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - start


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
  jax.block_until_ready(fn())  # The first call (transfers, autotuning).
  return 1e3 * statistics.median(
      _seconds(lambda: jax.block_until_ready(fn())) for _ in range(repeats))


def _rel_error(got, want) -> float:
  got, want = (np.asarray(a, np.float32) for a in (got, want))
  return float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-30))


def measure_layer(layer: dict[str, Any], repeats: int, seed: int = 0,
                  policy: conv.ConvPolicy | None = None,
                  forms: Sequence[str] | None = None
                  ) -> dict[str, dict[str, float]]:
  """Per valid form of ``layer``: train / inference ms and compile s, and
  its largest error against 'xla' (relative to the largest value), over the
  output and both gradients. ``policy`` tunes the forms (Karatsuba, taps
  groups); by default with no table, so that the forms are as named.
  ``forms``: only those (and always 'xla'), where valid."""
  policy = policy or conv.ConvPolicy(forms_table=())
  dtype = jnp.dtype(layer['dtype'])
  kx, kk, kc = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(kx, layer['x_shape'], dtype)
  kernel = (0.1 * jax.random.normal(kk, layer['kernel_shape'])).astype(dtype)
  results: dict[str, dict[str, float]] = {}
  reference = None
  for form in policy_lib.valid_forms(layer['kind'], layer['stride']):
    if forms is not None and form != 'xla' and form not in forms:
      continue
    fn = _layer_fn(layer, form, policy)
    y_shape = jax.eval_shape(fn, x, kernel)
    cotangent = jax.random.normal(kc, y_shape.shape, dtype)

    def train_fn(x, k, ct, fn=fn):
      y, vjp = jax.vjp(fn, x, k)
      return (y,) + vjp(ct)

    train_exe, train_compile_s = _compiled(train_fn, x, kernel, cotangent)
    infer_exe, infer_compile_s = _compiled(fn, x, kernel)
    outputs = train_exe(x, kernel, cotangent)
    if reference is None:  # 'xla' is first.
      reference = outputs
    results[form] = {
        'train_ms': _median_ms(lambda: train_exe(x, kernel, cotangent),
                               repeats),
        'train_compile_s': train_compile_s,
        'inference_ms': _median_ms(lambda: infer_exe(x, kernel), repeats),
        'inference_compile_s': infer_compile_s,
        'max_rel_error': max(_rel_error(g, w)
                             for g, w in zip(outputs, reference)),
    }
  return results


def choose(results: dict[str, dict[str, float]],
           max_compile_ratio: float) -> str:
  """The fastest form (forward + backward) whose compile time is at most
  ``max_compile_ratio`` times the 'xla' form's ('xla' always qualifies)."""
  budget = max_compile_ratio * results['xla']['train_compile_s']
  within = [f for f, r in results.items()
            if f == 'xla' or r['train_compile_s'] <= budget]
  return min(within, key=lambda f: results[f]['train_ms'])


def _read_table(path: str) -> dict[str, Any]:
  """The table at ``path`` to merge into (checked as the policy reads it),
  or an empty one where there is no file."""
  if not os.path.exists(path):
    return {'device_kinds': {}}
  policy_lib.load_forms_table.cache_clear()
  policy_lib.load_forms_table(path)  # One clear line when it is no table.
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, table: dict[str, Any]) -> None:
  """Writes ``table`` to ``path`` whole or not at all."""
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, suffix='.tmp')
  try:
    with os.fdopen(fd, 'w') as f:
      json.dump(table, f, indent=1, sort_keys=True)
      f.write('\n')
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def measure(config, repeats: int = 10, max_compile_ratio: float = 2.0,
            time_limit_s: float | None = None, output: str | None = None,
            forms: Sequence[str] | None = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
  """Measures the layers of ``config``'s train step (module docstring);
  returns the summary, and writes (merges) the table into ``output`` when
  given. ``forms``: as in `measure_layer`."""
  unknown = set(forms or ()) - set(policy_lib.CONV1D_FORMS +
                                   policy_lib.CONV_TRANSPOSE1D_FORMS)
  if unknown:
    raise ValueError(f'unknown conv forms {sorted(unknown)}')
  if max_compile_ratio < 1:
    raise ValueError(f'max_compile_ratio must be at least 1 (the xla form '
                     f'qualifies), got {max_compile_ratio}')
  start = time.perf_counter()
  table = _read_table(output) if output else {'device_kinds': {}}
  shapes = layer_shapes(config)
  device_kind = jax.devices()[0].device_kind
  rows = table['device_kinds'].setdefault(device_kind, {})
  chosen: dict[str, str] = {}
  for key, layer in shapes.items():
    if time_limit_s is not None and time.perf_counter() - start > time_limit_s:
      break
    results = measure_layer(layer, repeats, forms=forms)
    form = choose(results, max_compile_ratio)
    chosen[key] = form
    rows[key] = {'form': form, 'forms': results,
                 'fastest_inference_form': min(
                     results, key=lambda f: results[f]['inference_ms'])}
    log(f'{key}: {form} ' + ', '.join(
        f"{f} {r['train_ms']:.3f} ms/{r['train_compile_s']:.2f} s"
        for f, r in results.items()))
  summary = {
      'device_kind': device_kind, 'backend': jax.default_backend(),
      'jax_version': jax.__version__, 'model_size': config.model_size,
      'batch_size': config.batch_size, 'dtype': config.dtype,
      'repeats': repeats, 'forms': list(forms) if forms else 'all',
      'max_compile_ratio': max_compile_ratio, 'layers': len(shapes),
      'measured_layers': len(chosen), 'complete': len(chosen) == len(shapes),
      'measures': MEASURES, 'seconds': time.perf_counter() - start,
  }
  table.setdefault('measurements', {}).setdefault(device_kind, []).append(
      summary)
  table['about'] = ('Conv forms per device kind and layer shape, measured by '
                    'python -m benchmarks.conv_forms '
                    '(segan_jax/ops/conv/policy.py).')
  if output:
    _write_json(output, table)
  return dict(summary, chosen=chosen, table=output)


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  kw = dict(flag_values=flag_values)
  flags.DEFINE_enum('model_size', 'paper', list(MODEL_SIZES),
                    'Named model size (segan_jax.config).', **kw)
  flags.DEFINE_integer('batch_size', 64, 'Examples per train step.', **kw)
  flags.DEFINE_enum('dtype', 'float32', list(DTYPES),
                    'Compute dtype (Config.dtype).', **kw)
  flags.DEFINE_integer('repeats', 10, 'Timed calls per form (median).', **kw)
  flags.DEFINE_float(
      'max_compile_ratio', 2.0, "A form qualifies when it compiles in at most "
      "this many times the 'xla' form's compile time of the layer.", **kw)
  flags.DEFINE_float('time_limit_s', None, 'Measure no new layer past this '
                     'many seconds (the table says it is incomplete).', **kw)
  flags.DEFINE_list('forms', None, "Measure only these forms (and 'xla'); "
                    'default: every valid one.', **kw)
  flags.DEFINE_string('output', None, 'Write (merge) the table into this '
                      'JSON file (--conv_forms_table reads it).', **kw)
  flags.DEFINE_bool('json', False, 'Print one JSON object as the last line.',
                    **kw)


def main(argv: Sequence[str],
         flag_values: flags.FlagValues = flags.FLAGS) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  fv = flag_values
  try:
    config = memory._config(fv.model_size, fv.batch_size, fv.dtype)  # pylint: disable=protected-access
    result = measure(config, fv.repeats, fv.max_compile_ratio,
                     fv.time_limit_s, fv.output, fv.forms)
  except ValueError as e:
    raise SystemExit(f'benchmarks.conv_forms: {e}') from None
  print(f"{result['measured_layers']} of {result['layers']} layers on "
        f"{result['device_kind']} in {result['seconds']:.1f} s"
        + (f", table: {fv.output}" if fv.output else ''))
  if fv.json:
    print(json.dumps(result), flush=True)


if __name__ == '__main__':
  define_flags()
  app.run(main)
