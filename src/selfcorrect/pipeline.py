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
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import data
from .conditions import Registry
from .io import write_json, write_parquet
from .models import ModelSpec, load_model, materialize, prompt_format
from .study import Job, JobInfo, Settings, Shards, annotate, job_key, run_rounds
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


def weights(name: str, model_cfg: dict, cache_dir: str, out: str) -> None:
    """Download one hub model's files once, into the shared HF cache, and record the commit they are at.

    With HF_HUB_OFFLINE=1 only the cache is read. Generation jobs load the recorded snapshot directory offline.
    """
    from .models import ModelLoadError, _hint
    from .revisions import fetch_weights, offline

    spec = ModelSpec.from_config(name, model_cfg)
    try:
        record = fetch_weights(spec.path, spec.revision, cache_dir, spec.trust_remote_code)
    except Exception as err:  # hub errors, missing cache entries, disk full: all mean "no weights"
        where = (f"not in the hf_cache {cache_dir} (HF_HUB_OFFLINE is set: download it where the hub is reachable, "
                 f"e.g. `huggingface-cli download {spec.path} --cache-dir {cache_dir}`)" if offline() else
                 f"could not be downloaded into the hf_cache {cache_dir}")
        raise ModelLoadError(f"model {name!r} ({spec.path}, revision {spec.revision or 'main'}) {where}: "
                             f"{type(err).__name__}: {err}.{_hint(spec, err)}") from err
    log.info("model %s: %s at commit %s in %s (%d files)", name, spec.path, record["commit"], record["snapshot"],
             len(record["files"]))
    write_json({"model": name, **record}, out)


def load_backend(spec: ModelSpec, generation: dict, seed: int, local_model_dir: str | None,
                 backend: str | None = None):
    """(backend, tokenizer, device, model or None) for ``spec``; loading fails here, with the model named.

    ``backend`` is the model's own choice (``models.<name>.backend``), else ``generation.backend``. A model that asks
    for GPUs fails here, before loading, when CUDA is not visible (:func:`models.check_device`).
    """
    from .engine import Engine
    from .models import check_device

    gpus = int(spec.extra.get("gpus") or 0)
    device = check_device(spec, generation["device"])
    if (backend or generation["backend"]) == "vllm":
        from .engine import load_vllm

        vllm = load_vllm(spec, local_model_dir, seed, gpus=max(1, gpus))
        return vllm, vllm.tokenizer, device, None
    model, tok = load_model(spec, device, local_model_dir)  # refuses gpus > 1: the engine runs on one device
    engine = Engine(model, tok, device, batch_size=int(generation["batch_size"]),
                    prefix_tree_prefill=bool(generation["prefix_tree_prefill"]),
                    carry_kv_between_rounds=bool(generation["carry_kv_between_rounds"]),
                    # on CPU the fixed-window loop has no graph to replay and attends to the whole window: slower
                    graph_decode=bool(generation["graph_decode"]) and str(device).startswith("cuda"))
    return engine, tok, device, model


def loaded_weights(weights_record: str | None) -> dict:
    """The weights rule's record (snapshot directory and commit) of a hub model; {} for other models."""
    return json.loads(Path(weights_record).read_text()) if weights_record else {}


@dataclass
class LoadedJob:
    """One generation job with its model loaded: what each of the job's processes needs to compute shards."""

    spec: ModelSpec
    backend: object
    tok: object
    device: str
    model: object  # None for vLLM
    job: Job
    info: JobInfo
    key: str  # the shard key
    examples: pd.DataFrame
    settings: Settings
    revision: str | None
    loaded: dict  # the weights rule's record of a hub model; {} for other models
    backend_name: str
    fmt: str

    def run(self, chunk: pd.DataFrame) -> pd.DataFrame:
        return run_rounds(self.backend, self.job, chunk)

    def shards(self, shard_dir: str) -> Shards:
        return Shards(Path(shard_dir), len(self.examples), self.settings.shard_size, self.key)


def load_job(name: str, model_cfg: dict, benchmark: str, conditions: list[str], samples: str, study: dict,
             local_model_dir: str | None = None, weights_record: str | None = None) -> LoadedJob:
    """Load the model of one (model, benchmark, group of conditions) job and fix what its shards depend on.

    A hub model loads from the snapshot its ``weights_record`` names, offline, and its rows and shard key carry
    that commit. Torch's generator is seeded with the study's seed first, in every process that loads the job.
    """
    import torch

    from .config_checks import model_backend
    from .formats import render

    torch.manual_seed(study["seed"])
    gcfg = study["generation"]
    spec = ModelSpec.from_config(name, model_cfg)
    backend_name = model_backend(model_cfg, gcfg)
    loaded = loaded_weights(weights_record)
    if loaded:
        # the weights rule fetched them: a job never reaches for the hub (each of a model's jobs would download them)
        os.environ["HF_HUB_OFFLINE"] = "1"
        local_model_dir = loaded["snapshot"]
    revision = loaded.get("commit") or spec.revision
    task, registry, settings = get_task(benchmark), Registry.load(), Settings.from_config(study)
    examples = pd.read_parquet(samples)
    backend, tok, device, model = load_backend(spec, gcfg, study["seed"], local_model_dir, backend_name)
    fmt = prompt_format(spec, tok)
    dialogue = registry.data["dialogue"]
    backend.stop_strings = (dialogue["separator"] + dialogue["human"],) if fmt == "base" else ()
    job = Job(task, conditions, registry, lambda c: render(c, fmt, dialogue, tok, spec.system_prompt), settings)
    info = JobInfo(name, revision, backend_name, fmt, device, benchmark, job.conditions)
    key = job_key(task.item_ids(examples), settings, info, registry.group_texts_hash(job.conditions, benchmark),
                  model_cfg)
    return LoadedJob(spec, backend, tok, device, model, job, info, key, examples, settings, revision, loaded,
                     backend_name, fmt)


