"""Checks of a study config beyond its JSON schema (one message per problem), and per-model cluster resources."""

from __future__ import annotations

import copy

from .conditions import Registry, RegistryError
from .paths import DEFAULT_CONFIG, SCHEMA_FILE


class ConfigError(ValueError):
    """The study config is inconsistent; the message names the key, the value and the fix."""


def check_study(config: dict, registry: Registry) -> None:
    for name in config["conditions"]:
        try:
            registry.condition(name)
        except RegistryError as err:
            raise ConfigError(f"config key `conditions`: {err}") from None
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


def model_resources(config: dict) -> dict:
    """Snakemake ``resources:`` of a generation job, taken from the model's entry (GPU, memory, time)."""
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
        "slurm_partition": partition,
    }


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
    if "string" in types:
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


def gated_without_token(config: dict) -> list[str]:
    """Gated models configured while no Hugging Face token is available to this process."""
    import os
    from pathlib import Path

    if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN"):
        return []
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    if (home / "token").is_file():
        return []
    return [name for name, m in config["models"].items() if m.get("gated")]
