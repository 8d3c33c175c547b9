"""A CPU generation job run by several processes that share its threads and its shards.

Why: on CPU a small model's decoding step is many short operations, and between its matrix products a process
spends time in Python, in dispatch and in memory-bound attention, during which its second thread has nothing to
do. Two processes of one thread each fill those gaps for each other: on this project's 2-core machine two
one-thread jobs side by side took 0.81-0.90 of the time of the same two jobs run in turn with two threads each
(benchmarks/README.md). Splitting one job's shards between its processes keeps that gain whatever the jobs' sizes
(two jobs side by side lose it when one outlasts the other, and Snakemake does not order the jobs of one rule).

Each process loads its own copy of the model (nothing is shared but the shard directory), so ``auto`` splits only
small models, whose step is short enough for this overhead to matter and whose copies cost little memory; on a GPU a
job keeps one process (its device is one GPU). A shard is computed by exactly one process (Shards.claim), so the
split changes nothing but who does the work, and the thread count per process: the methods page's determinism note.

The helper processes run ``python -m selfcorrect.job_processes SPEC THREADS LABEL PARENT_PID``; they log into the
job's log, and stop claiming shards once their parent is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from .io import write_json
from .study import Shards

log = logging.getLogger(__name__)

# "auto" splits a job only for models whose weights are at most this large: measured for SmolLM2-135M (0.5 GB in
# fp32); for a model of billions of parameters the matrix products dominate a step and each copy costs gigabytes.
AUTO_MAX_WEIGHT_BYTES = 1 << 30
AUTO_PROCESSES = 2


class HelperFailed(RuntimeError):
    """A helper process of a generation job exited with an error."""


def weight_bytes(model) -> int:
    """Bytes of a torch model's parameters; 0 when the backend holds no torch model (vLLM)."""
    if model is None:
        return 0
    return int(sum(p.numel() * p.element_size() for p in model.parameters()))


def plan(setting: int | str, device: str, threads: int, model_bytes: int, n_missing: int) -> list[int]:
    """The threads of each process of a job (one entry: one process), from ``cluster.generate_processes``.

    ``auto``: two processes on CPU for a model of at most AUTO_MAX_WEIGHT_BYTES, else one. An integer asks for that
    many on CPU. Never more processes than threads or than shards left to compute, and one on a GPU.
    """
    if setting == "auto":
        wanted = AUTO_PROCESSES if model_bytes <= AUTO_MAX_WEIGHT_BYTES else 1
    elif isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1:
        wanted = setting
    else:
        raise ValueError(f"cluster.generate_processes is {setting!r}; use auto or a whole number >= 1")
    if not str(device).startswith("cpu"):
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


def _start(spec: Path, threads: int, label: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    # the helper imports this very package, wherever it was imported from (an editable install or a source tree)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    stream = _log_stream()
    return subprocess.Popen([sys.executable, "-m", "selfcorrect.job_processes", str(spec), str(threads), label,
                             str(os.getpid())], stdout=stream, stderr=stream, env=env)


@contextlib.contextmanager
def helpers(call: dict, split: list[int], key: str, shards: Shards) -> Iterator[None]:
    """Run a helper process for each entry of ``split`` but the first (this process's threads) on ``shards``, while
    the body fills them too.

    ``call``: load_job's arguments. On leaving, wait for the helpers and raise HelperFailed if one failed (the shards
    finished so far are kept: a rerun resumes); if the body raises, stop them first.
    """
    n = len(split)
    spec = shards.dir / f"processes-{key}.json"
    shards.release_claims()  # claims of a killed run
    write_json({"call": call, "key": key, "shard_dir": str(shards.dir)}, spec)
    procs: list[subprocess.Popen] = []
    try:
        for i, threads in enumerate(split[1:], start=2):
            procs.append(_start(spec, threads, f"{i}/{n}"))
        log.info("%d processes share this job's %d missing shards, with %s threads", n, len(shards.missing()),
                 "+".join(map(str, split)))
        yield
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
        raise
    finally:
        shards.release_claims()
        spec.unlink(missing_ok=True)
    failed = [(i, code) for i, code in enumerate(codes, start=2) if code != 0]
    if failed:
        which = ", ".join(f"process {i}/{n} exited with code {code}" for i, code in failed)
        raise HelperFailed(f"{which} (its error is above in this job's log); the shards finished so far are kept "
                           f"in {shards.dir}: run the workflow again to resume, or set cluster.generate_processes: 1")


def run_helper(spec: Path, threads: int, label: str, parent: int) -> int:
    """A helper's work: load the job as its parent did and fill the shards it claims; how many it computed."""
    import torch

    from .pipeline import load_job

    data = json.loads(Path(spec).read_text())
    call, key = data["call"], data["key"]
    torch.set_num_threads(threads)
    torch.manual_seed(call["study"]["seed"])
    lj = load_job(**call)
    if lj.key != key:
        raise RuntimeError(f"process {label} computed shard key {lj.key}, its parent {key}: the job's inputs "
                           "changed while it ran")
    if hasattr(lj.backend, "progress_label"):
        lj.backend.progress_label = f"[{label}] "
    return lj.shards(data["shard_dir"]).fill(lj.examples, lj.run, claim=True,
                                             stop=lambda: os.getppid() != parent, who=f" (process {label})")


def main(argv: list[str] | None = None) -> int:
    spec, threads, label, parent = (argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format=f"%(asctime)s %(levelname)s %(name)s [process {label}]: %(message)s")
    logging.captureWarnings(True)
    run_helper(Path(spec), int(threads), label, int(parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
