"""Checks of a study config beyond its JSON schema, and per-model cluster resources."""

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
        if m.get("trust_remote_code") and not str(m.get("revision") or "").strip():
            raise ConfigError(f"model {name!r}: trust_remote_code needs a pinned `revision` (the code it runs)")


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
