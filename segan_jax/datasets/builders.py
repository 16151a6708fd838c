"""TFDS builders for real speech: any folder of wav pairs, and VoiceBank-DEMAND.

Both write ``array_record`` files and are read through ``as_data_source()``
(random access, no TensorFlow import anywhere). Waveforms are stored as mono
16 kHz int16, the rate and precision of the SEGAN recipe, which halves the
disk and memory of float32.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile

import numpy as np
import tensorflow_datasets as tfds

from segan_jax import audio
from segan_jax.datasets import pairs as pairs_lib


def _features() -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      'noisy': tfds.features.Tensor(shape=(None,), dtype=np.int16),
      'clean': tfds.features.Tensor(shape=(None,), dtype=np.int16),
      'id': tfds.features.Text(),
      'speaker': tfds.features.Text(),
  })


def _generate(pairs: list[pairs_lib.Pair], skip_bad_files: bool):
  for pair, noisy, clean in pairs_lib.iter_loaded_pairs(pairs, skip_bad_files):
    yield pair.id, {'noisy': audio.to_int16(noisy),
                    'clean': audio.to_int16(clean),
                    'id': pair.id, 'speaker': pair.speaker}


# ---------------------------------------------------------------------------
# wav_pairs: the user's own recordings.

WAV_PAIRS_SPLITS = ('train', 'validation', 'test')


def wav_pairs_layout(root: str) -> dict[str, str]:
  """Split name -> folder holding noisy/ and clean/.

  ``root/noisy`` + ``root/clean`` is one split, 'pairs'; otherwise each of
  ``root/train``, ``root/validation``, ``root/test`` that exists is a split.
  """
  if not os.path.isdir(root):
    raise pairs_lib.PairError(f'{root}: no such folder')
  if os.path.isdir(os.path.join(root, 'noisy')):
    return {'pairs': root}
  layout = {s: os.path.join(root, s) for s in WAV_PAIRS_SPLITS
            if os.path.isdir(os.path.join(root, s, 'noisy'))}
  if not layout:
    raise pairs_lib.PairError(
        f'{root}: expected noisy/ and clean/ folders with equal file names, '
        'or train/ and test/ folders each holding them')
  return layout


def _fingerprint(root: str) -> str:
  """Changes when any audio file the builder reads under root is added,
  removed or modified (the same files as pairs.find_pairs takes)."""
  digest = hashlib.sha1(os.path.abspath(root).encode())
  for folder, _, files in sorted(os.walk(root)):
    for f in sorted(files):
      if audio.is_audio_file_name(f):
        st = os.stat(os.path.join(folder, f))
        digest.update(f'{folder}/{f}:{st.st_size}:{st.st_mtime_ns}'.encode())
  return digest.hexdigest()[:12]


class WavPairs(tfds.core.GeneratorBasedBuilder):
  """Any folder of (noisy, clean) pairs; one builder config per folder state."""

  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Pass the folder of pairs as --data_dir.'

  def __init__(self, *, source_dir: str, skip_bad_files: bool = False,
               **kwargs):
    self.source_dir = os.path.abspath(source_dir)
    self.skip_bad_files = skip_bad_files
    self.layout = wav_pairs_layout(self.source_dir)
    name = os.path.basename(self.source_dir.rstrip('/')) or 'root'
    name = ''.join(c if c.isalnum() else '_' for c in name)
    config = tfds.core.BuilderConfig(
        name=f'{name}_{_fingerprint(self.source_dir)}',
        description=f'pairs under {self.source_dir}')
    super().__init__(config=config, file_format='array_record', **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=_features())

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(
        pairs_lib.find_pairs(os.path.join(folder, 'noisy'),
                             os.path.join(folder, 'clean'),
                             self.skip_bad_files))
            for split, folder in self.layout.items()}

  def _generate_examples(self, pairs):
    return _generate(pairs, self.skip_bad_files)


# ---------------------------------------------------------------------------
# VoiceBank-DEMAND (Valentini-Botinhao 2017), from a manual directory.

VOICEBANK_FOLDERS = ('clean_trainset_28spk_wav', 'noisy_trainset_28spk_wav',
                     'clean_testset_wav', 'noisy_testset_wav')
# Common practice (e.g. in SEGAN follow-ups): two training speakers held out.
VALIDATION_SPEAKERS = ('p286', 'p287')
VOICEBANK_URL = 'https://doi.org/10.7488/ds/2117'


class VoicebankDemand(tfds.core.GeneratorBasedBuilder):
  """VoiceBank-DEMAND 28-speaker version at 16 kHz (resampled from 48 kHz)."""

  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Download the four zip files {", ".join(VOICEBANK_FOLDERS)} (.zip) '
      f'from Edinburgh DataShare ({VOICEBANK_URL}) into one folder, unzipped '
      'or not, and pass it as --manual_dir.')

  def __init__(self, *, skip_bad_files: bool = False, **kwargs):
    self.skip_bad_files = skip_bad_files
    super().__init__(file_format='array_record', **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=_features(),
        homepage=VOICEBANK_URL,
        description='Noisy speech database (Valentini-Botinhao 2017), CC BY '
        '4.0; validation = train speakers p286 and p287.')

  def _split_generators(self, dl_manager):
    # Zips are unpacked under the downloads folder, not the dataset's own.
    folders = voicebank_folders(os.fspath(dl_manager.manual_dir),
                                os.fspath(dl_manager.download_dir))
    train = pairs_lib.find_pairs(folders['noisy_trainset_28spk_wav'],
                                 folders['clean_trainset_28spk_wav'],
                                 self.skip_bad_files)
    test = pairs_lib.find_pairs(folders['noisy_testset_wav'],
                                folders['clean_testset_wav'],
                                self.skip_bad_files)
    validation = [p for p in train if p.speaker in VALIDATION_SPEAKERS]
    train = [p for p in train if p.speaker not in VALIDATION_SPEAKERS]
    splits = {'train': train, 'validation': validation, 'test': test}
    return {name: self._generate_examples(p)
            for name, p in splits.items() if p}

  def _generate_examples(self, pairs):
    return _generate(pairs, self.skip_bad_files)


def check_voicebank_manual_dir(manual_dir: str | None) -> None:
  """Raises a one-line PairError unless all four downloads are there."""
  if not manual_dir or not os.path.isdir(manual_dir):
    raise pairs_lib.PairError(
        f'--manual_dir {manual_dir}: no such folder. ' +
        VoicebankDemand.MANUAL_DOWNLOAD_INSTRUCTIONS)
  missing = [name for name in VOICEBANK_FOLDERS
             if not os.path.isdir(os.path.join(manual_dir, name))
             and not os.path.isfile(os.path.join(manual_dir, name + '.zip'))]
  if missing:
    raise pairs_lib.PairError(
        f'{manual_dir}: missing {", ".join(missing)} (folder or .zip). ' +
        VoicebankDemand.MANUAL_DOWNLOAD_INSTRUCTIONS)


def voicebank_folders(manual_dir: str, scratch_dir: str) -> dict[str, str]:
  """Finds the four official folders in manual_dir, unzipping where needed."""
  check_voicebank_manual_dir(manual_dir)
  found = {}
  for name in VOICEBANK_FOLDERS:
    folder = os.path.join(manual_dir, name)
    found[name] = folder if os.path.isdir(folder) else _unzip(
        folder + '.zip', name, scratch_dir)
  return found


def _unzip(archive: str, name: str, scratch_dir: str) -> str:
  target = os.path.join(scratch_dir, 'extracted')
  os.makedirs(target, exist_ok=True)
  try:
    with zipfile.ZipFile(archive) as z:
      z.extractall(tempdir := tempfile.mkdtemp(dir=target))
  except zipfile.BadZipFile:
    raise pairs_lib.PairError(f'{archive}: not a valid zip file') from None
  # The official archives hold the folder itself; accept flat archives too.
  inner = os.path.join(tempdir, name)
  return inner if os.path.isdir(inner) else tempdir
