"""Run configuration: one frozen dataclass, built from absl flags or directly in tests."""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from segan_jax import audio
from segan_jax import augment
from segan_jax import high_band
from segan_jax import noise_mix
from segan_jax import output_settings
from segan_jax.model_sizes import MODEL_SIZES

PARALLELISM = ('auto', 'none', 'pmap', 'sharding')
NAN_POLICIES = ('stop', 'skip_step')
MODELS = ('segan', 'autoencoder', 'gan')
RECONSTRUCTION_LOSSES = ('l1', 'l2')
GAN_LOSSES = ('bce', 'lsgan')
OPTIMIZERS = ('rmsprop', 'adam')
SKIP_CONNECTIONS = ('preactivation', 'activation')
KERNEL_INITS = ('truncated_normal', 'xavier_uniform')
DTYPES = ('float32', 'bfloat16')
# What the train step's backward pass keeps of G's and D's forward passes.
REMAT_POLICIES = ('none', 'conv_outputs')
# The metrics that evaluate and validation report, in their table's order.
VALIDATION_METRICS = ('pesq', 'csig', 'cbak', 'covl', 'ssnr', 'stoi')
# val_<metric> scores --validation_dir (or the dataset's split);
# val_mean_<metric> averages it with each --extra_validation_dirs set.
KEEP_BEST_METRICS = (tuple(f'val_{m}' for m in VALIDATION_METRICS)
                     + tuple(f'val_mean_{m}' for m in VALIDATION_METRICS))
# The fields that take one of a few values, and those values (checked here;
# the flags offer them).
CHOICES = {
    'model': MODELS, 'model_size': tuple(MODEL_SIZES),
    'reconstruction_loss': RECONSTRUCTION_LOSSES, 'gan_loss': GAN_LOSSES,
    'parallelism': PARALLELISM, 'nan_policy': NAN_POLICIES,
    'optimizer': OPTIMIZERS, 'skip_connections': SKIP_CONNECTIONS,
    'kernel_init': KERNEL_INITS, 'keep_best': KEEP_BEST_METRICS,
    'dtype': DTYPES, 'remat': REMAT_POLICIES,
    'output_high_band': high_band.HIGH_BANDS,
}


def extra_validation_names(folders) -> tuple[str, ...]:
  """The names of --extra_validation_dirs' sets in their metrics
  (val_<name>_<metric>): each folder's last part, in lower case with
  anything but letters and digits as '_'."""
  return tuple(re.sub(r'[^a-z0-9]+', '_',
                      os.path.basename(os.path.normpath(f)).lower()).strip('_')
               for f in folders)


def option(default: Any, help_text: str) -> Any:
  """A Config field with its one description, which its flag's help reads."""
  return dataclasses.field(default=default, metadata={'help': help_text})


# What each output setting's help ends with.
_SAVED_WITH_THE_RUN = (
    ' Saved with the run and its bundles: its enhance, evaluate and '
    'validation use it; --mode=enhance, evaluate or bundle may override it.')


