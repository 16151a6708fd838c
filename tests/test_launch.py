"""launch.py end to end, in subprocesses, as a user runs it."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# The demo's flagfile, shrunk to the tiny model and two short epochs.
TINY = ['--flagfile=experiments/demo.flags', '--model_size=tiny',
        '--dataset_size=1', '--num_epochs=2', '--checkpoint_every_epochs=1',
        '--batch_size=8', '--vbn_reference_size=4', '--log_every_steps=5',
        '--validation_files=0']


def launch(*args, devices=1):
  env = dict(os.environ)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=600)


def checkpoint_steps(workdir):
  return sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()
                if p.name.isdigit())


@pytest.mark.slow
def test_demo_flagfile_trains_checkpoints_and_resumes(tmp_path):
  workdir = tmp_path / 'run'
  first = launch(*TINY, f'--workdir={workdir}')
  assert first.returncode == 0, first.stderr[-3000:]
  steps = checkpoint_steps(workdir)
  assert len(steps) == 2 and steps[1] == 2 * steps[0]
  assert 'Resumed' not in first.stderr
  # The closing summary says where things are and how to use them.
  assert f'checkpoints: {workdir}/checkpoints (steps {steps[0]}, {steps[1]})' \
      in first.stdout
  assert f'--mode=enhance --workdir={workdir}' in first.stdout
  assert (workdir / 'metrics.jsonl').is_file() and (workdir / 'run.json').is_file()
  # Same workdir, more epochs: continues from the last checkpoint.
  second = launch(*TINY, '--num_epochs=3', f'--workdir={workdir}')
  assert second.returncode == 0, second.stderr[-3000:]
  assert f'Resumed from {workdir}/checkpoints/{steps[1]}' in second.stderr
  assert checkpoint_steps(workdir) == steps + [3 * steps[0]]
  # Orbax's per-file INFO lines are filtered out of the run's log.
  assert 'atomicity.py' not in second.stderr


@pytest.mark.slow
@pytest.mark.parametrize('parallelism', ['pmap', 'sharding'])
def test_demo_on_two_devices(tmp_path, parallelism):
  result = launch(*TINY, '--num_epochs=1', f'--parallelism={parallelism}',
                  f'--workdir={tmp_path}', devices=2)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'parallelism={parallelism} on 2 device(s)' in result.stderr
  assert len(checkpoint_steps(tmp_path)) == 1


_READ_FLAGFILE = """
import json, sys
from absl import flags
from segan_jax import flags as segan_flags
flags.FLAGS(sys.argv)
config = segan_flags.config_from_flags()
print(json.dumps(config.to_dict() | {'augments': config.augments}))
"""


def read_flagfile(name):
  result = subprocess.run(
      [sys.executable, '-c', _READ_FLAGFILE, f'--flagfile=experiments/{name}'],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  return json.loads(result.stdout.splitlines()[-1])


def test_every_flagfile_gives_a_valid_config():
  names = sorted(p.name for p in (REPO / 'experiments').glob('*.flags'))
  assert {'demo.flags', 'paper.flags', 'quick.flags'} <= set(names)
  configs = {name: read_flagfile(name) for name in names}
  paper, quick = configs['paper.flags'], configs['quick.flags']
  # The paper recipe: the reference code's optimizer, init and wiring, and
  # no augmentation.
  assert (paper['optimizer'], paper['learning_rate'], paper['kernel_init'],
          paper['skip_connections'], paper['residual'], paper['augments'],
          paper['stft_weight'], paper['adversarial_weight']) == (
              'rmsprop', 2e-4, 'truncated_normal', 'preactivation', False,
              False, 0.0, 1.0)
  # The CPU recipe is SEGAN, G and D with both losses, keeping its best.
  assert quick['model'] == 'segan' and quick['adversarial_weight'] > 0
  assert quick['l1_weight'] > 0 and quick['augments']
  assert quick['keep_best'] == 'val_pesq'


@pytest.mark.parametrize('args, message', [
    (['--batch_size=0'], 'batch_size must be >= 1'),
    (['--dataset=timit'], "Unknown dataset 'timit'"),
    (['--batch_size=100000'], 'larger than the'),
    (['--window_size=1000'], 'multiple of'),
    (['--output_highpass_hz=-5'], 'output_highpass_hz must be in'),
    (['--attenuation_limit_db=-3'], 'attenuation_limit_db must be >= 0'),
    (['--mask_oversubtraction=-1'], 'mask_oversubtraction must be >= 0'),
    (['--mask_noise_frames=4'], 'mask_noise_frames must be an odd count'),
])
def test_bad_flags_give_one_line(tmp_path, args, message):
  result = launch(*TINY, *args, f'--workdir={tmp_path}')
  assert result.returncode != 0
  assert message in result.stderr
  assert 'Traceback' not in result.stderr


def test_checkpoint_of_another_model_size_is_refused(tmp_path):
  first = launch(*TINY, '--num_epochs=1', f'--workdir={tmp_path}')
  assert first.returncode == 0, first.stderr[-3000:]
  result = launch(*TINY, '--encoder_features=4,8,8,16,32',
                  f'--workdir={tmp_path}')
  assert result.returncode != 0
  assert 'was written for model' in result.stderr
  assert 'Traceback' not in result.stderr


SHARED = REPO.parent / 'shared' / 'data'


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / 'babble').is_dir(),
                    reason=f'shared speech data not found at {SHARED}')
def test_trains_on_a_folder_of_wav_pairs(tmp_path):
  result = launch(*TINY, '--dataset=wav_pairs',
                  f'--data_dir={SHARED / "babble"}', '--num_epochs=1',
                  f'--tfds_data_dir={tmp_path / "tfds"}',
                  f'--workdir={tmp_path / "run"}')
  assert result.returncode == 0, result.stderr[-3000:]
  import soundfile  # pylint: disable=g-import-not-at-top
  frames = soundfile.info(SHARED / 'babble' / 'noisy' / 'speech.wav').frames
  windows = 1 + -(-(frames - 1024) // 512)  # tiny model: 1024-sample windows
  assert f'{windows} training windows' in result.stderr
  assert len(checkpoint_steps(tmp_path / 'run')) == 1


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / 'babble').is_dir(),
                    reason=f'shared speech data not found at {SHARED}')
def test_enhance_and_evaluate_modes(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'run'
  trained = launch(*TINY, '--num_epochs=1', f'--workdir={workdir}')
  assert trained.returncode == 0, trained.stderr[-3000:]
  out = tmp_path / 'enhanced'
  enhanced = launch('--mode=enhance', f'--workdir={workdir}',
                    f'--input={SHARED / "babble" / "noisy"}', f'--output={out}')
  assert enhanced.returncode == 0, enhanced.stderr[-3000:]
  assert (out / 'speech.wav').is_file()
  assert 'Enhanced 1 file(s)' in enhanced.stdout

  evaluated = launch('--mode=evaluate', f'--workdir={workdir}',
                     '--dataset=wav_pairs', f'--data_dir={SHARED / "babble"}',
                     f'--tfds_data_dir={tmp_path / "tfds"}')
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert 'PESQ' in evaluated.stdout and 'Noisy' in evaluated.stdout
  summary = json.loads((workdir / 'evaluation.json').read_text())
  assert {'pesq', 'stoi', 'csig', 'cbak', 'covl', 'ssnr', 'n_files'} <= set(
      summary)

  folders = launch('--mode=evaluate', f'--clean_dir={SHARED / "babble" / "clean"}',
                   f'--enhanced_dir={out}',
                   f'--noisy_dir={SHARED / "babble" / "noisy"}')
  assert folders.returncode == 0, folders.stderr[-3000:]
  assert (tmp_path / 'evaluation.json').is_file()  # beside enhanced/

  missing_step = launch('--mode=enhance', f'--workdir={workdir}',
                        '--checkpoint_step=999', f'--input={out}',
                        f'--output={tmp_path / "x"}')
  assert missing_step.returncode != 0
  assert 'no checkpoint for step 999' in missing_step.stderr
  assert 'Traceback' not in missing_step.stderr
  no_input = launch('--mode=enhance', f'--workdir={workdir}',
                    f'--input={tmp_path / "nothing.wav"}',
                    f'--output={tmp_path / "y"}')
  assert no_input.returncode != 0 and 'no such file' in no_input.stderr
  assert 'Traceback' not in no_input.stderr


def test_flags_take_config_defaults_and_cover_every_field():
  # No flagfile: the Config the flags give is Config() itself, so a default
  # written in config.py is the flag's default.
  result = subprocess.run(
      [sys.executable, '-c', _READ_FLAGFILE.replace(
          "print(json.dumps(", "from segan_jax.config import Config\n"
          "assert config == Config(), (config, Config())\nprint(json.dumps(")],
      cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
