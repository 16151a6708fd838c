"""The plan of the 'taps' form: which products a short conv needs, grouped.

Pure Python on shapes (cached): no arrays.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def tap_groups(kernel_size: int, stride: int, length: int, offset: int,
               out_length: int, transpose: bool, max_groups: int):
  """Which products a strided (transposed) conv needs, in at most
  ``max_groups`` groups of contiguous taps.

  Tap k pairs input sample i with output sample u: ``i = stride * u + k -
  offset`` for a conv (offset = left padding), ``u = stride * i + offset - k``
  for a transposed conv (offset = its 'SAME' padding). On short signals many
  pairs fall outside the signal (half of them for SEGAN's 8-sample layers),
  and im2col or a matmul over all taps multiplies those by zero. Per tap the
  pairs that exist form one run of consecutive outputs (conv) or inputs
  (transposed conv); contiguous taps are grouped, each group one batched
  matmul over runs of its longest run's length (the grouping that computes
  the fewest products, by dynamic programming).

  Returns the groups, each ``(first_tap, end_tap, n, starts)``: taps
  ``first_tap:end_tap`` each take ``n`` consecutive outputs (conv) or inputs
  (transposed) from its entry of ``starts``.
  """
  runs = []
  for k in range(kernel_size):
    if transpose:
      valid = [i for i in range(length)
               if 0 <= stride * i + offset - k < out_length]
    else:
      valid = [u for u in range(out_length)
               if 0 <= stride * u + k - offset < length]
    runs.append((valid[0], len(valid)) if valid else (0, 0))
  counts = [n for _, n in runs]
  span = length if transpose else out_length

  @functools.lru_cache(maxsize=None)
  def best(first: int, groups_left: int):
    """(products, groups) of the cheapest split of taps[first:]."""
    if first == kernel_size:
      return 0, ()
    if groups_left == 0:
      return float('inf'), ()
    choice = (float('inf'), ())
    for end in range(first + 1, kernel_size + 1):
      n = max(counts[first:end])
      cost, rest = best(end, groups_left - 1)
      cost += (end - first) * n
      if cost < choice[0]:
        starts = tuple(min(runs[k][0], span - n) for k in range(first, end))
        choice = (cost, ((first, end, n, starts),) + rest)
    return choice

  return tuple(g for g in best(0, max_groups)[1] if g[2] > 0)


def kernel_split(kernel_size: int, stride: int, length: int, offset: int,
                 out_length: int, transpose: bool,
                 max_groups: int) -> tuple[int, ...]:
  """Taps per piece of the kernel (groups, and unused taps between them)."""
  groups = tap_groups(kernel_size, stride, length, offset, out_length,
                      transpose, max_groups)
  bounds = sorted({0, kernel_size} | {g[0] for g in groups} |
                  {g[1] for g in groups})
  return tuple(b - a for a, b in zip(bounds[:-1], bounds[1:]))
