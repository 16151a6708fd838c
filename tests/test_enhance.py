"""Restore a checkpoint, enhance files of any format, score with the paper's metrics."""

import dataclasses
import json
import os
import pathlib
import stat

import numpy as np
import pytest
import soundfile
import soxr
from scipy import signal as scipy_signal
from conftest import speechlike  # pylint: disable=g-bad-import-order

from segan_jax import audio
from segan_jax import checkpoints
from segan_jax import enhance
from segan_jax import enhance_files
from segan_jax import evaluate
from segan_jax import generators
from segan_jax.output_settings import OutputSettings

SHARED = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data'
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f'shared speech data not found at {SHARED}')


class IdentityEnhancer(enhance.WindowEnhancer):
  """G replaced by the identity: the pipeline around it must give x back."""

  def __init__(self, window=1024, overlap=0.0, highpass_hz=0.0,
               high_band='gated'):
    super().__init__(window, preemphasis=0.95, batch_size=4,
                     output_settings=OutputSettings(
                         output_highpass_hz=highpass_hz,
                         output_high_band=high_band), overlap=overlap)

  def enhance_batch(self, batch, index):
    return batch


@pytest.mark.parametrize('overlap', [0.0, 0.5])
def test_identity_round_trip_16k_is_exact(tmp_path, overlap):
  x = speechlike(16000, 2.3, 1)  # not a whole number of windows
  soundfile.write(tmp_path / 'in.wav', x, 16000, subtype='FLOAT')
  enhance_files.enhance_file(IdentityEnhancer(overlap=overlap),
                       str(tmp_path / 'in.wav'), str(tmp_path / 'out.wav'))
  y, rate = soundfile.read(tmp_path / 'out.wav', dtype='float32')
  assert rate == 16000 and y.shape == (x.shape[0],)
  np.testing.assert_allclose(y, x[:, 0], atol=1e-5)


class SilencingEnhancer(enhance.WindowEnhancer):
  """G that removes everything: what is left is the attenuation limit's."""

  def __init__(self, overlap=0.0, limit_db=0.0):
    super().__init__(1024, preemphasis=0.95, batch_size=4,
                     output_settings=OutputSettings(
                         attenuation_limit_db=limit_db), overlap=overlap)

  def enhance_batch(self, batch, index):
    return np.zeros_like(batch)


@pytest.mark.parametrize('overlap', [0.0, 0.5])
def test_attenuation_limit_keeps_the_input_at_its_level(overlap):
  x = speechlike(16000, 2.3, 2)
  np.testing.assert_array_equal(
      SilencingEnhancer(overlap).enhance_signal(x), np.zeros_like(x))
  # 20 dB: a tenth of the input, whatever G did.
  kept = SilencingEnhancer(overlap, limit_db=20.0).enhance_signal(x)
  np.testing.assert_allclose(kept, 0.1 * x, atol=1e-5)
  # With the identity G the output is the input at any limit.
  identity = IdentityEnhancer(overlap=overlap)
  identity.output_settings = OutputSettings(attenuation_limit_db=10.5)
  np.testing.assert_allclose(identity.enhance_signal(x), x, atol=1e-5)
  with pytest.raises(ValueError, match='attenuation_limit_db'):
    SilencingEnhancer(limit_db=-1.0)


class LowpassEnhancer(enhance.WindowEnhancer):
  """G that keeps what is below 2 kHz of each window and removes the rest."""

  def __init__(self, output_mask, limit_db=0.0):
    super().__init__(4096, preemphasis=0.95, batch_size=4,
                     output_settings=OutputSettings(
                         attenuation_limit_db=limit_db,
                         output_mask=output_mask))

  def enhance_batch(self, batch, index):
    spectrum = np.fft.rfft(batch, axis=-1)
    spectrum[:, np.fft.rfftfreq(batch.shape[-1], 1 / 16000) > 2000] = 0
    return np.fft.irfft(spectrum, n=batch.shape[-1], axis=-1)


