"""The command line: ``python -m segan_jax``, ``segan-jax`` or ``launch.py``.

--mode=train (default) trains or resumes in --workdir; --mode=enhance cleans
--input into --output with a checkpoint of --workdir; --mode=evaluate prints
the paper's metrics table for a checkpoint on --dataset/--split, or for
--enhanced_dir against --clean_dir; --mode=report writes WORKDIR/report.html;
--mode=export writes G to --output as ONNX or StableHLO, which
--mode=enhance --model_file=FILE runs.
"""

import os
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


def run(mode: str) -> None:
  # Imported here, not at the top, so that --help answers without loading
  # JAX and the libraries; no cycle is avoided by it.
  # pylint: disable=g-import-not-at-top
  from segan_jax import (enhance, evaluate, evaluators, export,
                         input_pipeline, report, train)
  if mode == 'evaluate' and (f.CLEAN_DIR.value or f.ENHANCED_DIR.value):
    if not (f.CLEAN_DIR.value and f.ENHANCED_DIR.value):
      raise ValueError('--clean_dir and --enhanced_dir go together')
    _, table = evaluate.evaluate_folders(
        f.CLEAN_DIR.value, f.ENHANCED_DIR.value, results=f.RESULTS.value,
        noisy_dir=f.NOISY_DIR.value,
        skip_bad_files=flags.FLAGS.skip_bad_files)
    print(table)
    return
  if not f.WORKDIR.value and mode in ('train', 'report'):
    raise ValueError(f'--mode={mode} needs --workdir')
  if mode == 'evaluate' and not (f.WORKDIR.value or f.RESULTS.value):
    # Checked before anything loads: without a run there is no folder to
    # write the scores into.
    raise ValueError('--mode=evaluate needs --workdir (the run to score), '
                     '--results=FILE.json (to score the bundled pretrained '
                     'model), or --clean_dir with --enhanced_dir')
  if mode == 'report':
    print(f'Wrote {report.write_report(f.WORKDIR.value)}')
    return
  if mode == 'train':
    config = f.config_from_flags()
    result = train.train_and_evaluate(
        config, f.WORKDIR.value, make_evaluators=evaluators.make_evaluators)
    print(train.training_summary(config, f.WORKDIR.value, result))
    return
  if mode == 'enhance' and not (f.INPUT.value and f.OUTPUT.value):
    # Checked before the checkpoint is loaded: a usage slip answers at once.
    raise ValueError('--mode=enhance needs --input and --output')
  if mode == 'export' and not f.OUTPUT.value:
    raise ValueError('--mode=export needs --output (the file to write)')
  if f.MODEL_FILE.value:
    if mode != 'enhance':
      raise ValueError('--model_file is for --mode=enhance')
    if f.WORKDIR.value or f.PRETRAINED.value:
      raise ValueError('--model_file replaces --workdir and --pretrained; '
                       'give one of them')
    enhancer = export.ExportedEnhancer(f.MODEL_FILE.value,
                                       **_enhancer_options())
    print(f'Using the {enhancer.source}.', flush=True)
    _enhance(enhancer, f'the {enhancer.source}')
    return
  if f.WORKDIR.value:
    # The best checkpoint (--keep_best) by default, else the latest.
    generator = enhance.restore_generator(f.WORKDIR.value,
                                          f.CHECKPOINT_STEP.value)
    origin = f'the {generator.source} of {f.WORKDIR.value}'
  else:
    if f.CHECKPOINT_STEP.value is not None:
      raise ValueError('--checkpoint_step needs --workdir (the bundled '
                       'pretrained model has one step)')
    generator = enhance.restore_pretrained(f.PRETRAINED.value)
    origin = f'the {generator.source} (no --workdir given)'
  print(f'Using {origin}.', flush=True)
  if mode == 'export':
    size = export.export_file(generator, f.EXPORT_FORMAT.value,
                              f.OUTPUT.value)
    print(f'Exported G of the {generator.source} to {f.OUTPUT.value} '
          f'({f.EXPORT_FORMAT.value}, {size / 2**20:.1f} MiB).')
    return
  enhancer = enhance.Enhancer(generator, **_enhancer_options())
  if mode == 'enhance':
    _enhance(enhancer, origin)
  else:
    source = input_pipeline.load_source(f.config_from_flags(), f.SPLIT.value)
    results = f.RESULTS.value or os.path.join(f.WORKDIR.value,
                                              'evaluation.json')
    _, table = evaluate.evaluate_checkpoint(
        generator, source, results=results,
        label=f'{generator.config.model} step {generator.step}',
        max_files=f.MAX_FILES.value, enhancer=enhancer)
    print(table)
    print(f'Per-file scores: {os.path.splitext(results)[0]}.csv; summary: '
          f'{results}')


def _enhancer_options() -> dict:
  """How either engine (a checkpoint's G, an exported file) windows and
  batches, from the flags."""
  options = {'batch_size': f.ENHANCE_BATCH_SIZE.value,
             'seed': flags.FLAGS.seed,
             'overlap': float(f.ENHANCE_OVERLAP.value)}
  # The model's own output settings unless the command line gives them.
  from segan_jax import enhance  # pylint: disable=g-import-not-at-top
  for name in enhance.OUTPUT_OVERRIDES:
    flag = flags.FLAGS[name]
    options[name] = flag.value if flag.present else None
  return options


def _enhance(enhancer, origin: str) -> None:
  """--input into --output; a bad file is one line and the rest go on."""
  failed = []

  def report(error):
    # One line per bad file as it is met; the good files still get done.
    print(f'error: {error}', file=sys.stderr, flush=True)
    failed.append(error)

  written = enhancer.enhance_paths(f.INPUT.value, f.OUTPUT.value,
                                   on_error=report)
  print(f'Enhanced {len(written)} file(s) into {f.OUTPUT.value} with '
        f'{origin}' +
        (f'; {len(failed)} file(s) failed (see above).' if failed else '.'))
  if failed:
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  # For --help without JAX, as in run().
  # pylint: disable=g-import-not-at-top
  from segan_jax import checkpoints, logging_utils, parallel
  logging_utils.quiet_library_logs()
  runtime.enable_compilation_cache(COMPILATION_CACHE_DIR.value)
  try:
    if f.MODE.value == 'train':
      parallel.initialize_distributed(
          f.DISTRIBUTED.value, f.COORDINATOR_ADDRESS.value,
          f.NUM_PROCESSES.value, f.PROCESS_ID.value)
    run(f.MODE.value)
  except (ValueError, checkpoints.CheckpointError, FloatingPointError) as e:
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
