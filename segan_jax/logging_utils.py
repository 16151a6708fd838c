"""Logging helpers shared by the entry points."""

from __future__ import annotations

import logging as std_logging
import os

from absl import logging

# Libraries whose INFO lines drown the run's own (Orbax logs every file it
# renames while saving a checkpoint).
_CHATTY_PACKAGES = (os.sep + 'orbax' + os.sep,)


class _QuietLibraries(std_logging.Filter):

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.levelno >= std_logging.WARNING:
      return True
    return not any(p in record.pathname for p in _CHATTY_PACKAGES)


def quiet_library_logs() -> None:
  """Keeps only warnings and errors from chatty libraries in absl's log."""
  logging.get_absl_handler().addFilter(_QuietLibraries())