def _band_energy(x, low, high):
  spectrum = np.abs(np.fft.rfft(x)) ** 2
  freqs = np.fft.rfftfreq(x.shape[0], 1 / 16000)
  return spectrum[(freqs >= low) & (freqs < high)].sum()


@pytest.mark.parametrize('overlap', [0.0, 0.5])
def test_output_mask_filters_the_input_by_gs_gain(overlap):
  x = speechlike(16000, 2.3, 1)[:, 0]
  identity = IdentityEnhancer(overlap=overlap)
  identity.output_settings = OutputSettings(output_mask=True)
  np.testing.assert_allclose(identity.enhance_signal(x), x, atol=1e-5)
  silencing = SilencingEnhancer(overlap, limit_db=20.0)
  silencing.output_settings = dataclasses.replace(
      silencing.output_settings, output_mask=True)
  np.testing.assert_allclose(silencing.enhance_signal(x), 0.1 * x, atol=1e-5)

  noise = np.random.default_rng(0).normal(0, 0.1, 3 * 16000).astype(np.float32)
  masked = LowpassEnhancer(output_mask=True, limit_db=20.0).enhance_signal(noise)
  # The band G keeps passes (the gain is |E| / |X| = 1 there) ...
  assert _band_energy(masked, 100, 1500) == pytest.approx(
      _band_energy(noise, 100, 1500), rel=0.05)
  # ... the band it removes is attenuated to the limit (-20 dB), not to 0.
  assert _band_energy(masked, 3000, 7000) == pytest.approx(
      0.01 * _band_energy(noise, 3000, 7000), rel=0.1)
  # Without the mask the limit mixes the input back in the time domain.
  mixed = LowpassEnhancer(output_mask=False, limit_db=20.0).enhance_signal(noise)
  assert _band_energy(mixed, 3000, 7000) == pytest.approx(
      0.01 * _band_energy(noise, 3000, 7000), rel=0.1)
  assert _band_energy(mixed, 100, 1500) == pytest.approx(
      _band_energy(noise, 100, 1500), rel=0.05)


class HalvingEnhancer(enhance.WindowEnhancer):
  """G that keeps half of each window: a gain of 0.5 on every bin."""

  def __init__(self, overlap=0.0, **kwargs):
    super().__init__(4096, preemphasis=0.95, batch_size=4,
                     output_settings=OutputSettings(output_mask=True,
                                                    **kwargs),
                     overlap=overlap)

  def enhance_batch(self, batch, index):
    return 0.5 * batch


@pytest.mark.parametrize('overlap', [0.0, 0.5])
def test_mask_oversubtraction_picks_the_wiener_gain(overlap):
  x = speechlike(16000, 2.3, 1)[:, 0]
  # The ratio gain is |E| / |X| = 0.5; the Wiener gain with a = 3 is
  # 0.25 / (0.25 + 3 * 0.25) = 0.25, bounded below by the limit.
  np.testing.assert_allclose(HalvingEnhancer(overlap).enhance_signal(x),
                             0.5 * x, atol=1e-4)
  np.testing.assert_allclose(
      HalvingEnhancer(overlap, mask_oversubtraction=3.0).enhance_signal(x),
      0.25 * x, atol=1e-4)
  np.testing.assert_allclose(
      HalvingEnhancer(overlap, mask_oversubtraction=3.0,
                      attenuation_limit_db=20 * np.log10(1 / 0.4)
                      ).enhance_signal(x), 0.4 * x, atol=1e-4)
  with pytest.raises(ValueError, match='mask_oversubtraction must be >= 0'):
    HalvingEnhancer(mask_oversubtraction=-1.0)


