"""A CPU generation job run by several processes that share its threads and its shards.

Why: on CPU a small model's decoding step is many short operations, and between its matrix products a process
spends time in Python, in dispatch and in memory-bound attention, during which its second thread has little to do.
Two processes of one thread each fill those gaps for each other: on this project's 2-core machine the default
study's BBQ jobs took 0.90-0.96 of their one-process, two-thread time (benchmarks/README.md). Splitting one job's
shards keeps that gain for whichever job runs (two jobs side by side lose it when one outlasts the other, and
Snakemake does not order the jobs of one rule), as far as the shards go: with an odd number left, one process
finishes the last alone.

Each process loads its own copy of the model (nothing is shared but the shard directory), so ``auto`` splits only
the transformers backend's small models, whose step is short enough for this overhead to matter and whose copies
cost little memory; on a GPU a job keeps one process (its device is one GPU). A shard is computed by the one process
that claims it (Shards.claim), so the split changes nothing but who does the work and the threads per process (the
methods page's determinism note).

A helper runs ``python -m selfcorrect.job_processes THREADS LABEL PARENT_PID`` with the job on its stdin; it logs
into the job's log and stops before its next shard once its parent is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import site
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from .study import Shards

log = logging.getLogger(__name__)

# "auto" splits a job only for models whose weights are at most this large: measured for SmolLM2-135M (0.5 GB in
# fp32); for a model of billions of parameters the matrix products dominate a step and each copy costs gigabytes.
AUTO_MAX_WEIGHT_BYTES = 1 << 30
AUTO_PROCESSES = 2
STOP_GRACE_SECONDS = 30  # how long a helper may take to stop (its current batch) before it is killed


class HelperFailed(RuntimeError):
    """A helper process of a generation job exited with an error."""


def weight_bytes(model) -> int | None:
    """Bytes of a torch model's parameters; None when the backend holds no torch model (vLLM)."""
    if model is None:
        return None
    return int(sum(p.numel() * p.element_size() for p in model.parameters()))


def plan(setting: int | str, device: str, threads: int, model_bytes: int | None, n_missing: int) -> list[int]:
    """The threads of each process of a job (one entry: one process), from ``cluster.generate_processes``.

    ``auto``: two processes on CPU for a torch model of at most AUTO_MAX_WEIGHT_BYTES, else one. An integer asks for
    that many on CPU. Never more processes than threads or than shards left to compute, and one on a GPU or where
    the backend holds no torch model (``model_bytes`` None: vLLM, which runs its own workers).
    """
    if setting == "auto":
        wanted = AUTO_PROCESSES if model_bytes is not None and model_bytes <= AUTO_MAX_WEIGHT_BYTES else 1
    elif isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1:
        wanted = setting
    else:
        raise ValueError(f"cluster.generate_processes is {setting!r}; use auto or a whole number >= 1")
    if not str(device).startswith("cpu") or model_bytes is None:
        wanted = 1
    n = max(1, min(wanted, threads, n_missing))
    base, extra = divmod(max(1, threads), n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def _log_stream():
    """Where this process logs (the job's log under Snakemake), for the helpers to write to; None: inherit stderr."""
    try:
        sys.stderr.flush()
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return sys.stderr


def _helper_env(threads: int) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    # the helper imports this very package: from a source tree (tests, PYTHONPATH=src) it needs the path; an
    # installed package is on the interpreter's own path, which must stay ahead of site-packages' contents
    root = str(Path(__file__).resolve().parents[1])
    installed = {str(Path(p).resolve()) for p in site.getsitepackages() + [site.getusersitepackages()]}
    if root not in installed:
        env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _start(threads: int, label: str) -> subprocess.Popen:
    stream = _log_stream()
    return subprocess.Popen([sys.executable, "-m", "selfcorrect.job_processes", str(threads), label, str(os.getpid())],
                            stdin=subprocess.PIPE, stdout=stream, stderr=stream, env=_helper_env(threads), text=True)


def _send(proc: subprocess.Popen, job: dict) -> None:
    """The job, on the helper's stdin; a helper that died before reading it is reported by its exit code."""
    try:
        proc.stdin.write(json.dumps(job))
        proc.stdin.close()
    except BrokenPipeError:
        pass


def _outcome(label: str, code: int) -> str:
    if code == -signal.SIGKILL:
        return f"process {label} was killed by signal 9 (out of memory? each process holds a copy of the model)"
    if code < 0:
        return f"process {label} was killed by signal {-code}"
    if code == 128 + signal.SIGTERM:
        return f"process {label} was stopped by SIGTERM"
    return f"process {label} exited with code {code} (its error is above in this job's log)"


class Helpers:
    """The running helper processes of one job."""

    def __init__(self, procs: dict[str, subprocess.Popen]):
        self.procs = procs

    def failed(self) -> bool:
        """Whether a helper has already exited with an error (the job then stops taking shards)."""
        return any(p.poll() not in (None, 0) for p in self.procs.values())

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _exit_on_sigterm(signum, frame):
    # SIGTERM (Snakemake, Slurm) as an exception: the helpers are stopped, claims released, temporary files removed
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def helpers(call: dict, split: list[int], key: str, shards: Shards) -> Iterator[Helpers]:
    """Run a helper process for each entry of ``split`` but the first (this process's threads) on ``shards``, while
    the body fills them too (it should stop taking shards once ``Helpers.failed()``).

    ``call``: load_job's arguments. On leaving, wait for the helpers and raise HelperFailed if one failed (the shards
    finished so far are kept: a rerun resumes); if the body raises, or SIGTERM arrives, stop them first.
    """
    n = len(split)
    job = {"call": call, "key": key, "shard_dir": str(shards.dir)}
    running = Helpers({})
    with _sigterm_raises():
        try:
            for i, threads in enumerate(split[1:], start=2):
                running.procs[f"{i}/{n}"] = proc = _start(threads, f"{i}/{n}")
                _send(proc, job)
            log.info("%d processes share this job's %d missing shards, with %s threads", n, len(shards.missing()),
                     "+".join(map(str, split)))
            yield running
            codes = {label: p.wait() for label, p in running.procs.items()}
        except BaseException:
            running.stop()
            raise
        finally:
            shards.release_claims()
    failed = [_outcome(label, code) for label, code in codes.items() if code != 0]
    if failed:
        raise HelperFailed(f"{'; '.join(failed)}; the shards finished so far are kept in {shards.dir}: run the "
                           "workflow again to resume, or set cluster.generate_processes: 1")


def run_helper(job: dict, threads: int, label: str, parent: int) -> int:
    """A helper's work: load the job as its parent did and fill the shards it claims; how many it computed."""
    import torch

    from .pipeline import load_job

    call, key = job["call"], job["key"]
    torch.set_num_threads(threads)
    lj = load_job(**call)
    if lj.key != key:
        raise RuntimeError(f"process {label} computed shard key {lj.key}, its parent {key}: the job's inputs "
                           "changed while it ran")
    lj.backend.progress_label = f"[{label}] "
    log.info("model loaded with %d thread(s); taking the shards no other process has claimed", threads)
    return lj.shards(job["shard_dir"]).fill(lj.examples, lj.run, claim=True,
                                            stop=lambda: os.getppid() != parent, who=f" (process {label})")


def main(argv: list[str] | None = None) -> int:
    threads, label, parent = (argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format=f"%(asctime)s %(levelname)s %(name)s [process {label}]: %(message)s")
    logging.captureWarnings(True)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    run_helper(json.loads(sys.stdin.read()), int(threads), label, int(parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
