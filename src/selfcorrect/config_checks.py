"""Checks of a study config beyond its JSON schema (one message per problem), and per-model cluster resources."""

from __future__ import annotations

import copy
import re

from .conditions import JOB_GROUPS, Registry, RegistryError
from .paths import DEFAULT_CONFIG, SCHEMA_FILE


class ConfigError(ValueError):
    """The study config is inconsistent; the message names the key, the value and the fix."""


def check_study(config: dict, registry: Registry) -> None:
    for name in config["conditions"]:
        try:
            registry.condition(name)
        except RegistryError as err:
            raise ConfigError(f"config key `conditions`: {err}") from None
    if config["generation"]["group_conditions"]:
        for name in set(config["conditions"]) & set(JOB_GROUPS):
            raise ConfigError(f"config key `conditions`: condition {name!r} has the name of a generation job of "
                              f"grouped conditions ({', '.join(JOB_GROUPS)}); rename it in config/conditions.yaml or "
                              "set generation.group_conditions: false")
    for bench in config["benchmarks"]:
        if not registry.conditions_for(bench, config["conditions"]):
            raise ConfigError(f"config key `conditions`: none of {config['conditions']} is defined for benchmark {bench!r}")
    for name, m in config["models"].items():
        check_model_source(name, m)
        if m.get("trust_remote_code") and not str(m.get("revision") or "").strip():
            raise ConfigError(f"model {name!r}: trust_remote_code needs a pinned `revision` (the code it runs)")


def check_model_source(name: str, m: dict) -> None:
    """Catch what can be caught without loading: a missing local directory, GGUF file or PyPI-shipped model."""
    from .models import ModelLoadError, ModelSpec, resolve_path

    try:
        resolve_path(ModelSpec.from_config(name, m))
    except ModelLoadError as err:
        key = "gguf_file" if str(err).startswith(f"model {name!r}: gguf_file ") else "path"
        raise ConfigError(f"config key `models.{name}.{key}`: {err}") from None


def model_backend(model_cfg: dict, generation: dict) -> str:
    """The backend that runs a model: its own ``backend:``, else ``generation.backend``."""
    return model_cfg.get("backend") or generation["backend"]


def check_cluster(config: dict) -> None:
    """Refuse, before any job, a model that its backend or device cannot run as configured."""
    problems = []
    for name, m in config["models"].items():
        gpus = int(m.get("gpus") or 0)
        if gpus > 1 and model_backend(m, config["generation"]) == "transformers":
            # the engine indexes its KV cache with index tensors on one device; layers spread over several GPUs
            # (device_map="auto") would keep their caches on others
            problems.append(
                f"config key `models.{name}.gpus`: {gpus} GPUs need the vLLM backend (tensor_parallel_size = gpus); "
                f"the transformers engine runs on one GPU. Set `models.{name}.backend: vllm`, or gpus: 1")
        if gpus < 1 and model_backend(m, config["generation"]) == "vllm":
            problems.append(f"config key `models.{name}.gpus`: 0, but the vLLM backend runs on GPUs only; "
                            f"set gpus: 1 or more, or `models.{name}.backend: transformers`")
        if gpus >= 1 and config["generation"]["device"] == "cpu":
            problems.append(f"config key `generation.device`: 'cpu' while model {name!r} asks for {gpus} GPU(s); "
                            "set device: cuda (or auto), or gpus: 0 for this model")
    if problems:
        raise ConfigError("\n  - ".join(["the cluster settings cannot run:"] + problems))


def _account(cluster: dict) -> dict:
    return {"slurm_account": cluster["slurm_account"]} if cluster.get("slurm_account") else {}


def cpu_resources(config: dict) -> dict:
    """Slurm resources every CPU job shares (partition and account), from the config's ``cluster:`` section."""
    cluster = config["cluster"]
    return {"slurm_partition": cluster["cpu_partition"], **_account(cluster)}


