"""A generation job killed with SIGKILL mid-way resumes to the same table as an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from selfcorrect import data
from selfcorrect.pipeline import sample

JOB = """
import sys, json
from selfcorrect.pipeline import generate
a = json.loads(sys.argv[1])
generate('tiny', {'path': a['model'], 'format': 'chat'}, 'bbq', ['instruction'], a['samples'], a['cfg'],
         a['out'], a['meta'], a['shards'], threads=1)
"""


def _args(tmp: Path, model: Path, samples: Path) -> dict:
    generation = {"backend": "transformers", "device": "cpu", "batch_size": 2, "max_new_tokens": 24,
                  "cot_max_new_tokens": 8, "shard_size": 2, "carry_kv_between_rounds": True, "prefix_tree_prefill": True,
                  "graph_decode": True}
    cfg = {"rounds": 2, "answer_modes": ["generate", "logprob"], "seed": 1, "generation": generation}
    return {"model": str(model), "samples": str(samples), "cfg": cfg, "out": str(tmp / "out.parquet"),
            "meta": str(tmp / "out.meta.json"), "shards": str(tmp / "shards")}


def _start(args: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", JOB, json.dumps(args)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_kill_and_rerun_gives_the_uninterrupted_table(tmp_path, tiny_model, bbq_paths):
    table = tmp_path / "bbq.parquet"
    data.load_bbq(bbq_paths[:2]).to_parquet(table)
    samples = tmp_path / "samples.parquet"
    sample("bbq", str(table), {"categories": ["Age", "Disability_status"], "sample_per_cell": 1, "seed": 3}, str(samples))

    ref = _args(tmp_path / "ref", tiny_model, samples)
    assert _start(ref).wait(timeout=600) == 0

    run = _args(tmp_path / "killed", tiny_model, samples)
    proc = _start(run)
    shards = Path(run["shards"])
    deadline = time.time() + 300
    while time.time() < deadline and len(list(shards.glob("shard-*.parquet"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(shards.glob("shard-*.parquet")))
    assert 2 <= done_before < 4, "the job should have been killed part-way"
    assert not Path(run["out"]).exists()
    assert not list(shards.glob("*.part"))
    finished = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.parquet")}

    assert _start(run).wait(timeout=600) == 0
    # the finished shards were read back, not computed again
    assert {p.name: p.stat().st_mtime_ns for p in shards.glob("shard-*.parquet") if p.name in finished} == finished
    a = pd.read_parquet(ref["out"]).sort_values(["item_id", "round"]).reset_index(drop=True)
    b = pd.read_parquet(run["out"]).sort_values(["item_id", "round"]).reset_index(drop=True)
    assert len(a) == 8 * 2 and len(b) == 8 * 2 and not b.duplicated(["item_id", "round"]).any()
    pd.testing.assert_frame_equal(a, b)
