"""The workflow's steps as plain functions, one per rule and named like it: file paths in, files out.

Scripts (scripts/*.py) and the CLI call these; they read and write files and leave the work to the tasks, the
study driver, the backends, the metrics and the report modules.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

import pandas as pd

from . import data
from .conditions import Registry
from .io import write_json, write_parquet
from .models import ModelSpec, load_model, materialize, prompt_format
from .study import Job, JobInfo, Settings, annotate, job_key, run_rounds, run_sharded
from .tasks import get_task

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- data

def download(benchmark: str, path: str, dest: str, mirror: str | None) -> None:
    data.fetch(data.source_file(benchmark, path), dest, mirror, hint=get_task(benchmark).mirror_hint(mirror))


def prepare(benchmark: str, files: list[str], out: str, pinned: dict | None = None) -> None:
    """The benchmark's typed table from its fetched files.

    ``pinned``: config/sources.yaml's entries; each file is checked against its pinned sha256 before it is read
    (the workflow passes them). None reads the files as given, e.g. rows a test builds from the templates.
    """
    if pinned is not None:
        data.verify_pinned(benchmark, files, pinned)
    write_parquet(get_task(benchmark).load([Path(f) for f in files]), out)


def sample(benchmark: str, table: str, params: dict, out: str) -> None:
    """The study's sample of one benchmark, read by every generation job and by its score step."""
    write_parquet(get_task(benchmark).sample(pd.read_parquet(table), params), out)


# ---------------------------------------------------------------- models and generation

def prepare_model(name: str, model_cfg: dict, out_dir: str) -> None:
    materialize(ModelSpec.from_config(name, model_cfg), out_dir)


def load_backend(spec: ModelSpec, generation: dict, seed: int, local_model_dir: str | None):
    """(backend, tokenizer, device, model or None) for ``spec``; loading fails here, with the model named."""
    from .engine import Engine, pick_device

    if generation["backend"] == "vllm":
        from .engine import load_vllm

        backend = load_vllm(spec, local_model_dir, seed, gpus=int(spec.extra.get("gpus", 1) or 1))
        return backend, backend.tokenizer, "cuda", None
    device = pick_device(generation["device"])
    model, tok = load_model(spec, device, local_model_dir)
    backend = Engine(model, tok, device, batch_size=int(generation["batch_size"]),
                     prefix_tree_prefill=bool(generation["prefix_tree_prefill"]),
                     carry_kv_between_rounds=bool(generation["carry_kv_between_rounds"]))
    return backend, tok, device, model


def generate(
    name: str, model_cfg: dict, benchmark: str, condition: str, samples: str, study: dict, out: str, meta_out: str,
    shard_dir: str, local_model_dir: str | None = None, threads: int = 1,
) -> None:
    """One (model, benchmark, condition) job: all rounds, sharded and resumable, one table out.

    ``study`` holds the config keys generation depends on: rounds, answer_modes, generation, seed.
    """
    import torch

    from .formats import render

    t0 = time.perf_counter()
    torch.set_num_threads(max(1, threads))
    torch.manual_seed(study["seed"])
    gcfg = study["generation"]
    spec = ModelSpec.from_config(name, model_cfg)
    task, registry, settings = get_task(benchmark), Registry.load(), Settings.from_config(study)
    examples = pd.read_parquet(samples)
    backend, tok, device, model = load_backend(spec, gcfg, study["seed"], local_model_dir)
    fmt = prompt_format(spec, tok)
    dialogue = registry.data["dialogue"]
    backend.stop_strings = (dialogue["separator"] + dialogue["human"],) if fmt == "base" else ()
    info = JobInfo(name, spec.revision, gcfg["backend"], fmt, device, benchmark, condition)
    key = job_key(task.item_ids(examples), settings, info, registry.job_texts_hash(condition, benchmark))
    job = Job(task, condition, registry, lambda c: render(c, fmt, dialogue, tok, spec.system_prompt), settings)

    table = annotate(run_sharded(examples, Path(shard_dir), settings.shard_size, key,
                                 lambda chunk: run_rounds(backend, job, chunk)), info)
    write_parquet(table, out)
    write_json({
        "model": name, "path": spec.path, "revision": spec.revision, "backend": gcfg["backend"], "device": device,
        "resolved_revision": getattr(getattr(model, "config", None), "_commit_hash", None),
        "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or platform.machine(),
        "dtype": str(model.dtype) if model is not None else spec.dtype, "prompt_format": fmt, "benchmark": benchmark,
        "condition": condition, "rounds": settings.rounds, "answer_modes": list(settings.answer_modes),
        "n_examples": len(examples), "n_rows": len(table), "wall_seconds": round(time.perf_counter() - t0, 2),
        "threads": threads, "torch": torch.__version__, "shard_key": key,
        "mkl_cbwr": os.environ.get("MKL_CBWR"),  # CPU reproducibility (selfcorrect/__init__.py)
    }, meta_out)


