"""Enhancing audio files and folders through an enhancer's stream.

Files of any length, sample rate, bit depth and channel count are enhanced in
bounded memory: blocks are read from disk, resampled to 16 kHz (soxr stream),
pushed through the enhancer's `SignalStream` (segan_jax/enhance.py), resampled
back to the file's rate and written in the input's format; above 16 kHz,
with the output setting output_high_band=gated, the input's band above
8 kHz is added back, gated by G's gain (segan_jax/high_band.py). Outputs are
written under a temporary name and renamed when complete. A folder is
enhanced into a folder, its tree kept (`plan_outputs`).
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any, Callable

import numpy as np
import soundfile
import soxr
import tqdm
from absl import logging

from segan_jax import audio
from segan_jax import files
from segan_jax import high_band

# Samples (at the file's rate) read from disk at a time.
BLOCK_SECONDS = 20


class EnhanceError(audio.AudioError):
  """An output path (or input folder) enhancement cannot use; the message
  names it. Unreadable input files raise audio.AudioError, the base class, so
  callers catch that one type for "this path cannot be used"."""


def enhance_file(enhancer: Any, src: str, dst: str) -> float:
  """Enhances one file into ``dst`` (same rate, channels, format) through
  ``enhancer.stream(channels)`` (an `enhance.WindowEnhancer`'s).

  Returns the audio duration in seconds. Never leaves a partial ``dst``.
  """
  info = audio.audio_info(src)
  if os.path.exists(dst) and os.path.samefile(src, dst):
    raise EnhanceError(f'{dst}: output would overwrite its input')
  if os.path.isdir(dst):
    raise EnhanceError(f'{dst}: output is a folder; name the output file')
  rate, channels = info.samplerate, info.channels
  folder = os.path.dirname(os.path.abspath(dst))
  existing = folder
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise EnhanceError(f'{dst}: cannot write the output: {existing} is a '
                       'file, not a folder')
  try:
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(dst) + '.',
                               suffix='.partial', dir=folder)
  except OSError as e:  # e.g. a parent that is a file, no permission
    raise EnhanceError(f'{dst}: cannot write the output ({e.strerror})'
                       ) from None
  os.close(fd)
  integer = info.subtype.startswith(('PCM', 'ULAW', 'ALAW'))
  try:
    down = up = None
    if rate != audio.SAMPLE_RATE:
      down = soxr.ResampleStream(rate, audio.SAMPLE_RATE, channels,
                                 dtype='float32', quality='VHQ')
      up = soxr.ResampleStream(audio.SAMPLE_RATE, rate, channels,
                               dtype='float32', quality='VHQ')
    stream = enhancer.stream(channels)
    settings = enhancer.output_settings
    gate = None
    if rate > audio.SAMPLE_RATE and settings.output_high_band == 'gated':
      gate = high_band.HighBandGate(rate, channels, settings.least_gain)
    written = 0

    def write(fout, y16, last=False):
      nonlocal written
      y = up.resample_chunk(y16, last=last) if up is not None else y16
      if gate is not None:
        y = gate.push_output(y16, y, last=last)
      y = y[:max(0, info.frames - written)]  # resampler rounding at the end
      if integer:
        y = np.clip(y, -1.0, 1.0)
      fout.write(y)
      written += y.shape[0]

    with soundfile.SoundFile(src) as fin, soundfile.SoundFile(
        tmp, 'w', samplerate=rate, channels=channels, subtype=info.subtype,
        format=info.format) as fout:
      for block in fin.blocks(blocksize=BLOCK_SECONDS * rate, dtype='float32',
                              always_2d=True):
        audio.check_finite(block, src)
        x16 = down.resample_chunk(block) if down is not None else block
        if gate is not None:
          gate.push_input(block, x16)
        for y16 in stream.push(x16):
          write(fout, y16)
      if down is not None:
        x16 = down.resample_chunk(np.zeros((0, channels), np.float32),
                                  last=True)
        if gate is not None:
          gate.push_input(np.zeros((0, channels), np.float32), x16, last=True)
        for y16 in stream.push(x16):
          write(fout, y16)
      tail = list(stream.finish()) or [np.zeros((0, channels), np.float32)]
      for y16 in tail:
        write(fout, y16, last=True)
      if written < info.frames:  # resampler delivered a few samples short
        fout.write(np.zeros((info.frames - written, channels), np.float32))
    files.publish(tmp, dst)
  except soundfile.LibsndfileError as e:
    raise EnhanceError(f'{src}: {e}') from None
  except OSError as e:  # writing: disk full, output removed meanwhile, ...
    raise EnhanceError(f'{dst}: cannot write the output ({e.strerror})'
                       ) from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return info.frames / rate


def plan_outputs(input_path: str, output_path: str) -> list[tuple[str, str]]:
  """(source, destination) for a file, or for a folder tree (kept as is)."""
  if not os.path.exists(input_path):
    raise EnhanceError(f'{input_path}: no such file or folder')
  if os.path.isfile(input_path):
    if os.path.isdir(output_path):
      output_path = os.path.join(output_path, os.path.basename(input_path))
    return [(input_path, output_path)]
  src_root = os.path.abspath(input_path)
  dst_root = os.path.abspath(output_path)
  if dst_root == src_root:
    raise EnhanceError(f'{output_path}: output folder is the input folder; '
                       'choose another so inputs are never overwritten')
  if os.path.exists(dst_root) and not os.path.isdir(dst_root):
    raise EnhanceError(f'{output_path}: is a file, but the input '
                       f'{input_path} is a folder; name an output folder')
  plan = []
  for folder, dirs, names in os.walk(src_root):
    dirs.sort()
    if os.path.abspath(folder).startswith(dst_root + os.sep):
      continue  # an output folder inside the input folder
    for f in sorted(names):
      if audio.is_audio_file_name(f):
        src = os.path.join(folder, f)
        plan.append((src, os.path.join(dst_root,
                                       os.path.relpath(src, src_root))))
  if not plan:
    raise EnhanceError(f'{input_path}: no audio files (.wav, .flac, ...) found')
  return plan


def enhance_paths(enhancer: Any, input_path: str, output_path: str,
                  on_error: Callable[[audio.AudioError], None] | None = None
                  ) -> list[str]:
  """Enhances a file or a folder tree; returns the files written.

  A file that cannot be enhanced (unreadable, empty, NaN, unwritable output)
  raises audio.AudioError, or, when ``on_error`` is given, is passed to it and
  skipped so that one bad recording does not stop a folder of good ones. No
  output is left for a skipped file. Problems with the paths themselves
  (missing input, output = input) always raise.
  """
  plan = plan_outputs(input_path, output_path)
  done, seconds = [], 0.0
  with tqdm.tqdm(plan, unit='file', disable=not sys.stderr.isatty()) as bar:
    for src, dst in bar:
      try:
        seconds += enhance_file(enhancer, src, dst)
      except audio.AudioError as e:
        if on_error is None:
          raise
        on_error(e)
        continue
      done.append(dst)
      bar.set_postfix(audio=f'{seconds:.0f}s')
      logging.info('Enhanced %s -> %s (%d/%d files, %.1f s of audio).', src,
                   dst, len(done), len(plan), seconds)
  return done
