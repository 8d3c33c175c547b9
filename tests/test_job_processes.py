"""A CPU generation job split over processes (selfcorrect.job_processes): the split changes nothing but the work."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from selfcorrect import data, job_processes
from selfcorrect.job_processes import AUTO_MAX_WEIGHT_BYTES, HelperFailed, plan
from selfcorrect.pipeline import sample
from selfcorrect.study import Shards

SMALL, LARGE = 540_000_000, AUTO_MAX_WEIGHT_BYTES + 1


@pytest.mark.parametrize("setting, device, threads, weights, missing, expected", [
    ("auto", "cpu", 2, SMALL, 4, [1, 1]),       # the offline study: SmolLM2-135M, 2 cores
    ("auto", "cpu", 8, SMALL, 4, [4, 4]),
    ("auto", "cpu", 3, SMALL, 4, [2, 1]),       # the odd thread goes to the first process
    ("auto", "cpu", 1, SMALL, 4, [1]),          # one thread cannot be split
    ("auto", "cpu", 2, SMALL, 1, [2]),        # one shard left: one process with both threads
    ("auto", "cpu", 2, SMALL, 0, [2]),          # every shard reused
    ("auto", "cpu", 8, LARGE, 4, [8]),          # a large model keeps one process (and one copy of its weights)
    ("auto", "cuda", 8, SMALL, 4, [8]),         # a GPU job keeps one process
    ("auto", "cuda:1", 8, 0, 4, [8]),
    (1, "cpu", 2, SMALL, 4, [2]),
    (4, "cpu", 8, LARGE, 4, [2, 2, 2, 2]),      # asked for: also for a large model
    (4, "cpu", 8, SMALL, 3, [3, 3, 2]),         # no more processes than shards to compute
    (3, "cuda", 8, SMALL, 4, [8]),
    ("auto", "cpu", 2, None, 4, [2]),           # no torch model in this process (vLLM on CPU): one process
    (2, "cpu", 2, None, 4, [2]),
])
def test_plan_splits_a_jobs_threads(setting, device, threads, weights, missing, expected):
    assert plan(setting, device, threads, weights, missing) == expected


@pytest.mark.parametrize("bad", [0, -1, "two", True, 1.5, None])
def test_plan_names_a_bad_setting(bad):
    with pytest.raises(ValueError, match="cluster.generate_processes is .*auto or a whole number"):
        plan(bad, "cpu", 2, SMALL, 4)


def test_a_shard_is_claimed_once_and_claims_are_released(tmp_path):
    a, b = Shards(tmp_path, 7, 2, "k1"), Shards(tmp_path, 7, 2, "k1")
    assert a.n == 4 and a.missing() == [0, 1, 2, 3]
    assert a.claim(1) and not b.claim(1) and not a.claim(1)
    assert b.claim(2)
    a.release_claims()
    assert b.claim(1) and b.claim(2)
    # another job's claims (another key) are its own
    assert Shards(tmp_path, 7, 2, "k2").claim(1)
    with pytest.raises(IndexError):
        a.claim(4)


def test_processes_that_claim_compute_every_shard_once(tmp_path):
    examples = pd.DataFrame({"x": range(7)})
    seen = []

    def run(chunk):
        seen.append(list(chunk["x"]))
        return chunk.assign(y=chunk["x"] * 2)

    first, second = Shards(tmp_path, 7, 2, "k"), Shards(tmp_path, 7, 2, "k")
    second.claim(0), second.claim(2)  # another process is on shards 1 and 3
    assert first.fill(examples, run, claim=True) == 2
    assert seen == [[2, 3], [6]]
    with pytest.raises(RuntimeError, match=r"shards \[1, 3\] of 4 .* are not computed"):
        first.read()
    # the claims hold until released: the other process computes its own shards, none twice
    assert second.fill(examples, run, claim=True) == 0
    second.release_claims()
    assert second.fill(examples, run, claim=True) == 2
    assert seen == [[2, 3], [6], [0, 1], [4, 5]]
    pd.testing.assert_frame_equal(first.read(), examples.assign(y=examples["x"] * 2))


def test_fill_stops_claiming_when_told(tmp_path):
    examples = pd.DataFrame({"x": range(6)})
    shards = Shards(tmp_path, 6, 2, "k")
    calls = []
    assert shards.fill(examples, lambda c: c, claim=True, stop=lambda: len(calls.append(1) or calls) > 1) == 1
    assert shards.missing() == [1, 2]


JOB = """
import sys, json, logging
logging.basicConfig(level=logging.INFO)
from selfcorrect.pipeline import generate
a = json.loads(sys.argv[1])
generate('tiny', {'path': a['model'], 'format': 'chat'}, 'bbq', ['baseline', 'instruction'], a['samples'], a['cfg'],
         a['out'], a['meta'], a['shards'], threads=a['threads'], processes=a['processes'])
