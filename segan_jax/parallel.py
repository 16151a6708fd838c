"""Data parallelism: one device, ``pmap`` replicas, or ``jit`` over a device mesh.

All three run the same pure step function on the same global batch and give
the same parameters to float tolerance. The step function takes an
``axis_name`` keyword: under ``pmap`` it is the mapped axis (gradients are
averaged with ``lax.pmean``); otherwise it is None and the step sees the whole
global batch (under ``jit`` + ``NamedSharding`` XLA inserts the reductions).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import jax
import numpy as np
from flax import jax_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

PMAP_AXIS = 'batch'
MESH_AXIS = 'data'


def _cluster_detected() -> bool:
  """A multi-host environment that ``jax.distributed.initialize()`` reads."""
  env = os.environ
  return (',' in env.get('TPU_WORKER_HOSTNAMES', '')
          or int(env.get('SLURM_NTASKS', '1')) > 1
          or int(env.get('OMPI_COMM_WORLD_SIZE', '1')) > 1)


def initialize_distributed(mode: str = 'auto',
                           coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
  """Joins the processes of a multi-host run; returns whether it did.

  Must run before anything touches a JAX backend. With an explicit
  coordinator the three values come from flags; otherwise (Cloud TPU pods,
  SLURM, Open MPI) JAX reads them from the environment. On CPU-only hosts the
  cross-process collectives go through gloo.
  """
  if mode == 'off' or (mode == 'auto' and not coordinator_address
                       and not _cluster_detected()):
    return False
  if coordinator_address and (num_processes is None or process_id is None):
    raise ValueError('--coordinator_address needs --num_processes and '
                     '--process_id')
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes,
                             process_id=process_id)
  return True


def resolve(parallelism: str, num_devices: int | None = None) -> str:
  """'auto' means pmap on several devices (the issue's default), else none."""
  if parallelism == 'none' and jax.process_count() > 1:
    raise ValueError(f'parallelism=none trains on one device, but this run '
                     f'has {jax.process_count()} processes; use auto, pmap or '
                     'sharding')
  if parallelism != 'auto':
    return parallelism
  num_devices = jax.device_count() if num_devices is None else num_devices
  return 'pmap' if num_devices > 1 else 'none'


class Strategy:
  """Places states and batches on devices and compiles the step for them."""

  name = 'none'

  def __init__(self, global_batch_size: int):
    count = self.num_devices
    if global_batch_size % count:
      raise ValueError(f'batch_size {global_batch_size} is not divisible by the '
                       f'{count} devices of parallelism={self.name}')
    if global_batch_size % self.num_processes:
      raise ValueError(f'batch_size {global_batch_size} is not divisible by the '
                       f'{self.num_processes} processes')
    self.global_batch_size = global_batch_size

  @property
  def num_devices(self) -> int:
    return 1

  @property
  def num_processes(self) -> int:
    """Processes that feed this strategy's devices (1: this one alone)."""
    return 1

  @property
  def local_batch_size(self) -> int:
    """Examples this process feeds per step."""
    return self.global_batch_size // self.num_processes

  def compile(self, step_fn: Callable[..., Any]) -> Callable[..., Any]:
    """step_fn(states, batch, rng, *, axis_name) -> (states, metrics)."""
    return jax.jit(functools.partial(step_fn, axis_name=None),
                   donate_argnums=(0,))

  def put_state(self, tree: Any) -> Any:
    return jax.device_put(tree, jax.local_devices()[0])

  def put_batch(self, batch: dict[str, np.ndarray]) -> Any:
    return jax.device_put(batch, jax.local_devices()[0])

  def get_state(self, tree: Any) -> Any:
    """The states as host numpy arrays (one copy), e.g. to checkpoint them."""
    return jax.device_get(tree)

  def get_metrics(self, metrics: Any) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


class PmapStrategy(Strategy):
  """One replica per local device; gradients averaged with lax.pmean."""

  name = 'pmap'

  @property
  def num_devices(self) -> int:
    return jax.device_count()

  @property
  def num_processes(self) -> int:
    return jax.process_count()

  def compile(self, step_fn):
    return jax.pmap(functools.partial(step_fn, axis_name=PMAP_AXIS),
                    axis_name=PMAP_AXIS, in_axes=(0, 0, None),
                    donate_argnums=(0,))

  def put_state(self, tree):
    return jax_utils.replicate(tree)

  def put_batch(self, batch):
    # [local batch, ...] -> [local devices, per-device batch, ...]
    devices = jax.local_devices()
    sharding = NamedSharding(Mesh(np.asarray(devices), (PMAP_AXIS,)),
                             P(PMAP_AXIS))
    return jax.tree.map(
        lambda x: jax.device_put(
            x.reshape((len(devices), -1) + x.shape[1:]), sharding), batch)

  def get_state(self, tree):
    return jax.device_get(jax.tree.map(lambda x: x[0], tree))

  def get_metrics(self, metrics):
    # Metrics are already averaged over replicas by the step.
    return {k: float(v[0]) for k, v in jax.device_get(metrics).items()}


class ShardingStrategy(Strategy):
  """``jit`` over a 1-D mesh of all devices: batch split along 'data'."""

  name = 'sharding'

  def __init__(self, global_batch_size: int, devices=None):
    # devices=jax.local_devices() gives a process its own mesh, e.g. for
    # enhancement on process 0 alone in a multi-host run.
    self.devices = jax.devices() if devices is None else list(devices)
    super().__init__(global_batch_size)
    self.mesh = Mesh(np.asarray(self.devices), (MESH_AXIS,))
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P(MESH_AXIS))

  @property
  def num_devices(self) -> int:
    return len(self.devices)

  @property
  def num_processes(self) -> int:
    return len({d.process_index for d in self.devices})

  def compile(self, step_fn):
    return jax.jit(functools.partial(step_fn, axis_name=None),
                   in_shardings=(self.replicated, self.batch_sharding,
                                 self.replicated),
                   out_shardings=(self.replicated, self.replicated),
                   donate_argnums=(0,))

  def put_state(self, tree):
    return jax.device_put(tree, self.replicated)

  def put_batch(self, batch):
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(
            self.batch_sharding, x), batch)

  def get_state(self, tree):
    # Replicated: every device holds the full value; read one local copy.
    return jax.tree.map(
        lambda x: np.asarray(x.addressable_data(0)) if isinstance(
            x, jax.Array) else x, tree)


STRATEGIES = {'none': Strategy, 'pmap': PmapStrategy,
              'sharding': ShardingStrategy}


def make_strategy(parallelism: str, global_batch_size: int) -> Strategy:
  return STRATEGIES[resolve(parallelism)](global_batch_size)
