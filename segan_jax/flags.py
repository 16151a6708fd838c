"""Command-line flags of launch.py, and their conversion to a Config."""

from __future__ import annotations

import dataclasses

from absl import flags

from segan_jax import config as config_lib

_DEFAULT = config_lib.Config()

MODE = flags.DEFINE_enum(
    'mode', 'train', ['train', 'enhance', 'evaluate', 'report'],
    'train; enhance --input with a checkpoint of --workdir; evaluate a '
    'checkpoint on --dataset/--split, or --enhanced_dir against --clean_dir; '
    'report: write WORKDIR/report.html.')
CHECKPOINT_STEP = flags.DEFINE_integer(
    'checkpoint_step', None, 'enhance/evaluate: checkpoint to restore '
    '(default: the best one where the run kept it with --keep_best, else the '
    'latest).')
INPUT = flags.DEFINE_string('input', None,
                            'enhance: an audio file or a folder (recursive).')
OUTPUT = flags.DEFINE_string(
    'output', None, 'enhance: output file or folder (the input tree is kept).')
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
WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run directory: checkpoints go to WORKDIR/checkpoints; '
    'launching again with the same workdir resumes.')
MODEL = flags.DEFINE_enum(
    'model', _DEFAULT.model, config_lib.MODELS,
    'segan; autoencoder (G without z or D, reconstruction loss); gan (the '
    'basic unconditional GAN).')
MODEL_SIZE = flags.DEFINE_enum(
    'model_size', _DEFAULT.model_size, list(config_lib.MODEL_SIZES),
    'Named network size (paper = Pascual et al. 2017).')
ENCODER_FEATURES = flags.DEFINE_list(
    'encoder_features', None,
    'Override: encoder channels per layer, e.g. 16,32,32,64 (the decoder '
    'mirrors them).')
KERNEL_SIZE = flags.DEFINE_integer('kernel_size', None,
                                   'Override: conv kernel width.')
WINDOW_SIZE = flags.DEFINE_integer(
    'window_size', None, 'Override: samples per training window.')
DATASET = flags.DEFINE_string('dataset', _DEFAULT.dataset,
                              'Dataset name (synthetic: embedded, offline).')
DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'wav_pairs: the folder holding noisy/ and clean/ (or '
    'train/ and test/ folders each holding them).')
MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', None, 'voicebank_demand: the folder with the four official '
    'zips or folders (clean_trainset_28spk_wav, ...).')
TFDS_DATA_DIR = flags.DEFINE_string(
    'tfds_data_dir', None, 'Where TFDS writes prepared datasets (default '
    '$TFDS_DATA_DIR or ~/tensorflow_datasets).')
SKIP_BAD_FILES = flags.DEFINE_bool(
    'skip_bad_files', False, 'Build datasets with unusable files reported '
    'and left out, instead of stopping at the first.')
DATASET_SIZE = flags.DEFINE_integer(
    'dataset_size', None,
    'Utterances in the synthetic train split (default: the dataset default).')
NUM_EPOCHS = flags.DEFINE_integer('num_epochs', _DEFAULT.num_epochs,
                                  'Epochs to train in total.')
BATCH_SIZE = flags.DEFINE_integer(
    'batch_size', _DEFAULT.batch_size,
    'Global batch size, split over processes and devices.')
SEED = flags.DEFINE_integer('seed', _DEFAULT.seed,
                            'Seeds parameters, z, data order and the dataset.')
LEARNING_RATE = flags.DEFINE_float('learning_rate', _DEFAULT.learning_rate,
                                   'RMSprop learning rate of G and D.')
L1_WEIGHT = flags.DEFINE_float('l1_weight', _DEFAULT.l1_weight,
                               'Weight of the L1 term in G\'s loss.')
VBN_REFERENCE_SIZE = flags.DEFINE_integer(
    'vbn_reference_size', _DEFAULT.vbn_reference_size,
    'Windows in D\'s virtual batch norm reference batch.')
CHECKPOINT_EVERY_EPOCHS = flags.DEFINE_integer(
    'checkpoint_every_epochs', _DEFAULT.checkpoint_every_epochs,
    'Save a checkpoint every this many epochs (and at the end).')
KEEP_CHECKPOINTS = flags.DEFINE_integer(
    'keep_checkpoints', _DEFAULT.keep_checkpoints,
    'How many checkpoints to keep (0: all).')
LOG_EVERY_STEPS = flags.DEFINE_integer('log_every_steps',
                                       _DEFAULT.log_every_steps,
                                       'Log metrics every this many steps.')
RECONSTRUCTION_LOSS = flags.DEFINE_enum(
    'reconstruction_loss', 'l1', list(config_lib.RECONSTRUCTION_LOSSES),
    'autoencoder: its training loss.')
GAN_LOSS = flags.DEFINE_enum(
    'gan_loss', 'bce', list(config_lib.GAN_LOSSES),
    'gan: non-saturating cross-entropy (bce) or least squares (lsgan).')
LATENT_DIM = flags.DEFINE_integer('latent_dim', 64, 'gan: size of z.')
VALIDATION_FILES = flags.DEFINE_integer(
    'validation_files', config_lib.Config().validation_files,
    'Validation files enhanced and scored at each checkpoint (0: none).')
PARALLELISM = flags.DEFINE_enum(
    'parallelism', _DEFAULT.parallelism, list(config_lib.PARALLELISM),
    'auto: pmap on several devices, else one device; sharding: jit over a '
    'device mesh with NamedSharding.')


