"""Pictures a person can judge training by: spectrograms of enhancement
examples and the basic GAN's sample grid."""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging

from segan_jax import audio
from segan_jax import files
from segan_jax import systems
from segan_jax.config import Config

GRID_ROWS, GRID_COLS = 2, 4


def _figure():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')  # no display on training hosts
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  return pyplot


def log_spectrogram(x: np.ndarray, nfft: int = 512) -> np.ndarray:
  """Log-magnitude (dB) STFT, ``[freq, time]``, Hann window, 50 % overlap."""
  x = np.pad(x, (0, max(0, nfft - x.size)))  # at least one frame
  frames = np.lib.stride_tricks.sliding_window_view(
      x, nfft)[::nfft // 2] * np.hanning(nfft)
  return 20 * np.log10(np.abs(np.fft.rfft(frames, axis=-1)).T + 1e-6)


def _save_figure(fig, path: str) -> np.ndarray:
  """Writes the PNG atomically; returns the picture as uint8 RGB."""
  with files.atomic_open(path, 'wb') as f:
    fig.savefig(f, format='png', dpi=80)
  fig.canvas.draw()
  return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def enhancement_figure(examples: list[dict[str, np.ndarray]], path: str,
                       title: str,
                       sample_rate: int = audio.SAMPLE_RATE) -> np.ndarray:
  """One row per example: noisy, enhanced, clean log-spectrograms.

  All panels share one colour scale (80 dB below the loudest), so what the
  model removed or invented shows directly. Returns the picture as RGB.
  """
  pyplot = _figure()
  columns = ('noisy', 'enhanced', 'clean')
  fig, axes = pyplot.subplots(len(examples), 3, squeeze=False,
                              figsize=(10, 2.2 * len(examples)))
  spectra = [[log_spectrogram(e[c]) for c in columns] for e in examples]
  top = max(s.max() for row in spectra for s in row)
  for r, row in enumerate(spectra):
    for c, spectrum in enumerate(row):
      ax = axes[r, c]
      seconds = examples[r][columns[c]].size / sample_rate
      image = ax.imshow(spectrum, origin='lower', aspect='auto', cmap='magma',
                        vmin=top - 80, vmax=top,
                        extent=(0, seconds, 0, sample_rate / 2000))
      if r == 0:
        ax.set_title(columns[c])
      if c == 0:
        ax.set_ylabel('kHz')
  fig.colorbar(image, ax=axes.ravel().tolist(), label='dB', shrink=0.8)
  fig.suptitle(title)
  picture = _save_figure(fig, path)
  pyplot.close(fig)
  return picture


def sample_grid(waveforms: np.ndarray, path: str, title: str,
                sample_rate: int = audio.SAMPLE_RATE) -> np.ndarray:
  """Waveform above log-spectrogram for each of up to 8 signals, one PNG.

  All spectrograms share one colour scale so they compare at a glance.
  Written under a temporary name and renamed.
  """
  pyplot = _figure()
  count = min(len(waveforms), GRID_ROWS * GRID_COLS)
  fig, axes = pyplot.subplots(2 * GRID_ROWS, GRID_COLS,
                              figsize=(3 * GRID_COLS, 2.2 * GRID_ROWS * 2),
                              squeeze=False)
  spectra = [log_spectrogram(x, nfft=256) for x in waveforms[:count]]
  top = max(s.max() for s in spectra)
  for i in range(GRID_ROWS * GRID_COLS):
    wave_ax = axes[2 * (i // GRID_COLS), i % GRID_COLS]
    spec_ax = axes[2 * (i // GRID_COLS) + 1, i % GRID_COLS]
    for ax in (wave_ax, spec_ax):
      ax.set_xticks([])
      ax.set_yticks([])
    if i >= count:
      continue
    x = waveforms[i]
    wave_ax.plot(np.arange(x.size) / sample_rate, x, linewidth=0.4)
    wave_ax.set_ylim(-1, 1)
    spec_ax.imshow(spectra[i], origin='lower', aspect='auto', cmap='magma',
                   vmin=top - 80, vmax=top,
                   extent=(0, x.size / sample_rate, 0, sample_rate / 2000))
  fig.suptitle(title)
  fig.tight_layout()
  picture = _save_figure(fig, path)
  pyplot.close(fig)
  return picture


def gan_sampler(config: Config, workdir: str, writer=None):
  """Returns ``sample(g_params, step)``: G on 8 fixed z -> PNG grid + WAV.

  The same z at every checkpoint, so successive pictures show one set of
  samples learning. Files: ``WORKDIR/samples/step_<N>.png`` and ``.wav``.
  """
  generator = systems.generator(config)
  z = jax.random.normal(jax.random.key(config.seed + 1),
                        (GRID_ROWS * GRID_COLS, config.latent_dim))
  apply = jax.jit(lambda params: generator.apply({'params': params}, z))

  def sample(g_params, step):
    waves = audio.deemphasis(np.asarray(apply(g_params)), config.preemphasis)
    waves = np.clip(waves, -1, 1)
    stem = os.path.join(workdir, 'samples', f'step_{step}')
    picture = sample_grid(waves, stem + '.png',
                          f'{config.model} samples, step {step}')
    if writer is not None:
      writer.write_image('samples', picture, step)
    # The 8 samples one after another, with short gaps, to listen to.
    gap = np.zeros(audio.SAMPLE_RATE // 10, np.float32)
    files.write_wav(stem + '.wav', np.concatenate(
        [np.concatenate([w, gap]) for w in waves]), audio.SAMPLE_RATE)
    logging.info('GAN samples at step %d: %s.png', step, stem)
    return {'sample_rms': float(np.sqrt(np.mean(waves**2)))}

  return sample
