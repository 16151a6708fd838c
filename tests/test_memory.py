"""benchmarks.memory: the train step's planned memory against its bound."""

import pytest

from benchmarks import memory

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


@pytest.mark.xfail(strict=True, reason='issue 44: the GPU policy plans '
                   '2.1x the bound at tiny size (2.45x at paper size batch '
                   '400); strict, so that reaching 1.5x shows here')
def test_gpu_policy_train_step_plans_within_1_5x_the_bound(tiny_gpu_report):
  assert tiny_gpu_report['ratio'] <= 1.5, tiny_gpu_report
