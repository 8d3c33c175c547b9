"""The paper preset, the cluster profiles, the conda envs and the compute estimate."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from selfcorrect.config_checks import load_config
from selfcorrect.estimate import estimate

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def test_every_rule_names_an_env_file_that_parses():
    rules = {}
    all_rules = "\n".join(p.read_text() for p in sorted((ROOT / "rules").glob("*.smk")))
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        text = smk.read_text()
        # a rule, or a rule made in a loop (`rule:` with a `name:` directive), and its indented body
        for indent, name, body in re.findall(r"^([ \t]*)rule ?(\w*):\n((?:\1[ \t]+.*\n|\n)+)", text, flags=re.M):
            name = name or re.search(r"name:\s*\n\s*f?\"([\w{}]+)\"", body).group(1)
            rules[name] = body
    assert len(rules) >= 9 and "score_{_benchmark}" in rules
    for name, body in rules.items():
        for key in ("log:", "conda:", "resources:"):
            assert key in body, f"rule {name} has no {key}"
        value = re.search(r"conda:\s*\n\s*(.+)", body).group(1).strip()
        if value.startswith('"'):
            envs = [value.strip('"')]
        else:  # a function of the config, defined in the rules: every env it can return
            func = re.search(r"^def %s\(.*?(?=^\S)" % re.escape(value.split("(")[0]), all_rules, flags=re.M | re.S).group(0)
            envs = re.findall(r'"(\.\./envs/[\w.-]+\.yaml)"', func)
        assert envs, f"rule {name}: no conda env"
        for env in envs:
            path = (ROOT / "rules" / env).resolve()
            assert path.is_file(), f"rule {name}: {env} does not exist"
            spec = yaml.safe_load(path.read_text())
            deps = [d for d in spec["dependencies"] if isinstance(d, str)]
            assert any(d.startswith("python=") for d in deps) and all("=" in d or d == "pip" for d in deps), path
            pip = next((d["pip"] for d in spec["dependencies"] if isinstance(d, dict)), [])
            assert all("==" in d for d in pip), path
    assert "benchmark:" in rules["generate"]


def test_generation_env_pins_what_the_lock_pins():
    lock = dict(l.split("==") for l in (ROOT / "requirements.lock").read_text().split() if "==" in l)
    env = yaml.safe_load((ROOT / "envs" / "generate.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    for pin in pip:
        name, version = pin.split("==")
        if name in lock:
            assert lock[name] == version, name


def test_paper_preset_dry_run_on_the_slurm_profile(tmp_path):
    proc = subprocess.run(SNAKEMAKE + ["-n", "--profile", str(ROOT / "profiles" / "slurm"), "--snakefile", str(ROOT / "Snakefile"),
                                       "--directory", str(tmp_path), "report/paper_figures.pdf",
                                       "--configfile", str(ROOT / "config" / "paper.yaml")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    n_models, n_conditions = len(cfg["models"]), len(cfg["conditions"])
    assert n_models >= 10 and n_conditions == 10
    jobs = re.findall(r"rule generate:\n(?:    .*\n)+", out)
    assert len(jobs) == n_models * n_conditions * 2
    planned = {re.search(r"model=([\w.-]+)", j).group(1) for j in jobs}
    assert planned == set(cfg["models"])
    for j in jobs:
        assert "slurm_partition=gpu" in j and re.search(r"gpu=[12]\b", j), j
    assert "smollm2" not in out  # the preset replaces config.yaml, it does not merge into it


def test_estimate_scales_with_parameters():
    cfg = load_config(ROOT / "config" / "paper.yaml")
    table = estimate(cfg).set_index("model")
    assert table.loc["TOTAL", "prompts"] > 58492 * 10 * 3
    assert table.loc["llama-2-70b-chat", "gpu_hours"] == pytest.approx(table.loc["llama-2-7b-chat", "gpu_hours"] * 69 / 6.7)
    assert table.loc["TOTAL", "gpu_hours"] == pytest.approx(table.drop("TOTAL")["gpu_hours"].sum())


def test_estimate_cli_prints_the_table(capsys):
    from selfcorrect.cli import main

    assert main(["estimate", "--configfile", str(ROOT / "config" / "paper.yaml")]) == 0
    out = capsys.readouterr().out
    assert "TOTAL" in out and "llama-2-70b-chat" in out and "gpu_hours" in out


def test_pin_revisions_writes_resolved_commits_into_the_preset_and_keeps_its_comments(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from selfcorrect import revisions
    from selfcorrect.cli import main

    preset = tmp_path / "paper.yaml"
    preset.write_text((ROOT / "config" / "paper.yaml").read_text())
    cfg = yaml.safe_load(preset.read_text())
    shas = {m["path"]: f"{i:040x}" for i, m in enumerate(cfg["models"].values())}

    class Hub:
        def model_info(self, repo, revision):
            if "70b" in repo:
                raise OSError("401 Client Error: gated repo")
            return SimpleNamespace(sha=shas[repo])

    real = revisions.resolve
    monkeypatch.setattr(revisions, "resolve", lambda models, api=None: real(models, Hub()))
    assert main(["pin-revisions", "--configfile", str(preset), "--write"]) == 1  # the gated 70B models are reported
    pinned = yaml.safe_load(preset.read_text())
    for name, m in pinned["models"].items():
        assert m.get("revision") == (None if "70b" in m["path"] else shas[m["path"]]), name
    before = (ROOT / "config" / "paper.yaml").read_text()
    assert [l for l in before.splitlines() if l.lstrip().startswith("#")] == \
           [l for l in preset.read_text().splitlines() if l.lstrip().startswith("#")]
