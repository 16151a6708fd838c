r"""Throughput of SEGAN inference and training, JAX vs the PyTorch twin.

  python -m segan_jax.bench --model_size=paper --batch_size=8 --json

Builds the real JAX train step (segan_jax.train.make_train_step, compiled by
parallel.make_strategy('none', ...)) and segan_jax.torch_reference's identical
networks, then measures, after compilation / warm-up:
  (a) G inference: examples/s and real-time factor (compute seconds per
      second of 16 kHz audio);
  (b) the full GAN train step (D update, then G update): examples/s;
  (c) both for PyTorch (skipped with --skip_torch or when torch is absent);
  (d) JAX/PyTorch ratios and achieved GFLOP/s against FLOPs counted from the
      layer shapes (`count_flops`: a direct conv's multiplies; JAX's G
      inference does ~60 % of them, by Karatsuba's form of its long
      layers, so its figure is an effective rate).
By default (--order=blocked) each workload runs its first call, warm-up
and timed repeats back to back, JAX's before PyTorch's, as a job that uses
one framework would; --order=alternate makes them take turns inside each
repeat, which on 2-core VMs measures mostly how much each one slows the
other down (BENCHMARKS.md). Every figure is a median over --steps repeats.
With --json the last line printed is one JSON object.

  python -m segan_jax.bench --enhance_memory --model_size=demo --json

instead shows that enhancing a file takes memory that does not grow with its
length: for each of --enhance_minutes (default 1, 4, 16; add 60 for an hour,
which needs about 700 MB of disk for the 48 kHz stereo file) a synthetic
--enhance_rate / --enhance_channels 16-bit WAV is written to a temporary
folder and enhanced by a fresh child process (random G weights of
--model_size: memory does not depend on their values), which reports its
peak resident set (VmHWM) after compiling on a 2 s file and after the long
one. The growth between the two is the memory the file's length costs.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from segan_jax import audio
from segan_jax import enhance
from segan_jax import parallel
from segan_jax import runtime
from segan_jax import train
from segan_jax import systems
from segan_jax.config import Config
from segan_jax.config import MODEL_SIZES
from segan_jax import models
from segan_jax.ops import conv
from segan_jax.models.generator import decoder_features

TORCH_INSTALL = 'pip install torch==2.13.0'
ORDERS = ('alternate', 'blocked')
# --layers_impl: 'auto', the default policy (per backend and layer shape);
# 'xla', lax's convolutions everywhere.
CONV_POLICIES = {'auto': conv.ConvPolicy(),
                 'xla': conv.ConvPolicy(xla_only=True)}



def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The command line flags (defined on demand: names such as --batch_size
  also exist in segan_jax.flags, which may live in the same process)."""
  kw = dict(flag_values=flag_values)
  flags.DEFINE_enum('model_size', 'paper', list(MODEL_SIZES),
                    'Named model size (segan_jax.config).', **kw)
  flags.DEFINE_integer('batch_size', 8, 'Examples per step.', **kw)
  flags.DEFINE_integer('steps', 5, 'Timed repeats (median reported).', **kw)
  flags.DEFINE_integer('warmup', 2, 'Untimed repeats after compilation.',
                       **kw)
  flags.DEFINE_bool('json', False, 'Print one JSON object as the last line.',
                    **kw)
  flags.DEFINE_bool('skip_torch', False, 'Measure JAX only.', **kw)
  flags.DEFINE_bool('skip_train', False, 'Measure inference only.', **kw)
  flags.DEFINE_enum(
      'order', 'blocked', list(ORDERS),
      "'alternate': JAX and PyTorch take turns inside each repeat; "
      "'blocked': each one's warm-up and repeats run back to back.", **kw)
  flags.DEFINE_enum(
      'layers_impl', 'auto', list(CONV_POLICIES),
      "Conv forms (segan_jax.ops.conv): 'auto' (the policy's forms per layer) "
      "or 'xla' (lax.conv_general_dilated / lax.conv_transpose everywhere, "
      'the implementation before issue 6).', **kw)
  flags.DEFINE_bool('enhance_memory', False, 'Measure the peak memory of '
                    'enhancing long files instead of throughput.', **kw)
  flags.DEFINE_list('enhance_minutes', ['1', '4', '16'],
                    '--enhance_memory: file lengths in minutes.', **kw)
  flags.DEFINE_integer('enhance_rate', 48000,
                       '--enhance_memory: sample rate of the files.', **kw)
  flags.DEFINE_integer('enhance_channels', 2,
                       '--enhance_memory: channels of the files.', **kw)


