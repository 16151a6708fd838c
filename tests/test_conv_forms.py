"""benchmarks.conv_forms' table and `ConvPolicy`'s use of it."""

import json

import jax
import pytest

from benchmarks import conv_forms
from segan_jax.config import Config
from segan_jax.ops import conv
from segan_jax.ops.conv import policy as policy_lib

# Few layers, short signals: what matters is that every layer is covered.
CONFIG = Config(model_size='tiny', batch_size=2, encoder_features=(4, 8),
                window_size=64, vbn_reference_size=2,
                parallelism='none')
FORMS = ('im2col', 'polyphase')


@pytest.fixture(scope='module')
def measured(tmp_path_factory):
  path = tmp_path_factory.mktemp('forms') / 'table.json'
  # Two forms besides 'xla', for time ('taps' compiles for seconds): both
  # kinds of conv have one.
  summary = conv_forms.measure(CONFIG, repeats=1, output=str(path),
                               forms=FORMS, log=lambda _: None)
  return summary, path


def test_table_covers_every_layer_with_valid_forms_that_agree(measured):
  summary, path = measured
  shapes = conv_forms.layer_shapes(CONFIG)
  kinds = {layer['kind'] for layer in shapes.values()}
  assert kinds == {policy_lib.CONV1D, policy_lib.CONV_TRANSPOSE1D}
  table = json.loads(path.read_text())
  rows = table['device_kinds'][jax.devices()[0].device_kind]
  assert set(rows) == set(shapes) == set(summary['chosen'])
  assert summary['complete']
  for key, row in rows.items():
    valid = policy_lib.valid_forms(shapes[key]['kind'],
                                   shapes[key]['stride'])
    assert row['form'] in valid
    assert set(row['forms']) == {f for f in valid if f in FORMS + ('xla',)}
    for form, result in row['forms'].items():
      assert result['max_rel_error'] < 1e-4, (key, form)
  # The policy reads the file as written.
  assert len(policy_lib.load_forms_table(str(path))) == len(shapes)


def test_table_changes_the_form_the_policy_picks(measured):
  _, path = measured
  kind = jax.devices()[0].device_kind
  shapes = conv_forms.layer_shapes(CONFIG)
  # A table giving every conv1d layer 'taps' (which the rule gives none of
  # these on the CPU at batch 2: im2col below 128 rows, else XLA's forms).
  key, layer = next((k, l) for k, l in shapes.items()
                    if l['kind'] == policy_lib.CONV1D)
  table = ((kind, key, 'taps'),)
  form = lambda policy: conv.conv1d_form(
      layer['x_shape'], layer['kernel_shape'], layer['stride'],
      layer['padding'], policy=policy, dtype=layer['dtype'])
  assert form(conv.ConvPolicy(forms_table=())) != 'taps'
  assert form(conv.ConvPolicy(forms_table=table)) == 'taps'
  # Another device kind's rows, or another layer's, leave the rule.
  assert form(conv.ConvPolicy(forms_table=(('other', key, 'taps'),))) != 'taps'
  # The measured table is hashable policy state, as custom_vjp needs.
  policy = conv.ConvPolicy(
      forms_table=policy_lib.load_forms_table(str(path)))
  assert hash(policy) == hash(dataclasses_copy(policy))
  assert conv.ConvPolicy().forms_table == ()  # No GPU row shipped yet.


def dataclasses_copy(policy):
  import dataclasses  # pylint: disable=g-import-not-at-top
  return dataclasses.replace(policy, forms_table=tuple(policy.forms_table))


@pytest.mark.parametrize('text, problem', [
    (None, 'cannot read'), ('{', 'not JSON'),
    ('{"a": 1}', 'not a conv forms table'),
    ('{"device_kinds": {"cpu": {"conv1d s2": {"form": "polyphase"}}}}',
     'not one of'),
    ('{"device_kinds": {"cpu": {"dense s2": {"form": "xla"}}}}',
     'not a layer key')])
def test_bad_forms_table_is_one_line_naming_the_file(tmp_path, text,
                                                     problem):
  path = tmp_path / 'bad.json'
  if text is not None:
    path.write_text(text)
  with pytest.raises(ValueError, match=problem) as e:
    policy_lib.load_forms_table(str(path))
  assert str(path) in str(e.value) and '\n' not in str(e.value)


def test_missing_forms_table_flag_is_one_line(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  missing = tmp_path / 'missing.json'
  done = subprocess.run(
      [sys.executable, '-m', 'segan_jax', '--mode=report',
       f'--workdir={tmp_path}', f'--conv_forms_table={missing}'],
      capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 2, done.stderr
  assert done.stderr.strip().splitlines()[-1] == (
      f'error: {missing}: cannot read the conv forms table (No such file or '
      'directory)')