@pytest.mark.parametrize('overlap', [0.0, 0.5])
def test_mask_noise_frames_average_the_wiener_gains_noise(overlap):
  x = speechlike(16000, 2.3, 1)[:, 0]
  # G keeps half of every bin: the noise estimate 0.25 |X|^2 follows the
  # input, so averaging it over frames changes the gain where speech
  # changes, and a Wiener gain still never amplifies.
  per_frame = HalvingEnhancer(overlap, mask_oversubtraction=3.0)
  averaged = HalvingEnhancer(overlap, mask_oversubtraction=3.0,
                             mask_noise_frames=9)
  assert averaged.output_settings.mask_noise_frames == 9
  assert per_frame.output_settings.mask_noise_frames == 1
  np.testing.assert_allclose(per_frame.enhance_signal(x), 0.25 * x, atol=1e-4)
  y = averaged.enhance_signal(x)
  assert np.abs(y - 0.25 * x).max() > 1e-2
  assert np.sum(y**2) <= np.sum(x**2)
  # With the ratio gain it does nothing.
  np.testing.assert_allclose(
      HalvingEnhancer(overlap, mask_noise_frames=9).enhance_signal(x),
      0.5 * x, atol=1e-4)
  with pytest.raises(ValueError, match='mask_noise_frames must be an odd'):
    HalvingEnhancer(mask_noise_frames=4)


def test_output_gets_the_usual_permissions_not_private_ones(tmp_path):
  soundfile.write(tmp_path / 'in.wav', speechlike(16000, 0.5, 1), 16000)
  umask = os.umask(0o022)
  try:
    enhance_files.enhance_file(IdentityEnhancer(), str(tmp_path / 'in.wav'),
                         str(tmp_path / 'out.wav'))
  finally:
    os.umask(umask)
  assert stat.S_IMODE(os.stat(tmp_path / 'out.wav').st_mode) == 0o644


def test_output_highpass_streams_like_one_filter_and_removes_dc(tmp_path):
  # G = identity, so the output is the input high-passed; in 1 s blocks the
  # filter state must carry over exactly.
  x = speechlike(16000, 3.3, 1)[:, 0] + 0.2  # a DC offset
  soundfile.write(tmp_path / 'in.wav', x, 16000, subtype='FLOAT')
  enhance_files.BLOCK_SECONDS, saved = 1, enhance_files.BLOCK_SECONDS
  try:
    enhance_files.enhance_file(IdentityEnhancer(highpass_hz=60.0),
                         str(tmp_path / 'in.wav'), str(tmp_path / 'out.wav'))
  finally:
    enhance_files.BLOCK_SECONDS = saved
  y, _ = soundfile.read(tmp_path / 'out.wav', dtype='float32')
  b, a = scipy_signal.butter(1, 60.0, 'highpass', fs=16000)
  np.testing.assert_allclose(y, scipy_signal.lfilter(b, a, x), atol=1e-5)
  assert abs(np.mean(y[8000:])) < 1e-3 < 0.2 - 1e-3 < abs(np.mean(x[8000:]))


@pytest.mark.parametrize('rate, channels, subtype, high_band', [
    (48000, 2, 'PCM_16', 'none'), (44100, 1, 'PCM_24', 'none'),
    (8000, 6, 'FLOAT', 'gated'), (22050, 1, 'PCM_U8', 'none'),
    (48000, 2, 'PCM_16', 'gated'), (44100, 1, 'PCM_24', 'gated')])
