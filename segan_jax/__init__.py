"""segan-jax: SEGAN speech enhancement in JAX/Flax.

  import segan_jax
  segan_jax.Enhancer.from_pretrained().enhance_file('noisy.wav', 'clean.wav')
  segan_jax.Enhancer.from_workdir('workdirs/quick').enhance_file(...)
"""


def __getattr__(name):
  # Loaded on first use, so that `python -m segan_jax --help` (which imports
  # this package first) answers without loading JAX.
  if name == 'Enhancer':
    from segan_jax.enhance import Enhancer  # pylint: disable=g-import-not-at-top
    return Enhancer
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
