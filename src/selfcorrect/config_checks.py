"""Checks of a study config beyond its JSON schema (one message per problem), and per-model cluster resources."""

from __future__ import annotations

from .conditions import Registry, RegistryError


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
    """Catch what can be caught without loading: a missing local directory or PyPI-shipped model."""
    from pathlib import Path

    from .models import ModelLoadError, ModelSpec, resolve_path

    path = str(m["path"])
    try:
        resolve_path(ModelSpec.from_config(name, m))
    except ModelLoadError as err:
        raise ConfigError(f"config key `models.{name}.path`: {err}") from None
    if path.startswith(("/", "./", "../", "~")) and not Path(path).expanduser().exists():
        raise ConfigError(f"config key `models.{name}.path`: local model directory {path!r} does not exist")


def model_resources(config: dict) -> dict:
    """Snakemake ``resources:`` of a generation job, taken from the model's entry (GPU, memory, time)."""
    models = config["models"]
    cluster = config.get("cluster", {})
    max_minutes = int(60 * float(config.get("generation", {}).get("max_job_hours", 24)))

    def get(key, default):
        return lambda wc: models[wc.model].get(key, default)

    def partition(wc):
        gpus = models[wc.model].get("gpus", 0)
        return cluster.get("gpu_partition" if gpus else "cpu_partition", "gpu" if gpus else "cpu")

    # a job longer than max_job_hours is cut by the scheduler; its finished shards are kept and the retry resumes
    return {
        "mem_mb": get("mem_mb", 8000),
        "runtime": lambda wc: min(models[wc.model].get("runtime_min", max_minutes), max_minutes),
        "gpu": get("gpus", 0),
        "slurm_partition": partition,
    }


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

    mirror = config.get("data_mirror")
    if not mirror:
        return
    root = Path(mirror)
    if not root.is_dir():
        raise ConfigError(f"config key `data_mirror`: {mirror!r} is not a directory (expected a layout like ../shared/data)")
    if "bbq" in config["benchmarks"]:
        missing = [c for c in config["categories"] if not (root / "bbq" / "data" / f"{c}.jsonl").is_file()]
        if missing:
            have = sorted(p.stem for p in (root / "bbq" / "data").glob("*.jsonl"))
            raise ConfigError(
                f"BBQ categories {missing} are not in the data mirror ({root / 'bbq' / 'data'}: no "
                f"{', '.join(m + '.jsonl' for m in missing)}). Narrow the run with the `categories:` config key, e.g. "
                f"--config 'categories=[{','.join(have)}]', or drop data_mirror to download them."
            )
    if "winogender" in config["benchmarks"]:
        for path in sources["winogender"]["files"]:
            if not (root / "winogender" / path).is_file():
                raise ConfigError(f"{root / 'winogender' / path} is not in the data mirror {mirror}")


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
