"""What each --mode does: one function per mode (`MODES`), and the generator
that enhance, evaluate and export share (`_generator`).

cli.py parses the flags and imports this module only then, so that --help
answers without loading JAX; here everything is imported at the top.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from segan_jax import bundling
from segan_jax import checkpoint_evaluators
from segan_jax import checkpoints
from segan_jax import enhance
from segan_jax import evaluate
from segan_jax import export
from segan_jax import flags as f
from segan_jax import generators
from segan_jax import input_pipeline
from segan_jax import logging_utils
from segan_jax import output_settings
from segan_jax import parallel
from segan_jax import pretrained
from segan_jax import report
from segan_jax import runtime
from segan_jax import train
from segan_jax.ops import conv

# What a user's input can be wrong with (files, flags, checkpoints): one line
# and exit status 2, no traceback (cli.main).
USER_ERRORS = (ValueError, checkpoints.CheckpointError, FloatingPointError)


def run(mode: str, compilation_cache_dir: str | None) -> None:
  """Runs ``mode`` with the parsed flags."""
  logging_utils.quiet_library_logs()
  runtime.enable_compilation_cache(compilation_cache_dir)
  # Every mode's convs (train, enhance, export...) take the measured forms.
  with conv.use_policy(conv.policy_with_table(flags.FLAGS.conv_forms_table)):
    MODES[mode]()


def _train() -> None:
  _needs_workdir('train')
  parallel.initialize_distributed(
      f.DISTRIBUTED.value, f.COORDINATOR_ADDRESS.value, f.NUM_PROCESSES.value,
      f.PROCESS_ID.value)
  config = f.config_from_flags()
  result = train.train_and_evaluate(
      config, f.WORKDIR.value,
      make_evaluators=checkpoint_evaluators.make_evaluators)
  print(train.training_summary(config, f.WORKDIR.value, result))


def _report() -> None:
  _needs_workdir('report')
  print(f'Wrote {report.write_report(f.WORKDIR.value)}')


def _evaluate() -> None:
  if f.CLEAN_DIR.value or f.ENHANCED_DIR.value:
    _evaluate_folders()
    return
  if not (f.WORKDIR.value or f.RESULTS.value):
    # Checked before anything loads: without a run there is no folder to
    # write the scores into.
    raise ValueError('--mode=evaluate needs --workdir (the run to score), '
                     '--results=FILE.json (to score the bundled pretrained '
                     'model), or --clean_dir with --enhanced_dir')
  generator, _ = _generator()
  enhancer = enhance.Enhancer(generator, **_enhancer_options())
  source = input_pipeline.load_source(f.config_from_flags(), f.SPLIT.value)
  results = f.RESULTS.value or os.path.join(f.WORKDIR.value,
                                            'evaluation.json')
  _, table = evaluate.evaluate_generator(
      generator, source, results=results,
      label=f'{generator.config.model} step {generator.step}',
      max_files=f.MAX_FILES.value, enhancer=enhancer)
  print(table)
  print(f'Per-file scores: {os.path.splitext(results)[0]}.csv; summary: '
        f'{results}')


def _evaluate_folders() -> None:
  if not (f.CLEAN_DIR.value and f.ENHANCED_DIR.value):
    raise ValueError('--clean_dir and --enhanced_dir go together')
  _, table = evaluate.evaluate_folders(
      f.CLEAN_DIR.value, f.ENHANCED_DIR.value, results=f.RESULTS.value,
      noisy_dir=f.NOISY_DIR.value, skip_bad_files=flags.FLAGS.skip_bad_files)
  print(table)


def _enhance() -> None:
  if not (f.INPUT.value and f.OUTPUT.value):
    # Checked before the checkpoint is loaded: a usage slip answers at once.
    raise ValueError('--mode=enhance needs --input and --output')
  if f.MODEL_FILE.value:
    if f.WORKDIR.value or f.PRETRAINED.value:
      raise ValueError('--model_file replaces --workdir and --pretrained; '
                       'give one of them')
    enhancer = export.ExportedEnhancer(f.MODEL_FILE.value,
                                       **_enhancer_options())
    origin = f'the {enhancer.source}'
    print(f'Using {origin}.', flush=True)
  else:
    generator, origin = _generator()
    enhancer = enhance.Enhancer(generator, **_enhancer_options())
  _enhance_paths(enhancer, origin)


def _export() -> None:
  if not f.OUTPUT.value:
    raise ValueError('--mode=export needs --output (the file to write)')
  generator, _ = _generator()
  size = export.export_file(generator, f.EXPORT_FORMAT.value, f.OUTPUT.value)
  print(f'Exported G of the {generator.source} to {f.OUTPUT.value} '
        f'({f.EXPORT_FORMAT.value}, {size / 2**20:.1f} MiB).')


def _bundle() -> None:
  if bool(f.WORKDIR.value) == bool(f.PRETRAINED.value):
    raise ValueError('--mode=bundle needs --workdir (the run to bundle) or '
                     '--pretrained (a bundle to write again), one of them')
  name = f.BUNDLE_NAME.value or pretrained.DEFAULT
  root = f.BUNDLE_ROOT.value or pretrained.ROOT
  if f.WORKDIR.value:
    path, digest = bundling.bundle_run(
        f.WORKDIR.value, name, f.BUNDLE_VERSION.value, root,
        f.CHECKPOINT_STEP.value, _average_steps(), **_output_overrides())
  else:
    if f.AVERAGE_STEPS.value or f.CHECKPOINT_STEP.value is not None:
      raise ValueError('--checkpoint_step and --average_steps pick '
                       'checkpoints of a --workdir, not of a bundle')
    path, digest = bundling.rebundle(f.PRETRAINED.value, name,
                                     f.BUNDLE_VERSION.value, root,
                                     **_output_overrides())
  print(f'Wrote {path} (params sha256 {digest}).')


MODES = {'train': _train, 'report': _report, 'evaluate': _evaluate,
         'enhance': _enhance, 'export': _export, 'bundle': _bundle}


def _needs_workdir(mode: str) -> None:
  if not f.WORKDIR.value:
    raise ValueError(f'--mode={mode} needs --workdir')


def _generator() -> tuple[generators.TrainedGenerator, str]:
  """G of --workdir (its best checkpoint, kept by --keep_best, else its
  latest, or --checkpoint_step) or of the bundle --pretrained; and which,
  for messages (also printed)."""
  if f.MODEL_FILE.value:
    raise ValueError('--model_file is for --mode=enhance')
  if f.WORKDIR.value:
    generator = generators.restore_generator(f.WORKDIR.value,
                                             f.CHECKPOINT_STEP.value)
    origin = f'the {generator.source} of {f.WORKDIR.value}'
  else:
    if f.CHECKPOINT_STEP.value is not None:
      raise ValueError('--checkpoint_step needs --workdir (the bundled '
                       'pretrained model has one step)')
    generator = generators.restore_pretrained(f.PRETRAINED.value)
    origin = f'the {generator.source} (no --workdir given)'
  print(f'Using {origin}.', flush=True)
  return generator, origin


def _output_overrides() -> dict[str, object]:
  """The output settings given on the command line; None for the others
  (the model's own)."""
  return {name: flags.FLAGS[name].value if flags.FLAGS[name].present else None
          for name in output_settings.NAMES}


def _enhancer_options() -> dict[str, object]:
  """How either engine (a generator, an exported file) windows, batches and
  makes its output, from the flags."""
  return {'batch_size': f.ENHANCE_BATCH_SIZE.value, 'seed': flags.FLAGS.seed,
          'overlap': float(f.ENHANCE_OVERLAP.value), **_output_overrides()}


def _average_steps() -> list[int] | None:
  values = f.AVERAGE_STEPS.value
  if not values:
    return None
  try:
    return [int(v) for v in values]
  except ValueError:
    raise ValueError(f'--average_steps: {",".join(values)} is not a list of '
                     'steps') from None


def _enhance_paths(enhancer: enhance.WindowEnhancer, origin: str) -> None:
  """--input into --output; a bad file is one line and the rest go on."""
  failed = []

  def report_error(error):
    # One line per bad file as it is met; the good files still get done.
    print(f'error: {error}', file=sys.stderr, flush=True)
    failed.append(error)

  written = enhancer.enhance_paths(f.INPUT.value, f.OUTPUT.value,
                                   on_error=report_error)
  print(f'Enhanced {len(written)} file(s) into {f.OUTPUT.value} with '
        f'{origin}' +
        (f'; {len(failed)} file(s) failed (see above).' if failed else '.'))
  if failed:
    sys.exit(2)
