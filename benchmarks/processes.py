"""One generation job of a finished offline run, as one process and as several (cluster.generate_processes).

    python benchmarks/processes.py WORKDIR [--group answer] [--examples 128] [--threads 2] [--processes 2] [--order one-first]

WORKDIR is a directory where `make paper` (or the workflow) has run: its converted model (resources/models/) and its
BBQ sample (results/samples/bbq.parquet) are read, nothing in it is written. The conditions, generation settings and
model entry are this checkout's config.yaml (its first model), not WORKDIR's. The job runs on the sample's first
``--examples`` examples with the config's shard size, each way in a fresh temporary shard directory, model load
included. Last line: one JSON object (seconds each way, their ratio, whether the two tables are equal).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from selfcorrect.conditions import Registry  # noqa: E402
from selfcorrect.config_checks import load_config  # noqa: E402
from selfcorrect.pipeline import generate  # noqa: E402


def timed(cfg: dict, model: str, workdir: Path, group: str, samples: Path, out: Path, threads: int, processes) -> float:
    conditions = Registry.load().job_groups("bbq", cfg["conditions"], True)[group]
    study = {k: cfg[k] for k in ("rounds", "answer_modes", "generation", "seed")}
    t0 = time.perf_counter()
    generate(model, cfg["models"][model], "bbq", conditions, str(samples), study, str(out / "table.parquet"),
             str(out / "meta.json"), str(out / "shards"), local_model_dir=str(workdir / "resources" / "models" / model),
             threads=threads, processes=processes)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--group", default="answer", choices=["answer", "reasoning"])
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--order", default="one-first", choices=["one-first", "split-first"])
    args = ap.parse_args()
    cfg = load_config(ROOT / "config.yaml")
    model = next(iter(cfg["models"]))
    runs = [("one", 1), ("split", args.processes)]
    if args.order == "split-first":
        runs.reverse()
    seconds, tables = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        samples = Path(tmp) / "samples.parquet"
        pd.read_parquet(args.workdir / "results" / "samples" / "bbq.parquet").iloc[:args.examples].to_parquet(samples)
        for name, processes in runs:
            out = Path(tmp) / name
            out.mkdir()
            seconds[name] = timed(cfg, model, args.workdir, args.group, samples, out, args.threads, processes)
            tables[name] = pd.read_parquet(out / "table.parquet")
            print(f"{name}: {seconds[name]:.1f} s", flush=True)
    try:
        pd.testing.assert_frame_equal(tables["one"], tables["split"])
        equal = True
    except AssertionError:
        equal = False
    print(json.dumps({"group": args.group, "examples": args.examples, "threads": args.threads,
                      "processes": args.processes, "order": args.order, "seconds_one_process": round(seconds["one"], 1),
                      "seconds_split": round(seconds["split"], 1), "ratio": round(seconds["split"] / seconds["one"], 3),
                      "tables_equal": equal}))


if __name__ == "__main__":
    main()
