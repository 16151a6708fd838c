"""SIGTERM (what spot and preemptible Cloud VMs send before they go) turned
into "save a checkpoint at the next step boundary and stop", agreed on by all
processes of a run."""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils


class PreemptionWatcher:
  """Notes SIGTERM; ``should_stop`` says when the training loop must stop.

  One process checks its own flag at every step (no device sync). Several
  processes must stop at the same step, so they compare flags only at the
  steps where all of them call ``should_stop(sync=True)`` (the log steps,
  which already synchronise with the devices): a signal to any process stops
  them all there.
  """

  def __init__(self, signals=(signal.SIGTERM,)):
    self.requested = False
    self._previous = {}
    # Python delivers signals to the main thread only; elsewhere (a test
    # running training in a thread) nothing is installed.
    if threading.current_thread() is threading.main_thread():
      for signum in signals:
        self._previous[signum] = signal.signal(signum, self._handle)

  def _handle(self, signum, frame):
    del frame
    self.requested = True
    logging.warning('Received %s: saving a checkpoint at the next step '
                    'boundary, then stopping.', signal.Signals(signum).name)

  def should_stop(self, sync: bool) -> bool:
    if jax.process_count() == 1:
      return self.requested
    if not sync:
      return False
    flags = multihost_utils.process_allgather(np.int32(self.requested))
    return bool(np.any(flags))

  def close(self) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}