def model_resources(config: dict) -> dict:
    """Snakemake ``resources:`` of a generation job, taken from the model's entry and ``cluster:``.

    The names are those snakemake-executor-plugin-slurm reads: ``gpu`` (``--gpus=N``), ``gpu_model``
    (``--gpus=<model>:N``), ``constraint`` (``-C``), ``cpus_per_task``, ``slurm_partition``, ``slurm_account``,
    ``mem_mb``, ``runtime``. A resource that evaluates to None is left out (Snakemake drops it), so a job without
    a GPU type sends no ``-C``/``--gpus=<model>:N`` at all.
    """
    models, cluster = config["models"], config["cluster"]
    max_minutes = int(60 * float(config["generation"]["max_job_hours"]))

    def get(key):
        return lambda wc: models[wc.model][key]

    def partition(wc):
        return cluster["gpu_partition" if models[wc.model]["gpus"] else "cpu_partition"]

    # a job longer than max_job_hours is cut by the scheduler; its finished shards are kept and the retry resumes
    return {
        "mem_mb": get("mem_mb"),
        "runtime": lambda wc: min(models[wc.model].get("runtime_min", max_minutes), max_minutes),
        "gpu": get("gpus"),
        "constraint": lambda wc: gpu_type(config, wc.model, "gpu_constraint"),
        "gpu_model": lambda wc: gpu_type(config, wc.model, "gpu_model"),
        "slurm_partition": partition,
        # the job's threads, as the CPUs Slurm grants it (the plugin's default; stated so no profile overrides it)
        "cpus_per_task": lambda wc, threads: threads,
        **_account(cluster),
    }


def gpu_type(config: dict, name: str, key: str) -> str | None:
    """The model's ``gpu_constraint``/``gpu_model``, else the cluster's; None for a CPU job or where none is set."""
    m = config["models"][name]
    if not m.get("gpus"):
        return None
    return m.get(key) or config["cluster"].get(key) or None


def _defaults_validator(schema: dict):
    """A validator that fills in the schema's ``default:`` entries while it validates (as Snakemake's ``validate``)."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    check_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, subschema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from check_properties(validator, properties, instance, subschema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})(schema)


def with_defaults(config: dict, schema_path=SCHEMA_FILE) -> dict:
    """``config`` checked against the schema (:func:`check_schema`'s messages) with its defaults filled in."""
    import yaml

    check_schema(config, schema_path)
    with open(schema_path) as fh:
        schema = yaml.safe_load(fh)
    config = copy.deepcopy(config)
    for _ in _defaults_validator(schema).iter_errors(config):
        pass  # check_schema has already reported every problem
    return config


def load_config(path=DEFAULT_CONFIG) -> dict:
    """A study config file as the workflow sees it: validated, defaults filled in (for the CLI)."""
    import yaml

    with open(path) as fh:
        return with_defaults(yaml.safe_load(fh) or {})


# YAML 1.1's spellings of null, as a config file would read them
_YAML_NULLS = ("null", "Null", "NULL", "~")


def _schema_types(schema: dict) -> set[str]:
    """The JSON types a schema node allows (from ``type``, or from an ``enum``'s values); empty: unknown."""
    declared = schema.get("type")
    if declared is not None:
        return {declared} if isinstance(declared, str) else set(declared)
    names = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}
    return {names.get(type(v), "object") for v in schema.get("enum", ())}


def _from_text(text: str, schema: dict):
    types = _schema_types(schema)
    if not types:
        return text
    # a key that takes a string only of one pattern or another type (generate_processes: auto or a number) reads
    # `generate_processes=3` as YAML
    other_type = "pattern" in schema and bool(types - {"string", "null"}) and not re.search(schema["pattern"], text)
    if "string" in types and not other_type:
        # `--config data_mirror=null` means null, as `data_mirror: null` does in a file
        return None if "null" in types and text in _YAML_NULLS else text
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # left for the schema check to name
    return coerce_overrides(value, schema) if isinstance(value, (dict, list)) else value


def coerce_overrides(value, schema: dict):
    """``value`` with each string read as YAML where ``schema`` wants no string there.

    Snakemake reads a ``--config`` value with int, float, "True"/"False", then YAML's BaseLoader, which keeps every
    scalar inside a mapping or list a string: ``--config 'generation={batch_size: 8}'`` arrives as
    ``{'batch_size': '8'}`` and ``sample_per_cell=null`` as ``'null'``. Read here as a config file would read them,
    they validate; a string the schema does want (a path, a revision) is kept as typed, except a YAML null where
    null is also allowed.
    """
    if isinstance(value, str):
        return _from_text(value, schema)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        extra = extra if isinstance(extra, dict) else {}
        return {k: coerce_overrides(v, props.get(k, extra)) for k, v in value.items()}
    if isinstance(value, list):
        items = schema.get("items")
        return [coerce_overrides(v, items if isinstance(items, dict) else {}) for v in value]
    return value


