r"""Throughput of SEGAN inference and training, JAX vs the PyTorch twin.

  python -m benchmarks.throughput --model_size=paper --batch_size=8 --json

Builds the real JAX train step (segan_jax.train.make_train_step, compiled by
parallel.make_strategy('none', ...)) and benchmarks.torch_reference's identical
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

  python -m benchmarks.throughput --device=gpu --batch_size=400 --json

--device=gpu runs both frameworks on the GPU (PyTorch on CUDA, synchronised
around each timed call; --device=auto, the default, takes the GPU when both
have one), in float32 as each does by default (PyTorch's cuDNN convs in
TF32) and in bfloat16 (JAX: Config.dtype, PyTorch: torch.autocast; --bf16 /
--nobf16 choose, off by default on the CPU). JAX's compilation is timed
apart (jit(...).lower(...).compile(); the workloads then run that
executable, so a first step is a step alone). MFU divides XLA's FLOP count
of the compiled step (cost_analysis) by the step time and the device's dense
bfloat16 peak (benchmarks.gpu.PEAK_BF16_TFLOPS, or --peak_tflops). bfloat16's
JSON keys are float32's with the suffix _bf16. BENCHMARKS.md, "On a GPU".

  python -m benchmarks.throughput --enhance_memory --model_size=demo --json

instead measures the peak memory of enhancing long files
(benchmarks.enhance_memory, flags --enhance_*).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import enhance_memory
from benchmarks import gpu
from benchmarks import machine
from segan_jax import audio
from segan_jax import models
from segan_jax import parallel
from segan_jax import runtime
from segan_jax import systems
from segan_jax import train
from segan_jax.config import Config
from segan_jax.config import MODEL_SIZES
from segan_jax.config import REMAT_POLICIES
from segan_jax.models.generator import decoder_features
from segan_jax.ops import conv

TORCH_INSTALL = 'pip install torch==2.13.0'
ORDERS = ('alternate', 'blocked')
DEVICES = ('auto', 'cpu', 'gpu')
# Suffix of the JSON keys of each compute dtype (float32's keys are those the
# bench had before bfloat16 was measured, unchanged).
DTYPE_SUFFIX = {'float32': '', 'bfloat16': '_bf16'}
# What `*_compile_s` measures for JAX (said in the JSON).
JAX_COMPILE_MEASURES = ('jit(...).lower(...).compile(): tracing, lowering and '
                        'XLA compilation, before the first call')
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
  flags.DEFINE_enum(
      'device', 'auto', list(DEVICES),
      "Where PyTorch runs, and where JAX must: 'gpu' both on the GPU (an "
      "error when either has none); 'cpu' PyTorch on the CPU, JAX on its "
      "default backend (the bench before this flag); 'auto' 'gpu' when JAX's "
      'first device is a GPU and PyTorch has CUDA (or is not measured), '
      "else 'cpu'.", **kw)
  flags.DEFINE_bool(
      'bf16', None, 'Also measure both frameworks in bfloat16 (JAX: '
      "Config.dtype='bfloat16'; PyTorch: torch.autocast). Default: on for "
      '--device=gpu, off on the CPU.', **kw)
  flags.DEFINE_float(
      'peak_tflops', None, 'Dense bfloat16 peak of the device, TFLOP/s, for '
      'MFU (default: looked up by device kind in '
      'benchmarks.gpu.PEAK_BF16_TFLOPS; MFU is '
      'omitted for a device not there).', **kw)
  flags.DEFINE_string(
      'compilation_cache_dir', None,
      "Use the project's persistent compilation cache in this folder "
      "(runtime.enable_compilation_cache, as launch.py; '' turns it off). "
      "Unset: JAX's own settings, where nothing is cached unless "
      '$JAX_COMPILATION_CACHE_DIR is set, so that compile times compare '
      'across runs.', **kw)
  flags.DEFINE_string(
      'conv_forms_table', None, 'With --layers_impl=auto: a conv forms table '
      'measured by python -m benchmarks.conv_forms, over the package\'s.',
      **kw)
  flags.DEFINE_enum('remat', 'none', list(REMAT_POLICIES),
                    "What the train step's backward pass keeps "
                    '(Config.remat; paper.flags: conv_outputs).', **kw)
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

# ------------------------------------------------------------------ devices
class DeviceError(ValueError):
  """--device asks for a device a framework does not have."""


def resolve_device(requested: str, jax_platform: str,
                   torch_cuda: bool | None) -> str:
  """'cpu' or 'gpu' for ``--device=requested``.

  ``jax_platform``: ``jax.devices()[0].platform``; ``torch_cuda``:
  ``torch.cuda.is_available()``, None when PyTorch is not measured. 'gpu'
  needs both frameworks on a GPU, so that they are compared on one device.
  """
  if requested not in DEVICES:
    raise ValueError(f'device must be one of {DEVICES}, got {requested!r}')
  if requested == 'auto':
    return 'gpu' if jax_platform == 'gpu' and torch_cuda is not False else (
        'cpu')
  if requested == 'gpu' and jax_platform != 'gpu':
    raise DeviceError(
        f'--device=gpu: JAX has no GPU here (its first device is '
        f"{jax_platform!r}); on a CUDA machine: pip install -e '.[gpu]'")
  if requested == 'gpu' and torch_cuda is False:
    raise DeviceError(
        '--device=gpu: this PyTorch build has no CUDA; install a CUDA build '
        '(https://pytorch.org/get-started/locally/) or pass --skip_torch')
  return requested


def _torch_cuda(torch) -> bool | None:
  return None if torch is None else bool(torch.cuda.is_available())


# ------------------------------------------------------------------- timing
def _seconds(fn: Callable[[], Any]) -> float:
  """Wall seconds of one call."""
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


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
    # What infer() and train() call: the jitted functions, or after
    # compile() their executables.
    self._infer, self._train = self.infer_fn, self.step_fn

  def compile(self, train: bool = True) -> dict[str, tuple[float,
                                                           float | None]]:
    """Compiles the workloads ahead of time, so that their first call is a
    first step alone; {'inference', 'train'}: (seconds, XLA's FLOPs)."""
    out = {}
    self._infer, out['inference'] = _aot(self.infer_fn, self.g_variables,
                                         self.noisy, self.z)
    if train:
      self._train, out['train'] = _aot(self.step_fn, self.states, self.batch,
                                       self.train_rng)
    return out

  def infer(self) -> None:
    jax.block_until_ready(self._infer(self.g_variables, self.noisy, self.z))

  def train(self) -> None:
    self.states, metrics = self._train(self.states, self.batch,
                                       self.train_rng)
    jax.block_until_ready(metrics)


def _aot(jitted, *args) -> tuple[Any, tuple[float, float | None]]:
  """(executable, (seconds of lower + compile, XLA's FLOP count))."""
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, (time.perf_counter() - start, gpu.xla_flops(compiled))


class _TorchRunner:
  """The same two workloads on benchmarks.torch_reference.

  ``device``: 'cpu' or 'cuda'; ``dtype``: 'float32' or 'bfloat16' (the
  forward passes under torch.autocast, parameters float32, as Config.dtype
  does in JAX).
  """

  def __init__(self, torch, config: Config, data: dict[str, np.ndarray],
               device: str = 'cpu', dtype: str = 'float32'):
    # Imports torch: only when PyTorch is measured (it is optional).
    from benchmarks import torch_reference  # pylint: disable=g-import-not-at-top
    self.torch = torch
    self.reference_module = torch_reference
    self.device = device
    self.autocast_dtype = torch.bfloat16 if dtype == 'bfloat16' else None
    torch.manual_seed(config.seed)
    self.g, self.d = (m.to(device) for m in
                      torch_reference.make_models(config))
    to = lambda a: torch.from_numpy(a).to(device)
    reference = to(data['reference']).permute(0, 2, 1)
    self.step = torch_reference.TrainStep(
        self.g, self.d, reference.contiguous(), config.learning_rate,
        config.l1_weight, autocast_dtype=self.autocast_dtype)
    self.noisy = to(data['noisy'])
    self.clean = to(data['clean'])
    self.z = to(data['z']).permute(0, 2, 1).contiguous()

  def _synchronize(self) -> None:
    # CUDA calls return before the GPU is done: a timed call ends with it.
    if self.device == 'cuda':
      self.torch.cuda.synchronize()

  def infer(self) -> None:
    with self.torch.inference_mode(), self.reference_module.autocast(
        self.device, self.autocast_dtype):
      self.g(self.noisy, self.z)
    self._synchronize()

  def train(self) -> None:
    self.step(self.noisy, self.clean, self.z)
    self._synchronize()


def _import_torch():
  # Here, not at module import: PyTorch is optional (`pip install -e
  # '.[bench]'`); without it the bench measures JAX alone.
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
        device: str = 'auto', bf16: bool | None = None,
        peak_tflops: float | None = None,
        conv_forms_table: str | None = None, remat: str = 'none',
        log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs the benchmark; returns the figures printed by --json.

  ``layers_impl``: a key of `CONV_POLICIES`, the conv policy of the models
  (installed around everything this run compiles). ``device``: see
  `resolve_device` (a `DeviceError` before anything is built when the asked
  device is missing). ``bf16``: also measure bfloat16 (None: on a GPU only).
  ``peak_tflops``: the dense bfloat16 peak for MFU (None: by device kind).
  ``conv_forms_table``: with 'auto', a measured forms table (JSON of
  benchmarks.conv_forms) over the package's. ``remat``: Config.remat of the
  train step.
  """
  _check_order(order)  # Before minutes of compilation, not after.
  if layers_impl not in CONV_POLICIES:
    raise ValueError(f'layers_impl must be one of {list(CONV_POLICIES)}, '
                     f'got {layers_impl!r}')
  policy = CONV_POLICIES[layers_impl]
  if conv_forms_table:
    if layers_impl != 'auto':
      raise ValueError('conv_forms_table needs layers_impl=auto')
    policy = conv.policy_with_table(conv_forms_table)  # Before compiling.
  torch = None if skip_torch else _import_torch()
  jax_platform = jax.devices()[0].platform
  if torch is None and not skip_torch:
    log(f'PyTorch is not installed: measuring JAX only. To compare, install '
        f'the CPU build: {TORCH_INSTALL}' + (
            ' (on a GPU, a CUDA build: BENCHMARKS.md, "On a GPU")'
            if jax_platform == 'gpu' else ''))
  device = resolve_device(device, jax_platform, _torch_cuda(torch))
  dtypes = ('float32', 'bfloat16') if (
      device == 'gpu' if bf16 is None else bf16) else ('float32',)
  with conv.use_policy(policy):
    result = _run(model_size, batch_size, steps, warmup, torch, layers_impl,
                  skip_train, order, device, dtypes, peak_tflops, remat, log)
  result['conv_forms_table'] = conv_forms_table
  return result


def _run(model_size: str, batch_size: int, steps: int, warmup: int,
         torch, layers_impl: str, skip_train: bool, order: str, device: str,
         dtypes: Sequence[str], peak_tflops: float | None, remat: str,
         log: Callable[[str], None]) -> dict[str, Any]:
  config = Config(model_size=model_size, batch_size=batch_size,
                  parallelism='none', remat=remat)
  data = _data(config, batch_size)
  flops = count_flops(config, batch_size)
  audio_seconds = batch_size * config.window / audio.SAMPLE_RATE
  torch_device = 'cuda' if device == 'gpu' else 'cpu'
  if torch is not None:
    torch.set_num_threads(os.cpu_count() or 1)
  device_kind = jax.devices()[0].device_kind
  peak = peak_tflops if peak_tflops is not None else gpu.peak_bf16_tflops(
      device_kind)

  result: dict[str, Any] = {
      'model_size': model_size, 'batch_size': batch_size, 'steps': steps,
      'warmup': warmup, 'order': order, 'window': config.window,
      'layers_impl': layers_impl, 'remat': remat,
      'glibc_tunables': os.environ.get('GLIBC_TUNABLES', ''),
      'vbn_reference_size': config.vbn_reference_size,
      'cpu_model': machine.cpu_model(), 'cpu_count': os.cpu_count(),
      'jax_backend': jax.default_backend(),
      'versions': machine.versions(torch),
      'torch_threads': torch.get_num_threads() if torch is not None else None,
      'g_forward_gflop_per_example': flops['g_forward'] / 1e9,
      'd_forward_gflop_per_example': flops['d_forward'] / 1e9,
      'train_step_gflop_per_example': flops['train_step'] / 1e9,
      'device': device, 'device_kind': device_kind, 'dtypes': list(dtypes),
      'torch_device': torch_device if torch is not None else None,
      'peak_bf16_tflops': peak,
      'peak_source': (None if peak is None else '--peak_tflops'
                      if peak_tflops is not None else 'PEAK_BF16_TFLOPS'),
      'jax_compile_s_measures': JAX_COMPILE_MEASURES,
      # float32 precision: PyTorch's cuDNN convs use TF32 by default on
      # GPUs that have it (this flag); JAX's follow XLA's default precision.
      'jax_default_matmul_precision': jax.config.jax_default_matmul_precision,
      'torch_cudnn_allow_tf32': (torch.backends.cudnn.allow_tf32
                                 if torch is not None
                                 and torch_device == 'cuda' else None),
  }
  if torch is not None and torch_device == 'cuda':
    result['torch_cuda_device'] = torch.cuda.get_device_name(0)
  if device == 'gpu':
    log(f'{device_kind}: float32 as each framework does it by default '
        f'(PyTorch cuDNN TF32: {result["torch_cudnn_allow_tf32"]}; JAX '
        f'precision: {result["jax_default_matmul_precision"] or "default"})'
        + (f'; MFU against a dense bf16 peak of {peak:g} TFLOP/s' if peak
           else '; MFU omitted: no dense bf16 peak known for this device '
           '(--peak_tflops gives one)'))
  elif jax.default_backend() != 'cpu':
    log(f'JAX runs on {jax.default_backend()}, PyTorch on the CPU '
        '(--device=gpu puts both on a GPU)')

  for dtype in dtypes:
    _measure_dtype(config.replace(dtype=dtype), data, flops, audio_seconds,
                   torch, torch_device, skip_train, warmup, steps, order,
                   peak, result, log)

  result['inference_rtf'] = result['jax_inference_rtf']
  for dtype in dtypes:
    sfx = DTYPE_SUFFIX[dtype]
    for group in ('inference', 'train'):
      jax_s = result.get(f'jax_{group}_step_s{sfx}')
      torch_s = result.get(f'torch_{group}_step_s{sfx}')
      result[f'{group}_ratio_vs_torch{sfx}'] = (
          torch_s / jax_s if jax_s is not None and torch_s is not None
          else None)
      # The headline MFU is JAX's (as inference_rtf).
      result[f'{group}_mfu{sfx}'] = result.get(f'jax_{group}_mfu{sfx}')
    log(f'JAX/PyTorch speed ratio{"" if not sfx else " (bfloat16)"}: '
        f'inference {_fmt(result[f"inference_ratio_vs_torch{sfx}"])}, train '
        f'step {_fmt(result[f"train_ratio_vs_torch{sfx}"])}; JAX inference '
        f'real-time factor {result[f"jax_inference_rtf{sfx}"]:.4f}')
  return result


def _measure_dtype(config: Config, data: dict[str, np.ndarray],
                   flops: dict[str, float], audio_seconds: float, torch,
                   torch_device: str, skip_train: bool, warmup: int,
                   steps: int, order: str, peak: float | None,
                   result: dict[str, Any], log: Callable[[str], None]
                   ) -> None:
  """Both frameworks in ``config.dtype``: adds its keys to ``result``
  (float32 without suffix, as before bfloat16 was measured)."""
  sfx = DTYPE_SUFFIX[config.dtype]
  batch_size = config.batch_size
  start = time.perf_counter()
  jax_runner = _JaxRunner(config, data)
  result[f'jax_setup_s{sfx}'] = time.perf_counter() - start
  compiled = jax_runner.compile(train=not skip_train)
  workloads = {'jax_inference': jax_runner.infer}
  if not skip_train:
    workloads['jax_train'] = jax_runner.train
  if torch is not None:
    torch_runner = _TorchRunner(torch, config, data, torch_device,
                                config.dtype)
    workloads['torch_inference'] = torch_runner.infer
    if not skip_train:
      workloads['torch_train'] = torch_runner.train

  # Inference and training measured as two interleaved groups.
  for group in ('inference', 'train'):
    chosen = {k: v for k, v in workloads.items() if k.endswith(group)}
    if not chosen:
      continue
    first, times = _measure(chosen, warmup, steps, order)
    analytic = (flops['g_forward'] if group == 'inference'
                else flops['train_step']) * batch_size
    compile_s, counted = compiled[group]
    # MFU's FLOPs: those of the JAX program; both frameworks do that work
    # (the same networks), so PyTorch's MFU uses them too.
    step_flops, source = gpu.step_flops(counted, analytic)
    result[f'jax_{group}_gflop_per_step{sfx}'] = step_flops / 1e9
    result[f'jax_{group}_gflop_source{sfx}'] = source
    for name, seconds in times.items():
      median = statistics.median(seconds)

      def key(field: str, name: str = name) -> str:
        return f'{name}{field}{sfx}'

      result[key('_first_step_s')] = first[name]
      if name.startswith('jax'):
        # As a fresh jit's first call: compilation, then one step.
        result[key('_compile_s')] = compile_s
        result[key('_first_call_s')] = compile_s + first[name]
      else:
        result[key('_first_call_s')] = first[name]
      result[key('_step_s')] = median
      result[key('_step_s_all')] = seconds
      result[key('_examples_per_s')] = batch_size / median
      result[key('_gflops')] = analytic / median / 1e9
      result[key('_mfu')] = gpu.mfu(step_flops, median, peak)
      if group == 'inference':
        result[key('_rtf')] = median / audio_seconds
      log(f'{name + sfx:16s} {batch_size / median:8.2f} ex/s  '
          f'{median * 1e3:9.1f} ms/step  {result[key("_gflops")]:6.1f} '
          f'GFLOP/s  (first call {result[key("_first_call_s")]:.1f} s)')
      # Compilation, first step and MFU on their own line where they are
      # new (the CPU lines stay as they were).
      if torch_device == 'cuda' or peak is not None:
        compiling = (f'compile {compile_s:.1f} s, '
                     if name.startswith('jax') else '')
        log(f'{"":16s} {compiling}first step {first[name]:.3f} s, '
            f'{step_flops / median / 1e12:.2f} TFLOP/s '
            f'({result[f"jax_{group}_gflop_source{sfx}"]}), MFU '
            f'{_fmt_fraction(result[key("_mfu")])}')
  if torch_device == 'cuda' and torch is not None:
    # Hand PyTorch's cached blocks back before the next dtype's models.
    del workloads, torch_runner
    torch.cuda.empty_cache()


def _fmt(x: float | None) -> str:
  return 'n/a' if x is None else f'{x:.2f}x'


def _fmt_fraction(x: float | None) -> str:
  return 'n/a' if x is None else f'{100 * x:.1f} %'


def main(argv: Sequence[str],
         flag_values: flags.FlagValues = flags.FLAGS) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  fv = flag_values
  if fv.compilation_cache_dir is not None:
    runtime.enable_compilation_cache(fv.compilation_cache_dir)
  if fv.enhance_memory:
    result = enhance_memory.enhance_memory(
        [float(m) for m in fv.enhance_minutes], model_size=fv.model_size,
        rate=fv.enhance_rate, channels=fv.enhance_channels)
    if fv.json:
      print(json.dumps(result, default=_json_default), flush=True)
    return
  if fv.conv_forms_table:
    try:  # A missing or invalid table: one line naming it.
      conv.load_forms_table(fv.conv_forms_table)
    except ValueError as e:
      raise SystemExit(f'benchmarks.throughput: {e}') from None
  try:
    result = run(model_size=fv.model_size, batch_size=fv.batch_size,
                 steps=fv.steps, warmup=fv.warmup, skip_torch=fv.skip_torch,
                 layers_impl=fv.layers_impl, skip_train=fv.skip_train,
                 order=fv.order, device=fv.device, bf16=fv.bf16,
                 peak_tflops=fv.peak_tflops,
                 conv_forms_table=fv.conv_forms_table, remat=fv.remat)
  except DeviceError as e:
    # A missing device is a setup matter: one line, no traceback.
    raise SystemExit(f'benchmarks.throughput: {e}') from None
  if fv.json:
    print(json.dumps(result, default=_json_default), flush=True)


def _json_default(x):
  if isinstance(x, (np.floating, np.integer)):
    return x.item()
  raise TypeError(type(x))


if __name__ == '__main__':
  # Restarts once with glibc's huge-page malloc (segan_jax/runtime.py).
  runtime.reexec_with_hugepage_malloc()
  # JAX takes 75 % of a GPU's memory when its backend starts, which would
  # leave PyTorch the rest; no effect on the CPU.
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  define_flags()
  app.run(main)
