"""Kernel operands made once for inference instead of on every call.

Most forms re-lay the kernel out before their products read it: the phase
and polyphase kernels, Karatsuba's half kernels and their sums, the
channels-first matrix, the 'taps' pieces. In training that is part of the
step (the gradient flows back through it); applied with fixed parameters it
is the same work on every batch, a pass or more over every kernel.

Each form hands the kernel operand its products read to `kernel_operand`.
Outside `record` and `replay` that is the operand itself. `record` collects
the operands of one conv; `replay` hands the collected ones back in their
place, so the program computes none of the re-layouts (XLA removes the code
that made them, now unused). `segan_jax.models.prepare_inference` records
them per layer.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
from typing import Any, Callable, Iterator

import jax

_hook: contextvars.ContextVar[Callable[[str, jax.Array], jax.Array] | None] = (
    contextvars.ContextVar('segan_jax_kernel_operand_hook', default=None))


class _Recorder:
  """Collects ``(tag, operand)`` in call order; the layer's own kernel is
  noted, not copied."""

  def __init__(self, kernel: jax.Array):
    self.kernel = kernel
    self.entries: list[tuple[str, jax.Array | None]] = []

  def __call__(self, tag: str, operand: jax.Array) -> jax.Array:
    self.entries.append((tag, None if operand is self.kernel else operand))
    return operand


def _key(index: int, tag: str) -> str:
  return f'{index:02d}_{tag}'


def kernel_operand(tag: str, operand: jax.Array) -> jax.Array:
  """The operand a form's products read, derived from the layer's kernel
  alone; under `replay`, the one recorded for this call. ``tag`` names
  the form (it keys the stored operand)."""
  hook = _hook.get()
  return operand if hook is None else hook(tag, operand)


def active() -> bool:
  """Whether kernel operands are being recorded or replayed: inference
  only, where the forms skip their custom gradients (a ``custom_vjp`` traces
  its function apart, and operands made or read there would leave that
  trace)."""
  return _hook.get() is not None


@contextlib.contextmanager
def _hooked(hook) -> Iterator[None]:
  token = _hook.set(hook)
  try:
    yield
  finally:
    _hook.reset(token)


def record(convolve: Callable[[jax.Array, jax.Array], jax.Array],
           x: jax.Array, kernel: jax.Array
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """``(convolve(x, kernel), its kernel operands)``, keyed by call order
  and form (the layer's kernel itself, when a form reads it as it is, is
  left out)."""
  recorder = _Recorder(kernel)
  with _hooked(recorder):
    y = convolve(x, kernel)
  return y, {_key(i, tag): operand
             for i, (tag, operand) in enumerate(recorder.entries)
             if operand is not None}


def replay(convolve: Callable[[jax.Array, jax.Array], jax.Array],
           x: jax.Array, kernel: jax.Array,
           operands: dict[str, Any]) -> jax.Array | None:
  """``convolve(x, kernel)`` reading ``operands`` (from `record`) in place
  of the re-laid-out kernels, or None when they were recorded for another
  computation (another input shape may pick other forms): the caller then
  computes the conv as usual.

  Whether they fit is decided on shapes alone, by tracing `record`
  abstractly once more (no FLOPs): the forms, and so the order of their
  operands, are a function of the shapes and the policy. A call whose key
  is not stored read the layer's kernel itself.
  """
  shapes = lambda tree: {key: (value.shape, value.dtype)
                         for key, value in tree.items()}
  expected = jax.eval_shape(lambda x, kernel: record(convolve, x, kernel)[1],
                            x, kernel)
  if shapes(operands) != shapes(expected):
    return None
  calls = itertools.count()

  def replayed(tag, operand):
    del operand  # Its computation is left unused, and XLA removes it.
    return operands.get(_key(next(calls), tag), kernel)

  with _hooked(replayed):
    return convolve(x, kernel)
