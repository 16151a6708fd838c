"""Run configuration: one frozen dataclass, built from absl flags or directly in tests."""

from __future__ import annotations

import dataclasses
from typing import Any

from segan_jax import augment
from segan_jax.models.generator import PAPER_FEATURES

# Named model sizes: (encoder features, kernel size, window size).
MODEL_SIZES = {
    # Pascual et al. 2017: 11 layers, kernel 31, windows of 2^14 samples.
    'paper': (PAPER_FEATURES, 31, 16384),
    # Same depth, kernel and window as the paper, 1/8 of the width: trains the
    # demo on two CPU cores in about two minutes.
    'demo': (tuple(max(2, f // 8) for f in PAPER_FEATURES), 31, 16384),
    # For unit tests: 5 layers on 1024-sample windows.
    'tiny': ((4, 8, 8, 16, 16), 15, 1024),
}

PARALLELISM = ('auto', 'none', 'pmap', 'sharding')
NAN_POLICIES = ('stop', 'skip_step')
MODELS = ('segan', 'autoencoder', 'gan')
RECONSTRUCTION_LOSSES = ('l1', 'l2')
GAN_LOSSES = ('bce', 'lsgan')
OPTIMIZERS = ('rmsprop', 'adam')
SKIP_CONNECTIONS = ('preactivation', 'activation')
KERNEL_INITS = ('truncated_normal', 'xavier_uniform')
DTYPES = ('float32', 'bfloat16')
KEEP_BEST_METRICS = ('val_pesq', 'val_stoi', 'val_csig', 'val_cbak', 'val_covl',
                     'val_ssnr')
# The fields that take one of a few values, and those values (checked here;
# the flags offer them).
CHOICES = {
    'model': MODELS, 'model_size': tuple(MODEL_SIZES),
    'reconstruction_loss': RECONSTRUCTION_LOSSES, 'gan_loss': GAN_LOSSES,
    'parallelism': PARALLELISM, 'nan_policy': NAN_POLICIES,
    'optimizer': OPTIMIZERS, 'skip_connections': SKIP_CONNECTIONS,
    'kernel_init': KERNEL_INITS, 'keep_best': KEEP_BEST_METRICS,
    'dtype': DTYPES,
}


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a run; saved with each checkpoint."""

  model: str = 'segan'
  model_size: str = 'paper'
  # Overrides of the named size (None: take the size's value).
  encoder_features: tuple[int, ...] | None = None
  kernel_size: int | None = None
  window_size: int | None = None
  use_z: bool = True  # SEGAN's latent z (the autoencoder ignores it: never a z)
  # Where G's skip connections are taken: before the encoder's PReLU (as in
  # santi-pdp/segan) or after it.
  skip_connections: str = 'preactivation'
  # G outputs noisy + correction (its last layer starts at zero, so an
  # untrained G is the identity) instead of tanh of its last layer.
  residual: bool = False
  # Conv kernels: truncated normal, std 0.02 (santi-pdp/segan) or Xavier.
  kernel_init: str = 'truncated_normal'
  # The networks' computation (convs, activations); parameters, optimizer
  # states, VBN statistics, losses and metrics stay float32 whatever it is.
  dtype: str = 'float32'
  # D's channels per layer (None: the same as G's encoder).
  discriminator_features: tuple[int, ...] | None = None
  # autoencoder: its training loss; gan: its loss and latent size.
  reconstruction_loss: str = 'l1'
  gan_loss: str = 'bce'
  latent_dim: int = 64

  dataset: str = 'synthetic'
  data_dir: str | None = None
  # VoiceBank-DEMAND downloads (zips or folders); TFDS output folder.
  manual_dir: str | None = None
  tfds_data_dir: str | None = None
  skip_bad_files: bool = False
  # Number of utterances of the embedded synthetic train split (None: default).
  dataset_size: int | None = None
  preemphasis: float = 0.95
  # Enhanced audio goes through a 1st-order Butterworth high-pass at this
  # frequency (Hz; 0: off), in the same filter as the de-emphasis. Why:
  # de-emphasis has a DC gain of 1 / (1 - 0.95) = 20, so an offset in G's
  # output too small for a loss on pre-emphasised windows to notice becomes
  # a large one in the waveform, and it swings segmental SNR by several dB
  # from one checkpoint to the next. First order: a steeper filter's phase
  # shift reaches into the speech band and costs more SNR than it saves.
  output_highpass_hz: float = 0.0

  num_epochs: int = 86
  batch_size: int = 400
  seed: int = 0
  learning_rate: float = 2e-4
  # rmsprop: TF1 semantics (decay 0.9, eps 1e-10, accumulators start at 1),
  # as the paper's code; adam: Adam with beta1 = adam_b1.
  optimizer: str = 'rmsprop'
  adam_b1: float = 0.5
  # Gradients are scaled down to this global norm before the optimizer
  # (per network; 0: off).
  grad_clip_norm: float = 0.0
  # Steps of linear learning-rate warm-up (0: none) and a cosine decay to
  # lr_final_fraction * learning_rate at the end of training (1.0: constant).
  warmup_steps: int = 0
  lr_final_fraction: float = 1.0
  l1_weight: float = 100.0
  # G's loss: adversarial_weight * LSGAN + l1_weight * L1 +
  # stft_weight * multi-resolution STFT magnitude loss.
  adversarial_weight: float = 1.0
  stft_weight: float = 0.0
  # segan: + feature_matching_weight * L1 between D's activations for the
  # enhanced and the clean pair, layer by layer: a target for G that D
  # winning outright does not flatten, unlike the LSGAN term's.
  feature_matching_weight: float = 0.0
  # segan: instance noise, N(0, d_input_noise^2) added to the clean or
  # enhanced signal of every pair D sees, in both updates (santi-pdp/segan's
  # disc_noise, off there by default). It blurs the difference D can win
  # on outright, so its gradient to G stays informative.
  d_input_noise: float = 0.0

  # On-the-fly augmentation of training windows, a pure function of
  # (seed, step, position in the batch); all off by default (the paper's).
  # remix: with this probability a window's clean speech is mixed with the
  # noise (noisy - clean) of another window, scaled by a gain drawn
  # uniformly in remix_gain_db (dB).
  remix_prob: float = 0.0
  remix_gain_db: tuple[float, float] = (-5.0, 5.0)
  # gain: noisy and clean scaled together by a gain uniform in +-gain_db dB.
  gain_db: float = 0.0
  # speed: the clean speech resampled by a factor uniform in speed_range
  # (pitch and tempo together), with probability speed_prob.
  speed_prob: float = 0.0
  speed_range: tuple[float, float] = (0.9, 1.1)

  # Start G (and D when both runs have one) from another run's checkpoint:
  # 'WORKDIR' (its latest) or 'WORKDIR:STEP'. Ignored once this run has a
  # checkpoint of its own (it then resumes from that).
  init_from: str | None = None
  vbn_reference_size: int = 32

  checkpoint_every_epochs: int = 5
  keep_checkpoints: int = 0  # 0 keeps all.
  log_every_steps: int = 50
  # Files of the validation split enhanced and scored at each checkpoint.
  validation_files: int = 4
  # A folder of noisy/ + clean/ pairs to validate on instead of the
  # dataset's validation (or test) split. A flat wav_pairs folder has no
  # split of its own, so without this its validation scores training files:
  # --keep_best would measure fit, not how G does on an unseen voice.
  validation_dir: str | None = None
  # Keep the checkpoint with the best value of this validation metric
  # (e.g. val_pesq) as WORKDIR/best; enhance and evaluate use it by default.
  keep_best: str | None = None
  parallelism: str = 'auto'
  # What a non-finite loss or gradient does: stop (keeping the last good
  # checkpoint) or skip_step (the update is dropped, training goes on).
  nan_policy: str = 'stop'

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
    if not 0.0 <= self.output_highpass_hz < 4000.0:
      raise ValueError('output_highpass_hz must be in [0, 4000), got '
                       f'{self.output_highpass_hz}')
    # The augmentation's own checks (ranges, probabilities, gain_db >= 0);
    # its normalised ranges are kept.
    augmentation = augment.Augmentation.from_config(self)
    for name in ('remix_gain_db', 'speed_range'):
      object.__setattr__(self, name, getattr(augmentation, name))
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
    return augment.Augmentation.from_config(self).enabled

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