def coerce_config(config: dict, schema_path=SCHEMA_FILE) -> dict:
    """:func:`coerce_overrides` of a whole config against the schema file (Snakemake's ``--config`` strings)."""
    import yaml

    with open(schema_path) as fh:
        return coerce_overrides(config, yaml.safe_load(fh))


def check_schema(config: dict, schema_path) -> None:
    """Validate ``config`` against the JSON schema with one short message per problem: key, value, what is allowed."""
    import jsonschema
    import yaml

    with open(schema_path) as fh:
        schema = yaml.safe_load(fh)
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for err in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        key = ".".join(map(str, err.absolute_path)) or "(top level)"
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            extra = sorted(set(err.instance) - set(allowed))
            where = f"under `{key}`" if err.absolute_path else "at the top level"
            problems.append(f"unknown config key(s) {extra} {where}; allowed: {allowed}")
        elif err.validator == "enum":
            problems.append(f"config key `{key}`: {err.instance!r} is not allowed; choose one of {err.validator_value}")
        elif err.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            problems.append(f"config key `{key}`: {err.instance!r} is out of range ({err.validator} {err.validator_value})")
        elif err.validator == "type":
            problems.append(f"config key `{key}`: {err.instance!r} should be of type {err.validator_value}")
        else:
            problems.append(f"config key `{key}`: {err.message}")
    if problems:
        raise ConfigError("invalid configuration (see config/config.schema.yaml):\n  - " + "\n  - ".join(problems))


def check_mirror(config: dict, sources: dict) -> None:
    """With a data mirror, every file the run needs must be in it; say which and how to narrow the run."""
    from pathlib import Path

    from .tasks import get_task

    mirror = config.get("data_mirror")
    if not mirror:
        return
    root = Path(mirror)
    if not root.is_dir():
        raise ConfigError(f"config key `data_mirror`: {mirror!r} is not a directory (expected a layout like ../shared/data)")
    for bench in config["benchmarks"]:
        task = get_task(bench)
        missing = [root / bench / f for f in task.source_files(config, sources) if not (root / bench / f).is_file()]
        if missing:
            raise ConfigError(f"not in the data mirror {mirror}: {', '.join(map(str, missing))}.{task.mirror_hint(root)}")


def gated_without_access(config: dict, check=None) -> tuple[dict[str, str], list[str]]:
    """The gated hub models this process cannot read, each with the reason, and warnings for checks not made.

    Only models marked ``gated: true`` are checked, one hub request each (``check(repo)``, by default
    huggingface_hub's ``auth_check`` with the token the hub client finds: HF_TOKEN or ``huggingface-cli login``), so
    a token is judged by what the hub says of it, not by being non-empty. With HF_HUB_OFFLINE=1, or where the hub
    cannot be reached, nothing is checked: a warning says so, and the weights rule checks the cache instead.
    """
    import os

    gated = {name: m["path"] for name, m in config["models"].items() if m.get("gated")}
    if not gated:
        return {}, []
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return {}, [f"HF_HUB_OFFLINE is set: access to the gated models {sorted(gated)} is not checked; "
                    "their weights must already be in the hf_cache"]
    if check is None:
        from huggingface_hub import auth_check as check
    denied, warnings = {}, []
    for name, repo in gated.items():
        try:
            check(repo)
        except Exception as err:  # noqa: BLE001 - sorted below: the hub's answer, or no answer at all
            reason = _access_denied(err)
            if reason is None:
                warnings.append(f"could not check access to gated model {name!r} ({repo}): "
                                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            else:
                denied[name] = f"{repo}: {reason}"
    return denied, warnings


def _access_denied(err: Exception) -> str | None:
    """Why the hub refused (no token, no access granted, no such repo), or None when it did not answer."""
    try:
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
    except ImportError:  # an older hub client
        from huggingface_hub.utils import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError
    if isinstance(err, GatedRepoError):
        return "gated, and this token (or no token) has not been granted access"
    if isinstance(err, RepositoryNotFoundError):
        return "not found, or private to this token"
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, HfHubHTTPError) and status in (401, 403):
        return f"refused (HTTP {status}): the token is invalid or lacks read access"
    return None
