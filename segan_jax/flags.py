"""Command-line flags: one per field of the run's Config, and the options of
each mode.

A Config field's flag takes its default, its choices and its help from
segan_jax/config.py, the only place they are written.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from absl import flags

from segan_jax import config as config_lib

# --- Options of the modes (not part of a run's Config) ------------------------

MODES = ('train', 'enhance', 'evaluate', 'report', 'export', 'bundle')
MODE = flags.DEFINE_enum(
    'mode', 'train', list(MODES),
    'train; enhance --input with a checkpoint of --workdir (without one: '
    'the bundled pretrained model; with --model_file: an exported file); '
    'evaluate a checkpoint on --dataset/--split, or --enhanced_dir against '
    '--clean_dir; report: write WORKDIR/report.html; export: G to '
    '--output as --export_format; bundle: G of --workdir (or of the bundle '
    '--pretrained, again) as bundle --bundle_name, with the output settings '
    'given as flags.')
CHECKPOINT_STEP = flags.DEFINE_integer(
    'checkpoint_step', None, 'enhance/evaluate/export/bundle: checkpoint to '
    'restore (default: the best one where the run kept it with --keep_best, '
    'else the latest).')
INPUT = flags.DEFINE_string('input', None,
                            'enhance: an audio file or a folder (recursive).')
OUTPUT = flags.DEFINE_string(
    'output', None, 'enhance: output file or folder (the input tree is kept).')
EXPORT_FORMAT = flags.DEFINE_enum(
    'export_format', 'onnx', ['onnx', 'stablehlo'],
    'export: onnx (onnxruntime; needs the export extra) or stablehlo '
    "(jax.export's serialized program, run by jax.export.deserialize).")
MODEL_FILE = flags.DEFINE_string(
    'model_file', None, 'enhance: an exported G (--mode=export: .onnx or '
    'StableHLO) to enhance with, instead of a checkpoint; no training code '
    'runs it.')
SPLIT = flags.DEFINE_string('split', 'test', 'evaluate: dataset split.')
MAX_FILES = flags.DEFINE_integer('max_files', None,
                                 'evaluate: score only the first N files.')
RESULTS = flags.DEFINE_string(
    'results', None, 'evaluate: JSON summary path (default evaluation.json '
    'in the workdir, or beside --enhanced_dir); a per-file CSV goes beside.')
CLEAN_DIR = flags.DEFINE_string('clean_dir', None,
                                'evaluate without a model: clean references.')
ENHANCED_DIR = flags.DEFINE_string(
    'enhanced_dir', None, 'evaluate without a model: files to score, named '
    'as in --clean_dir.')
NOISY_DIR = flags.DEFINE_string(
    'noisy_dir', None, 'evaluate without a model: optional noisy inputs, to '
    'print the Noisy row too.')
ENHANCE_OVERLAP = flags.DEFINE_enum(
    'enhance_overlap', '0', ['0', '0.5'],
    'enhance/evaluate: 0 = the paper\'s non-overlapping windows; 0.5 = '
    'Hann-weighted overlap-add of half-overlapping windows.')
ENHANCE_BATCH_SIZE = flags.DEFINE_integer(
    'enhance_batch_size', 8, 'enhance/evaluate: windows per device batch.')
PRETRAINED = flags.DEFINE_string(
    'pretrained', None, 'enhance/evaluate/export without --workdir: the '
    'bundled pretrained model to use (segan_jax/pretrained/NAME; default: '
    'the default bundle), or the path of a bundle folder; bundle: the '
    'bundle to write again.')
BUNDLE_NAME = flags.DEFINE_string(
    'bundle_name', None, 'bundle: its name, the folder written under '
    '--bundle_root (default: the default bundle\'s name).')
BUNDLE_VERSION = flags.DEFINE_string('bundle_version', '1',
                                     'bundle: its version.')
BUNDLE_ROOT = flags.DEFINE_string(
    'bundle_root', None, 'bundle: the folder the bundle folder is written '
    'into (default: the package\'s segan_jax/pretrained/).')
AVERAGE_STEPS = flags.DEFINE_list(
    'average_steps', None, 'bundle: instead of --checkpoint_step, '
    "checkpoints whose G parameters are averaged into the bundle, e.g. the "
    "last few of a run's decay (weight averaging, Izmailov et al. 2018).")
WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run directory: checkpoints go to WORKDIR/checkpoints; '
    'launching again with the same workdir resumes.')
# Multi-host runs: every process gets the same flags but its own
# --process_id. On Cloud TPU pods, SLURM or Open MPI, the defaults
# (--distributed=auto) find these from the environment instead.
DISTRIBUTED = flags.DEFINE_enum(
    'distributed', 'auto', ['auto', 'on', 'off'],
    'auto: jax.distributed.initialize when --coordinator_address is given or '
    'a multi-host cluster (TPU pod, SLURM, Open MPI) is detected; on: always; '
    'off: never.')
COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None,
    'Multi-host: host:port of process 0, reachable from every process.')
NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                     'Multi-host: how many processes.')
PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                  'Multi-host: this process, 0 … N-1.')


# --- One flag per Config field --------------------------------------------------
# Each takes its help from the field (config.option), where it is written once.

_FIELD_TYPES = typing.get_type_hints(config_lib.Config)


def _field_type(name: str) -> Any:
  """The field's type, without the None of an optional field."""
  hint = _FIELD_TYPES[name]
  if isinstance(hint, types.UnionType):
    return next(a for a in typing.get_args(hint) if a is not type(None))
  return hint


def _define_config_flags() -> None:
  defaults = config_lib.Config()
  for field in dataclasses.fields(config_lib.Config):
    name = field.name
    default = getattr(defaults, name)
    kind = _field_type(name)
    help_text = field.metadata['help']
    if name in config_lib.CHOICES:
      flags.DEFINE_enum(name, default, list(config_lib.CHOICES[name]),
                        help_text)
    elif typing.get_origin(kind) is tuple:
      flags.DEFINE_list(name, None if default is None else
                        [str(v) for v in default], help_text)
    elif kind is bool:
      flags.DEFINE_bool(name, default, help_text)
    elif kind is int:
      flags.DEFINE_integer(name, default, help_text)
    elif kind is float:
      flags.DEFINE_float(name, default, help_text)
    else:
      flags.DEFINE_string(name, default, help_text)


_define_config_flags()


def config_from_flags() -> config_lib.Config:
  """The Config whose fields take the values of the flags of the same name."""
  values = {}
  for field in dataclasses.fields(config_lib.Config):
    value = flags.FLAGS[field.name].value
    kind = _field_type(field.name)
    if typing.get_origin(kind) is tuple and value is not None:
      items = typing.get_args(kind)
      if not value:
        value = None  # an empty list: the override is off
      elif items[-1] is Ellipsis:
        value = tuple(items[0](v) for v in value)
      elif len(value) != len(items):
        raise ValueError(f'--{field.name} takes {len(items)} values, got '
                         f'{",".join(value)}')
      else:
        value = tuple(t(v) for t, v in zip(items, value))
    values[field.name] = value
  return config_lib.Config(**values)
