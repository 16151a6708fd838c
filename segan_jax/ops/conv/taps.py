"""The 'taps' form: a short conv or transposed conv as per-tap products.

On SEGAN's shortest layers XLA:CPU's conv is slow and im2col multiplies
much padding; this form computes the products that exist (`taps_plan`) in a
few batched matmuls and adds them where they land.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from segan_jax.ops.conv.prepared import kernel_operand
from segan_jax.ops.conv.taps_plan import kernel_split, tap_groups


def grouped_taps(x: jax.Array, kernel: jax.Array, stride: int, offset: int,
                 out_length: int, transpose: bool, max_groups: int
                 ) -> jax.Array:
  """Strided conv (offset = left padding) or 'SAME' transposed conv (offset
  = its padding) of ``out_length`` samples, as per-tap products.

  Every product needed, few that are not (`tap_groups`, at most
  ``max_groups`` matmuls): one batched matmul per group of taps, reading the
  kernel in its stored ``[K, Cin, Cout]`` layout, then one matmul against a
  constant 0/1 matrix adds each product where it lands (exact; one op where
  per-tap adds were K loops in XLA:CPU). Plain JAX: its gradients are the
  same forms transposed.

  The kernel's split into the groups' taps is a copy of the whole kernel in
  XLA; `segan_jax.models.prepare_inference` makes it once
  (`prepared.kernel_operand`).
  """
  batch, length, cin = x.shape
  kernel_size, _, features = kernel.shape
  groups = tap_groups(kernel_size, stride, length, offset, out_length,
                      transpose, max_groups)
  if not groups:
    return jnp.zeros((batch, out_length, features), x.dtype)
  # Rows of the products: input samples, time-major. A conv's windows may
  # reach into its padding (zero samples there give zero products), so x is
  # padded as the conv pads it; a transposed conv reads inputs only.
  if transpose:
    lo = hi = 0
  else:
    lo = max(0, offset)
    hi = max(0, stride * (out_length - 1) + kernel_size - 1 - offset -
             (length - 1))
  xt = jnp.pad(x, ((0, 0), (lo, hi), (0, 0))).transpose(1, 0, 2)
  # One split of the kernel into the groups' taps (and unused taps between
  # them): its gradient is one concatenation, where per-group slices would
  # give a zero-padded copy of the whole kernel per group, summed.
  sizes = kernel_split(kernel_size, stride, length, offset, out_length,
                       transpose, max_groups)
  pieces = dict(zip(np.cumsum((0,) + sizes[:-1]).tolist(),
                    lax.split(kernel, sizes, axis=0)))
  step = 1 if transpose else stride
  products, landing = [], []
  for first, end, n, starts in groups:
    rows = []
    for k, start in zip(range(first, end), starts):
      # Tap k's run: n consecutive inputs (transposed) or outputs (conv).
      run = np.arange(start, start + n)
      if transpose:
        first_row, landing_k = start, stride * run + offset - k
      else:
        first_row, landing_k = stride * start + k - offset, run
      rows.append(lax.slice_in_dim(xt, lo + first_row,
                                   lo + first_row + step * (n - 1) + 1, step,
                                   0))
      landing.append(landing_k)
    rows = jnp.stack(rows).reshape(end - first, n * batch, cin)
    group_products = lax.dot_general(rows,
                                     kernel_operand('taps', pieces[first]),
                                     (((2,), (1,)), ((0,), (0,))))
    products.append(group_products.reshape((end - first) * n,
                                           batch * features))
  landing = np.concatenate(landing)
  overlap_add = np.zeros((out_length, landing.size), np.float32)
  inside = (landing >= 0) & (landing < out_length)
  overlap_add[landing[inside], np.flatnonzero(inside)] = 1.0
  products = jnp.concatenate(products, axis=0)
  y = lax.dot_general(jnp.asarray(overlap_add, products.dtype), products,
                      (((1,), (0,)), ((), ())),
                      precision=lax.Precision.HIGHEST)
  return y.reshape(out_length, batch, features).transpose(1, 0, 2)
