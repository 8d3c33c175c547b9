"""Glue for Snakemake ``script:`` adapters: per-rule logging, and nothing else."""

from __future__ import annotations

import logging
import sys


def start(snakemake) -> None:
    """Send this job's logging, warnings and progress bars (stderr) to its ``log:`` file."""
    if snakemake.log:
        sys.stderr = open(snakemake.log[0], "a", buffering=1)  # noqa: SIM115 - lives as long as the job
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)