# ---------------------------------------------------------------- scores

def score(benchmark: str, generations: list[str], samples: str, bootstrap: dict, seed: int, out: dict[str, str]) -> None:
    """The task's score tables (``out`` maps each of ``Task.score_tables`` to its path)."""
    rows = pd.concat([pd.read_parquet(p) for p in generations], ignore_index=True)
    tables = get_task(benchmark).score(rows, pd.read_parquet(samples), bootstrap, seed)
    for name, table in tables.items():
        write_parquet(table, out[name])


# ---------------------------------------------------------------- figures, tables, report

def _read_optional(path: str | None) -> pd.DataFrame:
    return pd.read_parquet(path) if path else pd.DataFrame(columns=["model", "condition", "round", "answer_mode", "rho"])


def _metas(paths: list[str]) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in paths]


def tables(models: dict, backend: str, bbq_cells: str, rho: str | None, differences: str, metas: list[str],
           out: dict) -> None:
    from .report import models_table, results_table, write_table

    cells = pd.read_parquet(bbq_cells)
    write_table(models_table(models, backend, _metas(metas)), out["models_csv"], out["models_tex"])
    write_table(results_table(cells, _read_optional(rho) if rho else None), out["results_csv"], out["results_tex"])
    write_table(pd.read_parquet(differences), out["differences_csv"], out["differences_tex"])


def explanations_sample(items: pd.DataFrame, seed: int, n: int = 3) -> pd.DataFrame:
    cot = items[(items["condition"] == "instruction_cot") & (items["round"] == 1) & items["reasoning"].notna()]
    cot = cot.drop_duplicates(["model", "item_id"])
    return cot.sample(n=min(n, len(cot)), random_state=seed) if len(cot) else cot


def figure(number: int, bbq_cells: str, bbq_items: str, rho: str | None, models_csv: str, seed: int,
           pdf_out: str, png_out: str, differences: str | None = None) -> None:
    from . import plotting
    from .report import save_figure

    cells, models = pd.read_parquet(bbq_cells), pd.read_csv(models_csv)
    if number == 2:
        fig = plotting.figure2(_read_optional(rho), models)
    elif number in (6, 7):
        items = pd.read_parquet(bbq_items)
        diffs = pd.read_parquet(differences) if differences else None
        fig = plotting.figure6(cells, items) if number == 6 else plotting.figure7(cells, explanations_sample(items, seed), diffs)
    else:
        fig = getattr(plotting, f"figure{number}")(cells, models)
    save_figure(fig, pdf_out, png_out)


def paper_figures(cfg: dict, out: str, figures: list[str], tables: dict[str, str], metas: list[str], data_files: list[str]) -> None:
    from .data import load_sources
    from .report import build_pdf, methods_text

    methods = methods_text(cfg, _metas(metas), data_files, load_sources(), Registry.load())
    build_pdf(out, methods, figures, {name: pd.read_csv(path) for name, path in tables.items()})
