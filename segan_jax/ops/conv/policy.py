"""Which conv form computes which layer, on which backend: `ConvPolicy`.

Every form in this package gives the same numbers as lax's convolution (to
float rounding) with the same ``[K, Cin, Cout]`` kernels; they differ only in
speed and compile time, which depend on the layer's shape and the backend.
`ConvPolicy` is the one place that decides, and holds the tuning constants.

The forms (see `conv1d` and `conv_transpose1d`):

- 'xla': lax's convolution as is, forward and gradient.
- 'im2col' (conv): strided slices and one matmul.
- 'taps': a few batched matmuls over groups of kernel taps, computing only
  the products that touch the signal (`taps_plan`), added where they land.
- 'phases' (strided conv): evaluated alone, one stride-1 conv over the
  input's phases; under differentiation XLA's strided conv forward with the
  phase form's gradient (whose convs are all stride 1).
- 'xla_phase_grad' (strided conv): XLA's strided conv forward, alone and
  differentiated, with the phase form's gradient.
- 'polyphase' (transposed conv): one stride-1 conv over the undilated input
  whose output channels hold the output's phases.

The stride-1 convs of 'phases' and 'polyphase' are XLA's, or evaluated
alone the Karatsuba form (long, big convs) or the channels-first form (few
output channels).

Why these choices, per backend:

- CPU (XLA:CPU): its convolution, and above all its input gradient, leaves
  its fast path on short signals (SEGAN's 8-32-sample layers), so those
  layers take matmul forms ('im2col', 'taps'); the gradient of a strided
  conv is a zero-dilated conv, slower than the stride-1 convs of the phase
  form's gradient ('phases'); and its stride-1 conv runs the Karatsuba
  halves at the full conv's rate, so fewer multiplies are less time.
- GPU and TPU: XLA's convolutions (cuDNN on GPU) are fast on every shape,
  while the CPU forms' many small ops cost compilation time there. What is
  slow in lax's convolutions is XLA's gradient of the strided convs, so
  these backends take XLA's conv forward ('xla', 'xla_phase_grad') and, for
  strided convs, the phase form's gradient.
- Any other backend: as GPU and TPU (lax's conv is the portable choice).

Measured figures behind the constants: BENCHMARKS.md, "Why each conv form
exists".

Per layer, by measurement: ``forms_table`` maps (device kind, layer) to a
form, as ``python -m benchmarks.conv_forms`` measured it (the fastest form
of that layer whose compile time is within a budget). A layer it names on
the device kind that traces the conv takes that form; any other layer, or
any other device kind, takes the rule above. The package ships its table in
``gpu_forms.json`` (`SHIPPED_FORMS_TABLE`, read by ``ConvPolicy()``);
`load_forms_table` reads a measured one (``--conv_forms_table=PATH``).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import json
import os
from typing import Iterator

import jax
import jax.numpy as jnp

CPU = 'cpu'
# The forms of each kind of conv (`conv1d`, `conv_transpose1d`); strided-only
# forms are valid only for a stride above 1 (`valid_forms`).
CONV1D_FORMS = ('xla', 'im2col', 'phases', 'xla_phase_grad', 'taps')
CONV_TRANSPOSE1D_FORMS = ('xla', 'im2col', 'polyphase', 'taps')
STRIDED_ONLY_FORMS = ('phases', 'xla_phase_grad')
CONV1D, CONV_TRANSPOSE1D = 'conv1d', 'conv_transpose1d'
# The table shipped in the package: no device kind measured yet (its GPU
# rows wait for a lent GPU; docs/speed.md).
SHIPPED_FORMS_TABLE = os.path.join(os.path.dirname(__file__),
                                   'gpu_forms.json')
# A table's rows: (device kind, `layer_key`, form), sorted; hashable, as the
# policy must be.
FormsTable = tuple[tuple[str, str, str], ...]


def layer_key(kind: str, batch: int, in_length: int, in_features: int,
              out_features: int, kernel_size: int, stride: int,
              padding: tuple[int, int] | None, dtype) -> str:
  """The name of one layer shape in a forms table, e.g. ``'conv1d b64 l16384
  c1-16 k31 s2 p14,15 float32'`` (``padding``: conv1d's; None for a
  transposed conv, always 'SAME')."""
  pad = '' if padding is None else f' p{padding[0]},{padding[1]}'
  return (f'{kind} b{batch} l{in_length} c{in_features}-{out_features} '
          f'k{kernel_size} s{stride}{pad} {jnp.dtype(dtype).name}')


def valid_forms(kind: str, stride: int) -> tuple[str, ...]:
  """The forms that compute a ``kind`` conv of this stride."""
  if kind == CONV_TRANSPOSE1D:
    return CONV_TRANSPOSE1D_FORMS
  return tuple(f for f in CONV1D_FORMS
               if stride > 1 or f not in STRIDED_ONLY_FORMS)


def parse_forms_table(table, source: str) -> FormsTable:
  """The rows of a forms table read from JSON (``{'device_kinds': {KIND:
  {LAYER_KEY: {'form': FORM, ...}}}}``; other keys, such as the measured
  times, are kept for people); ValueError naming ``source`` and the problem
  when it is not one."""
  kinds = table.get('device_kinds') if isinstance(table, dict) else None
  if not isinstance(kinds, dict):
    raise ValueError(f"{source}: not a conv forms table (no 'device_kinds' "
                     'object; python -m benchmarks.conv_forms writes one)')
  rows = []
  for device_kind, layers in kinds.items():
    if not isinstance(layers, dict):
      raise ValueError(f'{source}: device kind {device_kind!r} is not an '
                       'object of layers')
    for key, entry in layers.items():
      form = entry.get('form') if isinstance(entry, dict) else None
      parts = key.split()
      if (len(parts) < 2 or parts[0] not in (CONV1D, CONV_TRANSPOSE1D) or
          not [p for p in parts if p.startswith('s') and p[1:].isdigit()]):
        raise ValueError(f'{source}: {key!r} is not a layer key such as '
                         "'conv1d b64 l16384 c1-16 k31 s2 p14,15 float32'")
      stride = int([p for p in parts if p.startswith('s') and
                    p[1:].isdigit()][0][1:])
      if form not in valid_forms(parts[0], stride):
        raise ValueError(f'{source}: layer {key!r} has form {form!r}, not '
                         f'one of {valid_forms(parts[0], stride)}')
      rows.append((device_kind, key, form))
  return tuple(sorted(rows))


@functools.lru_cache(maxsize=None)
def load_forms_table(path: str) -> FormsTable:
  """The rows of the forms table in the JSON file ``path``; ValueError (one
  line naming the file) when it is missing or is not a table."""
  try:
    with open(path) as f:
      table = json.load(f)
  except OSError as e:
    raise ValueError(f'{path}: cannot read the conv forms table '
                     f'({e.strerror})') from None
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}: not JSON ({e.msg}, line {e.lineno})') from None
  return parse_forms_table(table, path)


def _shipped_table() -> FormsTable:
  return load_forms_table(SHIPPED_FORMS_TABLE)


@dataclasses.dataclass(frozen=True)
class ConvPolicy:
  """Which form computes each conv, and the constants of those forms.

  Frozen and hashable: it is a static argument of the convs (and of their
  ``custom_vjp``s), and a field of the Flax conv modules.

  ``backend``: 'cpu' (the tuned forms), 'gpu', 'tpu'; None reads
  ``jax.default_backend()`` when a conv is traced. ``xla_only``: lax's
  convolution everywhere, forward and gradient (``python -m
  benchmarks.throughput --layers_impl=xla``, the reference the other
  forms are checked and timed against). ``forms_table``: forms measured per
  device kind and layer (`load_forms_table`), before the rule; by default
  the package's (`SHIPPED_FORMS_TABLE`). The other fields tune the CPU
  forms.
  """

  backend: str | None = None
  xla_only: bool = False
  forms_table: FormsTable = dataclasses.field(default_factory=_shipped_table)
  # Conv1D up to this many output samples: a matmul form (XLA:CPU's conv
  # and its gradient are slow on short signals); above, XLA's conv (with
  # the phase form's gradient when strided).
  im2col_max_out_length: int = 16
  # Those short Conv1Ds: 'taps' from this many output rows (batch x length)
  # on, where im2col's patches are 25-50 % padding; below, im2col's one big
  # matmul beats several small ones.
  taps_min_rows: int = 128
  # ConvTranspose1D up to this many input samples: 'taps' (XLA's conv is
  # slow there and the kernels are big); above, 'polyphase'.
  taps_max_in_length: int = 32
  # At most this many batched matmuls per 'taps' layer (`taps_plan`).
  tap_groups: int = 12
  # Long, big stride-1 convs run as three half-size convs (Karatsuba),
  # recursively: only from this many output samples (shorter halves leave
  # XLA:CPU's fast conv path) and multiply-adds (below, the extra
  # element-wise passes and compile time outweigh the saved quarter);
  # evaluated alone `karatsuba_levels` deep, differentiated
  # `karatsuba_train_levels` deep (the train step gained nothing
  # measurable, for more compilation).
  karatsuba_min_out_length: int = 64
  karatsuba_min_macs: int = 2**22
  karatsuba_levels: int = 2
  karatsuba_train_levels: int = 0
  # Evaluated alone, float32 stride-1 convs with at most this many output
  # channels (SEGAN's last decoder layer: 1 channel, 2 phases) contract the
  # input channels first; not differentiated (the train step was slower).
  channels_first_max_features: int = 2
  # A batch dimension left symbolic (jax.export of G for any batch) decides
  # the forms as this many examples: what enhance batches by default.
  symbolic_batch: int = 8

  def decision_batch(self, batch) -> int:
    """The batch size the forms are chosen by: ``batch``, or for a symbolic
    one `symbolic_batch` (the forms are exact for every batch; only their
    speed depends on it)."""
    return batch if isinstance(batch, int) else self.symbolic_batch

  def resolved(self) -> ConvPolicy:
    """This policy with its backend filled in (``jax.default_backend()``)."""
    if self.backend is not None:
      return self
    return dataclasses.replace(self, backend=jax.default_backend())

  def _tuned(self) -> bool:
    """Whether the CPU-tuned forms apply (else XLA's conv forward)."""
    return (self.backend or jax.default_backend()) == CPU

  def measured_form(self, layer: str | None) -> str | None:
    """The form ``forms_table`` gives ``layer`` (a `layer_key`) on the
    device kind of ``jax.devices()[0]``, or None."""
    if layer is None or not self.forms_table:
      return None
    return _table_lookup(self.forms_table).get(
        (jax.devices()[0].device_kind, layer))

  def conv1d_form(self, batch: int, out_length: int, stride: int,
                  layer: str | None = None) -> str:
    """The form of a conv with ``batch * out_length`` output rows
    (``layer``: its `layer_key`, for ``forms_table``)."""
    if self.xla_only:
      return 'xla'
    measured = self.measured_form(layer)
    if measured is not None:
      return measured
    if not self._tuned():
      return 'xla_phase_grad' if stride > 1 else 'xla'
    if out_length > self.im2col_max_out_length:
      return 'phases' if stride > 1 else 'xla'
    if self.decision_batch(batch) * out_length >= self.taps_min_rows:
      return 'taps'
    return 'im2col'

  def conv_transpose1d_form(self, in_length: int,
                            layer: str | None = None) -> str:
    """The form of a transposed conv of ``in_length`` input samples
    (``layer`` as in `conv1d_form`)."""
    if self.xla_only:
      return 'xla'
    measured = self.measured_form(layer)
    if measured is not None:
      return measured
    if not self._tuned():
      return 'xla'
    return 'taps' if in_length <= self.taps_max_in_length else 'polyphase'


@functools.lru_cache(maxsize=64)
def _table_lookup(table: FormsTable) -> dict[tuple[str, str], str]:
  return {(kind, key): form for kind, key, form in table}


def policy_with_table(path: str | None) -> ConvPolicy:
  """``ConvPolicy()``, with the forms table in ``path`` (if any) over the
  package's: its rows replace those of the same device kind and layer."""
  policy = ConvPolicy()
  if not path:
    return policy
  rows = {(kind, key): form for kind, key, form in policy.forms_table}
  rows.update({(kind, key): form
               for kind, key, form in load_forms_table(path)})
  return dataclasses.replace(policy, forms_table=tuple(sorted(
      (kind, key, form) for (kind, key), form in rows.items())))


_installed: contextvars.ContextVar[ConvPolicy] = contextvars.ContextVar(
    'segan_jax_conv_policy', default=ConvPolicy())


def current_policy() -> ConvPolicy:
  """The policy of convs given none: the innermost `use_policy`'s, else
  ``ConvPolicy()``."""
  return _installed.get()


@contextlib.contextmanager
def use_policy(policy: ConvPolicy) -> Iterator[ConvPolicy]:
  """Convs traced inside the ``with`` block and given no policy use ``policy``.

  For code that builds its models elsewhere (the benchmark around the train
  step). It applies when a function is traced: a jitted function traced
  before keeps its forms, as jit's cache does not know the policy.
  """
  token = _installed.set(policy)
  try:
    yield policy
  finally:
    _installed.reset(token)
