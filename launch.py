"""Starts a segan-jax run: ``python launch.py --flagfile=experiments/demo.flags``."""

import sys

from absl import app
from absl import flags
from absl import logging

from segan_jax import flags as segan_flags

flags.mark_flags_as_required(['workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  # Imported here so that --help answers without loading JAX.
  from segan_jax import checkpoints, logging_utils, train  # pylint: disable=g-import-not-at-top
  logging_utils.quiet_library_logs()
  try:
    config = segan_flags.config_from_flags()
    if segan_flags.MODE.value == 'train':
      result = train.train_and_evaluate(config, segan_flags.WORKDIR.value)
      logging.info('Finished at step %d (epoch %d); checkpoints in %s.',
                   result['step'], result['epoch'],
                   checkpoints.checkpoint_dir(segan_flags.WORKDIR.value))
  except (ValueError, checkpoints.CheckpointError, FloatingPointError) as e:  # incl. AudioError, DatasetError
    # Problems with the user's input: one clear line, no traceback.
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
