"""Exported G (ONNX, StableHLO): equal to JAX's, carrying its contract,
enhancing real speech alike, and bad model files answered in one line."""

import json
import os
import subprocess
import sys
import zipfile

import jax
import numpy as np
import onnx
import pytest
import soundfile

from segan_jax import checkpoints
from segan_jax import enhance
from segan_jax import export
from segan_jax import generators
from segan_jax import metrics
from segan_jax import models
from segan_jax import systems
from segan_jax.config import Config
from segan_jax.output_settings import OutputSettings
from conftest import REPO, SHARED_DATA


def _generator(seed=0, **overrides):
  """A G of the given config with random (not initial) parameters: the
  residual G's zero-initialised last layer would hide a wrong graph."""
  config = Config(**overrides)
  model = systems.generator(config)
  latent = systems.latent_shape(config)
  noisy = np.zeros((1, config.window), np.float32)
  args = (noisy,) if latent is None else (noisy, np.zeros((1, *latent),
                                                          np.float32))
  params = model.init(jax.random.key(seed), *args)['params']
  leaves, tree = jax.tree.flatten(params)
  rng = np.random.default_rng(seed)
  leaves = [np.asarray(p) + 0.05 * rng.standard_normal(p.shape).astype(
      np.float32) for p in leaves]
  return generators.TrainedGenerator(config, jax.tree.unflatten(tree, leaves),
                                  step=7, source='test G')


CASES = {
    'tiny segan (z, tanh)': dict(model='segan', model_size='tiny'),
    'tiny autoencoder, residual, activation skips': dict(
        model='autoencoder', model_size='tiny', residual=True,
        skip_connections='activation'),
    'demo segan, residual': dict(model='segan', model_size='demo',
                                 residual=True),
    'demo autoencoder': dict(model='autoencoder', model_size='demo'),
}


@pytest.mark.parametrize('case', list(CASES))
@pytest.mark.parametrize('engine', export.FORMATS)
def test_exported_g_equals_jax_on_the_same_windows_and_z(case, engine,
                                                         tmp_path):
  generator = _generator(**CASES[case])
  path = str(tmp_path / f'g.{engine}')
  export.export_file(generator, engine, path)
  ours = enhance.Enhancer(generator, batch_size=2, seed=3)
  theirs = export.ExportedEnhancer(path, batch_size=2, seed=3)
  rng = np.random.default_rng(1)
  # 5 windows: three calls, the last padded; the same z per window index.
  windows = (0.1 * rng.standard_normal((5, generator.config.window))
             ).astype(np.float32)
  expected = ours.enhance_windows(windows, np.arange(10, 15))
  got = theirs.enhance_windows(windows, np.arange(10, 15))
  assert got.shape == expected.shape
  assert np.abs(got - expected).max() < 1e-4
  assert np.abs(expected).max() > 1e-2  # not a vacuous comparison
  assert theirs.engine == engine and engine in theirs.source


def test_the_batch_is_symbolic_and_z_is_an_input(tmp_path):
  generator = _generator(model='segan', model_size='tiny')
  window = generator.config.window
  rng = np.random.default_rng(2)
  for engine in export.FORMATS:
    path = str(tmp_path / f'g.{engine}')
    export.export_file(generator, engine, path)
    program = export.load_program(path)
    z_shape = program.contract['inputs']['z']['shape'][1:]
    for batch in (1, 3):
      noisy = rng.standard_normal((batch, window)).astype(np.float32)
      z = rng.standard_normal((batch, *z_shape)).astype(np.float32)
      expected = systems.generator(generator.config).apply(
          {'params': generator.params}, noisy, z)
      np.testing.assert_allclose(program(noisy, z), expected, atol=1e-4)
    other = program(noisy, -z)
    assert np.abs(other - program(noisy, z)).max() > 1e-3, engine