def test_identity_round_trip_other_rates_within_resampler_error(
    tmp_path, rate, channels, subtype, high_band):
  x = speechlike(rate, 1.7, channels)
  soundfile.write(tmp_path / 'in.wav', x, rate, subtype=subtype)
  stored, _ = soundfile.read(tmp_path / 'in.wav', dtype='float32',
                             always_2d=True)
  enhance_files.BLOCK_SECONDS, saved = 1, enhance_files.BLOCK_SECONDS  # several blocks
  try:
    enhance_files.enhance_file(IdentityEnhancer(high_band=high_band),
                               str(tmp_path / 'in.wav'),
                               str(tmp_path / 'out.wav'))
  finally:
    enhance_files.BLOCK_SECONDS = saved
  info = soundfile.info(tmp_path / 'out.wav')
  assert (info.samplerate, info.channels, info.subtype) == (rate, channels,
                                                            subtype)
  assert info.frames == stored.shape[0]
  y, _ = soundfile.read(tmp_path / 'out.wav', dtype='float32', always_2d=True)
  # What 16 kHz processing can keep: the input band-limited by the same
  # resampler pair; with the gated high band (whose gain G = identity keeps
  # at 1) above 16 kHz, the input itself.
  expected = soxr.resample(soxr.resample(stored, rate, 16000, 'VHQ'), 16000,
                           rate, 'VHQ')[:stored.shape[0]]
  if high_band == 'gated' and rate > 16000:
    expected = stored
  tolerance = 0.02 if subtype == 'PCM_U8' else 2e-3
  inner = slice(rate // 50, -rate // 50)  # resampler edge effects
  np.testing.assert_allclose(y[inner], expected[inner], atol=tolerance)


def test_restored_checkpoint_enhances_like_the_in_memory_model(trained,
                                                               tmp_path):
  workdir, result = trained
  steps = checkpoints.Checkpointer(workdir).all_steps()
  restored = generators.restore_generator(workdir)
  assert restored.step == steps[-1] == result['step']
  in_memory = generators.TrainedGenerator(restored.config, result['states']['g'].params,
                                result['step'])
  x = speechlike(16000, 1.5, 1)[:, 0]
  a = enhance.Enhancer(restored).enhance_signal(x)
  b = enhance.Enhancer(in_memory).enhance_signal(x)
  np.testing.assert_array_equal(a, b)
  assert a.shape == x.shape and not np.allclose(a, x)
  # An earlier step is another model.
  first = generators.restore_generator(workdir, steps[0])
  assert first.step == steps[0]
  assert not np.array_equal(enhance.Enhancer(first).enhance_signal(x), a)
  with pytest.raises(checkpoints.CheckpointError,
                     match=f'available: {steps[0]}, {steps[1]}'):
    generators.restore_generator(workdir, 12345)
  with pytest.raises(checkpoints.CheckpointError, match='no checkpoint'):
    generators.restore_generator(str(tmp_path))


def test_output_independent_of_block_size_and_batch(trained, tmp_path):
  workdir, _ = trained
  generator = generators.restore_generator(workdir)
  x = speechlike(48000, 3.0, 2)
  soundfile.write(tmp_path / 'in.wav', x, 48000, subtype='FLOAT')
  for overlap in (0.0, 0.5):
    outputs = []
    for block, batch in ((20, 8), (1, 2)):
      enhance_files.BLOCK_SECONDS, saved = block, enhance_files.BLOCK_SECONDS
      try:
        enhance_files.enhance_file(
            enhance.Enhancer(generator, batch_size=batch, overlap=overlap),
            str(tmp_path / 'in.wav'), str(tmp_path / f'out{block}.wav'))
      finally:
        enhance_files.BLOCK_SECONDS = saved
      outputs.append(soundfile.read(tmp_path / f'out{block}.wav')[0])
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)
    assert outputs[0].shape == x.shape


def test_folder_tree_is_kept_and_inputs_untouched(trained, tmp_path):
  workdir, _ = trained
  src = tmp_path / 'in'
  (src / 'a' / 'b').mkdir(parents=True)
  soundfile.write(src / 'top.wav', speechlike(16000, 0.5, 1), 16000)
  soundfile.write(src / 'a' / 'b' / 'deep.flac', speechlike(24000, 0.4, 2),
                  24000)
  before = {p: p.read_bytes() for p in src.rglob('*') if p.is_file()}
  enhancer = enhance.Enhancer(generators.restore_generator(workdir))
  written = enhance_files.enhance_paths(enhancer, str(src), str(tmp_path / 'out'))
  assert sorted(os.path.relpath(w, tmp_path / 'out') for w in written) == [
      'a/b/deep.flac', 'top.wav']
  assert soundfile.info(tmp_path / 'out' / 'a' / 'b' / 'deep.flac').channels == 2
  assert {p: p.read_bytes() for p in src.rglob('*') if p.is_file()} == before
  with pytest.raises(enhance_files.EnhanceError, match='output folder is the input'):
    enhance_files.enhance_paths(enhancer, str(src), str(src))
  with pytest.raises(enhance_files.EnhanceError, match='would overwrite its input'):
    enhance_files.enhance_file(enhancer, str(src / 'top.wav'), str(src / 'top.wav'))


