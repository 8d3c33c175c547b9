"""The paper preset, the cluster profiles, the conda envs and the compute estimate."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

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


def test_paper_preset_dry_run_on_the_slurm_profile(tmp_path):
    started = time.perf_counter()
    proc = subprocess.run(SNAKEMAKE + ["-n", "--profile", str(ROOT / "profiles" / "slurm"), "--snakefile", str(ROOT / "Snakefile"),
                                       "--directory", str(tmp_path), "report/paper_figures.pdf",
                                       "--configfile", str(ROOT / "config" / "paper.yaml")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    cfg = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    n_models, n_conditions = len(cfg["models"]), len(cfg["conditions"])
    assert n_models >= 10 and n_conditions == 10
    jobs = re.findall(r"rule generate:\n(?:    .*\n)+", out)
    assert len(jobs) == n_models * n_conditions * 2
    planned = {re.search(r"model=([\w.-]+)", j).group(1): j for j in jobs}
    assert set(planned) == set(cfg["models"])
    for name, j in planned.items():
        gpus = cfg["models"][name]["gpus"]
        assert "slurm_partition=gpu" in j and re.search(rf"gpu={gpus}\b", j), j
        # each hub model's generation jobs read the snapshot its weights rule records
        assert f"resources/weights/{name}.json" in j, j
    # one weights job per hub model (local: tests/test_cluster.py checks it is never submitted); every other job
    # on the CPU partition
    assert len(re.findall(r"^rule weights:", out, flags=re.M)) == n_models
    others = re.findall(r"^rule (?!generate)\w+:\n(?:    .*\n)+", out, flags=re.M)
    assert others and all("slurm_partition=cpu" in j for j in others)
    # start-up names every unpinned hub model once, with the command that pins it
    assert len(re.findall(r"^WARNING: model '.*selfcorrect pin-revisions", out + proc.stderr, flags=re.M)) == n_models
    assert "smollm2" not in out  # the preset replaces config.yaml, it does not merge into it
    assert seconds < 30, f"the paper dry-run took {seconds:.1f} s (issue #15: under 10 s on an idle machine)"


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