SKIP_CONNECTIONS = flags.DEFINE_enum(
    'skip_connections', _DEFAULT.skip_connections,
    list(config_lib.SKIP_CONNECTIONS),
    'G\'s skips: taken before the encoder\'s PReLU (as santi-pdp/segan) or '
    'after it.')
RESIDUAL = flags.DEFINE_bool(
    'residual', _DEFAULT.residual,
    'G outputs noisy + correction (identity at initialisation) instead of '
    'tanh of its last layer.')
KERNEL_INIT = flags.DEFINE_enum(
    'kernel_init', _DEFAULT.kernel_init, list(config_lib.KERNEL_INITS),
    'Conv kernel initialisation (truncated_normal: std 0.02, as '
    'santi-pdp/segan).')
DISCRIMINATOR_FEATURES = flags.DEFINE_list(
    'discriminator_features', None,
    'Override: D\'s channels per layer (default: those of G\'s encoder).')
OPTIMIZER = flags.DEFINE_enum(
    'optimizer', _DEFAULT.optimizer, list(config_lib.OPTIMIZERS),
    'rmsprop: TF1 RMSProp (decay 0.9, eps 1e-10, accumulators start at 1), '
    'as the paper\'s code; adam: Adam with beta1 --adam_b1.')
ADAM_B1 = flags.DEFINE_float('adam_b1', _DEFAULT.adam_b1, 'adam: beta1.')
WARMUP_STEPS = flags.DEFINE_integer(
    'warmup_steps', _DEFAULT.warmup_steps,
    'Steps of linear learning-rate warm-up (0: none).')
LR_FINAL_FRACTION = flags.DEFINE_float(
    'lr_final_fraction', _DEFAULT.lr_final_fraction,
    'Cosine decay of the learning rate to this fraction of it at the last '
    'step (1: constant).')
ADVERSARIAL_WEIGHT = flags.DEFINE_float(
    'adversarial_weight', _DEFAULT.adversarial_weight,
    'Weight of the LSGAN term in G\'s loss.')
STFT_WEIGHT = flags.DEFINE_float(
    'stft_weight', _DEFAULT.stft_weight,
    'Weight of the multi-resolution STFT magnitude loss in G\'s loss (and '
    'the autoencoder\'s).')
REMIX_PROB = flags.DEFINE_float(
    'remix_prob', _DEFAULT.remix_prob,
    'Augmentation: probability that a window\'s clean speech is mixed with '
    'the noise of another window.')
REMIX_GAIN_DB = flags.DEFINE_list(
    'remix_gain_db', [str(v) for v in _DEFAULT.remix_gain_db],
    'Augmentation: LOW,HIGH range (dB) of the remixed noise\'s gain.')
GAIN_DB = flags.DEFINE_float(
    'gain_db', _DEFAULT.gain_db,
    'Augmentation: noisy and clean scaled by a gain uniform in +-this (dB).')
SPEED_PROB = flags.DEFINE_float(
    'speed_prob', _DEFAULT.speed_prob,
    'Augmentation: probability that a window\'s clean speech is resampled '
    '(speed and pitch) by a factor in --speed_range.')
SPEED_RANGE = flags.DEFINE_list(
    'speed_range', [str(v) for v in _DEFAULT.speed_range],
    'Augmentation: LOW,HIGH speed factors.')
INIT_FROM = flags.DEFINE_string(
    'init_from', None,
    'Warm start: WORKDIR or WORKDIR:STEP of another run whose G (and D) '
    'start this one; ignored once this run has its own checkpoint.')
KEEP_BEST = flags.DEFINE_enum(
    'keep_best', None, list(config_lib.KEEP_BEST_METRICS),
    'Keep the checkpoint with the best value of this validation metric in '
    'WORKDIR/best; enhance and evaluate use it by default.')
OUTPUT_HIGHPASS_HZ = flags.DEFINE_float(
    'output_highpass_hz', _DEFAULT.output_highpass_hz,
    'Enhanced audio is high-passed at this frequency (1st-order Butterworth, '
    'with the de-emphasis; 0: off). Saved with the run: its enhance, '
    'evaluate and validation use it.')


def config_from_flags() -> config_lib.Config:
  """The Config whose fields take the values of the flags of the same name."""
  values = {field.name: flags.FLAGS[field.name].value
            for field in dataclasses.fields(config_lib.Config)
            if field.name in flags.FLAGS}
  if values.get('encoder_features'):
    values['encoder_features'] = tuple(int(f)
                                       for f in values['encoder_features'])
  else:
    values['encoder_features'] = None
  if values.get('discriminator_features'):
    values['discriminator_features'] = tuple(
        int(f) for f in values['discriminator_features'])
  else:
    values['discriminator_features'] = None
  for name in ('remix_gain_db', 'speed_range'):
    if name in values:
      if len(values[name]) != 2:
        raise ValueError(f'--{name} takes two values LOW,HIGH, got '
                         f'{",".join(values[name])}')
      values[name] = tuple(float(v) for v in values[name])
  return config_lib.Config(**values)
NAN_POLICY = flags.DEFINE_enum(
    'nan_policy', _DEFAULT.nan_policy, list(config_lib.NAN_POLICIES),
    'A non-finite loss or gradient: stop (naming the step and metric; the '
    'last good checkpoint stays) or skip_step (drop that update, go on).')

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
