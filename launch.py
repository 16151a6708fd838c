"""Starts a segan-jax job: ``python launch.py --flagfile=experiments/demo.flags``.

The same command line as ``python -m segan_jax`` and the ``segan-jax``
script (segan_jax/cli.py), kept at the top of the repository for the
flagfiles' relative paths and README's commands.
"""

from segan_jax import cli

if __name__ == '__main__':
  cli.console_main()
