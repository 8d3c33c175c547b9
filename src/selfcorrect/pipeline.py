"""The workflow's steps as plain functions: file paths in, files out. Scripts and the CLI call these."""

from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path

import pandas as pd

from . import data, sampling
from .conditions import Registry
from .io import short_hash, write_json, write_parquet
from .models import ModelSpec, load_model, materialize, prompt_format
from .study import JobInfo, Settings, annotate, item_ids, job_key, run_rounds, run_sharded

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- data

def prepare_bbq(jsonl_paths: list[str], out: str) -> None:
    write_parquet(data.load_bbq(jsonl_paths), out)


def prepare_winogender(sentences_tsv: str, stats_tsv: str, out: str) -> None:
    write_parquet(data.load_winogender(sentences_tsv, stats_tsv), out)


# ---------------------------------------------------------------- prompts

def sample_examples(benchmark: str, table: str, cfg: dict) -> pd.DataFrame:
    df = pd.read_parquet(table)
    if benchmark == "bbq":
        df = df[df["category"].isin(cfg["categories"])]
        return sampling.sample_bbq(df, cfg.get("sample_per_cell"), cfg.get("seed", 0))
    return sampling.sample_winogender(df, cfg.get("winogender_occupations"), cfg.get("seed", 0))


def build_prompts(benchmark: str, condition: str, table: str, cfg: dict, out: str, registry: Registry | None = None) -> None:
    """The sampled examples with their round-1 conversation (format-independent) and its hash."""
    registry = registry or Registry.load()
    ex = sample_examples(benchmark, table, cfg)
    convs = [
        registry.conversation(condition, benchmark, r, [], stage="reasoning" if registry.condition(condition).get("cot") else "answer")
        for r in ex.to_dict("records")
    ]
    turns = [json.dumps([t.__dict__ for t in c.turns]) for c in convs]
    write_parquet(
        ex.assign(
            item_id=item_ids(benchmark, ex), condition=condition, turns=turns,
            assistant_prefix=[c.prefix for c in convs],
            conversation_hash=[short_hash(t + "\x00" + c.prefix) for t, c in zip(turns, convs)],
        ),
        out,
    )


# ---------------------------------------------------------------- models and generation

def prepare_model(name: str, model_cfg: dict, out_dir: str) -> None:
    materialize(ModelSpec.from_config(name, model_cfg), out_dir)


def settings_from_config(cfg: dict) -> Settings:
    g = cfg.get("generation", {})
    return Settings(
        rounds=int(cfg.get("rounds", 1)),
        answer_modes=tuple(cfg.get("answer_modes", ["generate", "logprob"])),
        max_new_tokens=int(g.get("max_new_tokens", 16)),
        cot_max_new_tokens=int(g.get("cot_max_new_tokens", 256)),
        shard_size=int(g.get("shard_size", 256)),
        prefix_reuse=bool(g.get("prefix_reuse", True)),
    )


def generate(
    name: str, model_cfg: dict, benchmark: str, condition: str, prompts: str, cfg: dict, out: str, meta_out: str,
    shard_dir: str, local_model_dir: str | None = None, threads: int = 1,
) -> None:
    """One (model, benchmark, condition) job: all rounds, sharded and resumable, one table out."""
    import torch

    from .engine import Engine, pick_device
    from .formats import render

    t0 = time.perf_counter()
    torch.set_num_threads(max(1, threads))
    torch.manual_seed(cfg.get("seed", 0))
    gcfg = cfg.get("generation", {})
    backend = gcfg.get("backend", "transformers")
    spec = ModelSpec.from_config(name, model_cfg)
    device = pick_device(gcfg.get("device", "auto"))
    registry = Registry.load()
    settings = settings_from_config(cfg)
    examples = pd.read_parquet(prompts)
    # loading fails here, with the model named, before any generation
    if backend == "vllm":
        from .vllm_backend import load_vllm

        engine = load_vllm(spec, local_model_dir, int(cfg.get("seed", 0)), gpus=int(spec.extra.get("gpus", 1) or 1))
        model, tok, device = None, engine.tokenizer, "cuda"
    else:
        model, tok = load_model(spec, device, local_model_dir)
        engine = Engine(model, tok, device, batch_size=int(gcfg.get("batch_size", 16)),
                        share_prefixes=bool(gcfg.get("share_prefixes", True)))
    fmt = prompt_format(spec, tok)
    dialogue = registry.data["dialogue"]
    engine.stop_strings = (dialogue["separator"] + dialogue["human"],) if fmt == "base" else ()
    engine.reuse_prefixes(settings.prefix_reuse)
    info = JobInfo(name, spec.revision, backend, fmt, device, benchmark, condition)
    key = job_key(examples, benchmark, settings, info, registry.texts_hash([condition]))

    def run(chunk: pd.DataFrame) -> pd.DataFrame:
        render_fn = lambda c: render(c, fmt, dialogue, tok, spec.system_prompt)  # noqa: E731
        return run_rounds(engine, registry, render_fn, benchmark, condition, chunk, settings)

    table = annotate(run_sharded(examples, Path(shard_dir), settings.shard_size, key, run), info)
    write_parquet(table, out)
    write_json({
        "model": name, "path": spec.path, "revision": spec.revision, "backend": backend, "device": device,
        "resolved_revision": getattr(getattr(model, "config", None), "_commit_hash", None),
        "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or platform.machine(),
        "dtype": str(model.dtype) if model is not None else spec.dtype, "prompt_format": fmt, "benchmark": benchmark, "condition": condition,
        "rounds": settings.rounds, "answer_modes": list(settings.answer_modes), "n_examples": len(examples),
        "n_rows": len(table), "wall_seconds": round(time.perf_counter() - t0, 2), "threads": threads,
        "torch": torch.__version__, "shard_key": key,
    }, meta_out)


