"""The real Snakemake DAG end to end on the real data, with a tiny random model built at test time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _config(tiny_model: Path, mirror: Path) -> dict:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg.update(
        data_mirror=str(mirror), categories=["Age", "Religion"], sample_per_cell=1, winogender_occupations=5,
        conditions=["baseline", "instruction", "instruction_cot", "unethical"], rounds=2,
        models={"tiny-llama": {"path": str(tiny_model), "format": "chat", "params_b": 0.0001,
                               "family": "test", "alignment": "random"}},
        bootstrap={"n_resamples": 50, "confidence": 0.95},
    )
    cfg["generation"].update(cot_max_new_tokens=8, max_new_tokens=6, shard_size=8)
    return cfg


def _run(workdir: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = SNAKEMAKE + ["--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile", str(configfile),
                       "--cores", "2", *args]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)


@pytest.fixture(scope="module")
def workflow_run(tmp_path_factory, tiny_model, shared_data):
    work = tmp_path_factory.mktemp("workflow")
    configfile = work / "test-config.yaml"
    configfile.write_text(yaml.safe_dump(_config(tiny_model, shared_data)))
    proc = _run(work, configfile, "report/paper_figures.pdf")
    assert proc.returncode == 0, proc.stderr[-6000:]
    return work, configfile


@pytest.mark.slow
def test_the_whole_dag_produces_the_report(workflow_run):
    work, _ = workflow_run
    pdf = work / "report" / "paper_figures.pdf"
    from pypdf import PdfReader

    reader = PdfReader(pdf)
    text = "\n".join(page.extract_text() or "" for page in reader.pages)
    for n in range(1, 10):
        assert f"Figure {n}:" in text
        assert (work / "report" / "figures" / f"figure{n}.png").stat().st_size > 1000
    assert "bea11bd97d79217245b5871acd247b9d6eb24598" in text and "912289630ff9b4fb" in text
    assert "tiny-llama" in text and "Reconstructions" in text
    assert "Table 4: parse statuses" in text and "Table 5: position bias" in text
    statuses = pd.read_csv(work / "report" / "tables" / "parse_status.csv")
    gen = pd.read_parquet(work / "results" / "generations" / "tiny-llama" / "bbq" / "answer.parquet")
    gen = gen[gen["condition"] == "baseline"]
    row = statuses[(statuses["condition"] == "baseline") & (statuses["round"] == 1)].iloc[0]
    assert row["n_answers"] == (gen["round"] == 1).sum()
    position = pd.read_csv(work / "report" / "tables" / "position_bias.csv")
    assert set(position["answer_mode"]) == {"generate", "logprob"}  # a generate run with every answer dropped: n 0
    answered = position[position["n_answers"] > 0]
    assert len(answered) and answered[["share_a", "share_b", "share_c"]].sum(axis=1).round(6).eq(1).all()


@pytest.mark.slow
def test_outputs_carry_ids_conditions_rounds_and_prompt_hashes(workflow_run):
    work, _ = workflow_run
    generations = work / "results" / "generations" / "tiny-llama" / "bbq"
    # one job for the conditions that answer directly, one for those that reason first (generation.group_conditions)
    assert sorted(p.name for p in generations.glob("*.parquet")) == ["answer.parquet", "reasoning.parquet"]
    assert list(pd.read_parquet(generations / "answer.parquet")["condition"].unique()) == ["baseline", "instruction", "unethical"]
    gen = pd.read_parquet(generations / "reasoning.parquet")
    assert set(gen["condition"]) == {"instruction_cot"}
    assert {"item_id", "condition", "model", "revision", "prompt_hash", "raw_text", "reasoning", "round"} <= set(gen.columns)
    assert sorted(gen["round"].unique()) == [1, 2]
    assert len(gen) == (2 * 2 * 2 * 1) * 2  # (categories x contexts x polarities x 1 per cell) x rounds
    assert gen["reasoning"].notna().all()
    cells = pd.read_csv(work / "report" / "tables" / "results.csv")
    bbq = cells[cells["benchmark"] == "bbq"]
    assert set(bbq["answer_mode"]) == {"generate", "logprob"}
    assert bbq["bias_score"].dropna().between(-100, 100).all()
    assert {"ci_low", "ci_high", "n_scored"} <= set(cells.columns)
    logs = list((work / "logs" / "generate").rglob("*.log"))
    assert len(logs) == 4 and all(p.stat().st_size > 0 for p in logs)  # 2 benchmarks x 2 groups of conditions


@pytest.mark.slow
def test_a_second_run_has_nothing_to_do(workflow_run):
    work, configfile = workflow_run
    proc = _run(work, configfile, "-n", "report/paper_figures.pdf")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_html_report_builds(workflow_run):
    work, configfile = workflow_run
    proc = _run(work, configfile, "--report", str(work / "report" / "report.html"), "report/paper_figures.pdf")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "report" / "report.html").stat().st_size > 10_000


def test_dry_run_lists_every_stage(shared_data, tmp_path):
    proc = subprocess.run(SNAKEMAKE + ["-n", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
                                       "report/paper_figures.pdf", "--configfile", str(ROOT / "config.yaml"),
                                       "--config", f"data_mirror={shared_data}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for rule in ("download", "prepare", "sample", "prepare_model", "generate",
                 "score_bbq", "score_winogender", "tables", "figure", "paper_figures"):
        assert f"{rule} " in out or f"rule {rule}:" in out, rule


@pytest.mark.slow
@pytest.mark.parametrize("cores,generate_threads,threads", [(2, "", 2), (4, "", 4), (2, "1", 1), (4, "2", 2)])
def test_make_paper_command_gives_generation_jobs_their_threads(cores, generate_threads, threads, shared_data, tmp_path):
    # the README's first command as make spells it out, dry-run: Snakemake must parse it (--set-threads takes every
    # word up to the next option, so a target placed after it would be read as a rule=threads pair); a generation
    # job gets the workflow's threads capped at the cores, or GENERATE_THREADS (two jobs side by side)
    venv = Path(sys.executable).parents[1]
    if not (venv / "bin" / "snakemake").exists():
        pytest.skip(f"make paper runs {venv}/bin/snakemake, which this interpreter's environment does not have")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "GENERATE_THREADS")}
    proc = subprocess.run(["make", "-o", f"{venv}/.installed", "paper", f"VENV={venv}", f"CORES={cores}",
                           f"GENERATE_THREADS={generate_threads}", f"DATA_MIRROR={shared_data}",
                           f"SNAKEMAKE_ARGS=-n --directory {tmp_path} --configfile {ROOT / 'config.yaml'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    generate_jobs, job = [], None
    for line in proc.stdout.splitlines():  # a job's block: its "rule NAME:" line, then indented fields
        if line.startswith(" ") and job is not None:
            job.append(line.strip())
        else:
            job = [] if line.endswith("rule generate:") else None
            if job is not None:
                generate_jobs.append(job)
    assert len(generate_jobs) == 4, proc.stdout[-3000:]  # one model x two benchmarks x two groups of conditions
    for job in generate_jobs:  # Snakemake prints a job's threads only when there are more than one
        assert [f for f in job if f.startswith("threads:")] == ([f"threads: {threads}"] if threads > 1 else []), job
        assert any(f.startswith("resources:") and f"cpus_per_task={threads}," in f for f in job), job


def _make_says(target: str, *variables: str) -> subprocess.CompletedProcess:
    """What ``make TARGET VARIABLES`` would run (make -n; the set-up stamp taken as done)."""
    # make exports the variables of its own command line: those of a `make test DATA_MIRROR=...` must not reach this one
    mine = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "VENV", "CORES", "GENERATE_THREADS", "DATA_MIRROR", "CONFIG",
            "SNAKEMAKE_ARGS")
    env = {k: v for k, v in os.environ.items() if k not in mine}
    return subprocess.run(["make", "-n", "-o", ".venv/.installed", target, *variables], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)


def _snakemake_reads(command: str):
    import shlex

    from snakemake.cli import get_argument_parser

    words = shlex.split(command)
    assert words[0].endswith("bin/snakemake"), command
    return get_argument_parser().parse_args(words[1:])


@pytest.mark.parametrize("target", ["paper", "report"])
def test_make_passes_config_keys_with_the_data_mirror_and_options_anywhere(target, tmp_path):
    """Snakemake keeps only the last --config it is given, and --set-threads and --config take every word up to the
    next option: make's CONFIG keys go in the --config that carries DATA_MIRROR, and SNAKEMAKE_ARGS may start with
    a target; config keys in SNAKEMAKE_ARGS, which would drop the data mirror, stop make with the fix named."""
    proc = _make_says(target, f"DATA_MIRROR={tmp_path}", "CONFIG=sample_per_cell=17 rounds=3", "GENERATE_THREADS=1",
                      "SNAKEMAKE_ARGS=results/samples/bbq.parquet -n")
    assert proc.returncode == 0, proc.stderr
    runs = [line for line in proc.stdout.splitlines() if "bin/snakemake" in line]
    assert len(runs) == (1 if target == "paper" else 2)
    for line in runs:
        args = _snakemake_reads(line)
        assert args.config == [f"data_mirror={tmp_path}", "sample_per_cell=17", "rounds=3"]
        assert args.targets == ["report/paper_figures.pdf", "results/samples/bbq.parquet"] and args.dryrun
        assert list(args.set_threads) == ["generate"]
    report = _snakemake_reads(runs[-1]).report
    assert (str(report) if report else None) == ("report/report.html" if target == "report" else None)
    stopped = _make_says(target, f"DATA_MIRROR={tmp_path}", "SNAKEMAKE_ARGS=--config sample_per_cell=17")
    assert stopped.returncode != 0 and "CONFIG='key=value ...'" in stopped.stderr
    assert _make_says(target, f"DATA_MIRROR={tmp_path}", "SNAKEMAKE_ARGS=-Csample_per_cell=17").returncode != 0
    assert _make_says("test", f"DATA_MIRROR={tmp_path}", "SNAKEMAKE_ARGS=--config x=1").returncode == 0  # not its business
    assert _snakemake_reads(_make_says(target).stdout.splitlines()[0]).config is None


@pytest.mark.parametrize("override,needle", [
    (["--config", "colour=blue"], "colour"),
    (["--config", "rounds=0"], "rounds"),
    (["--config", "conditions=[instructoin]"], "instructoin"),
    (["--config", "categories=[Elves]"], "Elves"),
])
def test_bad_config_stops_before_any_job(override, needle, tmp_path):
    proc = subprocess.run(SNAKEMAKE + ["-n", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
                                       "--configfile", str(ROOT / "config.yaml"), *override],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert needle in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["figures", "explore_answers"])
def test_notebooks_run_headless_on_the_run(workflow_run, name, tmp_path, monkeypatch):
    import jupytext
    from nbclient import NotebookClient

    work, _ = workflow_run
    monkeypatch.setenv("SELFCORRECT_RESULTS", str(work))
    monkeypatch.setenv("SELFCORRECT_NOTEBOOK_OUT", str(tmp_path))
    nb = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    if name == "figures":
        import matplotlib.image as mpimg
        import numpy as np

        for n in range(1, 10):
            ours = mpimg.imread(tmp_path / f"figure{n}.png")
            theirs = mpimg.imread(work / "report" / "figures" / f"figure{n}.png")
            assert ours.shape == theirs.shape and np.array_equal(ours, theirs), f"figure {n} differs"


def test_unloadable_model_stops_before_any_job(tmp_path):
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["models"] = {"ghost": {"path": str(tmp_path / "no-such-model")}}
    configfile = tmp_path / "c.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(SNAKEMAKE + ["-n", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
                                       "--configfile", str(configfile)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "models.ghost.path" in proc.stdout + proc.stderr and "does not exist" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_time_per_stage_is_summed_from_the_runs_benchmark_files_and_log(workflow_run):
    import json

    work, _ = workflow_run
    # the fixture's run: the oldest log (later tests run Snakemake again in the same directory)
    first = sorted((work / ".snakemake" / "log").glob("*.snakemake.log"))[0]
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "stages.py"), str(work), "--log", str(first)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    stages = {r["rule"]: r for r in json.loads(proc.stdout.splitlines()[-1])["stages"]}
    assert stages["generate"]["jobs"] == 4 and stages["figure"]["jobs"] == 9 and stages["paper_figures"]["jobs"] == 1
    for rule in ("generate", "score_bbq", "score_winogender", "tables", "figure", "paper_figures", "sample"):
        assert stages[rule]["benchmark_s"] > 0 and stages[rule]["log_s"] >= 0, rule
    assert stages["download"]["benchmark_s"] is None  # a local copy: no benchmark file
