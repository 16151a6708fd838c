"""One self-contained HTML page about a run: curves, validation scores,
the latest spectrograms with audio players. Opens in a browser, no server:
pictures and sounds are embedded as data URIs."""

from __future__ import annotations

import base64
import glob
import html
import io
import json
import os
import re

from segan_jax import files
from segan_jax import plots

LOSS_KEYS = ('d_loss', 'd_real', 'd_fake', 'g_adv', 'g_l1', 'g_stft', 'g_loss',
             'loss')
VALIDATION_PICTURE = 'validation_curves.png'


def read_metrics(workdir: str) -> list[dict[str, float]]:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.isfile(path):
    raise ValueError(f'{path}: no such file; train in this workdir first')
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _curves_png(rows: list[dict], keys: list[str], title: str) -> bytes:
  pyplot = plots._figure()  # pylint: disable=protected-access
  fig, axes = pyplot.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.6),
                              squeeze=False)
  for ax, key in zip(axes[0], keys):
    points = [(r['step'], r[key]) for r in rows if key in r]
    ax.plot([p[0] for p in points], [p[1] for p in points], marker='.')
    ax.set_title(key)
    ax.set_xlabel('step')
  fig.suptitle(title)
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=80)
  pyplot.close(fig)
  return buffer.getvalue()


def _data_uri(kind: str, data: bytes) -> str:
  return f'data:{kind};base64,{base64.b64encode(data).decode()}'


def latest_samples(workdir: str) -> tuple[int, str | None, list[str]]:
  """(step, picture path, wav paths) of the newest checkpoint's samples."""
  pictures = glob.glob(os.path.join(workdir, 'samples', 'step_*.png'))
  if not pictures:
    return -1, None, []
  step_of = lambda p: int(re.search(r'step_(\d+)', p).group(1))
  picture = max(pictures, key=step_of)
  step = step_of(picture)
  wavs = sorted(glob.glob(os.path.join(workdir, 'samples',
                                       f'step_{step}*.wav')))
  return step, picture, wavs


def _audio_player(path: str) -> str:
  with open(path, 'rb') as f:
    return (f'<audio controls src="{_data_uri("audio/wav", f.read())}">'
            '</audio>')


def _audio_table(wavs: list[str]) -> str:
  """Validation examples as rows of noisy / enhanced / clean players; other
  sounds (the basic GAN's samples) one per row."""
  columns = ('noisy', 'enhanced', 'clean')
  examples, others = {}, []
  for wav in wavs:
    match = re.search(r'step_\d+_(\d+)_(\w+)\.wav$', wav)
    if match and match.group(2) in columns:
      examples.setdefault(int(match.group(1)), {})[match.group(2)] = wav
    else:
      others.append(wav)
  rows = ['<tr><th></th>' + ''.join(f'<th>{c}</th>' for c in columns) +
          '</tr>'] if examples else []
  for index, kinds in sorted(examples.items()):
    rows.append(f'<tr><td>example {index}</td>' + ''.join(
        f'<td>{_audio_player(kinds[c]) if c in kinds else ""}</td>'
        for c in columns) + '</tr>')
  for wav in others:
    rows.append(f'<tr><td>{html.escape(os.path.basename(wav))}</td>'
                f'<td colspan="3">{_audio_player(wav)}</td></tr>')
  return '<table>' + ''.join(rows) + '</table>'


def write_report(workdir: str) -> str:
  """Writes ``WORKDIR/report.html`` (atomically) and returns its path."""
  rows = read_metrics(workdir)
  run = {}
  run_path = os.path.join(workdir, 'run.json')
  if os.path.isfile(run_path):
    with open(run_path) as f:
      run = json.load(f)
  config = run.get('config', {})
  losses = [k for k in LOSS_KEYS if any(k in r for r in rows)]
  validation = sorted({k for r in rows for k in r if k.startswith('val_')})
  parts = [f'<h1>segan-jax run: {html.escape(os.path.abspath(workdir))}</h1>',
           '<p>' + html.escape(', '.join(
               f'{k}={config[k]}' for k in ('model', 'model_size', 'dataset',
                                            'num_epochs', 'batch_size', 'seed')
               if k in config)) + '</p>']
  if losses:
    parts.append('<h2>Training losses</h2><img alt="losses" src="' +
                 _data_uri('image/png', _curves_png(rows, losses, 'losses'))
                 + '">')
  if validation:
    curves = _curves_png(rows, validation, 'validation')
    # Also as a file, for pages that show a run's progress (README).
    with files.atomic_open(os.path.join(workdir, VALIDATION_PICTURE),
                           'wb') as f:
      f.write(curves)
    parts.append('<h2>Validation metrics</h2><img alt="validation" src="' +
                 _data_uri('image/png', curves) + '">')
    last = [r for r in rows if validation[0] in r][-1]
    parts.append('<table><tr><th>step</th>' + ''.join(
        f'<th>{html.escape(k[4:].upper())}</th>' for k in validation) +
                 f'</tr><tr><td>{last["step"]}</td>' + ''.join(
                     f'<td>{last[k]:.3f}</td>' for k in validation) +
                 '</tr></table>')
  step, picture, wavs = latest_samples(workdir)
  if picture:
    with open(picture, 'rb') as f:
      parts.append(f'<h2>Samples at step {step}</h2><img alt="samples" src="'
                   + _data_uri('image/png', f.read()) + '">')
    parts.append(_audio_table(wavs))
  page = ('<!doctype html><html><head><meta charset="utf-8"><title>segan-jax '
          'report</title><style>body{font-family:sans-serif;margin:2em}'
          'img{max-width:100%}td,th{padding:0 1em}audio{width:15em}</style></head><body>' +
          '\n'.join(parts) + '</body></html>\n')
  path = os.path.join(workdir, 'report.html')
  with files.atomic_open(path) as f:
    f.write(page)
  return path
