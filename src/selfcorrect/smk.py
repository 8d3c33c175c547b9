"""Glue for Snakemake ``script:`` adapters: per-rule logging, and nothing else."""

from __future__ import annotations

import logging
import sys


def start(snakemake) -> None:
    """Send this job's logging, warnings and progress bars (stderr) to its ``log:`` file.

    A job that fails still says why on the console: Snakemake's own error block shows only the rule's
    ``message:`` (None here) and the log's path.
    """
    if snakemake.log:
        sys.stderr = open(snakemake.log[0], "a", buffering=1)  # noqa: SIM115 - lives as long as the job
        sys.excepthook = _reason_on_console(f"rule {snakemake.rule}", sys.__stderr__)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)


def _reason_on_console(job: str, console):
    """An excepthook that writes the traceback to the log (``sys.stderr``) and the error's one line to ``console``."""

    def hook(exc_type, exc, tb):
        sys.__excepthook__(exc_type, exc, tb)
        print(f"Error in {job}: {exc_type.__name__}: {exc}", file=console, flush=True)

    return hook
