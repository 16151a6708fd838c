"""The command line: ``python -m segan_jax``, ``segan-jax`` or ``launch.py``.

--mode=train (default) trains or resumes in --workdir; --mode=enhance cleans
--input into --output with a checkpoint of --workdir; --mode=evaluate prints
the paper's metrics table for a checkpoint on --dataset/--split, or for
--enhanced_dir against --clean_dir; --mode=report writes WORKDIR/report.html;
--mode=export writes G to --output as ONNX or StableHLO, which
--mode=enhance --model_file=FILE runs; --mode=bundle writes a bundle
(segan_jax/pretrained/NAME/). What each mode does is segan_jax/modes.py's;
this module parses the flags (jax-free, so --help answers at once), and
turns a user's error into one line.
"""

import sys

from absl import app
from absl import flags

from segan_jax import flags as f
from segan_jax import runtime

# A setting of the machine, not of the run (so not a Config field): every mode
# reuses the XLA programs that earlier launches compiled (segan_jax/runtime.py).
COMPILATION_CACHE_DIR = flags.DEFINE_string(
    'compilation_cache_dir', None,
    'Persistent XLA compilation cache, shared by all runs and modes: a '
    'relaunch loads the programs compiled before (default: '
    '$JAX_COMPILATION_CACHE_DIR, else $XDG_CACHE_HOME or ~/.cache, then '
    "segan_jax/jax_compilation_cache); '' turns it off.")
# Also a setting of the machine: the same run is bit-identical on CPU anyway.
DETERMINISTIC = flags.DEFINE_bool(
    'deterministic', False,
    'GPU: XLA\'s deterministic ops (--xla_gpu_deterministic_ops), so that two '
    'runs with the same seed give the same bits, at some speed; no effect on '
    'CPU, which is deterministic already (docs/speed.md).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if DETERMINISTIC.value:
    # Before modes.py loads JAX: XLA reads $XLA_FLAGS when its backend starts.
    runtime.set_deterministic_ops(True)
  # Here, once the flags are parsed, so that --help answers without loading
  # JAX (which segan_jax/modes.py imports); no cycle is avoided by it.
  from segan_jax import modes  # pylint: disable=g-import-not-at-top
  try:
    modes.run(f.MODE.value, COMPILATION_CACHE_DIR.value)
  except modes.USER_ERRORS as e:
    # Problems with the user's input (files, flags, checkpoints): one clear
    # line and a non-zero exit, no traceback.
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


# absl's help flags (--help's short name is -?), with one dash or two.
_HELP_FLAGS = frozenset(
    dash + name for dash in ('-', '--')
    for name in ('help', '?', 'helpshort', 'helpfull', 'helpxml'))


def console_main() -> None:
  """Entry point of ``python -m segan_jax`` and the ``segan-jax`` script."""
  # Restarts once with glibc's huge-page malloc (segan_jax/runtime.py).
  runtime.reexec_with_hugepage_malloc()
  try:
    app.run(main)
  except SystemExit as e:
    # absl ends a help request with status 1, which a user's script would
    # read as a failure.
    if e.code == 1 and _HELP_FLAGS.intersection(sys.argv[1:]):
      sys.exit(0)
    raise