@pytest.mark.parametrize('make, message', [
    (lambda p: p.write_text('not audio'), 'not a readable audio file'),
    (lambda p: soundfile.write(p, np.zeros(0), 16000), 'empty audio'),
    (lambda p: soundfile.write(p, np.full(40000, np.nan), 16000,
                               subtype='FLOAT'), 'NaN or infinite'),
    (lambda p: None, 'no such file'),
])
def test_bad_inputs_one_line_and_no_partial_output(tmp_path, make, message):
  src = tmp_path / 'bad.wav'
  make(src)
  with pytest.raises(audio.AudioError, match=message) as e:
    enhance_files.enhance_file(IdentityEnhancer(), str(src),
                         str(tmp_path / 'out' / 'bad.wav'))
  assert '\n' not in str(e.value) and 'bad.wav' in str(e.value)
  leftovers = list((tmp_path / 'out').glob('*')) if (tmp_path / 'out').exists() else []
  assert leftovers == []


@needs_shared
def test_evaluate_folders_reproduces_reference_noisy_scores(tmp_path,
                                                           monkeypatch):
  reference = json.loads((SHARED / 'reference_metrics.json').read_text())
  results = tmp_path / 'noisy_eval.json'
  scored = []  # each file is scored once
  score = evaluate.metrics.evaluate_pairs
  monkeypatch.setattr(evaluate.metrics, 'evaluate_pairs',
                      lambda pairs, **kw: scored.extend(pairs) or score(pairs, **kw))
  summary, table = evaluate.evaluate_folders(
      str(SHARED / 'vbd_test' / 'clean'), str(SHARED / 'vbd_test' / 'noisy'),
      results=str(results))
  saved = json.loads(results.read_text())
  assert saved['n_files'] == 25
  for key in ('pesq', 'stoi', 'csig', 'cbak', 'covl', 'ssnr'):
    assert saved[key] == pytest.approx(reference['mean'][key], abs=1e-3), key
  rows = (tmp_path / 'noisy_eval.csv').read_text().splitlines()
  assert len(rows) == 1 + 25 and rows[0].startswith('file,system,pesq')
  assert 'PESQ' in table and f'{reference["mean"]["pesq"]:.3f}' in table
  assert summary['n_files'] == 25 and len(scored) == 25


def test_evaluate_checkpoint_writes_table_csv_and_json(trained, tmp_path):
  from segan_jax.datasets import synthetic  # pylint: disable=g-import-not-at-top
  workdir, _ = trained
  generator = generators.restore_generator(workdir)
  source = synthetic.SyntheticSpeech('test', num_utterances=2)
  summary, table = evaluate.evaluate_generator(
      generator, source, results=str(tmp_path / 'e.json'), label='SEGAN')
  saved = json.loads((tmp_path / 'e.json').read_text())
  for key in ('pesq', 'stoi', 'csig', 'cbak', 'covl', 'ssnr'):
    assert np.isfinite(saved[key]) and np.isfinite(saved['noisy'][key])
  assert saved['n_files'] == 2 and saved['step'] == generator.step
  assert table.splitlines()[1].startswith('Noisy')
  assert len((tmp_path / 'e.csv').read_text().splitlines()) == 1 + 2 * 2


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_file_length():
  from benchmarks import enhance_memory  # pylint: disable=g-import-not-at-top
  # 48 kHz stereo: reading the 3-minute file whole would cost 66 MB as
  # float32 (132 MB as soundfile's default float64), on top of its 16 kHz
  # copies; streamed in 20 s blocks it costs what the 30 s file costs.
  short, long = enhance_memory.enhance_memory(
      [0.5, 3.0], model_size='tiny', rate=48000, channels=2,
      log=lambda line: None)['enhance_memory']
  assert long['frames'] == 6 * short['frames']
  # Peaks, not growth over the compiled model: that baseline itself varies
  # by about 20 MB from process to process.
  assert long['peak_mb'] <= short['peak_mb'] + 60.0, (short, long)
