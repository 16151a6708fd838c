"""The band above 8 kHz of the bundle's 48 kHz output, with and without the gate.

Enhances the 48 kHz noisy files with the bundled model once per setting of
--output_high_band (segan_jax/high_band.py), then scores each output:
- above 8 kHz, against the 48 kHz clean file: the output's energy there
  relative to clean's (dB; the target is within 3 dB on average) and its
  SNR there, 10 log10(|c|^2 / |y - c|^2) of the bands (beside the noisy
  input's);
- at 16 kHz, with the project's metrics (segan_jax.evaluate.evaluate_folders,
  as --mode=evaluate --clean_dir --enhanced_dir), against the 16 kHz clean
  files: the gate must not cost PESQ.

  python experiments/high_band_check.py --output=/tmp/high_band_check
  python experiments/high_band_check.py --output=/tmp/hb4k --band_hz=4000  # G's band above 4 kHz

Prints per file and mean rows, and writes OUTPUT/high_band_check.json.
"""

import argparse
import json
import os

import numpy as np
import soundfile

from segan_jax import enhance
from segan_jax import evaluate
from segan_jax import high_band

CUT_HZ = 8000.0


def band(x: np.ndarray, rate: int) -> np.ndarray:
  """``x`` above CUT_HZ (an ideal filter over the whole file)."""
  spectrum = np.fft.rfft(x)
  spectrum[np.fft.rfftfreq(len(x), 1 / rate) < CUT_HZ] = 0
  return np.fft.irfft(spectrum, len(x))


def db(x: np.ndarray) -> float:
  return float(10 * np.log10(np.sum(np.square(x)) + 1e-20))


def band_scores(signal_path: str, clean_path: str) -> dict[str, float]:
  """Energy above CUT_HZ vs clean's (dB), and the SNR there (dB)."""
  y, rate = soundfile.read(signal_path)
  c, clean_rate = soundfile.read(clean_path)
  if rate != clean_rate or y.shape != c.shape:
    raise ValueError(f'{signal_path}: {y.shape} at {rate} Hz but {clean_path}'
                     f' has {c.shape} at {clean_rate} Hz')
  y_band, c_band = band(y, rate), band(c, rate)
  return {'energy_vs_clean_db': db(y_band) - db(c_band),
          'band_snr_db': db(c_band) - db(y_band - c_band),
          'clean_band_share_db': db(c_band) - db(c)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data', default='../shared/data/vbd_test_48k',
                      help='48 kHz noisy/ and clean/')
  parser.add_argument('--clean16', default='../shared/data/vbd_test/clean',
                      help='the same files at 16 kHz, for the metrics')
  parser.add_argument('--output', required=True)
  parser.add_argument('--band_hz', type=float, default=high_band.BAND_HZ,
                      help="G's band whose gain gates the input's above 8 kHz")
  args = parser.parse_args()
  high_band.BAND_HZ = args.band_hz  # read by band_gain at each call
  noisy_dir = os.path.join(args.data, 'noisy')
  clean_dir = os.path.join(args.data, 'clean')
  names = sorted(n for n in os.listdir(noisy_dir) if n.endswith('.wav'))
  systems = {'noisy': noisy_dir}
  for setting in reversed(high_band.HIGH_BANDS):  # none (today's), gated
    folder = os.path.join(args.output, setting)
    enhance.Enhancer.from_pretrained(output_high_band=setting).enhance_paths(
        noisy_dir, folder)
    systems[setting] = folder
  rows = {system: [band_scores(os.path.join(folder, n),
                               os.path.join(clean_dir, n)) for n in names]
          for system, folder in systems.items()}
  print(f'{"file":14s}' + ''.join(f'{s + " dB vs clean":>20s}{s + " SNR":>14s}'
                                  for s in systems))
  for i, name in enumerate(names):
    print(f'{name:14s}' + ''.join(
        f'{rows[s][i]["energy_vs_clean_db"]:20.1f}'
        f'{rows[s][i]["band_snr_db"]:14.1f}' for s in systems))
  summary = {}
  for system, folder in systems.items():
    means = {key: float(np.mean([r[key] for r in rows[system]]))
             for key in rows[system][0]}
    if system != 'noisy':
      metrics, _ = evaluate.evaluate_folders(
          args.clean16, folder,
          results=os.path.join(args.output, f'{system}_16k.json'))
      means.update({k: metrics[k] for k in ('pesq', 'csig', 'cbak', 'covl',
                                            'ssnr', 'stoi')})
    summary[system] = means
  print(f'{"mean":14s}' + ''.join(
      f'{summary[s]["energy_vs_clean_db"]:20.2f}'
      f'{summary[s]["band_snr_db"]:14.2f}' for s in systems))
  print(f'clean: the band above 8 kHz holds '
        f'{summary["noisy"]["clean_band_share_db"]:.1f} dB of the energy')
  for system in high_band.HIGH_BANDS:
    print(f'{system}: 16 kHz metrics ' + ', '.join(
        f'{k} {summary[system][k]:.3f}' for k in ('pesq', 'csig', 'cbak',
                                                  'covl', 'ssnr', 'stoi')))
  with open(os.path.join(args.output, 'high_band_check.json'), 'w') as f:
    json.dump({'summary': summary, 'files': names, 'rows': rows}, f, indent=1)


if __name__ == '__main__':
  main()
