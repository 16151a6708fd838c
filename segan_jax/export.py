"""G as a file that runs without the training code: ONNX, or jax.export's
serialized StableHLO, and the engines that enhance through either.

The exported program is G alone on a batch of pre-emphasised windows. What
surrounds it (pre-emphasis, windowing, z, de-emphasis with the output
high-pass, resampling) is the caller's job, described by the file's
*contract* (`contract`): ONNX ``metadata_props``, or ``contract.json`` inside
the StableHLO file (a zip holding it and ``program.stablehlo``).
`ExportedEnhancer` is that caller: the same windowing, filters and file
handling as the JAX path (`enhance.WindowEnhancer`), G run by onnxruntime or
by ``jax.export.deserialize``.

The ONNX graph is built from the Flax parameters with the ``onnx`` package's
helpers: SEGAN's G is Conv, ConvTranspose, PRelu, Concat and Add/Tanh, which
onnxruntime runs with its own kernels; the conv forms of `segan_jax.ops.conv`
are JAX programs and do not enter it. The StableHLO program holds G twice
over one set of constants (`jax.lax.platform_dependent`): in the CPU-tuned
conv forms, which it runs on CPU, and in lax's convolutions, which it runs on
CUDA and TPU (what the JAX path uses there too).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from segan_jax import audio
from segan_jax import enhance
from segan_jax import files
from segan_jax import models
from segan_jax import systems
from segan_jax.generators import TrainedGenerator
from segan_jax.models import layers
from segan_jax.ops import conv
from segan_jax.output_settings import OutputSettings

FORMATS = ('onnx', 'stablehlo')
CONTRACT_VERSION = 1
# The ONNX metadata key of the contract (JSON); the StableHLO zip's members.
CONTRACT_KEY = 'segan_jax.contract'
CONTRACT_MEMBER = 'contract.json'
PROGRAM_MEMBER = 'program.stablehlo'
# Opset 17: ConvTranspose, PRelu and Squeeze/Unsqueeze with axes as inputs
# are all there, and every onnxruntime of the last years runs it.
ONNX_OPSET = 17
NOISY, LATENT, ENHANCED = 'noisy', 'z', 'enhanced'
BATCH = 'batch'


class ModelFileError(audio.AudioError):
  """A --model_file that cannot be used (missing, truncated, not an exported
  segan-jax model); the message names the file."""


def contract(generator: TrainedGenerator, engine: str) -> dict:
  """What a caller of the exported program must know, as JSON-ready data."""
  config = generator.config
  latent = systems.latent_shape(config)
  return {
      'format': 'segan-jax exported generator',
      'contract_version': CONTRACT_VERSION,
      'engine': engine,
      'source': generator.source,
      'step': int(generator.step),
      'model': config.model,
      'sample_rate': audio.SAMPLE_RATE,
      'window': int(config.window),
      'batch': ('symbolic: any number of windows per call (dimension '
                f"'{BATCH}')"),
      'inputs': {
          NOISY: {'shape': [BATCH, int(config.window)], 'dtype': 'float32',
                  'is': 'pre-emphasised windows of a 16 kHz waveform in '
                        '[-1, 1]: x[t] - preemphasis * x[t-1] (the caller '
                        'applies it)'},
          **({} if latent is None else {LATENT: {
              'shape': [BATCH, *map(int, latent)], 'dtype': 'float32',
              'is': 'N(0, 1) noise, an input (not fixed). segan-jax draws it '
                    'per window: jax.random.normal(jax.random.fold_in('
                    'jax.random.key(seed), window_index), shape)'}}),
      },
      'outputs': {ENHANCED: {
          'shape': [BATCH, int(config.window)], 'dtype': 'float32',
          'is': 'enhanced windows, still pre-emphasised'}},
      'preemphasis': float(config.preemphasis),
      'emphasis_in_graph': False,
      'deemphasis': 'the caller: y[t] = e[t] + preemphasis * y[t-1] over the '
                    'concatenated windows, with the output high-pass in the '
                    'same filter',
      **OutputSettings.from_config(config).to_contract(),
      'windowing': 'the paper: consecutive windows without overlap, the last '
                   'zero-padded; 50 % Hann overlap-add also works',
      'config': config.to_dict(),
  }


def _per_platform_fn(generator: TrainedGenerator):
  """G's forward in the conv forms of the platform the program runs on: the
  CPU-tuned forms on CPU (lax's conv there is many times slower on SEGAN's
  short layers), lax's convolutions elsewhere. The parameters are one set of
  constants, operands of both branches."""
  model = systems.generator(generator.config)
  params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float32),
                        generator.params)

  def branch(policy):
    def forward(params, *inputs):
      with conv.use_policy(policy):
        return model.apply({'params': params}, *inputs)
    return forward

  return lambda *inputs: jax.lax.platform_dependent(
      params, *inputs, cpu=branch(conv.ConvPolicy(backend='cpu')),
      default=branch(conv.ConvPolicy(xla_only=True)))


def export_stablehlo(generator: TrainedGenerator) -> bytes:
  """The zip of contract.json and jax.export's serialized program (batch
  symbolic; for CPU, CUDA and TPU)."""
  config = generator.config
  (batch,) = jax.export.symbolic_shape(BATCH)
  args = [jax.ShapeDtypeStruct((batch, config.window), jnp.float32)]
  latent = systems.latent_shape(config)
  if latent is not None:
    args.append(jax.ShapeDtypeStruct((batch, *latent), jnp.float32))
  exported = jax.export.export(jax.jit(_per_platform_fn(generator)),
                               platforms=('cpu', 'cuda', 'tpu'))(*args)
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_STORED) as z:
    z.writestr(CONTRACT_MEMBER, json.dumps(contract(generator, 'stablehlo'),
                                           indent=1))
    z.writestr(PROGRAM_MEMBER, bytes(exported.serialize()))
  return buffer.getvalue()


def export_onnx(generator: TrainedGenerator) -> bytes:
  """G as an ONNX graph (NCW layout inside; [batch, window] outside)."""
  import onnx  # pylint: disable=g-import-not-at-top  (the 'export' extra)
  from onnx import helper, numpy_helper, TensorProto  # pylint: disable=g-import-not-at-top
  model = systems.generator(generator.config)
  if not isinstance(model, models.Generator):
    raise ValueError(f'{generator.config.model} has no SEGAN generator to '
                     'export')
  params = generator.params
  nodes, initializers = [], []

  def constant(name, value):
    initializers.append(numpy_helper.from_array(
        np.ascontiguousarray(value, np.float32)
        if np.asarray(value).dtype.kind == 'f' else np.asarray(value), name))
    return name

  def node(op, inputs, output, **attrs):
    nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
    return output

  k, s = model.kernel_size, model.stride
  conv_pads = list(layers.same_padding(k, s))
  # lax.conv_transpose(..., 'SAME') pads its zero-dilated input by
  # (ceil((k + s - 2) / 2), the rest): in ONNX's terms pads k - 1 minus those.
  lax_left = -(-(k + s - 2) // 2)
  transpose_pads = [k - 1 - lax_left, k - 1 - (k + s - 2 - lax_left)]

  def conv_layer(name, h, transpose):
    kernel = np.asarray(params[name]['kernel'], np.float32)  # [K, Cin, Cout]
    if transpose:  # ONNX: [Cin, Cout, K], the flipped kernel of lax's
      weight = kernel[::-1].transpose(1, 2, 0)
    else:          # ONNX: [Cout, Cin, K]
      weight = kernel.transpose(2, 1, 0)
    inputs = [h, constant(f'{name}.weight', weight),
              constant(f'{name}.bias', params[name]['bias'])]
    return node('ConvTranspose' if transpose else 'Conv', inputs, name,
                kernel_shape=[k], strides=[s],
                pads=transpose_pads if transpose else conv_pads)

  def prelu(name, h):
    alpha = np.asarray(params[name]['alpha'], np.float32)[:, None]  # [C, 1]
    return node('PRelu', [h, constant(f'{name}.slope', alpha)], name)

  axis1 = constant('axis1', np.array([1], np.int64))
  h = node('Unsqueeze', [NOISY, axis1], 'noisy_ncw')
  skips = []
  for i, _ in enumerate(model.encoder_features):
    h = conv_layer(f'enc_{i}', h, transpose=False)
    if model.skip_preactivation:
      skips.append(h)
    h = prelu(f'enc_prelu_{i}', h)
    if not model.skip_preactivation:
      skips.append(h)
  graph_inputs = [helper.make_tensor_value_info(
      NOISY, TensorProto.FLOAT, [BATCH, generator.config.window])]
  if model.use_z:
    latent = systems.latent_shape(generator.config)
    graph_inputs.append(helper.make_tensor_value_info(
        LATENT, TensorProto.FLOAT, [BATCH, *latent]))
    z_ncw = node('Transpose', [LATENT], 'z_ncw', perm=[0, 2, 1])
    h = node('Concat', [h, z_ncw], 'code_z', axis=1)
  skips.pop()
  last = len(models.decoder_features(model.encoder_features)) - 1
  for i in range(last + 1):
    h = conv_layer(f'dec_{i}', h, transpose=True)
    if i < last:
      h = prelu(f'dec_prelu_{i}', h)
      h = node('Concat', [h, skips.pop()], f'dec_concat_{i}', axis=1)
  h = node('Squeeze', [h, axis1], 'correction' if model.residual else 'last')
  if model.residual:
    node('Add', [NOISY, h], ENHANCED)
  else:
    node('Tanh', [h], ENHANCED)
  graph = helper.make_graph(
      nodes, 'segan_jax_generator', graph_inputs,
      [helper.make_tensor_value_info(ENHANCED, TensorProto.FLOAT,
                                     [BATCH, generator.config.window])],
      initializer=initializers)
  onnx_model = helper.make_model(
      graph, producer_name='segan-jax',
      opset_imports=[helper.make_opsetid('', ONNX_OPSET)])
  terms = contract(generator, 'onnx')
  flat = {key: terms[key] for key in ('sample_rate', 'window', 'preemphasis',
                                      'output_highpass_hz', 'source')}
  flat['emphasis_in_graph'] = 'false'
  flat['z'] = 'input' if model.use_z else 'none'
  helper.set_model_props(onnx_model, {CONTRACT_KEY: json.dumps(terms),
                                      **{k: str(v) for k, v in flat.items()}})
  onnx.checker.check_model(onnx_model)
  return onnx_model.SerializeToString()


def export_file(generator: TrainedGenerator, export_format: str,
                path: str) -> int:
  """Writes G in ``export_format`` to ``path`` (atomically); returns its
  size in bytes."""
  if export_format not in FORMATS:
    raise ValueError(f'unknown export format {export_format!r}; known: '
                     f'{", ".join(FORMATS)}')
  if os.path.isdir(path):
    raise ValueError(f'{path}: is a folder; name the file to export to')
  data = (export_onnx if export_format == 'onnx' else
          export_stablehlo)(generator)
  try:
    with files.atomic_open(path, 'wb') as f:
      f.write(data)
  except OSError as e:
    raise ValueError(f'{path}: cannot write the export ({e.strerror})'
                     ) from None
  return len(data)


# --- Reading an exported file back ---------------------------------------------


class _OnnxProgram:
  """G through onnxruntime (CPU)."""

  def __init__(self, path: str, data: bytes):
    try:
      import onnx  # pylint: disable=g-import-not-at-top
      import onnxruntime  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ModelFileError(f"{path}: an ONNX model needs onnx and "
                           "onnxruntime: pip install -e '.[export]'") from None
    try:
      proto = onnx.load_from_string(data)
      props = {p.key: p.value for p in proto.metadata_props}
      self.contract = json.loads(props[CONTRACT_KEY])
      options = onnxruntime.SessionOptions()
      options.log_severity_level = 3  # errors only
      self.session = onnxruntime.InferenceSession(
          data, options, providers=['CPUExecutionProvider'])
    except KeyError:
      raise ModelFileError(f'{path}: an ONNX model without a segan-jax '
                           'contract (not exported by segan-jax)') from None
    except Exception as e:  # pylint: disable=broad-except  (protobuf, ORT)
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(
          e).__name__
      raise ModelFileError(f'{path}: not an exported model (neither a '
                           'StableHLO zip nor a readable ONNX model: '
                           f'{first})') from None

  def __call__(self, noisy, z):
    feeds = {NOISY: noisy} if z is None else {NOISY: noisy, LATENT: z}
    return self.session.run([ENHANCED], feeds)[0]


class _StableHLOProgram:
  """G through jax.export.deserialize, compiled per batch shape."""

  def __init__(self, path: str, data: bytes):
    try:
      with zipfile.ZipFile(io.BytesIO(data)) as z:
        self.contract = json.loads(z.read(CONTRACT_MEMBER))
        program = z.read(PROGRAM_MEMBER)
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError) as e:
      raise ModelFileError(f'{path}: not a complete segan-jax StableHLO file '
                           f'({e})') from None
    try:
      exported = jax.export.deserialize(bytearray(program))
    except Exception as e:  # pylint: disable=broad-except  (flatbuffers)
      raise ModelFileError(f'{path}: its StableHLO program cannot be read '
                           f'({type(e).__name__})') from None
    self._call = jax.jit(exported.call)

  def __call__(self, noisy, z):
    args = (noisy,) if z is None else (noisy, z)
    return np.asarray(self._call(*args))


def load_program(path: str):
  """The program of an exported file (``.contract`` and ``__call__(noisy,
  z)``), whichever its engine: the bytes tell, not the file name."""
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except FileNotFoundError:
    raise ModelFileError(f'{path}: no such model file') from None
  except IsADirectoryError:
    raise ModelFileError(f'{path}: is a folder, not a model file') from None
  except OSError as e:
    raise ModelFileError(f'{path}: cannot read it ({e.strerror})') from None
  if not data:
    raise ModelFileError(f'{path}: is empty')
  program = (_StableHLOProgram if data[:4] == b'PK\x03\x04' else
             _OnnxProgram)(path, data)
  terms = program.contract
  if (terms.get('contract_version') != CONTRACT_VERSION or
      terms.get('sample_rate') != audio.SAMPLE_RATE):
    raise ModelFileError(f'{path}: contract version '
                         f'{terms.get("contract_version")!r} at '
                         f'{terms.get("sample_rate")!r} Hz; this segan-jax '
                         f'reads version {CONTRACT_VERSION} at 16 kHz')
  return program


class ExportedEnhancer(enhance.WindowEnhancer):
  """Enhances through an exported file (ONNX or StableHLO) with the JAX
  path's windowing, filters and file handling; z (where G has one) is drawn
  as `enhance.Enhancer` draws it, so the same seed gives the same output.
  The output settings are the file's (its contract), or ``output_settings``,
  with ``overrides`` by name as for `enhance.Enhancer`."""

  def __init__(self, path: str, batch_size: int = 8, seed: int = 0,
               overlap: float = 0.0,
               output_settings: OutputSettings | None = None,
               **overrides: Any):
    self.program = load_program(path)
    terms = self.program.contract
    settings = (output_settings or OutputSettings.from_contract(terms)
                ).with_overrides(**overrides)
    super().__init__(int(terms['window']), float(terms['preemphasis']),
                     batch_size, settings, overlap)
    self.engine = terms['engine']
    self.path = path
    self._source = f'{self.engine} export {path} of the {terms["source"]}'
    z = terms['inputs'].get(LATENT)
    self.latent = None if z is None else tuple(z['shape'][1:])
    self.rng = jax.random.key(seed)

  @property
  def source(self) -> str:
    return self._source

  def enhance_batch(self, batch: np.ndarray, index: np.ndarray) -> np.ndarray:
    z = None
    if self.latent is not None:
      z = np.asarray(models.sample_latent(self.rng, jnp.asarray(index),
                                          self.latent))
    return self.program(np.ascontiguousarray(batch, np.float32), z)


def describe(path: str) -> dict[str, Any]:
  """The contract of an exported file."""
  return load_program(path).contract