def output_option(name: str, help_text: str) -> Any:
  """The Config field of output setting ``name`` (an `OutputSettings`
  field, whose default it takes)."""
  default = getattr(output_settings.OutputSettings(), name)
  return dataclasses.field(default=default, metadata={
      'help': help_text + _SAVED_WITH_THE_RUN, 'output_setting': True})


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a run; saved with each checkpoint.

  Each field's help is its flag's help (``--helpfull`` lists them); comments
  here say why a default or a design is what it is.
  """

  # --- The networks -----------------------------------------------------------
  model: str = option(
      'segan', 'segan; autoencoder (G without z or D, reconstruction loss); '
      'gan (the basic unconditional GAN).')
  model_size: str = option(
      'paper', 'Named network size (paper = Pascual et al. 2017; demo; tiny).')
  encoder_features: tuple[int, ...] | None = option(
      None, 'Override: encoder channels per layer, e.g. 16,32,32,64 (the '
      'decoder mirrors them).')
  kernel_size: int | None = option(None, 'Override: conv kernel width.')
  window_size: int | None = option(None,
                                   'Override: samples per training window.')
  use_z: bool = option(True, 'segan: concatenate z ~ N(0, 1) to the code (the '
                       'autoencoder never has z).')
  skip_connections: str = option(
      'preactivation', "G's skips: taken before the encoder's PReLU (as "
      'santi-pdp/segan) or after it.')
  # The last layer starts at zero, so an untrained residual G is the identity.
  residual: bool = option(False, 'G outputs noisy + correction (identity at '
                          'initialisation) instead of tanh of its last layer.')
  kernel_init: str = option(
      'truncated_normal', 'Conv kernel initialisation: truncated_normal (std '
      '0.02, as santi-pdp/segan) or xavier_uniform.')
  dtype: str = option(
      'float32', 'Compute dtype of the networks (bfloat16 for GPU/TPU); '
      'parameters, optimizer states, VBN statistics, losses and metrics stay '
      'float32.')
  remat: str = option(
      'none', "What the train step's backward pass keeps of G's and D's "
      'forward passes: none (everything; fastest) or conv_outputs (only each '
      "conv layer's output; norms and activations are recomputed, which "
      'lets the paper\'s batch of 400 fit in memory: docs/speed.md).')
  discriminator_features: tuple[int, ...] | None = option(
      None, "Override: D's channels per layer (default: those of G's encoder).")
  reconstruction_loss: str = option('l1', 'autoencoder: its training loss.')
  gan_loss: str = option('bce', 'gan: non-saturating cross-entropy (bce) or '
                         'least squares (lsgan).')
  latent_dim: int = option(64, 'gan: size of z.')

  # --- Data -------------------------------------------------------------------
  dataset: str = option('synthetic', 'Dataset name: synthetic (embedded, '
                        'offline), wav_pairs, voicebank_demand.')
  data_dir: str | None = option(
      None, 'wav_pairs: the folder holding noisy/ and clean/ (or train/ and '
      'test/ folders each holding them).')
  manual_dir: str | None = option(
      None, 'voicebank_demand: the folder with the four official zips or '
      'folders (clean_trainset_28spk_wav, ...).')
  tfds_data_dir: str | None = option(
      None, 'Where TFDS writes prepared datasets (default $TFDS_DATA_DIR or '
      '~/tensorflow_datasets).')
  skip_bad_files: bool = option(
      False, 'Build datasets with unusable files reported and left out, '
      'instead of stopping at the first.')
  dataset_size: int | None = option(
      None, 'Utterances in the synthetic train split (default: the dataset '
      'default).')
  preemphasis: float = option(0.95, "Pre-emphasis coefficient of the model's "
                              'input and output (de-emphasis inverts it).')
  # Why: de-emphasis has a DC gain of 1 / (1 - 0.95) = 20, so an offset in G's
  # output too small for a loss on pre-emphasised windows to notice becomes a
  # large one in the waveform, and it swings segmental SNR by several dB from
  # one checkpoint to the next. First order: a steeper filter's phase shift
  # reaches into the speech band and costs more SNR than it saves.
  output_highpass_hz: float = output_option(
      'output_highpass_hz', 'Enhanced audio is high-passed at this frequency '
      '(1st-order Butterworth, with the de-emphasis; 0: off).')
  # Why: G runs at 16 kHz; without this, 48 kHz output holds nothing above
  # 8 kHz and sounds muffled (docs/enhance_and_evaluate.md, "Full band").
  output_high_band: str = output_option(
      'output_high_band', 'Input above 16 kHz: gated = its band above 8 kHz '
      "is added back, per 8 ms frame gated by the gain G gives its band "
      'above 5 kHz (at least the attenuation limit); none = the output '
      'holds only what G gives back, nothing above 8 kHz.')

  # Why: a G trained on few voices removes the noise of an unseen one only in
  # part and distorts its speech where it does; keeping a little of the input
  # masks that distortion (what DeepFilterNet's atten_lim_db does).
  attenuation_limit_db: float = output_option(
      'attenuation_limit_db', 'Enhanced audio keeps the noisy input mixed in '
      'at -this dB (out = (1 - g) * enhanced + g * noisy, g = 10**(-x / '
      '20)): noise is attenuated by at most this much (0: no limit).')

  # Why: G's waveform carries its distortions of a voice it has not learned;
  # a gain on the input's own spectrum cannot synthesise any, and keeps what
  # G removes (docs/recipes.md, "The output mask").
  output_mask: bool = output_option(
      'output_mask', "Enhanced audio is the noisy input with G's gain applied "
      'per STFT bin, min(1, |G(x)| / |x|) in 64 ms frames, floored at the '
      "attenuation limit, instead of G's waveform.")
  # Why: the ratio gain keeps a bin that G cleaned only in part at G's level;
  # counting what G removed as noise, over-weighted, attenuates such bins
  # further without synthesising anything (docs/recipes.md, "The Wiener
  # gain").
  mask_oversubtraction: float = output_option(
      'mask_oversubtraction', 'With --output_mask, the gain per bin: 0 for '
      'the ratio min(1, |G(x)| / |x|); a > 0 for the Wiener gain |G(x)|^2 / '
      '(|G(x)|^2 + a |x - G(x)|^2), what G removed taken as noise and '
      'weighted by a. --mask_loss_weight trains with the ratio gain either '
      'way.')
  # Why: what G removed swings from frame to frame where it cleans a bin only
  # in part, and a Wiener gain on that swinging estimate leaves isolated
  # tones ("musical noise"); noise changes more slowly than speech
  # (docs/recipes.md, "Averaging the noise estimate").
  mask_noise_frames: int = output_option(
      'mask_noise_frames', 'With --output_mask and the Wiener gain: the '
      'noise estimate |x - G(x)|^2 is averaged over this many STFT frames (16 '
      'ms apart) centred on each, before the gain is taken (odd; 1: no '
      'smoothing). The ratio gain ignores it.')
  # Why: PCS400 (Chao et al., 2022) stretches the log-magnitude spectrum most
  # where hearing is most sensitive; measured on the bundle in
  # docs/enhance_and_evaluate.md, "Perceptual contrast stretching".
  output_pcs: float = output_option(
      'output_pcs', 'Enhanced audio is contrast-stretched: log(1 + |Y|) of '
      'each STFT bin (25 ms Hamming frames) times 1 + this * (w - 1), w the '
      'PCS400 weight of its band (1 to 1.4), phase kept (0: off; 1: PCS400; '
      'at most 2).')

  # --- Optimisation -----------------------------------------------------------
  num_epochs: int = option(86, 'Epochs to train in total.')
  batch_size: int = option(400, 'Global batch size, split over processes and '
                           'devices.')
  seed: int = option(0, 'Seeds parameters, z, data order, augmentation and the '
                     'dataset.')
  learning_rate: float = option(2e-4, 'Learning rate of G and D (peak, with a '
                                'schedule).')
  optimizer: str = option(
      'rmsprop', 'rmsprop: TF1 RMSProp (decay 0.9, eps 1e-10, accumulators '
      "start at 1), as the paper's code; adam: Adam with beta1 --adam_b1.")
  adam_b1: float = option(0.5, 'adam: beta1.')
  grad_clip_norm: float = option(
      0.0, "Scale each network's gradients down to this global norm before "
      'the optimizer (0: off).')
  warmup_steps: int = option(0, 'Steps of linear learning-rate warm-up (0: '
                             'none).')
  lr_final_fraction: float = option(
      1.0, 'Cosine decay of the learning rate to this fraction of it at the '
      'last step (1: constant).')

  # --- Losses: G's is adversarial + l1 + stft (+ feature matching) ------------
  l1_weight: float = option(100.0, "Weight of the L1 term in G's loss.")
  adversarial_weight: float = option(1.0, "Weight of the LSGAN term in G's "
                                     'loss.')
  stft_weight: float = option(
      0.0, "Weight of the multi-resolution STFT magnitude loss in G's loss "
      "(and the autoencoder's).")
  # Why: with --output_mask, G's waveform is not what is played; this scores
  # what is (the input through G's gain), so G learns the gain it is used for.
  mask_loss_weight: float = option(
      0.0, "Weight in G's loss (and the autoencoder's) of the spectral loss "
      'of the masked output: |G(x)| clipped per STFT bin to [g |x|, |x|] '
      '(g: the attenuation limit), as --output_mask plays it, against '
      '|clean| (0: off).')
  # A target for G that D winning outright does not flatten, unlike the
  # LSGAN term's.
  feature_matching_weight: float = option(
      0.0, "segan: weight of the feature-matching loss (L1 between D's "
      "activations for enhanced and clean pairs, layer by layer) in G's loss "
      '(0: off).')
  # santi-pdp/segan's disc_noise (off there by default): it blurs the
  # difference D can win on outright, so its gradient to G stays informative.
  d_input_noise: float = option(
      0.0, 'segan: std of the Gaussian instance noise added to the clean or '
      'enhanced signal of each pair D sees, in both updates (0: off).')

  # --- Metric discriminator (MetricGAN+): a second D predicts the normalised
  # PESQ of (enhanced, clean); G is trained toward its maximum. Off by
  # default (docs/recipes.md, "Metric discriminator"). --------------------------
  metric_discriminator: bool = option(
      False, 'segan: train a metric discriminator D_metric on the PESQ of a '
      'few windows per step (labelled off the jit path, two steps behind) '
      "and add --metric_weight * (D_metric(G(x), clean) - 1)^2 to G's loss.")
  metric_weight: float = option(
      1.0, "Weight of the metric discriminator's term in G's loss.")
  metric_windows_per_step: int = option(
      4, 'Windows of each step whose PESQ labels D_metric trains on (two '
      'WB-PESQ calls each, ~30-60 ms per 1 s window on a CPU core); a '
      'multiple of the devices.')
  metric_workers: int = option(
      1, 'Processes that compute the PESQ labels (0: a thread of the '
      'training process).')
  metric_learning_rate: float = option(
      5e-4, "D_metric's Adam learning rate (constant).")
  metric_features: tuple[int, ...] = option(
      (16, 32, 32, 64), "D_metric's channels per 2-D conv layer (stride 2 "
      'each).')

  # --- Augmentation: fresh for every step, a pure function of (seed, step,
  # position in the batch); all off by default (the paper's). ----------------
  remix_prob: float = option(
      0.0, "Augmentation: probability that a window's clean speech is mixed "
      'with the noise (noisy - clean) of another window.')
  remix_gain_db: tuple[float, float] = option(
      (-5.0, 5.0), "Augmentation: LOW,HIGH range (dB) of the remixed noise's "
      'gain.')
  gain_db: float = option(0.0, 'Augmentation: noisy and clean scaled together '
                          'by a gain uniform in +-this (dB).')
  speed_prob: float = option(
      0.0, "Augmentation: probability that a window's clean speech is "
      'resampled (speed and pitch together) by a factor in --speed_range.')
  speed_range: tuple[float, float] = option(
      (0.9, 1.1), 'Augmentation: LOW,HIGH speed factors.')
  pitch_prob: float = option(
      0.0, "Augmentation: probability that a window's clean speech is "
      'pitch-shifted, tempo kept, by a factor in --pitch_range.')
  pitch_range: tuple[float, float] = option(
      (0.8, 1.25), 'Augmentation: LOW,HIGH pitch factors (> 1: higher).')
  eq_prob: float = option(
      0.0, 'Augmentation: probability that a window (noisy and clean alike) '
      'goes through a peaking EQ centred in 100 Hz-6 kHz, of a gain uniform '
      'in +-eq_gain_db: other microphones, rooms and voices.')
  eq_gain_db: float = option(
      6.0, 'Augmentation: largest boost or cut (dB) of --eq_prob\'s EQ.')

  # --- Noise and room augmentation (segan_jax/noise_mix.py): the noisy input
  # of a window replaced by its clean speech (in a room, maybe) + new noise at
  # a drawn SNR; a pure function of (seed, step, position) like the above,
  # off by default. The shared folders are the recipes' defaults
  # (experiments/noise_holdout.flags), never the package's. -----------------
  noise_mix_prob: float = option(
      0.0, "Augmentation: probability that a window's noisy input is replaced "
      'by its clean speech + new noise (a clip of --noise_dirs or a kind of '
      '--noise_kinds, drawn uniformly) at an SNR in --noise_snr_db; the '
      'target stays the clean speech.')
  noise_snr_db: tuple[float, float] = option(
      (-5.0, 20.0), 'Augmentation: LOW,HIGH range (dB) of the SNR of '
      "--noise_mix_prob's mix (waveform energies over the window).")
  noise_dirs: tuple[str, ...] | None = option(
      None, 'Augmentation: folders of noise clips (any rate from 16 kHz up, '
      'resampled once at load; mono or downmixed), comma-separated, e.g. '
      '../shared/data/noise.')
  noise_holdout: tuple[str, ...] | None = option(
      None, 'Augmentation: file names in --noise_dirs never used in training '
      '(kept for experiments/make_unseen_noise_val.py), comma-separated.')
  noise_kinds: tuple[str, ...] | None = option(
      ('coloured', 'babble', 'speech_shaped', 'hum', 'clicks'),
      'Augmentation: generated noises drawn beside the clips: coloured (1/f^e, '
      'e in 0-2), babble (3-7 other training windows of clean speech), '
      'speech_shaped (noise with the long-term spectrum of the training '
      'speech), hum (50/60 Hz and harmonics), clicks; empty: clips only.')
  room_prob: float = option(
      0.0, "Augmentation: probability that a window's speech is reverberated "
      '(a response of --rir_dirs or a simulated room, half each when both); '
      'the target stays dry, aligned with the direct path.')
  room_rt60: tuple[float, float] = option(
      (0.2, 0.8), 'Augmentation: LOW,HIGH RT60 (s) of the simulated rooms '
      '(exponentially decaying noise).')
  rir_dirs: tuple[str, ...] | None = option(
      None, 'Augmentation: folders of room impulse responses, '
      'comma-separated, e.g. ../shared/data/rir.')
  rir_holdout: tuple[str, ...] | None = option(
      None, 'Augmentation: file names in --rir_dirs never used in training.')
  room_target_early_ms: float = option(
      0.0, "Augmentation: the target keeps this much of the room's response "
      'after the direct path (early reflections; 0: the dry speech).')
  # Why: two training voices generalise poorly to unseen ones; clean speech
  # of other voices (e.g. TTS, experiments/make_tts_voices.py) has no noise
  # of its own, so the noise mix makes all of it.
  extra_speech_dirs: tuple[str, ...] | None = option(
      None, 'Folders of clean speech files (mono or downmixed, resampled to '
      '16 kHz), comma-separated, whose windows join the training windows; '
      'their noisy input is always made by the noise mix (clean + a clip of '
      '--noise_dirs or a kind of --noise_kinds at an SNR in --noise_snr_db, '
      'whatever --noise_mix_prob). Validation is unchanged.')

  # --- Runs: warm start, checkpoints, validation, devices ---------------------
  init_from: str | None = option(
      None, 'Warm start: WORKDIR or WORKDIR:STEP of another run whose G (and '
      'D, when both have one) start this one, or pretrained[:NAME_OR_FOLDER] '
      'for the G of a bundled pretrained model (D then starts fresh); ignored '
      'once this run has its own checkpoint (it then resumes from that).')
  vbn_reference_size: int = option(
      32, "Windows in D's virtual batch norm reference batch.")
  checkpoint_every_epochs: int = option(
      5, 'Save a checkpoint every this many epochs (and at the end).')
  keep_checkpoints: int = option(0, 'How many checkpoints to keep (0: all).')
  log_every_steps: int = option(50, 'Log metrics every this many steps.')
  validation_files: int = option(
      4, 'Validation files enhanced and scored at each checkpoint (0: none).')
  # A flat wav_pairs folder has no split of its own, so without this its
  # validation scores training files: --keep_best would measure fit, not how
  # G does on an unseen voice.
  validation_dir: str | None = option(
      None, 'A folder of noisy/ and clean/ pairs (e.g. an unseen voice) scored '
      "at each checkpoint instead of the dataset's validation or test split; "
      'what --keep_best then picks by.')
  extra_validation_dirs: tuple[str, ...] | None = option(
      None, 'More folders of noisy/ and clean/ pairs (e.g. an unseen voice in '
      'unseen noises), comma-separated, each scored beside --validation_dir '
      'at each checkpoint as val_<folder name>_<metric>; val_mean_<metric> '
      'averages all the sets, and --keep_best=val_mean_pesq picks by it.')
  keep_best: str | None = option(
      None, 'Keep the checkpoint with the best value of this validation metric '
      'in WORKDIR/best; enhance and evaluate use it by default.')
  parallelism: str = option(
      'auto', 'auto: pmap on several devices, else one device; none; pmap; '
      'sharding: jit over a device mesh with NamedSharding.')
  conv_forms_table: str | None = option(
      None, 'A conv forms table measured by python -m benchmarks.conv_forms '
      '(JSON): its layers take the forms it gives on its device kinds, over '
      "the package's table; the rest keep the conv policy's rule "
      '(docs/speed.md).')
  nan_policy: str = option(
      'stop', 'A non-finite loss or gradient: stop (naming the step and '
      'metric; the last good checkpoint stays) or skip_step (drop that '
      'update, go on).')

  def __post_init__(self):
    for name, known in CHOICES.items():
      if name == 'keep_best' and self.keep_best is None:
        continue
      if getattr(self, name) not in known:
        raise ValueError(f'unknown {name} {getattr(self, name)!r}; known: '
                         f'{", ".join(known)}')
    for name in ('num_epochs', 'batch_size', 'checkpoint_every_epochs',
                 'vbn_reference_size', 'log_every_steps'):
      if getattr(self, name) < 1:
        raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
    if self.grad_clip_norm < 0:
      raise ValueError(f'grad_clip_norm must be >= 0, got {self.grad_clip_norm}')
    if not self.mask_loss_weight >= 0.0:
      raise ValueError('mask_loss_weight must be >= 0 (0: off), got '
                       f'{self.mask_loss_weight}')
    object.__setattr__(self, 'metric_features',
                       tuple(int(f) for f in self.metric_features or ()))
    bad_metric = next((f'{name} must be {rule}, got {getattr(self, name)}'
                       for name, rule, ok in (
                           ('metric_weight', '>= 0', self.metric_weight >= 0),
                           ('metric_windows_per_step', '>= 1',
                            self.metric_windows_per_step >= 1),
                           ('metric_workers', '>= 0', self.metric_workers >= 0),
                           ('metric_learning_rate', '> 0',
                            self.metric_learning_rate > 0),
                           ('metric_features', 'one or more channel counts '
                            '>= 1', bool(self.metric_features) and
                            min(self.metric_features) >= 1)) if not ok), None)
    if bad_metric:
      raise ValueError(bad_metric)
    if self.metric_discriminator and self.window < audio.SAMPLE_RATE // 4:
      raise ValueError('metric_discriminator needs windows of at least 0.25 s '
                       f'({audio.SAMPLE_RATE // 4} samples), what PESQ '
                       f'scores; window_size is {self.window}')
    # The output settings' own checks (attenuation, mask, high-pass).
    output_settings.OutputSettings.from_config(self)
    # The augmentation's own checks (ranges, probabilities, gain_db >= 0);
    # its normalised ranges are kept.
    augmentation = augment.Augmentation.from_config(self)
    for name in ('remix_gain_db', 'speed_range', 'pitch_range'):
      object.__setattr__(self, name, getattr(augmentation, name))
    noise = noise_mix.NoiseSettings.from_config(self)
    for name in ('noise_snr_db', 'room_rt60'):
      object.__setattr__(self, name, getattr(noise, name))
    for name in ('noise_kinds', 'noise_dirs', 'noise_holdout', 'rir_dirs',
                 'rir_holdout', 'extra_validation_dirs', 'extra_speech_dirs'):
      if getattr(self, name) is not None:  # a saved run's lists: tuples
        object.__setattr__(self, name, tuple(getattr(self, name)))
    names = extra_validation_names(self.extra_validation_dirs or ())
    if len(set(names)) < len(names):
      raise ValueError('extra_validation_dirs: two folders share a name '
                       f'({", ".join(names)}); their scores would collide')
    if (self.keep_best or '').startswith('val_mean_') and not names:
      raise ValueError(f'--keep_best={self.keep_best} averages validation '
                       'sets: give --extra_validation_dirs (else use '
                       f'--keep_best={self.keep_best.replace("mean_", "")})')
    if self.discriminator_features is not None:
      object.__setattr__(self, 'discriminator_features',
                         tuple(int(f) for f in self.discriminator_features))
    if self.encoder_features is not None:
      object.__setattr__(self, 'encoder_features',
                         tuple(int(f) for f in self.encoder_features))
    stride_total = 2**len(self.features)
    if self.window % stride_total:
      raise ValueError(f'window_size {self.window} must be a multiple of '
                       f'2**num_layers = {stride_total}')

  @property
  def features(self) -> tuple[int, ...]:
    return self.encoder_features or MODEL_SIZES[self.model_size][0]

  @property
  def d_features(self) -> tuple[int, ...]:
    return self.discriminator_features or self.features

  @property
  def augments(self) -> bool:
    """Whether any training augmentation is on."""
    return (augment.Augmentation.from_config(self).enabled or
            noise_mix.NoiseSettings.from_config(self).enabled)

  @property
  def kernel(self) -> int:
    return self.kernel_size or MODEL_SIZES[self.model_size][1]

  @property
  def window(self) -> int:
    return self.window_size or MODEL_SIZES[self.model_size][2]

  @property
  def hop(self) -> int:
    """Training windows overlap by 50 %."""
    return self.window // 2

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def replace(self, **changes) -> 'Config':
    return dataclasses.replace(self, **changes)