def generate(
    name: str, model_cfg: dict, benchmark: str, conditions: list[str], samples: str, study: dict, out: str,
    meta_out: str, shard_dir: str, local_model_dir: str | None = None, threads: int = 1,
    weights_record: str | None = None, processes: int | str = "auto",
) -> None:
    """One (model, benchmark, group of conditions) job: every condition and round, sharded and resumable, one table
    out (its ``condition`` column names each row's condition).

    ``study`` holds the config keys generation depends on: rounds, answer_modes, generation, seed. ``processes``
    (``cluster.generate_processes``): on CPU, how many processes share the job's ``threads`` and its shards
    (:mod:`selfcorrect.job_processes`); it changes nothing but the work.
    """
    import torch

    from . import job_processes
    from .formats import system_prompt_used

    t0 = time.perf_counter()
    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    call = dict(name=name, model_cfg=model_cfg, benchmark=benchmark, conditions=list(conditions), samples=samples,
                study=study, local_model_dir=local_model_dir, weights_record=weights_record)
    lj = load_job(**call)
    shards = lj.shards(shard_dir)
    shards.release_claims()  # a killed run's
    shards.log_reused()
    split = job_processes.plan(processes, lj.device, threads, job_processes.weight_bytes(lj.model),
                               len(shards.missing()))
    if len(split) == 1:
        shards.fill(lj.examples, lj.run)
    else:
        torch.set_num_threads(split[0])
        lj.backend.progress_label = f"[1/{len(split)}] "
        with job_processes.helpers(call, split, lj.key, shards) as running:
            shards.fill(lj.examples, lj.run, claim=True, stop=running.failed, who=f" (process 1/{len(split)})")
    table = annotate(shards.read(), lj.info)
    write_parquet(table, out)
    model, job, settings, spec = lj.model, lj.job, lj.settings, lj.spec
    write_json({
        "model": name, "path": spec.path, "revision": spec.revision, "backend": lj.backend_name, "device": lj.device,
        # the commit the weights rule fetched and this job loaded (the rows and the shard key carry it too)
        "resolved_revision": lj.revision if lj.loaded else getattr(getattr(model, "config", None), "_commit_hash", None),
        "device_name": torch.cuda.get_device_name(0) if lj.device.startswith("cuda") else platform.processor() or platform.machine(),
        "dtype": str(model.dtype) if model is not None else spec.dtype, "prompt_format": lj.fmt, "benchmark": benchmark,
        "conditions": list(job.conditions), "computed_as": _computed_as(job), "rounds": settings.rounds,
        "answer_modes": list(settings.answer_modes),
        "n_examples": len(lj.examples), "n_rows": len(table), "wall_seconds": round(time.perf_counter() - t0, 2),
        # the threads of each process this run started for its missing shards (which process computed a shard is
        # in the log; shards reused from an earlier run may come from another split: the methods page's determinism
        # note)
        "threads": threads, "threads_per_process": split, "torch": torch.__version__, "shard_key": lj.key,
        "system_prompt_used": system_prompt_used(lj.tok, spec.system_prompt, lj.fmt),
        "max_new_tokens": settings.max_new_tokens, "cot_max_new_tokens": settings.cot_max_new_tokens,
        # per condition: the share of its generated texts that the token limit ended
        "share_reasoning_reached_limit": _shares(table, "reasoning_reached_limit"),
        "share_answer_reached_limit": _shares(table, "answer_reached_limit"),
        "mkl_cbwr": os.environ.get("MKL_CBWR"),  # CPU reproducibility (selfcorrect/__init__.py)
    }, meta_out)


def _computed_as(job: Job) -> dict[str, str]:
    """Conditions whose rows are another condition's answers (they send the same texts): {condition: generated as}."""
    return {alias: first for first, names in job.computed().items() for alias in names[1:]}


def _shares(table: pd.DataFrame, column: str) -> dict[str, float | None]:
    return {str(c): _share(rows, column) for c, rows in table.groupby("condition", sort=False)}


