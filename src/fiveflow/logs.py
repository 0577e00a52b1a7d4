"""Logging set-up in one place: the record formats, a process's root logging, a log file for one call.

- :func:`setup_logging`: the process's root handler. The CLI logs to the console without timestamps
  (``INFO fiveflow.train: ...``); a Snakemake rule script logs to the rule's log file with them.
- :func:`logging_to`: what the library functions that take ``log=`` (a Logger, a log file path or
  None) do with it: a path gets a file handler on the package logger for the duration of the call.

Log files always carry timestamps: ``2024-05-01 12:00:00,123 INFO fiveflow.train: message``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

LOGGER_NAME = "fiveflow"
FORMAT = "%(levelname)s %(name)s: %(message)s"
FILE_FORMAT = "%(asctime)s " + FORMAT


def setup_logging(
    stream: TextIO | None = None, *, level: int = logging.INFO, timestamps: bool = False, replace: bool = False
) -> None:
    """Send the root logger's records at ``level`` and above to ``stream`` (default: stderr).

    ``timestamps`` prefixes each line with the time (log files). Without ``replace`` an existing
    set-up (an application embedding fiveflow, pytest) is kept and this does nothing; with it, the
    root logger's handlers are closed and replaced (a rule script owns its process).
    """
    logging.basicConfig(level=level, stream=stream, format=FILE_FORMAT if timestamps else FORMAT, force=replace)


@contextlib.contextmanager
def logging_to(log: str | os.PathLike | logging.Logger | None, name: str = LOGGER_NAME) -> Iterator[logging.Logger]:
    """Yield the logger a call should use: ``log`` itself when it is a Logger, else ``logging.getLogger(name)``.

    When ``log`` is a path, the records of ``name`` and its children are also appended to that file
    (its folder is created; timestamped lines), and ``name`` lets INFO records through, for the
    duration of the ``with`` block; the handler is then removed and closed and the level restored.
    """
    if isinstance(log, logging.Logger):
        yield log
        return
    logger = logging.getLogger(name)
    if log is None:
        yield logger
        return
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    level = logger.level
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