# --------------------------------------------------------------------- FLOPs
def _conv_layers(features: Sequence[int], in_channels: int, window: int,
                 stride: int = 2):
  """(output length, Cin, Cout) of each strided encoder conv."""
  length, cin = window, in_channels
  for f in features:
    length //= stride
    yield length, cin, f
    cin = f


def count_flops(config: Config, batch_size: int = 1) -> dict[str, float]:
  """Multiply-adds x 2 from the layer shapes (edge effects of padding ignored).

  A conv costs 2 K Cin Cout per output sample; a stride-s transposed conv
  2 K Cin Cout per *input* sample (the multiplies by its inserted zeros are
  not counted). Backward passes cost twice the forward (input and weight
  gradients), except that the first layer needs no input gradient.

  Returns per-example figures: ``g_forward``, ``d_forward`` (one pair, not
  counting the reference batch) and ``train_step`` (everything one train step
  computes, reference batch included, divided by ``batch_size``).
  """
  k, window = config.kernel, config.window
  feats = config.features
  g = sum(2 * k * cin * cout * n for n, cin, cout in
          _conv_layers(feats, 1, window))
  g_first = 2 * k * 1 * feats[0] * window // 2
  skips = list(reversed(feats[:-1])) + [0]
  length, cin = window // 2**len(feats), 2 * feats[-1]
  for i, cout in enumerate(decoder_features(feats)):
    g += 2 * k * cin * cout * length
    length *= 2
    cin = cout + skips[i]
  d = sum(2 * k * cin * cout * n for n, cin, cout in
          _conv_layers(feats, 2, window))
  d_first = 2 * k * 2 * feats[0] * window // 2
  code_length = window // 2**len(feats)
  d += 2 * feats[-1] * code_length + 2 * code_length
  # G: forward, then input + weight gradients (none into the waveform).
  g_train = g + (2 * g - g_first)
  # D update: forward + backward over reference + real + fake.
  ref = config.vbn_reference_size
  d_update = (ref + 2 * batch_size) * (3 * d - d_first)
  # G update: D forward over reference + fake, then input gradients of the
  # fake pairs only (the reference goes through D apart, see Discriminator).
  d_for_g = (ref + batch_size) * d + batch_size * d
  train_step = g_train + (d_update + d_for_g) / batch_size
  return {'g_forward': float(g), 'd_forward': float(d),
          'train_step': float(train_step)}


# ------------------------------------------------------------------- timing
def _seconds(fn: Callable[[], Any]) -> float:
  """Wall seconds of one call."""
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _versions(torch_module=None) -> dict[str, str]:
  import flax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  out = {'python': platform.python_version(), 'jax': jax.__version__,
         'jaxlib': jaxlib.__version__, 'flax': flax.__version__,
         'numpy': np.__version__}
  if torch_module is not None:
    out['torch'] = torch_module.__version__
  return out


class _JaxRunner:
  """G inference and the real train step, compiled once."""

  def __init__(self, config: Config, data: dict[str, np.ndarray]):
    self.config = config
    rng = jax.random.key(config.seed)
    init_rng, self.train_rng = jax.random.split(rng)
    states = systems.create_states(config, init_rng)
    # The benchmark's own reference batch, as training draws one from data.
    states['d'] = states['d'].replace(
        reference=jnp.asarray(data['reference'], jnp.float32))
    g_state = states['g']
    self.strategy = parallel.make_strategy('none', config.batch_size)
    self.step_fn = self.strategy.compile(train.make_train_step(config))
    self.states = self.strategy.put_state(states)
    # A copy: the train step donates (invalidates) the state buffers.
    self.g_params = jax.tree.map(jnp.copy, g_state.params)
    generator = systems.generator(config)
    self.infer_fn = jax.jit(
        lambda variables, noisy, z: generator.apply(variables, noisy, z))
    self.noisy = jnp.asarray(data['noisy'])
    self.z = jnp.asarray(data['z'])
    # As `enhance.Enhancer` applies G: short layers' kernels re-laid out once.
    self.g_variables = models.prepare_inference(generator, self.g_params,
                                                self.noisy, self.z)
    self.batch = self.strategy.put_batch(
        {'noisy': data['noisy'], 'clean': data['clean']})

  def infer(self) -> None:
    jax.block_until_ready(self.infer_fn(self.g_variables, self.noisy,
                                        self.z))

  def train(self) -> None:
    self.states, metrics = self.step_fn(self.states, self.batch,
                                        self.train_rng)
    jax.block_until_ready(metrics)