"""


_ARGS_CFG = {"rounds": 2, "answer_modes": ["generate", "logprob"], "seed": 1,
             "generation": {"backend": "transformers", "device": "cpu", "batch_size": 2, "max_new_tokens": 12,
                            "cot_max_new_tokens": 8, "shard_size": 2, "carry_kv_between_rounds": True,
                            "prefix_tree_prefill": True, "graph_decode": True}}


def _samples(tmp: Path, bbq_paths) -> Path:
    """8 examples (two whole contexts of Age and of Disability_status): 4 shards of 2."""
    table = tmp / "bbq.parquet"
    data.load_bbq(bbq_paths[:2]).to_parquet(table)
    samples = tmp / "samples.parquet"
    sample("bbq", str(table), {"categories": ["Age", "Disability_status"], "sample_per_cell": 1, "seed": 3}, str(samples))
    return samples


def _run_job(tmp: Path, model: Path, samples: Path, threads: int, processes) -> subprocess.CompletedProcess:
    args = {"model": str(model), "samples": str(samples), "out": str(tmp / "out.parquet"),
            "meta": str(tmp / "out.meta.json"), "shards": str(tmp / "shards"), "threads": threads,
            "processes": processes, "cfg": _ARGS_CFG}
    return subprocess.run([sys.executable, "-c", JOB, json.dumps(args)], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_processes_write_the_table_one_process_writes(tmp_path, tiny_model, bbq_paths):
    samples = _samples(tmp_path, bbq_paths)
    one = _run_job(tmp_path / "one", tiny_model, samples, threads=1, processes="auto")
    assert one.returncode == 0, one.stderr
    two = _run_job(tmp_path / "two", tiny_model, samples, threads=2, processes=2)
    assert two.returncode == 0, two.stderr

    # two processes of one thread each (the one-process run had one thread too: the same arithmetic)
    assert json.loads((tmp_path / "two" / "out.meta.json").read_text())["threads_per_process"] == [1, 1]
    assert json.loads((tmp_path / "one" / "out.meta.json").read_text())["threads_per_process"] == [1]
    assert "2 processes share this job's 4 missing shards, with 1+1 threads" in two.stderr
    assert "[process 2/2]: model loaded with 1 thread(s)" in two.stderr
    computed = [line for line in two.stderr.splitlines() if " rows in " in line]
    # 8 examples in shards of 2: each computed once, by one process or the other (which one is a race that the
    # tiny model's fast shards mostly give to the first; the helper's own shards are checked below)
    assert len(computed) == 4 and all("(process 1/2)" in x or "(process 2/2)" in x for x in computed), computed
    assert sorted(p.suffix for p in (tmp_path / "two" / "shards").iterdir()) == [".parquet"] * 4  # no claims left
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one" / "out.parquet"),
                                  pd.read_parquet(tmp_path / "two" / "out.parquet"))

    # a helper alone (no parent racing it for shards) computes the shards it is given as the job's own process did
    shards = tmp_path / "one" / "shards"
    first = sorted(shards.glob("shard-*.parquet"))
    assert len(first) == 4
    kept = {p.name: pd.read_parquet(p) for p in first}
    for p in first[1::2]:
        p.unlink()
    job = {"call": _call(tiny_model, samples), "key": json.loads((tmp_path / "one" / "out.meta.json").read_text())["shard_key"],
           "shard_dir": str(shards)}
    helper = _helper(job, os.getpid())
    assert helper.returncode == 0, helper.stderr
    assert helper.stderr.count(" rows in ") == 2 and "[process 2/2]" in helper.stderr
    for name, rows in kept.items():
        pd.testing.assert_frame_equal(pd.read_parquet(shards / name), rows)

    # a helper whose parent is gone takes no shard
    (shards / first[1].name).unlink()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = _helper(job, gone.pid)
    assert orphan.returncode == 0, orphan.stderr
    assert " rows in " not in orphan.stderr and not (shards / first[1].name).exists()


def _call(model: Path, samples: Path) -> dict:
    return {"name": "tiny", "model_cfg": {"path": str(model), "format": "chat"}, "benchmark": "bbq",
            "conditions": ["baseline", "instruction"], "samples": str(samples),
            "study": json.loads(json.dumps(_ARGS_CFG)), "local_model_dir": None, "weights_record": None}


def _helper(job: dict, parent: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfcorrect.job_processes", "1", "2/2", str(parent)],
                          input=json.dumps(job), capture_output=True, text=True, timeout=600)


def test_a_failed_helper_is_reported_with_its_process_and_the_fix(tmp_path, capfd):
    shards = Shards(tmp_path / "shards", 4, 2, "k")
    call = {"name": "tiny", "model_cfg": {"path": str(tmp_path / "no-such-model"), "format": "chat"},
            "benchmark": "bbq", "conditions": ["baseline"], "samples": str(tmp_path / "no-samples.parquet"),
            "study": {"rounds": 1, "answer_modes": ["logprob"], "seed": 0,
                      "generation": {"backend": "transformers", "device": "cpu", "batch_size": 2, "max_new_tokens": 4,
                                     "cot_max_new_tokens": 4, "shard_size": 2, "carry_kv_between_rounds": True,
                                     "prefix_tree_prefill": True, "graph_decode": True}},
            "local_model_dir": None, "weights_record": None}
    with pytest.raises(HelperFailed, match=r"process 2/2 exited with code 1 .*cluster.generate_processes: 1"):
        with job_processes.helpers(call, [1, 1], "k", shards) as running:
            assert shards.claim(1)
            running.procs["2/2"].wait()
            assert running.failed()
    assert "no-samples.parquet" in capfd.readouterr().err  # the helper's own error went to the log
    assert not list(shards.dir.iterdir())  # the claim is released


def test_the_job_takes_no_shard_once_a_helper_failed(tmp_path, tiny_model, bbq_paths, monkeypatch):
    import torch

    from selfcorrect.pipeline import generate

    samples = _samples(tmp_path, bbq_paths)

    class Failed:
        def failed(self):
            return True

    @contextlib.contextmanager
    def helpers(call, split, key, shards):
        yield Failed()
        raise HelperFailed("process 2/2 exited with code 1")

    monkeypatch.setattr(job_processes, "helpers", helpers)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(HelperFailed):
            generate("tiny", {"path": str(tiny_model), "format": "chat"}, "bbq", ["baseline"], str(samples), _ARGS_CFG,
                     str(tmp_path / "out.parquet"), str(tmp_path / "meta.json"), str(tmp_path / "shards"), threads=2,
                     processes=2)
    finally:
        torch.set_num_threads(threads)
    assert not list((tmp_path / "shards").glob("shard-*.parquet"))


def _fake_helpers(monkeypatch, code: str) -> list:
    started = []

    def start(threads, label):
        p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, text=True)
        started.append(p)
        return p

    monkeypatch.setattr(job_processes, "_start", start)
    return started


@pytest.mark.parametrize("code, message", [
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
     "process 2/2 was killed by signal 9 (out of memory? each process holds a copy of the model)"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGUSR1)", "process 2/2 was killed by signal 10; "),
    ("import sys; sys.exit(143)", "process 2/2 was stopped by SIGTERM; "),
])
def test_a_killed_helper_is_named_with_its_signal(tmp_path, monkeypatch, code, message):
    _fake_helpers(monkeypatch, code)
    shards = Shards(tmp_path / "shards", 4, 2, "k")
    with pytest.raises(HelperFailed) as err:
        with job_processes.helpers({}, [1, 1], "k", shards):
            pass
    assert message in str(err.value)


def test_an_error_in_the_job_stops_its_helpers_and_releases_claims(tmp_path, monkeypatch):
    started = _fake_helpers(monkeypatch, "import time; time.sleep(60)")  # a helper that would run for a minute
    shards = Shards(tmp_path / "shards", 4, 2, "k")
    with pytest.raises(KeyError):
        with job_processes.helpers({}, [1, 1, 1], "k", shards):
            assert shards.claim(0) and shards.claim(1)
            raise KeyError("the job's own error")
    assert len(started) == 2 and all(p.poll() is not None for p in started)
    assert not list(shards.dir.iterdir())


def test_sigterm_stops_the_helpers_releases_claims_and_restores_the_handler(tmp_path, monkeypatch):
    started = _fake_helpers(monkeypatch, "import time; time.sleep(60)")
    shards = Shards(tmp_path / "shards", 4, 2, "k")
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as err:
        with job_processes.helpers({}, [1, 1], "k", shards):
            assert shards.claim(0)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    assert err.value.code == 128 + signal.SIGTERM
    assert started and all(p.poll() is not None for p in started)
    assert not list(shards.dir.iterdir())
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("value, message", [
    (0, "`cluster.generate_processes`: 0 is out of range (minimum 1)"),
    ("two", "`cluster.generate_processes`: 'two' does not match '^auto$'"),
    (1.5, "`cluster.generate_processes`: 1.5 should be of type ['string', 'integer']"),
])
def test_the_schema_names_a_bad_process_count(value, message):
    from selfcorrect.config_checks import ConfigError, check_schema
    from selfcorrect.paths import SCHEMA_FILE

    with pytest.raises(ConfigError) as err:
        check_schema({"benchmarks": ["bbq"], "categories": ["Age"], "conditions": ["baseline"], "rounds": 1,
                      "answer_modes": ["logprob"], "models": {"m": {"path": "x"}},
                      "cluster": {"generate_processes": value}}, SCHEMA_FILE)
    assert message in str(err.value)
    check_schema({"benchmarks": ["bbq"], "categories": ["Age"], "conditions": ["baseline"], "rounds": 1,
                  "answer_modes": ["logprob"], "models": {"m": {"path": "x"}},
                  "cluster": {"generate_processes": "auto"}}, SCHEMA_FILE)
