"""An unseen voice in unseen noises: vbd_val's clean speech (speaker p287, in
no training file) mixed with the noise clips that training holds out
(experiments/noise_holdout.flags), for validation and keep-best:

  python experiments/make_unseen_noise_val.py --output=workdirs/unseen_noise_val
  python launch.py --flagfile=experiments/quick.flags ... \
    --validation_dir=../shared/data/vbd_val \
    --extra_validation_dirs=workdirs/unseen_noise_val --validation_files=24 \
    --keep_best=val_mean_pesq
  # or score a model on it:
  python -m segan_jax --mode=enhance --input=workdirs/unseen_noise_val/noisy --output=OUT
  python -m segan_jax --mode=evaluate --clean_dir=workdirs/unseen_noise_val/clean \
    --enhanced_dir=OUT --noisy_dir=workdirs/unseen_noise_val/noisy

Each of the 6 clean files is mixed at 0, 5, 10 and 15 dB (whole-file
waveform energies, the SNR of noise_mix.scale_to_snr) with a held-out clip,
file i at SNR j taking clip (i + j) mod the number of clips, so every clip
is heard at every SNR; the clip is read from a seeded offset and looped where
it is shorter. --room also reverberates every second pair with the held-out
room response(s) (the clean reference stays dry, as in training). Seeded:
the same folder every time. Writes noisy/ and clean/ with equal names,
16-bit 16 kHz, both scaled alike so that nothing clips, and manifest.csv
(file, clip, SNR, room). The audio is derived from the shared data: never
commit it.
"""

import argparse
import csv
import os
import sys

import numpy as np

from segan_jax import audio
from segan_jax import files
from segan_jax import noise_mix

SNRS_DB = (0.0, 5.0, 10.0, 15.0)


def holdout_names(flagfile: str, flag: str) -> list[str]:
  """The comma-separated names of ``--flag=`` in ``flagfile``."""
  with open(flagfile) as f:
    for line in f:
      if line.strip().startswith(f'--{flag}='):
        return [n for n in line.strip().split('=', 1)[1].split(',') if n]
  raise SystemExit(f'error: {flagfile}: no --{flag}= line')


def read_named(folder: str, names: list[str]) -> list[tuple[str, np.ndarray]]:
  clips = []
  for name in names:
    try:
      clips.append((name, noise_mix.read_clip(os.path.join(folder, name))))
    except audio.AudioError as e:
      raise SystemExit(f'error: {e}') from None
  return clips


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data', default='../shared/data',
                      help='the shared data folder (vbd_val, noise, rir)')
  parser.add_argument('--holdout', default='experiments/noise_holdout.flags',
                      help='the flagfile whose --noise_holdout (and '
                      '--rir_holdout) name the clips to use')
  parser.add_argument('--output', default='workdirs/unseen_noise_val')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--room', action='store_true',
                      help='reverberate every second pair with the held-out '
                      'room response(s)')
  args = parser.parse_args()
  voice_dir = os.path.join(args.data, 'vbd_val', 'clean')
  if not os.path.isdir(voice_dir):
    raise SystemExit(f'error: {voice_dir}: not found (the shared data folder)')
  clips = read_named(os.path.join(args.data, 'noise'),
                     holdout_names(args.holdout, 'noise_holdout'))
  rooms = []
  if args.room:
    rooms = [(name, noise_mix.align_rir(rir)) for name, rir in read_named(
        os.path.join(args.data, 'rir'),
        holdout_names(args.holdout, 'rir_holdout'))]
  rng = np.random.default_rng(args.seed)
  for sub in ('noisy', 'clean'):
    os.makedirs(os.path.join(args.output, sub), exist_ok=True)
  rows = []
  names = sorted(n for n in os.listdir(voice_dir) if audio.is_audio_file_name(n))
  for i, name in enumerate(names):
    clean = np.asarray(audio.read_mono_16k(os.path.join(voice_dir, name)),
                       np.float64)
    for j, snr in enumerate(SNRS_DB):
      clip_name, clip = clips[(i + j) % len(clips)]
      noise = noise_mix.loop_segment(clip, clean.shape[0],
                                     int(rng.integers(clip.shape[0])))
      speech, room = clean, ''
      if rooms and (i * len(SNRS_DB) + j) % 2:
        room, rir = rooms[(i + j) % len(rooms)]
        speech = noise_mix.reverberate(clean, rir)
      noisy = speech + noise_mix.scale_to_snr(speech, noise, snr)
      scale = min(1.0, 0.99 / max(np.max(np.abs(noisy)),
                                  np.max(np.abs(clean)), 1e-9))
      out = f'{os.path.splitext(name)[0]}_{clip_name[:-4]}_{snr:g}dB.wav'
      for sub, x in (('noisy', noisy), ('clean', clean)):
        files.write_wav(os.path.join(args.output, sub, out), x * scale,
                        audio.SAMPLE_RATE)
      rows.append({'file': out, 'clean': name, 'noise': clip_name,
                   'snr_db': f'{snr:g}', 'room': room})
  with open(os.path.join(args.output, 'manifest.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  print(f'Wrote {len(rows)} pairs into {args.output} (held-out clips: '
        f'{", ".join(n for n, _ in clips)}).', file=sys.stderr)


if __name__ == '__main__':
  main()
