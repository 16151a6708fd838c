"""An unseen voice in the noises the training data has: vbd_val's clean speech
(speaker p287) mixed with the noise of vbd_test's pairs at the test set's SNRs.

  python experiments/unseen_voice_mix.py --output=workdirs/vbd_val_testnoise
  python -m segan_jax --mode=enhance --input=workdirs/vbd_val_testnoise/noisy --output=OUT
  python -m segan_jax --mode=evaluate --clean_dir=workdirs/vbd_val_testnoise/clean \
    --enhanced_dir=OUT --noisy_dir=workdirs/vbd_val_testnoise/noisy

Why: the VoiceBank-DEMAND test speakers are heard in the test set's five
noises (bus, cafe, living, office, public square), which vbd_train has too,
while vbd_val's own pairs carry two of the training set's noises (babble,
cafeteria) that no training file has. Scoring both separates what a model
fails to carry over to a new voice from what it fails to carry over to a new
noise. Each of the 6 clean files is mixed at 2.5, 7.5, 12.5 and 17.5 dB (the
test set's four SNRs; here the ratio of whole-file energies, not of active
speech levels) with the noise (noisy - clean, exact for this corpus) of a
different vbd_test pair each time, from a random offset, looped where it is
shorter. Seeded: the same folder every time. Writes noisy/ and clean/ with
equal names, 16-bit 16 kHz.

--speed=1.25 plays the voice 1.25x faster first (resampled with soxr): its
pitch and formants rise by that factor, toward a female voice such as the
test set's other speaker, which neither training voice is. The SNRs hold
for the sped-up speech.
"""

import argparse
import os

import numpy as np
import soundfile
import soxr

SNRS_DB = (2.5, 7.5, 12.5, 17.5)


def read(path):
  signal, rate = soundfile.read(path, dtype='float64')
  if rate != 16000 or signal.ndim != 1:
    raise SystemExit(f'{path}: expected 16 kHz mono, got {rate} Hz, '
                     f'shape {signal.shape}')
  return signal


def noises(test_dir):
  """The noise of every vbd_test pair, in name order."""
  names = sorted(os.listdir(os.path.join(test_dir, 'clean')))
  return [read(os.path.join(test_dir, 'noisy', n)) -
          read(os.path.join(test_dir, 'clean', n)) for n in names]


def mix(clean, noise, snr_db, rng):
  """``clean`` plus a segment of ``noise`` (looped) at ``snr_db``."""
  reps = -(-(clean.size + noise.size) // noise.size)
  start = rng.integers(noise.size)
  segment = np.tile(noise, reps)[start:start + clean.size]
  gain = np.sqrt(np.sum(clean**2) / (np.sum(segment**2) * 10**(snr_db / 10)))
  return clean + gain * segment


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data', default='../shared/data')
  parser.add_argument('--output', required=True)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--speed', type=float, default=1.0,
                      help='play the voice this much faster (pitch and '
                      'formants rise by it); 1: as recorded')
  args = parser.parse_args()
  if not 0.5 <= args.speed <= 2.0:
    raise SystemExit(f'--speed must be in [0.5, 2], got {args.speed}')
  voice_dir = os.path.join(args.data, 'vbd_val', 'clean')
  test_dir = os.path.join(args.data, 'vbd_test')
  for path in (voice_dir, test_dir):
    if not os.path.isdir(path):
      raise SystemExit(f'{path}: not found (the shared data folder)')
  rng = np.random.default_rng(args.seed)
  noise_pool = noises(test_dir)
  order = rng.permutation(len(noise_pool))
  for sub in ('noisy', 'clean'):
    os.makedirs(os.path.join(args.output, sub), exist_ok=True)
  count = 0
  for name in sorted(os.listdir(voice_dir)):
    clean = read(os.path.join(voice_dir, name))
    if args.speed != 1.0:
      clean = soxr.resample(clean, 16000 * args.speed, 16000, quality='VHQ')
    for snr in SNRS_DB:
      noise = noise_pool[order[count % len(order)]]
      noisy = mix(clean, noise, snr, rng)
      peak = max(np.max(np.abs(noisy)), 1e-9)
      scale = min(1.0, 0.99 / peak)  # no clipping; both scaled alike
      out = f'{os.path.splitext(name)[0]}_{snr:g}dB.wav'
      for sub, signal in (('noisy', noisy), ('clean', clean)):
        soundfile.write(os.path.join(args.output, sub, out), signal * scale,
                        16000, subtype='PCM_16')
      count += 1
  print(f'Wrote {count} pairs into {args.output}.')


if __name__ == '__main__':
  main()
