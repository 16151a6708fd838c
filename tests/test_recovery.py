"""What real runs meet (issue 9): kill -9 and SIGTERM mid-epoch, unreadable
checkpoints, NaN losses, and two processes training as one.

The end-to-end tests run launch.py in subprocesses, as a user (or a cluster
scheduler) does, and compare the parameter fingerprint every run prints at
the end with the one of an uninterrupted run of the same command.
"""

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from test_launch import REPO, TINY, checkpoint_steps, launch

# Three epochs of 34 steps (4 synthetic utterances, batch 8), a checkpoint
# after each, metrics every step so the test can tell where the run is.
RUN = TINY + ['--dataset_size=4', '--num_epochs=3', '--log_every_steps=1']
STEPS_PER_EPOCH = 34
# Where in epoch 2 the kill and the SIGTERM land: a fresh draw each session
# (every point must survive), shown in the failure message if one does not.
KILL_STEP = random.Random().randint(STEPS_PER_EPOCH + 1, STEPS_PER_EPOCH + 12)


def fingerprint(stdout):
  match = re.search(r'parameters:\s+sha256 (\w+)', stdout)
  assert match, stdout
  return match.group(1)


def last_logged_step(workdir):
  try:
    lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  except FileNotFoundError:
    return 0
  return int(re.match(r'{"step": (\d+)', lines[-1]).group(1)) if lines else 0