def test_exported_files_carry_their_contract(tmp_path):
  generator = _generator(model='segan', model_size='tiny',
                         output_highpass_hz=20.0, attenuation_limit_db=12.0,
                         output_mask=True, mask_oversubtraction=2.0,
                         mask_noise_frames=5)
  onnx_path = str(tmp_path / 'g.onnx')
  hlo_path = str(tmp_path / 'g.stablehlo')
  export.export_file(generator, 'onnx', onnx_path)
  export.export_file(generator, 'stablehlo', hlo_path)
  proto = onnx.load(onnx_path)
  props = {p.key: p.value for p in proto.metadata_props}
  from_onnx = json.loads(props[export.CONTRACT_KEY])
  with zipfile.ZipFile(hlo_path) as z:
    from_hlo = json.loads(z.read(export.CONTRACT_MEMBER))
  latent = list(models.latent_shape(1024, (4, 8, 8, 16, 16)))
  for terms, engine in ((from_onnx, 'onnx'), (from_hlo, 'stablehlo')):
    assert terms['engine'] == engine
    assert terms['sample_rate'] == 16000 and terms['window'] == 1024
    assert terms['preemphasis'] == 0.95 and not terms['emphasis_in_graph']
    assert terms['output_highpass_hz'] == 20.0
    assert terms['attenuation_limit_db'] == 12.0 and terms['output_mask']
    assert terms['mask_oversubtraction'] == 2.0
    assert terms['mask_noise_frames'] == 5
    assert terms['inputs']['noisy']['shape'] == ['batch', 1024]
    assert terms['inputs']['z']['shape'] == ['batch'] + latent
    assert terms['outputs']['enhanced']['shape'] == ['batch', 1024]
    assert checkpoints.config_from_meta(terms) == generator.config
  # The exported engine applies the model's output settings unless told not to.
  assert export.ExportedEnhancer(hlo_path).output_settings == (
      OutputSettings.from_config(generator.config))
  assert not export.ExportedEnhancer(
      hlo_path, output_mask=False).output_settings.output_mask
  assert export.ExportedEnhancer(
      hlo_path, mask_noise_frames=1).output_settings.mask_noise_frames == 1
  # A file of before the mask: its contract has no mask settings (off).
  older = {k: v for k, v in from_hlo.items() if not k.startswith('mask')
           and k != 'output_mask'}
  assert OutputSettings.from_contract(older) == OutputSettings(
      output_highpass_hz=20.0, attenuation_limit_db=12.0)
  # The flat keys a model viewer shows, and the graph's own symbolic batch.
  assert props['window'] == '1024' and props['z'] == 'input'
  dims = proto.graph.input[0].type.tensor_type.shape.dim
  assert dims[0].dim_param == 'batch' and dims[1].dim_value == 1024
  # Standard ONNX ops only: the conv forms of ops/conv do not leak in.
  assert {n.op_type for n in proto.graph.node} <= {
      'Conv', 'ConvTranspose', 'PRelu', 'Concat', 'Transpose', 'Unsqueeze',
      'Squeeze', 'Tanh', 'Add'}


