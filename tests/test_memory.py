"""benchmarks.memory: the train step's planned memory against its bound."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks import memory

ROOT = pathlib.Path(__file__).parents[1]

DUMP = """\
allocation 0: size 64, parameter 0, shape |f32[16]| at ShapeIndex {}:
 value: <3 p0 @0> (size=64,offset=0): f32[16]{0}
allocation 1: size 4096, preallocated-temp:
 value: <7 convolution.3 @0> (size=1024,offset=0): f32[4,64]{1,0}
 value: <8 fusion.2 @0> (size=3072,offset=1024): f32[12,64]{1,0}
allocation 2: size 256, output shape is |f32[64]|, maybe-live-out:
 value: <9 add.1 @0> (size=256,offset=0): f32[64]{0}
"""


def test_dump_parsers_name_the_largest_buffers_and_values():
  top = memory.largest_allocations(DUMP, 2)
  assert [a['bytes'] for a in top] == [4096, 256]
  assert top[0]['value'] == 'fusion.2 f32[12,64]{1,0}'
  values = memory.largest_values(DUMP, 2)
  assert values == [{'value': 'fusion.2 f32[12,64]{1,0}', 'bytes': 3072},
                    {'value': 'convolution.3 f32[4,64]{1,0}', 'bytes': 1024}]


@pytest.fixture(scope='module')
def tiny_gpu_report():
  # One compile (about 20 s on 2 cores) for the tests below.
  return memory.report(model_size='tiny', batch_size=4, conv_backend='gpu')


def test_report_has_the_plan_and_the_bound(tiny_gpu_report):
  result = tiny_gpu_report
  for key in ('planned_bytes', 'bound_bytes', 'ratio', 'temp_bytes',
              'activation_bytes', 'states_bytes'):
    assert key in result
  assert result['planned_bytes'] > 0 and result['bound_bytes'] > 0
  # The states are arguments of the step, and its activations temporaries.
  assert result['argument_bytes'] >= result['states_bytes']
  assert result['ratio'] == result['planned_bytes'] / result['bound_bytes']
  assert result['activation_bytes'] >= result['g_activation_bytes']


def test_the_memory_scheduler_is_asked_for_unless_turned_off():
  flag = memory.MEMORY_SCHEDULER_FLAG
  assert memory._xla_flags_for(['m'], '') == flag
  assert memory._xla_flags_for(['m'], '--xla_a=1') == f'--xla_a=1 {flag}'
  assert memory._xla_flags_for(['m'], flag) == flag
  assert memory._xla_flags_for(['m', '--nomemory_scheduler'], '') == ''
  assert memory._xla_flags_for(['m', '--memory_scheduler=false'], 'x') == 'x'


def test_remat_train_step_plans_within_1_5x_the_bound():
  # The paper's depth, kernel and window at 1/8 of its width (the tiny
  # size's 1024-sample windows leave D's 32-window reference batch
  # dominating, at 1.53x): the --remat=conv_outputs plan with XLA:CPU's
  # memory scheduler, as `python -m benchmarks.memory` compiles it (its own
  # process: XLA reads the scheduler flag when its backend starts).
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  command = [sys.executable, '-m', 'benchmarks.memory', '--model_size=demo',
             '--batch_size=16', '--conv_backend=gpu', '--json']
  results = {}
  for remat in ('none', 'conv_outputs'):
    run = subprocess.run(command + [f'--remat={remat}'], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    results[remat] = json.loads(run.stdout.strip().splitlines()[-1])
    assert results[remat]['memory_scheduler'] is True
  assert results['conv_outputs']['ratio'] <= 1.5, results['conv_outputs']
  # What the checkpoint buys: without it the plan is bigger.
  assert (results['none']['planned_bytes'] >
          results['conv_outputs']['planned_bytes'])
