"""Registry of random-access (noisy, clean) utterance sources.

Every source supports `len()` and `source[i]`, returning a dict with at least
float32 `noisy` and `clean` waveforms (16 kHz) and a string `id`.
"""

from typing import Any

from segan_jax.datasets import synthetic

DATASETS = ('synthetic',)


def get_source(name: str, split: str, data_dir: str | None = None,
               **kwargs: Any):
  """Returns the random-access source for dataset `name` and `split`.

  Args:
    name: one of `DATASETS`.
    split: split name, e.g. 'train', 'validation' or 'test'.
    data_dir: where file-backed datasets live; unused by 'synthetic', which
      is generated on the fly.
    **kwargs: forwarded to the source's constructor.
  """
  del data_dir  # Only file-backed datasets need it.
  if name == 'synthetic':
    return synthetic.SyntheticSpeech(split, **kwargs)
  raise ValueError(
      f'Unknown dataset {name!r}; known datasets: {", ".join(DATASETS)}.')