def start(workdir):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  return subprocess.Popen(
      [sys.executable, 'launch.py', *RUN, f'--workdir={workdir}'], cwd=REPO,
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start_and_wait_for_step(workdir, step):
  """A run of RUN in a subprocess, once it has logged ``step`` and the
  checkpoint of epoch 1 is complete (Orbax writes it in the background
  while training goes on; a kill before it commits leaves no checkpoint)."""
  process = start(workdir)
  wait_for_step(process, workdir, step)
  wait_until(process, lambda: STEPS_PER_EPOCH in checkpoint_steps(workdir))
  return process


def wait_until(process, condition):
  deadline = time.monotonic() + 300
  while not condition():
    assert process.poll() is None, process.communicate()
    assert time.monotonic() < deadline
    time.sleep(0.005)


def wait_for_step(process, workdir, step):
  wait_until(process, lambda: last_logged_step(workdir) >= step)


def assert_relaunch_resumes_bit_identically(workdir, step, uninterrupted):
  """The same command again resumes from ``step`` and ends with the
  uninterrupted run's parameters, bit for bit."""
  again = launch(*RUN, f'--workdir={workdir}')
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'Traceback' not in again.stderr
  assert f'Resumed from {workdir}/checkpoints/{step}' in again.stderr
  assert fingerprint(again.stdout) == uninterrupted[1]
  return again


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('uninterrupted')
  result = launch(*RUN, f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert checkpoint_steps(workdir) == [34, 68, 102]
  return workdir, fingerprint(result.stdout)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_relaunch_is_bit_identical(uninterrupted,
                                                          tmp_path):
  workdir = tmp_path / 'run'
  process = start_and_wait_for_step(workdir, KILL_STEP)
  # Frozen first, so the kill point read here is where it really dies.
  process.send_signal(signal.SIGSTOP)
  killed_at = last_logged_step(workdir)
  process.kill()
  process.communicate()
  assert STEPS_PER_EPOCH < killed_at < 2 * STEPS_PER_EPOCH, (  # in epoch 2
      KILL_STEP, killed_at)
  assert checkpoint_steps(workdir) == [STEPS_PER_EPOCH]
  assert_relaunch_resumes_bit_identically(workdir, STEPS_PER_EPOCH,
                                          uninterrupted)


@pytest.mark.slow
def test_sigterm_saves_at_the_next_step_and_relaunch_continues(uninterrupted,
                                                               tmp_path):
  workdir = tmp_path / 'run'
  process = start_and_wait_for_step(workdir, KILL_STEP)
  process.send_signal(signal.SIGTERM)
  stdout, stderr = process.communicate(timeout=300)
  assert process.returncode == 0, stderr[-3000:]
  assert 'Traceback' not in stderr
  assert 'Preempted: saved a checkpoint at step' in stdout
  saved = checkpoint_steps(workdir)[-1]
  assert STEPS_PER_EPOCH < saved < 2 * STEPS_PER_EPOCH, (  # mid-epoch
      KILL_STEP, saved)
  assert_relaunch_resumes_bit_identically(workdir, saved, uninterrupted)


@pytest.mark.slow
def test_unreadable_newest_checkpoint_falls_back_to_the_one_before(
    uninterrupted, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(uninterrupted[0], workdir)
  # The newest checkpoint's array data cut short, as by a full disk.
  newest = workdir / 'checkpoints' / '102'
  data_files = [p for p in (newest / 'state').rglob('*')
                if p.is_file() and p.stat().st_size > 1000]
  assert data_files
  for path in data_files:
    with open(path, 'r+b') as f:
      f.truncate(path.stat().st_size // 2)
  # And a save that a kill interrupted: Orbax's temporary folder.
  (workdir / 'checkpoints' / '136.orbax-checkpoint-tmp-1').mkdir()
  # Enhancing only reads: it uses the newest readable checkpoint, touches
  # nothing, and names the damage when asked for that step.
  from segan_jax import checkpoints, generators  # pylint: disable=g-import-not-at-top
  assert generators.restore_generator(str(workdir)).step == 68
  assert newest.is_dir()
  with pytest.raises(checkpoints.CheckpointError,
                     match=r'checkpoint \S+/102 is unreadable: '):
    generators.restore_generator(str(workdir), 102)
  again = assert_relaunch_resumes_bit_identically(workdir, 68, uninterrupted)
  assert re.search(r'checkpoint \S+/102 is unreadable: .*; moved it to',
                   again.stderr)
  # Kept for inspection, never deleted; step 102 is written again.
  assert (workdir / 'checkpoints_unreadable' / '102').is_dir()
  assert checkpoint_steps(workdir) == [34, 68, 102]


def nan_batches_at(monkeypatch, bad_step):
  """Makes the input pipeline feed NaN noisy audio at ``bad_step`` (1-based)."""
  from segan_jax import train  # pylint: disable=g-import-not-at-top
  real_batches = train.input_pipeline.batches

  def batches(data, schedule, start_step, end_step, **kwargs):
    for step, batch in enumerate(
        real_batches(data, schedule, start_step, end_step, **kwargs),
        start_step + 1):
      if step == bad_step:
        batch = dict(batch, noisy=np.full_like(batch['noisy'], np.nan))
      yield batch

  monkeypatch.setattr(train.input_pipeline, 'batches', batches)


def test_nan_loss_stops_naming_the_step_and_keeps_good_checkpoints(
    tiny_config, tmp_path, monkeypatch):
  from segan_jax import checkpoints, train  # pylint: disable=g-import-not-at-top
  config = tiny_config.replace(log_every_steps=1000)  # sync only at the end
  first = train.train_and_evaluate(config.replace(num_epochs=1), tmp_path)
  per_epoch = first['step']
  bad_step = per_epoch + 2
  nan_batches_at(monkeypatch, bad_step)
  with pytest.raises(FloatingPointError, match=(
      rf'diverged at step {bad_step}: .*g_l1.* the last good checkpoint is '
      rf'\S+/{per_epoch}')):
    train.train_and_evaluate(config.replace(num_epochs=3), tmp_path)
  # The divergence is caught before the end-of-epoch save.
  assert checkpoints.Checkpointer(str(tmp_path)).all_steps() == [per_epoch]


def test_nan_policy_skip_step_drops_only_the_bad_update(tiny_config, tmp_path,
                                                        monkeypatch):
  from segan_jax import train  # pylint: disable=g-import-not-at-top
  config = tiny_config.replace(num_epochs=1, nan_policy='skip_step',
                               log_every_steps=1)
  nan_batches_at(monkeypatch, 3)
  result = train.train_and_evaluate(config, tmp_path)
  skipped = [h['step'] for h in result['history'] if h.get('skipped')]
  assert skipped == [3]
  assert all(np.isfinite(leaf).all() for state in result['states'].values()
             for leaf in jax_leaves(state.params))
  assert int(result['states']['g'].step) == result['step'] - 1


def test_sigterm_while_the_data_loads_stops_after_one_step_with_a_checkpoint(
    tiny_config, tmp_path, monkeypatch):
  # A preempted VM or a `timeout` can signal before the first step has
  # compiled; the run must still leave a checkpoint, not die with none.
  from segan_jax import checkpoints, train  # pylint: disable=g-import-not-at-top
  load = train.input_pipeline.load_train_windows

  def load_then_signal(config):
    windows = load(config)
    os.kill(os.getpid(), signal.SIGTERM)
    return windows

  monkeypatch.setattr(train.input_pipeline, 'load_train_windows',
                      load_then_signal)
  # Were the watcher late, this handler (not death) would get the signal.
  late = []
  handler = lambda *_: late.append(1)  # pylint: disable=unnecessary-lambda-assignment
  previous = signal.signal(signal.SIGTERM, handler)
  try:
    result = train.train_and_evaluate(tiny_config.replace(num_epochs=3),
                                      tmp_path)
    restored = signal.getsignal(signal.SIGTERM)
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert not late
  assert result['preempted'] and result['step'] == 1
  assert checkpoints.Checkpointer(str(tmp_path)).all_steps() == [1]
  # The run hands the handler it found back.
  assert restored is handler


def jax_leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.leaves(tree)


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_as_one_and_stop_together(tmp_path):
  """Two local processes, one CPU device each, joined by launch.py's
  --coordinator_address flags (gloo collectives) into one run of 2 devices.
  A SIGTERM to one of them stops both at the same step, with one checkpoint.
  """
  workdir = tmp_path / 'run'
  address = f'localhost:{free_port()}'
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  processes = [subprocess.Popen(
      [sys.executable, 'launch.py', *RUN, f'--workdir={workdir}',
       # Process 0 validates alone at the checkpoint of epoch 1.
       '--validation_files=1',
       f'--coordinator_address={address}', '--num_processes=2',
       f'--process_id={i}'], cwd=REPO, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  wait_for_step(processes[1], workdir, STEPS_PER_EPOCH + 6)
  processes[1].send_signal(signal.SIGTERM)
  outputs = [p.communicate(timeout=300) for p in processes]
  for process, (stdout, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-3000:]
    assert 'Preempted: saved a checkpoint at step' in stdout
  assert 'parallelism=pmap on 2 device(s)' in outputs[0][1]
  assert (workdir / 'validation' / f'step_{STEPS_PER_EPOCH}.json').is_file()
  # Both processes end with the same parameters, and wrote one checkpoint
  # per save: the first epoch's and the preemption's, mid-epoch 2.
  assert '(process 0)' in outputs[0][0] and '(process 1)' in outputs[1][0]
  assert fingerprint(outputs[0][0]) == fingerprint(outputs[1][0])
  steps = checkpoint_steps(workdir)
  assert len(steps) == 2 and steps[0] == STEPS_PER_EPOCH, steps
  assert STEPS_PER_EPOCH < steps[1] < 2 * STEPS_PER_EPOCH
  assert len(list((workdir / 'checkpoints').iterdir())) == 2