class _TorchRunner:
  """The same two workloads on segan_jax.torch_reference."""

  def __init__(self, torch, config: Config, data: dict[str, np.ndarray]):
    from segan_jax import torch_reference  # pylint: disable=g-import-not-at-top
    self.torch = torch
    torch.manual_seed(config.seed)
    self.g, self.d = torch_reference.make_models(config)
    reference = torch.from_numpy(data['reference']).permute(0, 2, 1)
    self.step = torch_reference.TrainStep(
        self.g, self.d, reference.contiguous(), config.learning_rate,
        config.l1_weight)
    self.noisy = torch.from_numpy(data['noisy'])
    self.clean = torch.from_numpy(data['clean'])
    self.z = torch.from_numpy(data['z']).permute(0, 2, 1).contiguous()

  def infer(self) -> None:
    with self.torch.inference_mode():
      self.g(self.noisy, self.z)

  def train(self) -> None:
    self.step(self.noisy, self.clean, self.z)


def _import_torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return torch


def _data(config: Config, batch_size: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  t = np.arange(config.window) / audio.SAMPLE_RATE
  freq = rng.uniform(100, 400, (batch_size, 1))
  clean = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
  noisy = clean + 0.1 * rng.standard_normal(clean.shape).astype(np.float32)
  reference = rng.normal(0, 0.3, (config.vbn_reference_size, config.window, 2))
  z = rng.standard_normal((batch_size,) + systems.latent_shape(config))
  return {'noisy': noisy, 'clean': clean,
          'reference': reference.astype(np.float32),
          'z': z.astype(np.float32)}


def _check_order(order: str) -> None:
  if order not in ORDERS:
    raise ValueError(f'order must be one of {ORDERS}, got {order!r}')


def _measure(workloads: dict[str, Callable[[], None]], warmup: int,
             steps: int, order: str = 'blocked'
             ) -> tuple[dict[str, float], dict[str, list[float]]]:
  """First-call seconds of each, then the timed repeats.

  'alternate': each repeat runs every workload once, in turn. 'blocked':
  each workload runs its warm-up and repeats back to back, then the next.
  """
  _check_order(order)
  if order == 'blocked':
    first, times = {}, {}
    for name, fn in workloads.items():
      first[name] = _seconds(fn)
      for _ in range(warmup):
        fn()
      times[name] = [_seconds(fn) for _ in range(steps)]
    return first, times
  first = {name: _seconds(fn) for name, fn in workloads.items()}
  times = {name: [] for name in workloads}
  for _ in range(warmup):
    for fn in workloads.values():
      fn()
  for _ in range(steps):
    for name, fn in workloads.items():
      times[name].append(_seconds(fn))
  return first, times


def run(model_size: str = 'paper', batch_size: int = 8, steps: int = 5,
        warmup: int = 2, skip_torch: bool = False, layers_impl: str = 'auto',
        skip_train: bool = False, order: str = 'blocked',
        log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs the benchmark; returns the figures printed by --json.

  ``layers_impl``: a key of `CONV_POLICIES`, the conv policy of the models
  (installed around everything this run compiles).
  """
  _check_order(order)  # Before minutes of compilation, not after.
  if layers_impl not in CONV_POLICIES:
    raise ValueError(f'layers_impl must be one of {list(CONV_POLICIES)}, '
                     f'got {layers_impl!r}')
  with conv.use_policy(CONV_POLICIES[layers_impl]):
    return _run(model_size, batch_size, steps, warmup, skip_torch,
                layers_impl, skip_train, order, log)


def _run(model_size: str, batch_size: int, steps: int, warmup: int,
         skip_torch: bool, layers_impl: str, skip_train: bool, order: str,
         log: Callable[[str], None]) -> dict[str, Any]:
  config = Config(model_size=model_size, batch_size=batch_size,
                  parallelism='none')
  data = _data(config, batch_size)
  flops = count_flops(config, batch_size)
  audio_seconds = batch_size * config.window / audio.SAMPLE_RATE

  torch = None if skip_torch else _import_torch()
  if torch is None and not skip_torch:
    log(f'PyTorch is not installed: measuring JAX only. To compare, install '
        f'the CPU build: {TORCH_INSTALL}')
  if torch is not None:
    torch.set_num_threads(os.cpu_count() or 1)

  result: dict[str, Any] = {
      'model_size': model_size, 'batch_size': batch_size, 'steps': steps,
      'warmup': warmup, 'order': order, 'window': config.window,
      'layers_impl': layers_impl,
      'glibc_tunables': os.environ.get('GLIBC_TUNABLES', ''),
      'vbn_reference_size': config.vbn_reference_size,
      'cpu_model': _cpu_model(), 'cpu_count': os.cpu_count(),
      'jax_backend': jax.default_backend(),
      'versions': _versions(torch),
      'torch_threads': torch.get_num_threads() if torch is not None else None,
      'g_forward_gflop_per_example': flops['g_forward'] / 1e9,
      'd_forward_gflop_per_example': flops['d_forward'] / 1e9,
      'train_step_gflop_per_example': flops['train_step'] / 1e9,
  }

  start = time.perf_counter()
  jax_runner = _JaxRunner(config, data)
  result['jax_setup_s'] = time.perf_counter() - start
  workloads = {'jax_inference': jax_runner.infer}
  if not skip_train:
    workloads['jax_train'] = jax_runner.train
  if torch is not None:
    torch_runner = _TorchRunner(torch, config, data)
    workloads['torch_inference'] = torch_runner.infer
    if not skip_train:
      workloads['torch_train'] = torch_runner.train

  # Inference and training measured as two interleaved groups.
  for group in ('inference', 'train'):
    chosen = {k: v for k, v in workloads.items() if k.endswith(group)}
    if not chosen:
      continue
    first, times = _measure(chosen, warmup, steps, order)
    for name, seconds in times.items():
      median = statistics.median(seconds)
      result[f'{name}_first_call_s'] = first[name]
      if name.startswith('jax'):
        # First call = compilation + one step.
        result[f'{name}_compile_s'] = max(first[name] - median, 0.0)
      result[f'{name}_step_s'] = median
      result[f'{name}_step_s_all'] = seconds
      result[f'{name}_examples_per_s'] = batch_size / median
      per_example = (flops['g_forward'] if group == 'inference'
                     else flops['train_step'])
      result[f'{name}_gflops'] = per_example * batch_size / median / 1e9
      if group == 'inference':
        result[f'{name}_rtf'] = median / audio_seconds
      log(f'{name:16s} {batch_size / median:8.2f} ex/s  {median * 1e3:9.1f} '
          f'ms/step  {result[f"{name}_gflops"]:6.1f} GFLOP/s  (first call '
          f'{first[name]:.1f} s)')

  result['inference_rtf'] = result['jax_inference_rtf']
  for group in ('inference', 'train'):
    if f'torch_{group}_step_s' in result and f'jax_{group}_step_s' in result:
      result[f'{group}_ratio_vs_torch'] = (result[f'torch_{group}_step_s'] /
                                           result[f'jax_{group}_step_s'])
    else:
      result[f'{group}_ratio_vs_torch'] = None
  log(f'JAX/PyTorch speed ratio: inference '
      f'{_fmt(result["inference_ratio_vs_torch"])}, train step '
      f'{_fmt(result["train_ratio_vs_torch"])}; JAX inference real-time '
      f'factor {result["inference_rtf"]:.4f}')
  return result


# ------------------------------------------------------ enhancement memory
def write_long_file(path: str, minutes: float, rate: int, channels: int
                    ) -> int:
  """Speech-like 16-bit WAV of ``minutes``, written in blocks (the writer's
  memory stays small too); returns its frames."""
  import soundfile  # pylint: disable=g-import-not-at-top
  frames = int(round(minutes * 60 * rate))
  rng = np.random.default_rng(0)
  block = 10 * rate
  with soundfile.SoundFile(path, 'w', samplerate=rate, channels=channels,
                           subtype='PCM_16') as f:
    for start in range(0, frames, block):
      t = np.arange(start, min(start + block, frames)) / rate
      x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
      x = x[:, None] / 2 + 0.02 * rng.standard_normal((t.size, channels))
      f.write(x.astype(np.float32))
  return frames


def _peak_rss_mb() -> float:
  """This process's peak resident set so far (VmHWM), MB."""
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) / 1024
  raise RuntimeError('no VmHWM in /proc/self/status')


def _enhance_memory_child(path: str, model_size: str) -> None:
  """Runs in a fresh process: compile on a short file, then the long one."""
  import soundfile  # pylint: disable=g-import-not-at-top
  config = Config(model_size=model_size, parallelism='none')
  model = systems.generator(config)
  z = jnp.zeros((1,) + systems.latent_shape(config))
  params = jax.jit(model.init)(jax.random.key(0),
                               jnp.zeros((1, config.window)), z)['params']
  enhancer = enhance.Enhancer(enhance.TrainedGenerator(config, params, 0))
  info = soundfile.info(path)
  with tempfile.TemporaryDirectory() as scratch:
    warm = os.path.join(scratch, 'warm.wav')
    write_long_file(warm, 2 / 60, info.samplerate, info.channels)
    enhance.enhance_file(enhancer, warm, os.path.join(scratch, 'warm_out.wav'))
    baseline = _peak_rss_mb()
    start = time.perf_counter()
    enhance.enhance_file(enhancer, path, os.path.join(scratch, 'out.wav'))
    seconds = time.perf_counter() - start
  print(json.dumps({'baseline_mb': baseline, 'peak_mb': _peak_rss_mb(),
                    'enhance_s': seconds}), flush=True)


def enhance_memory(minutes: Sequence[float], model_size: str = 'demo',
                   rate: int = 48000, channels: int = 2,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
  """Peak RSS of enhancing files of each length, one child process each."""
  rows = []
  for length in minutes:
    with tempfile.TemporaryDirectory(prefix='segan_enhance_memory_') as tmp:
      path = os.path.join(tmp, 'long.wav')
      frames = write_long_file(path, float(length), rate, channels)
      code = ('import sys; from segan_jax import bench; '
              'bench._enhance_memory_child(sys.argv[1], sys.argv[2])')
      result = subprocess.run([sys.executable, '-c', code, path, model_size],
                              capture_output=True, text=True, check=False)
      if result.returncode != 0:
        raise RuntimeError(f'enhance memory child failed for {length} min: '
                           f'{result.stderr[-2000:]}')
      row = json.loads(result.stdout.strip().splitlines()[-1])
    row.update(minutes=float(length), frames=frames,
               file_mb=frames * channels * 2 / 2**20,
               growth_mb=row['peak_mb'] - row['baseline_mb'])
    rows.append(row)
    log(f'{float(length):6.1f} min ({row["file_mb"]:7.1f} MB of 16-bit '
        f'audio): peak RSS {row["peak_mb"]:7.1f} MB, {row["growth_mb"]:+6.1f} '
        f'MB over the compiled model ({row["baseline_mb"]:.1f} MB), '
        f'{row["enhance_s"]:.1f} s')
  return {'model_size': model_size, 'rate': rate, 'channels': channels,
          'enhance_memory': rows,
          'cpu_model': _cpu_model(), 'versions': _versions()}


def _fmt(x: float | None) -> str:
  return 'n/a' if x is None else f'{x:.2f}x'


def main(argv: Sequence[str],
         flag_values: flags.FlagValues = flags.FLAGS) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  fv = flag_values
  if fv.enhance_memory:
    result = enhance_memory([float(m) for m in fv.enhance_minutes],
                            model_size=fv.model_size, rate=fv.enhance_rate,
                            channels=fv.enhance_channels)
    if fv.json:
      print(json.dumps(result, default=_json_default), flush=True)
    return
  result = run(model_size=fv.model_size, batch_size=fv.batch_size,
               steps=fv.steps, warmup=fv.warmup, skip_torch=fv.skip_torch,
               layers_impl=fv.layers_impl, skip_train=fv.skip_train,
               order=fv.order)
  if fv.json:
    print(json.dumps(result, default=_json_default), flush=True)


def _json_default(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  raise TypeError(type(x))


if __name__ == '__main__':
  # Restarts once with glibc's huge-page malloc (segan_jax/runtime.py).
  runtime.reexec_with_hugepage_malloc()
  define_flags()
  app.run(main)
