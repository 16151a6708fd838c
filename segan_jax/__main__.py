"""``python -m segan_jax --flagfile=experiments/demo.flags --workdir=W``."""

from segan_jax import cli

if __name__ == '__main__':
  cli.console_main()
