"""experiments/deepfilternet3.py's route and length logic, and its bad input,
without DFN3's runtime (which lives in a venv of its own)."""

import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile

SCRIPT = (pathlib.Path(__file__).resolve().parents[1] / 'experiments' /
          'deepfilternet3.py')


@pytest.fixture(scope='module')
def dfn3():
  spec = importlib.util.spec_from_file_location('deepfilternet3', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_route_labels_what_dfn3_was_fed_and_what_was_written(dfn3):
  assert dfn3.route([48000] * 3, 16000) == 'fed 48 kHz, written at 16 kHz'
  assert dfn3.route([16000, 16000], 16000) == (
      'fed 16 kHz (resampled to 48 kHz), written at 16 kHz')
  assert dfn3.route([44100], 48000) == (
      'fed 44.1 kHz (resampled to 48 kHz), written at 48 kHz')


@pytest.mark.parametrize('rates, problem', [
    ([16000, 48000], 'mixes sample rates 16000, 48000'),
    ([], 'holds no .wav file')])
def test_route_refuses_a_run_it_cannot_label(dfn3, rates, problem):
  with pytest.raises(ValueError, match=problem):
    dfn3.route(rates, 16000)


def test_output_length_keeps_the_duration(dfn3):
  # A 48 kHz original and its 16 kHz version last the same.
  assert dfn3.output_length(48000 * 3 + 3, 48000, 16000) == 16000 * 3 + 1
  assert dfn3.output_length(12345, 16000, 16000) == 12345


def test_a_folder_of_two_rates_is_one_line_error(tmp_path):
  for name, rate in (('a.wav', 16000), ('b.wav', 48000)):
    soundfile.write(tmp_path / name, np.zeros(rate // 10), rate)
  run = subprocess.run([sys.executable, str(SCRIPT), f'--input={tmp_path}',
                        f'--output={tmp_path / "out"}'],
                       capture_output=True, text=True, timeout=60)
  assert run.returncode == 2
  assert run.stderr.strip().splitlines() == [
      f'error: --input {tmp_path} mixes sample rates 16000, 48000; give one '
      'rate per run, so that its route labels it']
  assert not (tmp_path / 'out').exists()