def fetch(benchmark: str, path: str, dest: str, mirror: str | None) -> None:
    data.fetch(data.source_file(benchmark, path), dest, mirror)


# ---------------------------------------------------------------- scores

def _concat(paths: list[str]) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def score_bbq(generations: list[str], examples: str, cfg: dict, items_out: str, cells_out: str,
              differences_out: str) -> None:
    from . import metrics

    items = metrics.bbq_items(_concat(generations), pd.read_parquet(examples))
    boot = cfg.get("bootstrap", {})
    resamples, confidence, seed = int(boot.get("n_resamples", 1000)), float(boot.get("confidence", 0.95)), int(cfg.get("seed", 0))
    cells = metrics.bbq_cis(items, metrics.bbq_cells(items), resamples, confidence, seed)
    write_parquet(items.drop(columns=["prompt"]), items_out)
    write_parquet(cells, cells_out)
    write_parquet(metrics.condition_differences(items, resamples, confidence, seed), differences_out)


def score_winogender(generations: list[str], examples: str, cfg: dict, items_out: str, occupations_out: str, rho_out: str) -> None:
    from . import metrics

    items = metrics.winogender_items(_concat(generations), pd.read_parquet(examples))
    occ = metrics.occupation_table(items)
    boot = cfg.get("bootstrap", {})
    rho = metrics.rho_cis(occ, metrics.winogender_rho(occ), int(boot.get("n_resamples", 1000)),
                          float(boot.get("confidence", 0.95)), int(cfg.get("seed", 0)))
    write_parquet(items.drop(columns=["prompt"]), items_out)
    write_parquet(occ, occupations_out)
    write_parquet(rho, rho_out)


# ---------------------------------------------------------------- figures, tables, report

def _read_optional(path: str | None) -> pd.DataFrame:
    return pd.read_parquet(path) if path else pd.DataFrame(columns=["model", "condition", "round", "answer_mode", "rho"])


def _metas(paths: list[str]) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in paths]


def make_tables(cfg: dict, bbq_cells: str, rho: str | None, differences: str, metas: list[str], out: dict) -> None:
    from .report import models_table, results_table, write_table

    cells = pd.read_parquet(bbq_cells)
    write_table(models_table(cfg, _metas(metas)), out["models_csv"], out["models_tex"])
    write_table(results_table(cells, _read_optional(rho) if rho else None), out["results_csv"], out["results_tex"])
    write_table(pd.read_parquet(differences), out["differences_csv"], out["differences_tex"])


def explanations_sample(items: pd.DataFrame, seed: int, n: int = 3) -> pd.DataFrame:
    cot = items[(items["condition"] == "instruction_cot") & (items["round"] == 1) & items["reasoning"].notna()]
    cot = cot.drop_duplicates(["model", "item_id"])
    return cot.sample(n=min(n, len(cot)), random_state=seed) if len(cot) else cot


def make_figure(number: int, bbq_cells: str, bbq_items: str, rho: str | None, models_csv: str, seed: int,
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


def make_report(cfg: dict, out: str, figures: list[str], tables: dict[str, str], metas: list[str], data_files: list[str]) -> None:
    from .data import load_sources
    from .report import build_pdf, methods_text

    methods = methods_text(cfg, _metas(metas), data_files, load_sources(), Registry.load())
    build_pdf(out, methods, figures, {name: pd.read_csv(path) for name, path in tables.items()})
