"""Clean speech of TTS voices (Debian's flite and espeak-ng) for training
beside the pair corpus, whose two voices generalise poorly to unseen ones:

  apt-get install -y flite espeak-ng
  python experiments/make_tts_voices.py --output=workdirs/tts_voices
  python launch.py --flagfile=experiments/pretrained_tts.flags \
    --dataset=wav_pairs --data_dir=../shared/data/vbd_train \
    --workdir=workdirs/pretrained_tts

Each voice of VOICES reads its own share of the sentences, which are built
from a seeded grammar (SUBJECTS, VERBS, ...): the same text, the same
files, every time for the same tool versions. The output is one flat folder
of 16-bit 16 kHz mono files, <voice>_<nnn>.wav (resampled with soxr where a
tool writes another rate, silence at the ends trimmed, every file at one
level), the layout that --extra_speech_dirs reads, and MANIFEST.json: the
tools' Debian packages and versions, each voice's command, and each file's
text and seconds. Generated audio: never commit it (workdirs/ is ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from segan_jax import audio
from segan_jax import files

# The Debian package each tool comes from (the missing-tool error names it).
TOOLS = {'flite': 'flite', 'espeak-ng': 'espeak-ng'}
# What the manifest records the versions of: the tools and their voice data.
PACKAGES = ('flite', 'libflite1', 'espeak-ng', 'espeak-ng-data')

# (name, tool, arguments): flite's 16 kHz voices (kal is 8 kHz: no top band)
# and espeak-ng's English accents with variants, pitches and rates spread
# over both sexes, so the set adds voices higher and lower than the corpus's
# two men. mbrola voices need non-free packages and are left out.
VOICES = (
    ('flite_kal16', 'flite', ('-voice', 'kal16')),
    ('flite_awb', 'flite', ('-voice', 'awb')),
    ('flite_rms', 'flite', ('-voice', 'rms')),
    ('flite_slt', 'flite', ('-voice', 'slt')),
    ('espeak_us_f3', 'espeak-ng', ('-v', 'en-us+f3', '-p', '60', '-s', '160')),
    ('espeak_gb_m3', 'espeak-ng', ('-v', 'en-gb+m3', '-p', '35', '-s', '150')),
    ('espeak_scot_f2', 'espeak-ng',
     ('-v', 'en-gb-scotland+f2', '-p', '55', '-s', '155')),
    ('espeak_carib_m7', 'espeak-ng',
     ('-v', 'en-029+m7', '-p', '45', '-s', '165')),
    ('espeak_rp_f4', 'espeak-ng', ('-v', 'en-gb-x-rp+f4', '-p', '70',
                                   '-s', '145')),
    ('espeak_us_m1', 'espeak-ng', ('-v', 'en-us+m1', '-p', '25', '-s', '170')),
    ('espeak_lanc_f5', 'espeak-ng',
     ('-v', 'en-gb-x-gbclan+f5', '-p', '50', '-s', '150')),
    ('espeak_nyc_m2', 'espeak-ng', ('-v', 'en-us-nyc+m2', '-p', '40',
                                    '-s', '175')),
)

SUBJECTS = (
    'The old farmer', 'A small child', 'The tired nurse', 'My neighbour',
    'The brown dog', 'A young sailor', 'The clever student', 'Her uncle',
    'The quiet baker', 'A tall stranger', 'The busy clerk', 'Our teacher',
    'The grey cat', 'A lonely painter', 'The patient doctor', 'His sister',
    'The proud captain', 'A nervous driver', 'The cheerful cook',
    'Their grandmother', 'The angry goose', 'A curious fox', 'The mayor',
    'The night watchman')
VERBS = (
    'carried', 'painted', 'found', 'dropped', 'cleaned', 'sold', 'opened',
    'fixed', 'hid', 'borrowed', 'wrapped', 'lifted', 'counted', 'mended',
    'polished', 'weighed', 'packed', 'pushed', 'followed', 'bought')
OBJECTS = (
    'a heavy wooden box', 'the red umbrella', 'seven silver spoons',
    'a basket of ripe plums', 'the broken lantern', 'an old leather boot',
    'the blue glass jar', 'a bundle of dry sticks', 'the copper kettle',
    'two loaves of bread', 'a map of the harbour', 'the crooked ladder',
    'a jar of wild honey', 'the torn sail', 'a crate of green apples',
    'the tiny brass key', 'a pile of warm blankets', 'the long iron chain',
    'a bag of salt', 'the painted chair')
PLACES = (
    'near the river', 'behind the barn', 'at the edge of town',
    'in the dark cellar', 'beside the station', 'under the bridge',
    'on the windy hill', 'across the square', 'inside the church',
    'by the garden wall', 'at the market', 'down the narrow lane',
    'in the kitchen', 'on the wet beach', 'past the school')
TIMES = (
    'before dawn', 'late last night', 'on Sunday morning', 'after the storm',
    'in the spring', 'at noon', 'every winter', 'during the long rain',
    'before supper', 'at half past nine', 'on a cold Tuesday',
    'while the bells rang')
ADJECTIVES = ('bright', 'cold', 'soft', 'sharp', 'quiet', 'bitter', 'smooth',
              'loud', 'warm', 'strange', 'pale', 'sweet')
NOUNS = ('wind', 'coffee', 'music', 'water', 'light', 'smoke', 'grass',
         'song', 'bread', 'dust', 'snow', 'rope')


def sentences(count: int, seed: int = 0) -> list[str]:
  """``count`` distinct English sentences of several shapes (statements,
  questions, commands, numbers), a pure function of ``seed``."""
  rng = np.random.default_rng(seed)

  def pick(words):
    return words[int(rng.integers(len(words)))]

  shapes = (
      lambda: f'{pick(SUBJECTS)} {pick(VERBS)} {pick(OBJECTS)} '
              f'{pick(PLACES)}.',
      lambda: f'{pick(TIMES).capitalize()}, {pick(SUBJECTS).lower()} '
              f'{pick(VERBS)} {pick(OBJECTS)}.',
      lambda: f'Why was {pick(OBJECTS)} left {pick(PLACES)} '
              f'{pick(TIMES)}?',
      lambda: f'Please bring {pick(OBJECTS)} {pick(PLACES)} '
              f'{pick(TIMES)}.',
      lambda: f'The {pick(NOUNS)} was {pick(ADJECTIVES)} and the '
              f'{pick(NOUNS)} was {pick(ADJECTIVES)}.',
      lambda: f'{pick(SUBJECTS)} counted {int(rng.integers(2, 99))} '
              f'{pick(("boats", "coins", "birds", "stones", "houses"))} '
              f'{pick(PLACES)}.',
      lambda: f'Did {pick(SUBJECTS).lower()} really say that the '
              f'{pick(NOUNS)} tastes {pick(ADJECTIVES)}?',
      lambda: f'{pick(SUBJECTS)} {pick(VERBS)} {pick(OBJECTS)}, and then '
              f'{pick(SUBJECTS).lower()} {pick(VERBS)} {pick(OBJECTS)}.',
  )
  out, seen = [], set()
  while len(out) < count:
    text = shapes[int(rng.integers(len(shapes)))]()
    if text not in seen:
      seen.add(text)
      out.append(text)
  return out


def check_tools(voices=VOICES) -> None:
  """SystemExit (one line, naming the apt package) for a missing tool."""
  for tool in sorted({v[1] for v in voices}):
    if shutil.which(tool) is None:
      raise SystemExit(f'error: {tool} not found: apt-get install -y '
                       f'{TOOLS[tool]}')


def package_versions(packages=PACKAGES) -> dict[str, str]:
  """{package: version} of the installed Debian packages among
  ``packages`` (dpkg-query); those not installed are left out."""
  if shutil.which('dpkg-query') is None:
    return {}
  result = subprocess.run(
      ['dpkg-query', '-W', '-f=${Package} ${Version}\n', *packages],
      capture_output=True, text=True, check=False)
  versions = {}
  for line in result.stdout.splitlines():
    name, _, version = line.partition(' ')
    if version:
      versions[name] = version
  return versions


def write_manifest(folder: str, versions: dict[str, str], voices: list[dict],
                   seed: int) -> str:
  """MANIFEST.json beside the audio (atomically); its path."""
  total = sum(v['seconds'] for v in voices)
  path = os.path.join(folder, 'MANIFEST.json')
  with files.atomic_open(path) as f:
    json.dump({'packages': versions, 'seed': seed,
               'sample_rate': audio.SAMPLE_RATE,
               'total_seconds': round(total, 2), 'voices': voices}, f,
              indent=1)
    f.write('\n')
  return path


def trim_and_level(x: np.ndarray, rms_db: float, floor_db: float = -50.0,
                   margin: int = 1600) -> np.ndarray:
  """``x`` less its silent ends (below ``floor_db`` of its peak, a
  ``margin`` of samples kept), scaled to ``rms_db`` dBFS, peak <= 0.99."""
  x = np.asarray(x, np.float64)
  loud = np.nonzero(np.abs(x) > np.max(np.abs(x)) * 10**(floor_db / 20))[0]
  if loud.size == 0:
    raise ValueError('silent synthesis')
  x = x[max(0, loud[0] - margin):loud[-1] + margin + 1]
  x = x * 10**(rms_db / 20) / max(float(np.sqrt(np.mean(x**2))), 1e-9)
  return x * min(1.0, 0.99 / float(np.max(np.abs(x))))


def synthesise(tool: str, args, text: str, path: str) -> np.ndarray:
  """float32 16 kHz mono: ``text`` spoken by ``tool`` with ``args``."""
  if tool == 'flite':
    command = ['flite', *args, '-t', text, '-o', path]
  else:
    command = ['espeak-ng', *args, '-w', path, text]
  subprocess.run(command, check=True, capture_output=True)
  return audio.read_mono_16k(path)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--output', default='workdirs/tts_voices')
  parser.add_argument('--per_voice', type=int, default=30,
                      help='sentences each voice reads (its own ones)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--rms_db', type=float, default=-23.0,
                      help='level of every file, dBFS')
  args = parser.parse_args()
  check_tools()
  os.makedirs(args.output, exist_ok=True)
  texts = sentences(args.per_voice * len(VOICES), args.seed)
  records = []
  with tempfile.TemporaryDirectory() as tmp:
    for v, (name, tool, tool_args) in enumerate(VOICES):
      entries, seconds = [], 0.0
      for k in range(args.per_voice):
        text = texts[v * args.per_voice + k]
        speech = trim_and_level(
            synthesise(tool, tool_args, text, os.path.join(tmp, 'out.wav')),
            args.rms_db)
        out = f'{name}_{k:03d}.wav'
        files.write_wav(os.path.join(args.output, out), speech,
                        audio.SAMPLE_RATE)
        duration = speech.shape[0] / audio.SAMPLE_RATE
        seconds += duration
        entries.append({'file': out, 'seconds': round(duration, 3),
                        'text': text})
      records.append({'voice': name, 'command': [tool, *tool_args],
                      'seconds': round(seconds, 2), 'files': entries})
      print(f'{name}: {len(entries)} files, {seconds / 60:.2f} min',
            file=sys.stderr)
  path = write_manifest(args.output, package_versions(), records, args.seed)
  total = sum(r['seconds'] for r in records)
  print(f'Wrote {len(records) * args.per_voice} files, {total / 60:.1f} min, '
        f'and {path}.', file=sys.stderr)


if __name__ == '__main__':
  main()
