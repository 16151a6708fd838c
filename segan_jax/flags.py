"""Command-line flags: one per field of the run's Config, and the options of
each mode.

A Config field's flag takes its default and its choices from
segan_jax/config.py (the only place they are written); its help is here.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from absl import flags

from segan_jax import config as config_lib

# --- Options of the modes (not part of a run's Config) ------------------------

MODE = flags.DEFINE_enum(
    'mode', 'train', ['train', 'enhance', 'evaluate', 'report', 'export'],
    'train; enhance --input with a checkpoint of --workdir (without one: '
    'the bundled pretrained model; with --model_file: an exported file); '
    'evaluate a checkpoint on --dataset/--split, or --enhanced_dir against '
    '--clean_dir; report: write WORKDIR/report.html; export: G to '
    '--output as --export_format.')
CHECKPOINT_STEP = flags.DEFINE_integer(
    'checkpoint_step', None, 'enhance/evaluate: checkpoint to restore '
    '(default: the best one where the run kept it with --keep_best, else the '
    'latest).')
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
    'pretrained', None, 'enhance/evaluate without --workdir: the bundled '
    'pretrained model to use (segan_jax/pretrained/NAME; default: the '
    'default bundle), or the path of a bundle folder.')
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

_CONFIG_HELP = {
    'dtype': 'Compute dtype of the networks (bfloat16 for GPU/TPU); parameters, '
             'optimizer states, VBN statistics, losses and metrics stay float32.',
    'model': 'segan; autoencoder (G without z or D, reconstruction loss); gan '
             '(the basic unconditional GAN).',
    'model_size': 'Named network size (paper = Pascual et al. 2017).',
    'encoder_features': 'Override: encoder channels per layer, e.g. '
                        '16,32,32,64 (the decoder mirrors them).',
    'kernel_size': 'Override: conv kernel width.',
    'window_size': 'Override: samples per training window.',
    'use_z': 'SEGAN: concatenate z ~ N(0, 1) to the code (the autoencoder '
             'never has z).',
    'skip_connections': "G's skips: taken before the encoder's PReLU (as "
                        'santi-pdp/segan) or after it.',
    'residual': 'G outputs noisy + correction (identity at initialisation) '
                'instead of tanh of its last layer.',
    'kernel_init': 'Conv kernel initialisation (truncated_normal: std 0.02, '
                   'as santi-pdp/segan).',
    'discriminator_features': "Override: D's channels per layer (default: "
                              "those of G's encoder).",
    'reconstruction_loss': 'autoencoder: its training loss.',
    'gan_loss': 'gan: non-saturating cross-entropy (bce) or least squares '
                '(lsgan).',
    'latent_dim': 'gan: size of z.',
    'dataset': 'Dataset name: synthetic (embedded, offline), wav_pairs, '
               'voicebank_demand.',
    'data_dir': 'wav_pairs: the folder holding noisy/ and clean/ (or train/ '
                'and test/ folders each holding them).',
    'manual_dir': 'voicebank_demand: the folder with the four official zips '
                  'or folders (clean_trainset_28spk_wav, ...).',
    'tfds_data_dir': 'Where TFDS writes prepared datasets (default '
                     '$TFDS_DATA_DIR or ~/tensorflow_datasets).',
    'skip_bad_files': 'Build datasets with unusable files reported and left '
                      'out, instead of stopping at the first.',
    'dataset_size': 'Utterances in the synthetic train split (default: the '
                    'dataset default).',
    'preemphasis': 'Pre-emphasis coefficient of the model\'s input and '
                   'output (de-emphasis inverts it).',
    'output_highpass_hz': 'Enhanced audio is high-passed at this frequency '
                          '(1st-order Butterworth, with the de-emphasis; 0: '
                          'off). Saved with the run: its enhance, evaluate '
                          'and validation use it.',
    'num_epochs': 'Epochs to train in total.',
    'batch_size': 'Global batch size, split over processes and devices.',
    'seed': 'Seeds parameters, z, data order, augmentation and the dataset.',
    'learning_rate': 'Learning rate of G and D (peak, with a schedule).',
    'optimizer': 'rmsprop: TF1 RMSProp (decay 0.9, eps 1e-10, accumulators '
                 "start at 1), as the paper's code; adam: Adam with beta1 "
                 '--adam_b1.',
    'adam_b1': 'adam: beta1.',
    'grad_clip_norm': "Scale each network's gradients down to this global "
                      'norm before the optimizer (0: off).',
    'warmup_steps': 'Steps of linear learning-rate warm-up (0: none).',
    'lr_final_fraction': 'Cosine decay of the learning rate to this fraction '
                         'of it at the last step (1: constant).',
    'l1_weight': "Weight of the L1 term in G's loss.",
    'adversarial_weight': "Weight of the LSGAN term in G's loss.",
    'stft_weight': "Weight of the multi-resolution STFT magnitude loss in G's "
                   "loss (and the autoencoder's).",
    'feature_matching_weight': "segan: weight of the feature-matching loss "
                               "(L1 between D's activations for enhanced and "
                               "clean pairs) in G's loss (0: off).",
    'd_input_noise': 'segan: std of the Gaussian instance noise added to the '
                     'clean or enhanced signal of each pair D sees (0: off).',
    'remix_prob': "Augmentation: probability that a window's clean speech is "
                  'mixed with the noise of another window.',
    'remix_gain_db': "Augmentation: LOW,HIGH range (dB) of the remixed noise's "
                     'gain.',
    'gain_db': 'Augmentation: noisy and clean scaled by a gain uniform in '
               '+-this (dB).',
    'speed_prob': "Augmentation: probability that a window's clean speech is "
                  'resampled (speed and pitch) by a factor in --speed_range.',
    'speed_range': 'Augmentation: LOW,HIGH speed factors.',
    'init_from': 'Warm start: WORKDIR or WORKDIR:STEP of another run whose G '
                 '(and D) start this one; ignored once this run has its own '
                 'checkpoint.',
    'vbn_reference_size': "Windows in D's virtual batch norm reference batch.",
    'checkpoint_every_epochs': 'Save a checkpoint every this many epochs (and '
                               'at the end).',
    'keep_checkpoints': 'How many checkpoints to keep (0: all).',
    'log_every_steps': 'Log metrics every this many steps.',
    'validation_files': 'Validation files enhanced and scored at each '
                        'checkpoint (0: none).',
    'validation_dir': 'A folder of noisy/ and clean/ pairs (e.g. an unseen '
                      'voice) scored at each checkpoint instead of the '
                      "dataset's validation or test split; what --keep_best "
                      'then picks by.',
    'keep_best': 'Keep the checkpoint with the best value of this validation '
                 'metric in WORKDIR/best; enhance and evaluate use it by '
                 'default.',
    'parallelism': 'auto: pmap on several devices, else one device; sharding: '
                   'jit over a device mesh with NamedSharding.',
    'nan_policy': 'A non-finite loss or gradient: stop (naming the step and '
                  'metric; the last good checkpoint stays) or skip_step (drop '
                  'that update, go on).',
}

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
    help_text = _CONFIG_HELP[name]
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
