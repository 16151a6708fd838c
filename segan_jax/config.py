"""Run configuration: one frozen dataclass, built from absl flags or directly in tests."""

from __future__ import annotations

import dataclasses
from typing import Any

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


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a run; saved with each checkpoint."""

  model: str = 'segan'
  model_size: str = 'paper'
  # Overrides of the named size (None: take the size's value).
  encoder_features: tuple[int, ...] | None = None
  kernel_size: int | None = None
  window_size: int | None = None
  use_z: bool = True  # SEGAN's latent z (the autoencoder never has one)
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

  num_epochs: int = 86
  batch_size: int = 400
  seed: int = 0
  learning_rate: float = 2e-4
  l1_weight: float = 100.0
  vbn_reference_size: int = 32

  checkpoint_every_epochs: int = 5
  keep_checkpoints: int = 0  # 0 keeps all.
  log_every_steps: int = 50
  # Files of the validation split enhanced and scored at each checkpoint.
  validation_files: int = 4
  parallelism: str = 'auto'
  # What a non-finite loss or gradient does: stop (keeping the last good
  # checkpoint) or skip_step (the update is dropped, training goes on).
  nan_policy: str = 'stop'

  def __post_init__(self):
    for name, known in (('model', MODELS), ('model_size', MODEL_SIZES),
                        ('reconstruction_loss', RECONSTRUCTION_LOSSES),
                        ('gan_loss', GAN_LOSSES), ('parallelism', PARALLELISM),
                        ('nan_policy', NAN_POLICIES)):
      if getattr(self, name) not in known:
        raise ValueError(f'unknown {name} {getattr(self, name)!r}; known: '
                         f'{", ".join(known)}')
    if self.model == 'autoencoder':
      object.__setattr__(self, 'use_z', False)
    for name in ('num_epochs', 'batch_size', 'checkpoint_every_epochs',
                 'vbn_reference_size', 'log_every_steps'):
      if getattr(self, name) < 1:
        raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
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

  def model_signature(self) -> dict[str, Any]:
    """What a checkpoint's parameters depend on (checked when restoring)."""
    signature = dict(model=self.model, features=list(self.features),
                     kernel=self.kernel, window=self.window, use_z=self.use_z)
    if self.model == 'gan':
      signature['latent_dim'] = self.latent_dim
    return signature