def _run(*args):
  return subprocess.run([sys.executable, '-m', 'segan_jax', *args],
                        cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_bundled_model_through_each_engine_scores_as_jax(tmp_path):
  test_dir = SHARED_DATA / 'vbd_test'
  if not test_dir.is_dir():
    pytest.skip(f'{test_dir} is absent (../shared/data holds the real pairs)')
  name = 'p232_015.wav'
  noisy = str(test_dir / 'noisy' / name)
  clean, rate = soundfile.read(str(test_dir / 'clean' / name),
                               dtype='float32')
  outputs = {'jax': str(tmp_path / 'jax.wav')}
  enhance.Enhancer.from_pretrained().enhance_file(noisy, outputs['jax'])
  for engine in export.FORMATS:
    model_file = str(tmp_path / f'segan_vbd.{engine}')
    # Without --workdir: the bundled model.
    made = _run('--mode=export', f'--export_format={engine}',
                f'--output={model_file}')
    assert made.returncode == 0, made.stderr[-2000:]
    assert 'bundled pretrained model' in made.stdout
    outputs[engine] = str(tmp_path / f'{engine}.wav')
    used = _run('--mode=enhance', f'--model_file={model_file}',
                f'--input={noisy}', f'--output={outputs[engine]}')
    assert used.returncode == 0, used.stderr[-2000:]
    assert f'{engine} export' in used.stdout
  scores = {}
  for engine, path in outputs.items():
    enhanced, enhanced_rate = soundfile.read(path, dtype='float32')
    assert enhanced_rate == rate and enhanced.shape == clean.shape
    scores[engine] = metrics.pesq_wb(clean, enhanced, rate)
  noisy_pesq = metrics.pesq_wb(clean, soundfile.read(noisy, dtype='float32')[0],
                               rate)
  assert abs(scores['jax'] - noisy_pesq) > 0.01  # the model did something
  for engine in export.FORMATS:
    assert abs(scores[engine] - scores['jax']) <= 0.01, scores


def test_export_of_a_run_checkpoint(trained, tmp_path):
  workdir, _ = trained
  generator = generators.restore_generator(workdir, step=None)
  path = str(tmp_path / 'run.onnx')
  size = export.export_file(generator, 'onnx', path)
  assert size == os.path.getsize(path) > 0
  assert export.describe(path)['step'] == generator.step
  assert not [f for f in os.listdir(tmp_path) if f.endswith('.partial')]


def _bad_files(tmp_path):
  good = str(tmp_path / 'good.stablehlo')
  export.export_file(_generator(model='autoencoder', model_size='tiny'),
                     'stablehlo', good)
  onnx_good = str(tmp_path / 'good.onnx')
  export.export_file(_generator(model='autoencoder', model_size='tiny'),
                     'onnx', onnx_good)
  data, onnx_data = open(good, 'rb').read(), open(onnx_good, 'rb').read()
  bad = {}
  for name, content in (('truncated.stablehlo', data[:len(data) // 2]),
                        ('truncated.onnx', onnx_data[:len(onnx_data) // 2]),
                        ('empty.onnx', b''),
                        ('text.onnx', b'not a model at all\n')):
    bad[name] = str(tmp_path / name)
    with open(bad[name], 'wb') as f:
      f.write(content)
  # A valid ONNX model of something else: no contract.
  other = onnx.helper.make_model(onnx.helper.make_graph(
      [onnx.helper.make_node('Identity', ['x'], ['y'])], 'other',
      [onnx.helper.make_tensor_value_info('x', onnx.TensorProto.FLOAT, [1])],
      [onnx.helper.make_tensor_value_info('y', onnx.TensorProto.FLOAT, [1])]))
  bad['foreign.onnx'] = str(tmp_path / 'foreign.onnx')
  onnx.save(other, bad['foreign.onnx'])
  bad['missing.onnx'] = str(tmp_path / 'missing.onnx')
  bad['folder'] = str(tmp_path)
  return bad


def test_a_bad_model_file_is_one_clear_error(tmp_path):
  for name, path in _bad_files(tmp_path).items():
    with pytest.raises(export.ModelFileError) as e:
      export.ExportedEnhancer(path)
    message = str(e.value)
    assert message.startswith(path + ':') and '\n' not in message, message


@pytest.mark.slow
def test_cli_answers_a_bad_model_file_in_one_line(tmp_path):
  bad = _bad_files(tmp_path)
  noisy = tmp_path / 'noisy.wav'
  soundfile.write(str(noisy), np.zeros(1600, np.float32), 16000)
  for name in ('truncated.stablehlo', 'text.onnx', 'missing.onnx'):
    result = _run('--mode=enhance', f'--model_file={bad[name]}',
                  f'--input={noisy}', f'--output={tmp_path / "out.wav"}')
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f'error: {bad[name]}: ') and 'Traceback' not in (
        result.stderr), result.stderr[-2000:]
    assert not (tmp_path / 'out.wav').exists()
  wrong = _run('--mode=enhance', f'--model_file={bad["missing.onnx"]}',
               '--workdir=somewhere', f'--input={noisy}',
               f'--output={tmp_path / "out.wav"}')
  assert wrong.returncode == 2 and '--model_file replaces' in wrong.stderr


def test_engine_benchmark_checks_outputs_and_reports_each_engine():
  from benchmarks import export_engines  # pylint: disable=g-import-not-at-top
  row = export_engines.measure('tiny', 'segan', batch_size=2, steps=1)
  for engine in ('jax', *export.FORMATS):
    assert row[f'{engine}_max_abs_diff'] < 1e-4
    assert row[f'{engine}_ms'] > 0 and row[f'{engine}_x_realtime'] > 0
  assert row['onnx_speedup_over_jax'] == pytest.approx(
      row['jax_ms'] / row['onnx_ms'])
