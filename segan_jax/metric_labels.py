"""PESQ labels of the metric discriminator (--metric_discriminator), computed
on the host, off the jit path, while the next step runs.

Each SEGAN step returns a probe: G's output for a few of its windows, with
their clean and noisy windows (``metric_windows_per_step`` of them). The
probe of step t is fetched after step t + 1 has been dispatched, labelled in
a worker pool while step t + 1 runs, and trained on by D_metric at step
t + 2: the lag is exactly two steps, always, so a run's updates are a pure
function of (seed, step), however fast the labels come. The loop waits for
the labels only when they are not ready by then (the stall, measured).

Labels are (PESQ - 1) / 3.5 clipped to [0, 1] (MetricGAN's normalisation) of
the de-emphasised (enhanced, clean) and (noisy, clean) pairs, and 1 for
(clean, clean). A window PESQ cannot score (e.g. silent clean speech: no
utterance) is dropped: its labels are marked invalid, and D_metric's loss
leaves them out.

No JAX here: the workers import this module and stay light.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import signal
import time
from typing import Any

import numpy as np
from absl import logging

from segan_jax import audio
from segan_jax import metrics

# The columns of a label row: D_metric scores each of these signals against
# the clean window.
COLUMNS = ('enhanced', 'clean', 'noisy')
# What the train step returns as its probe and reads as D_metric's data.
PROBE_KEYS = tuple(f'metric_probe_{c}' for c in COLUMNS)
INPUT_KEYS = tuple(f'metric_{c}' for c in COLUMNS) + ('metric_labels',
                                                      'metric_valid')
# WB-PESQ's MOS-LQO starts near 1; 1 + 3.5 = 4.5 is the top of the scale
# MetricGAN+ normalises by (clean against itself scores 4.64: clipped to 1).
PESQ_LOW = 1.0
PESQ_SPAN = 3.5


def normalised_pesq(score: float) -> float:
  """(PESQ - 1) / 3.5, clipped to [0, 1]."""
  return float(np.clip((score - PESQ_LOW) / PESQ_SPAN, 0.0, 1.0))


def label_windows(enhanced: np.ndarray, clean: np.ndarray, noisy: np.ndarray,
                  preemphasis: float) -> tuple[np.ndarray, np.ndarray, float]:
  """Labels of pre-emphasised windows ``[M, T]`` each.

  Returns ``(labels, valid, cpu_seconds)``: float32 ``[M, 3]`` (columns
  COLUMNS), 1 where the label counts and 0 where PESQ failed, and the CPU
  time this took. The clean column is 1 wherever either scored pair is
  valid (it needs no PESQ), and invalid with both.
  """
  start = time.process_time()
  count = enhanced.shape[0]
  labels = np.zeros((count, len(COLUMNS)), np.float32)
  valid = np.zeros((count, len(COLUMNS)), np.float32)
  signals = [audio.deemphasis(x, preemphasis)
             for x in (enhanced, clean, noisy)]
  for i in range(count):
    reference = signals[1][i]
    for column in (0, 2):
      try:
        labels[i, column] = normalised_pesq(
            metrics.pesq_wb(reference, signals[column][i]))
        valid[i, column] = 1.0
      except ValueError:  # silent windows: no utterance to score
        pass
    if valid[i, 0] or valid[i, 2]:
      labels[i, 1], valid[i, 1] = 1.0, 1.0
  return labels, valid, time.process_time() - start


def _ignore_stop_signals() -> None:
  """In a worker: SIGTERM and SIGINT are for the training process, which
  saves a checkpoint (labelling the queue it holds) and then shuts the pool
  down; a signal sent to the whole process group (timeout, SLURM, Ctrl-C)
  must not take the workers first."""
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  signal.signal(signal.SIGINT, signal.SIG_IGN)


def empty_inputs(count: int, window: int) -> dict[str, np.ndarray]:
  """D_metric's data when there is none yet (the first two steps): all
  labels invalid, so its loss and gradient are zero."""
  zeros = np.zeros((count, window), np.float32)
  return {'metric_enhanced': zeros, 'metric_clean': zeros,
          'metric_noisy': zeros,
          'metric_labels': np.zeros((count, len(COLUMNS)), np.float32),
          'metric_valid': np.zeros((count, len(COLUMNS)), np.float32)}


# The queue a checkpoint keeps (optimizers.MetricDiscriminatorState): slot 0
# holds the probe of the step two before the checkpoint's, slot 1 that of
# the step before, with their labels.
QUEUE_SLOTS = 2


def empty_queue(count: int, window: int) -> dict[str, np.ndarray]:
  """A queue of two slots without labels (a fresh run's)."""
  inputs = empty_inputs(count, window)
  return {k[len('metric_'):]: np.stack([v] * QUEUE_SLOTS)
          for k, v in inputs.items()}


def _done(value) -> concurrent.futures.Future:
  future = concurrent.futures.Future()
  future.set_result(value)
  return future


def _join(results):
  """One (labels, valid, cpu_seconds) of the chunks' results."""
  return (np.concatenate([r[0] for r in results]),
          np.concatenate([r[1] for r in results]),
          sum(r[2] for r in results))


def _inputs(probe: dict[str, np.ndarray], labels: np.ndarray,
            valid: np.ndarray) -> dict[str, np.ndarray]:
  """D_metric's data (INPUT_KEYS) of a labelled probe."""
  return {**{f'metric_{c}': probe[f'metric_probe_{c}'] for c in COLUMNS},
          'metric_labels': labels, 'metric_valid': valid}


class MetricLabeller:
  """Labels each step's probe in a pool, two steps behind the training.

  Use per step ``t``: ``batch.update(labeller.inputs(t))`` before the step
  (the labelled probe of step t - 2, waited for), then
  ``metrics = labeller.record(t, metrics)`` after dispatching it (takes the
  probe out of the metrics, fetches step t - 1's and submits its
  labelling). ``timing()`` says how long the loop waited and how much CPU
  the labelling took. ``resume`` takes the queue of the states a run starts
  from, ``stash`` puts it into the states a checkpoint saves.
  """

  def __init__(self, count: int, window: int, preemphasis: float,
               workers: int):
    """``workers`` processes (forkserver, as metrics.evaluate_pairs: the
    training process has JAX threads), or 0 for one thread of this process
    (pesq holds the GIL, but the devices compute without it)."""
    self.count, self.window, self.preemphasis = count, window, preemphasis
    self.chunks = max(workers, 1)
    if workers:
      self.pool = concurrent.futures.ProcessPoolExecutor(
          workers, mp_context=multiprocessing.get_context('forkserver'),
          initializer=_ignore_stop_signals)
    else:
      self.pool = concurrent.futures.ThreadPoolExecutor(1)
    self._unfetched: tuple[int, dict[str, Any]] | None = None
    # step -> (probe on the host, its labelling futures)
    self._labelling: dict[int, tuple[dict[str, np.ndarray], list]] = {}
    self.wait_seconds = 0.0
    self.cpu_seconds = 0.0
    self.steps = 0

  def resume(self, states: dict[str, Any], step: int) -> dict[str, Any]:
    """Takes the queue of the states of ``step`` (labelled probes of steps
    step - 2 and step - 1); returns the states with an empty one."""
    queue = {k: np.asarray(v) for k, v in states['dm'].queue.items()}
    for slot in range(QUEUE_SLOTS):
      probe = {f'metric_probe_{c}': queue[c][slot] for c in COLUMNS}
      self._labelling[step - QUEUE_SLOTS + slot] = (
          probe, [_done((queue['labels'][slot], queue['valid'][slot], 0.0))])
    empty = empty_queue(self.count, self.window)
    return {**states, 'dm': states['dm'].replace(queue=empty)}

  def stash(self, host_states: dict[str, Any], step: int) -> dict[str, Any]:
    """``host_states`` (after ``step`` steps) with the queue the next two
    steps will train on, labelled (waits for it: once per checkpoint)."""
    self._submit_unfetched()
    slots = []
    for source in range(step - QUEUE_SLOTS, step):
      if source not in self._labelling:
        slots.append(empty_inputs(self.count, self.window))
        continue
      probe, futures = self._labelling[source]
      labels, valid, cpu_seconds = self._results(probe, futures)
      # Counted once, when the step that trains on it takes it.
      self._labelling[source] = (probe, [_done((labels, valid, cpu_seconds))])
      slots.append(_inputs(probe, labels, valid))
    queue = {k[len('metric_'):]: np.stack([slot[k] for slot in slots])
             for k in INPUT_KEYS}
    return {**host_states, 'dm': host_states['dm'].replace(queue=queue)}

  def inputs(self, step: int) -> dict[str, np.ndarray]:
    """D_metric's data for ``step``: step - 2's probe and its labels."""
    self.steps += 1
    source = step - 2
    if source not in self._labelling:
      # The first two steps of a run, or of a resumed one.
      return empty_inputs(self.count, self.window)
    probe, futures = self._labelling.pop(source)
    start = time.perf_counter()
    labels, valid, cpu_seconds = self._results(probe, futures)
    self.wait_seconds += time.perf_counter() - start
    self.cpu_seconds += cpu_seconds
    return _inputs(probe, labels, valid)

  def record(self, step: int, step_metrics: dict[str, Any]) -> dict[str, Any]:
    """``step_metrics`` without the probe; labelling of step - 1's starts."""
    step_metrics = dict(step_metrics)
    probe = {k: step_metrics.pop(k) for k in PROBE_KEYS}
    self._submit_unfetched()
    self._unfetched = (step, probe)
    return step_metrics

  def _results(self, probe: dict[str, np.ndarray], futures: list):
    """The joined labels of a probe's futures. A worker that died (a signal
    sent to the whole process group, the OOM killer) costs the pool, not
    the run: its probe is labelled here instead, with the same result, and
    later ones in a thread."""
    try:
      return _join([f.result() for f in futures])
    except concurrent.futures.process.BrokenProcessPool:
      self._fall_back_to_a_thread()
      return label_windows(probe['metric_probe_enhanced'],
                           probe['metric_probe_clean'],
                           probe['metric_probe_noisy'], self.preemphasis)

  def _submit_unfetched(self) -> None:
    """Fetches the probe last recorded and submits its labelling."""
    if self._unfetched is None:
      return
    source, device_probe = self._unfetched
    self._unfetched = None
    # Under pmap the probe is [devices, per device, T]: windows in order.
    host = {k: np.asarray(v, np.float32).reshape(-1, self.window)
            for k, v in device_probe.items()}
    splits = np.array_split(np.arange(self.count), self.chunks)

    def submit():
      return [self.pool.submit(
          label_windows, host['metric_probe_enhanced'][part],
          host['metric_probe_clean'][part], host['metric_probe_noisy'][part],
          self.preemphasis) for part in splits if part.size]

    try:
      futures = submit()
    except concurrent.futures.process.BrokenProcessPool:
      self._fall_back_to_a_thread()
      futures = submit()
    self._labelling[source] = (host, futures)

  def _fall_back_to_a_thread(self) -> None:
    logging.warning('A PESQ labelling worker died; labelling in a thread of '
                    'the training process from now on.')
    self.pool.shutdown(wait=False, cancel_futures=True)
    self.pool = concurrent.futures.ThreadPoolExecutor(1)

  def timing(self) -> dict[str, float]:
    """Seconds per step the loop waited for labels (the device may still be
    computing the step before meanwhile), and CPU seconds of labelling per
    step, since the last call."""
    steps = max(self.steps, 1)
    out = {'metric_label_wait_s': self.wait_seconds / steps,
           'metric_label_cpu_s': self.cpu_seconds / steps}
    self.wait_seconds = self.cpu_seconds = 0.0
    self.steps = 0
    return out

  def close(self) -> None:
    self.pool.shutdown(wait=True, cancel_futures=True)
