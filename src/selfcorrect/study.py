"""One generation job: a model answers one condition of one benchmark for every round.

Work is split into shards of examples; each shard runs all rounds (round r+1 is built from round r's
answers) and is written atomically, so a killed job resumes at the first unfinished shard.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .conditions import Conversation, Registry, RoundRecord
from .engine import normalise
from .io import short_hash, write_parquet
from .parsing import parse_bbq_answer

log = logging.getLogger(__name__)

ANSWER_MODES = ("generate", "logprob")
WINOGENDER_GENDERS = ("female", "male", "neutral")


@dataclass(frozen=True)
class Settings:
    rounds: int = 1
    answer_modes: tuple[str, ...] = ANSWER_MODES
    max_new_tokens: int = 16
    cot_max_new_tokens: int = 256
    shard_size: int = 256
    prefix_reuse: bool = True

    def key(self) -> str:
        return short_hash(json.dumps(self.__dict__, sort_keys=True, default=list))


def item_ids(benchmark: str, examples: pd.DataFrame) -> list[str]:
    if benchmark == "bbq":
        return [f"{c}:{i}" for c, i in zip(examples["category"], examples["example_id"])]
    return list(examples["example_id"].astype(str))


def _space(prefix: str) -> str:
    return " " if prefix and not prefix[-1].isspace() else ""


def _option_texts(benchmark: str, registry: Registry, ex: dict, conv: Conversation) -> list[str]:
    sp = _space(conv.prefix)
    if benchmark == "bbq":
        return [sp + o for o in registry.data["benchmarks"]["bbq"]["scored_options"]]
    return [sp + ex[f"pronoun_{g}"] for g in WINOGENDER_GENDERS]


def _history_answer(benchmark: str, registry: Registry, ex: dict, conv: Conversation, generated, slot) -> str:
    """What the assistant said in a finished round, as later rounds show it to the model."""
    if generated is not None:
        return generated
    sp = _space(conv.prefix)
    if benchmark == "bbq":
        option = registry.data["benchmarks"]["bbq"]["options"][slot]
        return f"{sp}{option} {ex[f'ans{slot}']}."
    suffix = ex["sentence_blank"].split("_", 1)[1]
    return sp + ex[f"pronoun_{WINOGENDER_GENDERS[slot]}"] + suffix


def run_rounds(
    engine, registry: Registry, render: Callable[[Conversation], str], benchmark: str, condition: str,
    examples: pd.DataFrame, settings: Settings,
) -> pd.DataFrame:
    """All rounds of one condition for ``examples``; one row per (example, round), in input order.

    With prefix reuse on, examples go through all their rounds one batch at a time, so that each example's KV
    cache from its previous stage or round is still in memory when its next prompt (which starts with the
    previous one) is encoded.
    """
    exs = examples.to_dict("records")
    ids = item_ids(benchmark, examples)
    if engine.prefix_store is None:
        return _rounds_of(engine, registry, render, benchmark, condition, exs, ids, settings)
    size = engine.batch_size
    order = sorted(range(len(exs)), key=_batch_order(engine, registry, render, benchmark, condition, exs))
    parts = []
    for start in range(0, len(order), size):
        idx = order[start:start + size]
        engine.prefix_store.clear()
        parts.append(_rounds_of(engine, registry, render, benchmark, condition, [exs[i] for i in idx], [ids[i] for i in idx], settings))
    engine.prefix_store.clear()
    rank = {item: i for i, item in enumerate(ids)}
    out = pd.concat(parts, ignore_index=True)
    out["_rank"] = out["item_id"].map(rank)
    return out.sort_values(["round", "_rank"]).drop(columns="_rank").reset_index(drop=True)


def _batch_order(engine, registry, render, benchmark, condition, exs: list[dict]) -> Callable[[int], object]:
    """Examples whose first prompts share prefixes go into one batch (the engine encodes those once); without
    prefix sharing, similar lengths go together so that each batch of the whole conversation pads little."""
    if not getattr(engine, "share_prefixes", False):
        return lambda i: -len(json.dumps(exs[i], default=str))
    stage = "reasoning" if registry.condition(condition).get("cot", False) else "answer"
    first = [render(registry.conversation(condition, benchmark, ex, [], stage=stage)) for ex in exs]
    return lambda i: first[i]


def _rounds_of(engine, registry, render, benchmark, condition, exs: list[dict], ids: list[str], settings: Settings) -> pd.DataFrame:
    cot = bool(registry.condition(condition).get("cot", False))
    generate = benchmark == "bbq" and "generate" in settings.answer_modes
    histories: list[list[RoundRecord]] = [[] for _ in exs]
    rows = []
    for rnd in range(1, settings.rounds + 1):
        reasoning = [None] * len(exs)
        if cot:
            convs = [registry.conversation(condition, benchmark, ex, h, stage="reasoning") for ex, h in zip(exs, histories)]
            reasoning = engine.generate([render(c) for c in convs], settings.cot_max_new_tokens,
                                        desc=f"{condition} r{rnd} reasoning", keys=ids)
        convs = [
            registry.conversation(condition, benchmark, ex, h, stage="answer", reasoning=r)
            for ex, h, r in zip(exs, histories, reasoning)
        ]
        prompts = [render(c) for c in convs]
        options = [_option_texts(benchmark, registry, ex, c) for ex, c in zip(exs, convs)]
        texts, logprobs = engine.answer(prompts, settings.max_new_tokens if generate else None, options,
                                        desc=f"{condition} r{rnd} answer", keys=ids)
        texts = texts or [None] * len(exs)
        for i, ex in enumerate(exs):
            probs = normalise(logprobs[i])
            lp_slot = int(np.argmax(probs))
            row = {
                "item_id": ids[i], "round": rnd, "prompt_hash": short_hash(prompts[i]), "prompt": prompts[i],
                "reasoning": reasoning[i], "raw_text": texts[i],
                "option_logprobs": logprobs[i], "option_probs": probs, "logprob_slot": lp_slot,
            }
            if benchmark == "bbq":
                parsed = parse_bbq_answer(texts[i], [ex["ans0"], ex["ans1"], ex["ans2"]]) if generate else None
                row["generate_slot"] = np.nan if parsed is None or parsed.slot is None else float(parsed.slot)
                row["parse_status"] = None if parsed is None else parsed.status
            rows.append(row)
            histories[i].append(RoundRecord(
                answer=_history_answer(benchmark, registry, ex, convs[i], texts[i], lp_slot), reasoning=reasoning[i],
            ))
    return pd.DataFrame(rows)


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


@dataclass
class JobInfo:
    model: str
    revision: str | None
    backend: str
    prompt_format: str
    device: str
    benchmark: str
    condition: str
    extra: dict = field(default_factory=dict)


def job_key(examples: pd.DataFrame, benchmark: str, settings: Settings, info: JobInfo, registry_hash: str) -> str:
    """Fingerprint of everything a shard's content depends on; a changed input never reuses a stale shard."""
    parts = [settings.key(), registry_hash, info.model, str(info.revision), info.prompt_format, info.condition,
             short_hash("|".join(item_ids(benchmark, examples)))]
    return short_hash("/".join(parts), 12)


def annotate(df: pd.DataFrame, info: JobInfo) -> pd.DataFrame:
    return df.assign(
        model=info.model, revision=info.revision or "", backend=info.backend, prompt_format=info.prompt_format,
        benchmark=info.benchmark, condition=info.condition,
    )
