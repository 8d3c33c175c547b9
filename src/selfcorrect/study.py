"""One generation job: a model answers one condition of one benchmark for every round.

Work is split into shards of examples; each shard runs all rounds (round r+1 is built from round r's
answers) and is written atomically, so a killed job resumes at the first unfinished shard. The driver sees
the benchmark only through its :class:`~selfcorrect.tasks.Task` and the model only through the
:class:`~selfcorrect.engine.Backend` contract.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .conditions import Conversation, Registry, RoundRecord
from .engine import normalise
from .io import short_hash, write_parquet
from .tasks import Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """What a job's rows depend on besides the model, the prompt texts and the examples (config `generation:`)."""

    rounds: int
    answer_modes: tuple[str, ...]
    max_new_tokens: int
    cot_max_new_tokens: int
    shard_size: int

    @classmethod
    def from_config(cls, cfg: dict) -> "Settings":
        """From a validated config (the schema's defaults filled in)."""
        g = cfg["generation"]
        return cls(rounds=int(cfg["rounds"]), answer_modes=tuple(cfg["answer_modes"]),
                   max_new_tokens=int(g["max_new_tokens"]), cot_max_new_tokens=int(g["cot_max_new_tokens"]),
                   shard_size=int(g["shard_size"]))

    def key(self) -> str:
        return short_hash(json.dumps(asdict(self), sort_keys=True, default=list))


@dataclass(frozen=True)
class Job:
    """One (task, condition) job's fixed parts: what it asks, and how prompts become text."""

    task: Task
    condition: str
    registry: Registry
    render: Callable[[Conversation], str]
    settings: Settings

    @property
    def cot(self) -> bool:
        return bool(self.registry.condition(self.condition).get("cot", False))

    def conversation(self, example: dict, history: list[RoundRecord], stage: str, reasoning: str | None = None):
        return self.registry.conversation(self.condition, self.task.name, example, history, stage=stage, reasoning=reasoning)


def run_rounds(backend, job: Job, examples: pd.DataFrame) -> pd.DataFrame:
    """All rounds of one condition for ``examples``; one row per (example, round), in input order.

    A backend that carries each example's KV cache from one stage or round to the next needs the batch's examples
    to go through all their rounds before the next batch starts, so that the cache is still in memory when the next
    prompt (which starts with the previous one) is encoded.
    """
    exs = examples.to_dict("records")
    ids = job.task.item_ids(examples)
    if not backend.carry_kv_between_rounds:
        return _rounds_of(backend, job, exs, ids)
    order = sorted(range(len(exs)), key=_batch_order(backend, job, exs))
    parts = []
    for start in range(0, len(order), backend.batch_size):
        idx = order[start:start + backend.batch_size]
        backend.forget()
        parts.append(_rounds_of(backend, job, [exs[i] for i in idx], [ids[i] for i in idx]))
    backend.forget()
    rank = {item: i for i, item in enumerate(ids)}
    out = pd.concat(parts, ignore_index=True)
    out["_rank"] = out["item_id"].map(rank)
    return out.sort_values(["round", "_rank"]).drop(columns="_rank").reset_index(drop=True)


def _batch_order(backend, job: Job, exs: list[dict]) -> Callable[[int], object]:
    """Examples whose first prompts share prefixes go into one batch (a prefix-tree prefill encodes those once);
    otherwise similar lengths go together, so that each batch of the whole conversation pads little."""
    stage = "reasoning" if job.cot else "answer"
    first = [job.render(job.conversation(ex, [], stage)) for ex in exs]
    if backend.prefix_tree_prefill:
        return lambda i: first[i]
    return lambda i: -len(first[i])


