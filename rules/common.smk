import os
import re
import sys
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import validate

# The library lives in src/; jobs (local, conda or cluster) inherit PYTHONPATH.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("SELFCORRECT_ROOT", workflow.basedir)

import selfcorrect  # noqa: E402

# bit-identical CPU results (Intel MKL's Conditional Numerical Reproducibility), read when MKL first runs: every
# job inherits it from here, whatever it imports first (see selfcorrect/__init__.py)
os.environ.setdefault("MKL_CBWR", selfcorrect.MKL_CBWR)

from selfcorrect.conditions import Registry  # noqa: E402
from selfcorrect.config_checks import (  # noqa: E402
    check_cluster,
    check_mirror,
    check_schema,
    check_study,
    coerce_config,
    cpu_resources,
    gated_without_access,
    model_backend,
    model_resources,
)
from selfcorrect.data import load_sources  # noqa: E402
from selfcorrect.revisions import hub_models, unpinned  # noqa: E402
from selfcorrect.tasks import get_task  # noqa: E402

SCHEMA = Path(workflow.basedir) / "config" / "config.schema.yaml"
# --config hands nested values over as strings ('generation={batch_size: 8}' gives '8'): read them as YAML first
config.update(coerce_config(config, SCHEMA))
check_schema(config, SCHEMA)  # one line per problem: key, bad value, what is allowed
validate(config, str(SCHEMA))  # snakemake's own check; fills in the schema's `default:` entries
REGISTRY = Registry.load()
check_study(config, REGISTRY)  # unknown condition, bad combination: stop before any job
check_cluster(config)  # several GPUs on the transformers engine, GPUs with device: cpu

if workflow.is_main_process:  # not again in every job's own snakemake
    for line in unpinned(config):
        logger.warning(f"WARNING: {line}")

SOURCES = load_sources()
check_mirror(config, SOURCES)


onstart:
    # a real run (not a dry-run) asks the hub, per gated model, whether this token may read it; a model it may not
    # read fails at its weights rule, the other models run (keep-going)
    denied, unchecked = gated_without_access(config)
    for line in unchecked:
        logger.warning(f"WARNING: {line}")
    for name, why in denied.items():
        logger.warning(
            f"WARNING: model {name!r} cannot be read: {why}. Request access on its model page, then "
            "`huggingface-cli login` or export HF_TOKEN=<token>; its jobs will fail, the other models' run"
        )

MODELS = list(config["models"])
HUB_MODELS = list(hub_models(config))
# partition and account of every job that is not a generation job (each rule's `resources:` spreads it in)
CPU_JOB = cpu_resources(config)
TASKS = {name: get_task(name) for name in config["benchmarks"]}


def conditions_for(benchmark):
    return REGISTRY.conditions_for(benchmark, config["conditions"])


def condition_groups(benchmark):
    """{generation job's name: its conditions} of ``benchmark`` (``generation.group_conditions``)."""
    return REGISTRY.job_groups(benchmark, config["conditions"], config["generation"]["group_conditions"])


def alternatives(names):
    return "|".join(re.escape(n) for n in names)


def score_table(benchmark, table):
    """Where the score step of ``benchmark`` writes ``table`` (one of its task's ``score_tables``)."""
    return f"results/scores/{benchmark}_{table}.parquet"


wildcard_constraints:
    benchmark=alternatives(TASKS),
    model=alternatives(MODELS),
    group=alternatives(sorted({g for b in TASKS for g in condition_groups(b)})),
