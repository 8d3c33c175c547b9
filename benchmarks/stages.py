"""The workflow's time per stage: Snakemake's `benchmark:` files summed by rule, and each job's span in the run's log.

    python benchmarks/stages.py [WORKDIR] [--log .snakemake/log/<run>.snakemake.log]

WORKDIR is the directory a run wrote into (default: here); the log defaults to the newest run's log there. Per rule it
prints the jobs, the seconds the `benchmark:` files measured (benchmarks/runs/<rule>/...; summed, with the CPU seconds)
and the seconds between each job's start and its "Finished" line in the log (summed; jobs that overlapped each count
in full). The wall time is the log's first job start to its last finish. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
RULE = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def log_spans(lines: list[str]) -> tuple[dict[str, list[float]], float | None]:
    """Per rule, each job's seconds from its start stamp to its finish stamp; and the run's wall seconds."""
    now = None
    started: dict[str, tuple[str, datetime]] = {}
    pending_rule = None
    spans: dict[str, list[float]] = defaultdict(list)
    first = last = None
    for line in lines:
        if m := STAMP.match(line.strip()):
            now = datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
        elif m := RULE.match(line):
            pending_rule = m.group(1)
        elif (m := JOBID.match(line)) and pending_rule and now is not None:
            started[m.group(1)] = (pending_rule, now)
            first = first or now
            pending_rule = None
        elif (m := FINISHED.match(line.strip())) and m.group(1) in started and now is not None:
            rule, t0 = started.pop(m.group(1))
            spans[rule].append((now - t0).total_seconds())
            last = now
    return dict(spans), (last - first).total_seconds() if first and last else None


def benchmark_files(root: Path) -> dict[str, list[dict]]:
    """Per rule, the rows of its `benchmark:` files (benchmarks/runs/<rule>/**.tsv)."""
    out: dict[str, list[dict]] = defaultdict(list)
    for path in sorted((root / "benchmarks" / "runs").glob("*/**/*.tsv")):
        rule = path.relative_to(root / "benchmarks" / "runs").parts[0]
        with path.open() as fh:
            out[rule] += list(csv.DictReader(fh, delimiter="\t"))
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", nargs="?", default=".", type=Path)
    ap.add_argument("--log", type=Path, help="a Snakemake run log (default: the newest in WORKDIR/.snakemake/log)")
    args = ap.parse_args()
    log = args.log or max((args.workdir / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
    spans, wall = log_spans(log.read_text().splitlines())
    bench = benchmark_files(args.workdir)
    rows = []
    for rule in sorted(set(spans) | set(bench)):
        b = bench.get(rule, [])
        rows.append({"rule": rule, "jobs": len(spans.get(rule, [])) or len(b),
                     "log_s": round(sum(spans.get(rule, [])), 1),
                     "benchmark_s": round(sum(float(r["s"]) for r in b), 1) if b else None,
                     "benchmark_cpu_s": round(sum(float(r["cpu_time"]) for r in b), 1) if b else None})
    print(f"{'rule':<18}{'jobs':>5}{'log s':>9}{'bench s':>9}{'cpu s':>9}")
    for r in rows:
        print(f"{r['rule']:<18}{r['jobs']:>5}{r['log_s']:>9}{r['benchmark_s'] if r['benchmark_s'] is not None else '-':>9}"
              f"{r['benchmark_cpu_s'] if r['benchmark_cpu_s'] is not None else '-':>9}")
    print(f"wall (first job start to last finish): {wall} s, log {log.name}")
    print(json.dumps({"log": log.name, "wall_s": wall, "stages": rows}))


if __name__ == "__main__":
    main()
