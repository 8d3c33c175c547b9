import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
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
    check_mirror,
    check_schema,
    check_study,
    coerce_config,
    gated_without_token,
    model_resources,
)
from selfcorrect.data import load_sources  # noqa: E402
from selfcorrect.tasks import get_task  # noqa: E402

SCHEMA = Path(workflow.basedir) / "config" / "config.schema.yaml"
# --config hands nested values over as strings ('generation={batch_size: 8}' gives '8'): read them as YAML first
config.update(coerce_config(config, SCHEMA))
check_schema(config, SCHEMA)  # one line per problem: key, bad value, what is allowed
validate(config, str(SCHEMA))  # snakemake's own check; fills in the schema's `default:` entries
REGISTRY = Registry.load()
check_study(config, REGISTRY)  # unknown condition, bad combination: stop before any job

SOURCES = load_sources()
check_mirror(config, SOURCES)


onstart:
    # a real run (not a dry-run) of gated models needs a token before any job starts
    gated = gated_without_token(config)
    if gated:
        raise WorkflowError(
            f"models {gated} are gated on the Hugging Face hub: request access on their model pages, then run "
            "`huggingface-cli login` or export HF_TOKEN=<token> and start again"
        )

MODELS = list(config["models"])
TASKS = {name: get_task(name) for name in config["benchmarks"]}


def conditions_for(benchmark):
    return REGISTRY.conditions_for(benchmark, config["conditions"])


def alternatives(names):
    return "|".join(re.escape(n) for n in names)


def score_table(benchmark, table):
    """Where the score step of ``benchmark`` writes ``table`` (one of its task's ``score_tables``)."""
    return f"results/scores/{benchmark}_{table}.parquet"


wildcard_constraints:
    benchmark=alternatives(TASKS),
    model=alternatives(MODELS),
    condition=alternatives(REGISTRY.names),
