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

from selfcorrect.conditions import Registry  # noqa: E402
from selfcorrect.data import load_sources  # noqa: E402
from selfcorrect.config_checks import (  # noqa: E402
    check_mirror,
    check_schema,
    check_study,
    gated_without_token,
    model_resources,
)

SCHEMA = Path(workflow.basedir) / "config" / "config.schema.yaml"
check_schema(config, SCHEMA)  # one line per problem: key, bad value, what is allowed
validate(config, str(SCHEMA))  # snakemake's own check (and schema defaults)
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
BENCHMARKS = list(config["benchmarks"])


def conditions_for(benchmark):
    return REGISTRY.conditions_for(benchmark, config["conditions"])


def study_params():
    """The part of the config a job's output depends on (a change reruns the job)."""
    keys = ("categories", "sample_per_cell", "winogender_occupations", "seed", "rounds", "answer_modes", "generation")
    return {k: config.get(k) for k in keys}


def alternatives(names):
    return "|".join(re.escape(n) for n in names)


wildcard_constraints:
    benchmark=alternatives(["bbq", "winogender"]),
    model=alternatives(MODELS),
    condition=alternatives(REGISTRY.names),