def _rounds_of(backend, job: Job, exs: list[dict], ids: list[str]) -> pd.DataFrame:
    task, settings = job.task, job.settings
    spec = job.registry.data["benchmarks"][task.name]
    generate = task.parses_answers(settings.answer_modes)
    histories: list[list[RoundRecord]] = [[] for _ in exs]
    rows = []
    for rnd in range(1, settings.rounds + 1):
        reasoning = [None] * len(exs)
        if job.cot:
            convs = [job.conversation(ex, h, "reasoning") for ex, h in zip(exs, histories)]
            reasoning = backend.generate([job.render(c) for c in convs], settings.cot_max_new_tokens,
                                         desc=f"{job.condition} r{rnd} reasoning", keys=ids)
        convs = [job.conversation(ex, h, "answer", r) for ex, h, r in zip(exs, histories, reasoning)]
        prompts = [job.render(c) for c in convs]
        options = [task.options(ex, c.prefix, spec) for ex, c in zip(exs, convs)]
        texts, logprobs = backend.answer(prompts, settings.max_new_tokens if generate else None, options,
                                         desc=f"{job.condition} r{rnd} answer", keys=ids)
        texts = texts or [None] * len(exs)
        for i, ex in enumerate(exs):
            probs = normalise(logprobs[i])
            slot = int(np.argmax(probs))
            rows.append({
                "item_id": ids[i], "round": rnd, "prompt_hash": short_hash(prompts[i]), "prompt": prompts[i],
                "reasoning": _text(reasoning[i]), "raw_text": _text(texts[i]),
                # the token limit, not the model, ended the text: a reasoning cut mid-sentence is counted
                "reasoning_reached_limit": _reached_limit(reasoning[i]), "answer_reached_limit": _reached_limit(texts[i]),
                "option_logprobs": logprobs[i], "option_probs": probs, "logprob_slot": slot,
            } | task.answer_columns(ex, texts[i]))
            histories[i].append(RoundRecord(
                answer=task.previous_answer(ex, convs[i].prefix, spec, texts[i], slot), reasoning=reasoning[i],
            ))
    return pd.DataFrame(rows)


def _text(text) -> str | None:
    return None if text is None else str(text)


def _reached_limit(text) -> bool | None:
    """Whether the token limit ended ``text`` (a backend's Completion); None where nothing was generated."""
    return None if text is None else bool(getattr(text, "reached_limit", False))


def run_sharded(
    examples: pd.DataFrame, shard_dir: Path, shard_size: int, key: str,
    run: Callable[[pd.DataFrame], pd.DataFrame],
) -> pd.DataFrame:
    """Apply ``run`` shard by shard, reusing shards already on disk for the same ``key``."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    n_shards = max(1, -(-len(examples) // shard_size))
    parts = []
    for s in range(n_shards):
        chunk = examples.iloc[s * shard_size:(s + 1) * shard_size]
        path = shard_dir / f"shard-{s:05d}-of-{n_shards:05d}-{key}.parquet"
        if path.exists():
            log.info("shard %d/%d already done: %s", s + 1, n_shards, path.name)
            parts.append(pd.read_parquet(path))
            continue
        t0 = time.perf_counter()
        part = run(chunk)
        write_parquet(part, path)
        log.info("shard %d/%d: %d rows in %.1fs", s + 1, n_shards, len(part), time.perf_counter() - t0)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


@dataclass(frozen=True)
class JobInfo:
    """Who answered: the columns every generation row carries, and part of the shard key."""

    model: str
    revision: str | None
    backend: str
    prompt_format: str
    device: str
    benchmark: str
    condition: str


def job_key(item_ids: list[str], settings: Settings, info: JobInfo, texts_hash: str) -> str:
    """Fingerprint of everything a shard's content depends on; a changed input never reuses a stale shard."""
    parts = [settings.key(), texts_hash, info.model, str(info.revision), info.prompt_format, info.condition,
             short_hash("|".join(item_ids))]
    return short_hash("/".join(parts), 12)


def annotate(df: pd.DataFrame, info: JobInfo) -> pd.DataFrame:
    return df.assign(
        model=info.model, revision=info.revision or "", backend=info.backend, prompt_format=info.prompt_format,
        benchmark=info.benchmark, condition=info.condition,
    )
