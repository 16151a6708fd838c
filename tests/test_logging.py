"""A run leaves metrics.jsonl, TensorBoard events and a run record."""

import json
import pathlib
import shutil
import struct
import subprocess

import numpy as np

import pytest

from segan_jax import checkpoint_evaluators
from segan_jax import train


def read_tensorboard_scalars(folder):
  """{tag: [(step, value)]} from the event files (TFRecord framing)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  scalars = {}
  for path in sorted(pathlib.Path(folder).glob('events.out.tfevents.*')):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack('<Q', data[offset:offset + 8])
      record = data[offset + 12:offset + 12 + length]
      offset += 12 + length + 4  # length, its crc, record, its crc
      event = event_pb2.Event.FromString(record)
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append((event.step,
                                                  value.simple_value))
  return scalars


def test_metrics_jsonl_tensorboard_and_run_record(tiny_config, tmp_path):
  config = tiny_config.replace(num_epochs=1, log_every_steps=4)
  result = train.train_and_evaluate(config, str(tmp_path))
  lines = [json.loads(line) for line in
           (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [l['step'] for l in lines] == [h['step'] for h in result['history']]
  assert all({'g_l1', 'd_loss', 'examples_per_second'} <= set(l)
             for l in lines)
  scalars = read_tensorboard_scalars(tmp_path / 'tensorboard')
  assert [s for s, _ in scalars['g_l1']] == [l['step'] for l in lines]
  assert scalars['g_l1'][-1][1] == pytest.approx(
      lines[-1]['g_l1'], rel=1e-6)
  record = json.loads((tmp_path / 'run.json').read_text())
  assert record['config']['model_size'] == 'tiny'
  assert record['versions']['jax'] and record['devices']['count'] >= 1


def test_validation_examples_as_wav_png_and_tensorboard(tiny_config, tmp_path):
  config = tiny_config.replace(num_epochs=1, validation_files=2)
  result = train.train_and_evaluate(config, str(tmp_path),
                                    checkpoint_evaluators.make_evaluators)
  step = result['step']
  samples = tmp_path / 'samples'
  assert (samples / f'step_{step}.png').read_bytes()[:4] == b'\x89PNG'
  for i in range(checkpoint_evaluators.NUM_SAMPLE_EXAMPLES):
    for kind in ('noisy', 'enhanced', 'clean'):
      assert (samples / f'step_{step}_{i}_{kind}.wav').is_file()
  assert 'val_pesq' in result['history'][-1]
  tags = read_tensorboard_tags(tmp_path / 'tensorboard')
  assert {'spectrograms', 'example_0/enhanced', 'val_pesq'} <= tags


def read_tensorboard_tags(folder):
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  tags = set()
  for path in pathlib.Path(folder).glob('events.out.tfevents.*'):
    data, offset = path.read_bytes(), 0
    while offset < len(data):
      (length,) = struct.unpack('<Q', data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      tags |= {v.tag for v in event.summary.value}
  return tags


@pytest.fixture(scope='module')
def reported_workdir(tmp_path_factory):
  """A tiny run with validation samples, and its report page."""
  from segan_jax import report  # pylint: disable=g-import-not-at-top
  from segan_jax.config import Config  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('reported')
  with pytest.raises(ValueError, match='train in this workdir first'):
    report.write_report(str(workdir))
  config = Config(model_size='tiny', dataset_size=2, num_epochs=1,
                  batch_size=8, vbn_reference_size=4, log_every_steps=5,
                  validation_files=1, parallelism='none')
  train.train_and_evaluate(config, str(workdir), checkpoint_evaluators.make_evaluators)
  return pathlib.Path(report.write_report(str(workdir)))


def test_report_is_one_self_contained_page(reported_workdir):
  page = reported_workdir.read_text()
  assert page.startswith('<!doctype html>')
  assert page.count('src="data:image/png;base64,') == 3  # losses, val, samples
  assert page.count('<audio controls src="data:audio/wav;base64,') == (
      3 * checkpoint_evaluators.NUM_SAMPLE_EXAMPLES)  # noisy, enhanced, clean each
  # Nothing to fetch: no external address anywhere in the page.
  assert 'http://' not in page and 'https://' not in page


CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')


@pytest.mark.skipif(not CHROMIUM, reason='no chromium on PATH (.ci/run '
                    'installs Debian\'s chromium to run this test)')
def test_report_renders_in_headless_chromium(reported_workdir, tmp_path):
  from matplotlib import image  # pylint: disable=g-import-not-at-top
  screenshot = tmp_path / 'report.png'
  subprocess.run(
      [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu',
       '--disable-quic', '--no-first-run', '--disable-background-networking',
       '--disable-component-update', '--disable-sync',
       f'--user-data-dir={tmp_path / "profile"}', '--window-size=1000,1400',
       f'--screenshot={screenshot}', reported_workdir.as_uri()],
      check=True, capture_output=True, timeout=120)
  pixels = image.imread(screenshot)[..., :3]
  assert pixels.shape[:2] == (1400, 1000)
  # Only the embedded PNGs, decoded and drawn (blue curves, magma
  # spectrograms), put strongly coloured pixels on the white page.
  red, blue = pixels[..., 0], pixels[..., 2]
  assert np.mean(np.abs(red - blue) > 0.3) > 0.01
  assert np.mean(pixels < 0.5) > 0.01  # text and plot lines