def _share(table: pd.DataFrame, column: str) -> float | None:
    """Share of the generated texts (rows where one was generated) that the token limit ended; None if none were."""
    flags = table[column].dropna() if column in table else pd.Series(dtype=bool)
    return round(float(flags.astype(bool).mean()), 4) if len(flags) else None


# ---------------------------------------------------------------- scores

def score(benchmark: str, generations: list[str], samples: str, bootstrap: dict, seed: int, out: dict[str, str]) -> None:
    """The task's score tables (``out`` maps each of ``Task.score_tables`` to its path).

    One model at a time, reading only the columns the task scores: memory is one model's rows (a generation file
    holds one model's answers to a group of conditions), so a paper-size grid is scored in one job.
    """
    task = get_task(benchmark)
    examples = pd.read_parquet(samples)
    by_model: dict[str, list[str]] = {}
    for path in generations:
        models = pd.read_parquet(path, columns=["model"])["model"].unique()
        for model in models:
            by_model.setdefault(str(model), []).append(path)
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in task.score_tables}
    for model, paths in sorted(by_model.items()):
        rows = pd.concat([pd.read_parquet(p, columns=list(task.generation_columns), filters=[("model", "==", model)])
                          for p in paths], ignore_index=True)
        log.info("scoring %s: %d generation rows from %d files", model, len(rows), len(paths))
        for name, table in task.score(rows, examples, bootstrap, seed).items():
            parts[name].append(table)
    for name in task.score_tables:
        write_parquet(pd.concat(parts[name], ignore_index=True), out[name])


# ---------------------------------------------------------------- figures, tables, report

# what the figures and the answer tables read of the BBQ outcomes table (it also holds every prompt's texts)
OUTCOME_COLUMNS = ("model", "condition", "round", "answer_mode", "item_id", "example_id", "context_id", "category",
                   "context_condition", "question_polarity", "pred", "kept", "correct", "non_unknown", "biased",
                   "parse_status", "ans0_tag", "ans1_tag", "ans2_tag")
EXPLANATION_COLUMNS = ("question", "reasoning", "raw_text")


def _read_optional(path: str | None) -> pd.DataFrame:
    return pd.read_parquet(path) if path else pd.DataFrame(columns=["model", "condition", "round", "answer_mode", "rho"])


def read_outcomes(path: str, texts: bool = False) -> pd.DataFrame:
    """The columns of OUTCOME_COLUMNS the table has (plus the texts figure 7 quotes when ``texts``)."""
    import pyarrow.parquet as pq

    have = set(pq.read_schema(path).names)
    wanted = OUTCOME_COLUMNS + (EXPLANATION_COLUMNS if texts else ())
    return pd.read_parquet(path, columns=[c for c in wanted if c in have])


def _metas(paths: list[str]) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in paths]


def tables(models: dict, backend: str, bbq_cells: str, rho: str | None, differences: str, outcomes: str,
           metas: list[str], out: dict) -> None:
    """Tables 1-5: models, every number, condition differences, parse statuses, position bias."""
    from .diagnostics import parse_status_table, position_bias_table
    from .report import models_table, results_table, write_table

    cells, items = pd.read_parquet(bbq_cells), read_outcomes(outcomes)
    write_table(models_table(models, backend, _metas(metas)), out["models_csv"], out["models_tex"])
    write_table(results_table(cells, _read_optional(rho) if rho else None), out["results_csv"], out["results_tex"])
    write_table(pd.read_parquet(differences), out["differences_csv"], out["differences_tex"])
    write_table(parse_status_table(items), out["parse_status_csv"], out["parse_status_tex"])
    write_table(position_bias_table(items), out["position_bias_csv"], out["position_bias_tex"])


def figure(number: int, bbq_cells: str, bbq_outcomes: str, rho: str | None, models_csv: str, differences: str,
           seed: int, pdf_out: str, png_out: str, layout: dict | None = None) -> None:
    """Figure ``number``; ``layout`` holds the registry's families, contrasts and CoT conditions of the run, as the
    figure rule passes them (default: those of config/conditions.yaml for the conditions the score tables hold)."""
    from . import plotting
    from .report import save_figure

    cells, rho_table = pd.read_parquet(bbq_cells), _read_optional(rho)
    if layout is None:
        run = sorted(set(cells["condition"]) | set(rho_table["condition"]))
        layout = plotting.Layout.from_registry(Registry.load(), run).__dict__
    inputs = plotting.Inputs(
        cells=cells, items=read_outcomes(bbq_outcomes, texts=number == 7), models=pd.read_csv(models_csv),
        layout=plotting.Layout(**layout), rho=rho_table, differences=pd.read_parquet(differences), seed=seed,
    )
    save_figure(plotting.draw(number, inputs), pdf_out, png_out)


def paper_figures(cfg: dict, out: str, figures: list[str], tables: dict[str, str], metas: list[str], data_files: list[str]) -> None:
    from .data import load_sources
    from .report import build_pdf, methods_text

    methods = methods_text(cfg, _metas(metas), data_files, load_sources(), Registry.load())
    build_pdf(out, methods, figures, {name: pd.read_csv(path) for name, path in tables.items()})
