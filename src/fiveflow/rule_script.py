"""Glue for the thin Snakemake scripts: logging to the rule's log file, threads, error reporting."""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Callable

from .logs import setup_logging


def run_script(smk, func: Callable[[object, logging.Logger], None]) -> None:
    """Run ``func(snakemake, log)`` with stdout/stderr and logging going to ``snakemake.log[0]``.

    On failure the traceback and the error message end up in the log and the script exits non-zero,
    so Snakemake deletes the rule's outputs and points the user at the log.
    """
    log_path = smk.log[0] if len(smk.log) else None
    stream = open(log_path, "a", buffering=1) if log_path else sys.stderr
    sys.stdout = sys.stderr = stream
    setup_logging(stream, timestamps=True, replace=True)
    log = logging.getLogger(f"fiveflow.{smk.rule}")
    threads = max(1, int(getattr(smk, "threads", 1) or 1))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "torch" in sys.modules:  # never import torch just for this: most rules do not need it
        sys.modules["torch"].set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        func(smk, log)
    except Exception as exc:  # report clearly, then fail the job
        log.error("%s failed: %s", smk.rule, exc)
        traceback.print_exc(file=stream)
        stream.flush()
        sys.__stderr__.write(f"[fiveflow] rule {smk.rule}: {exc}\n(see {log_path})\n")
        sys.exit(1)
    log.info("%s done in %.1f s", smk.rule, time.perf_counter() - t0)
