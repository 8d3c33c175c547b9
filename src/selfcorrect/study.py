"""One generation job: a model answers one group of conditions of one benchmark for every round.

The conditions of a job ask the same stages (all answer directly, or all reason first), so that one model load
serves them and the prompts of one example under different conditions, which differ only after the question,
share the KV cache of their common prefix. Conditions whose texts are identical for the benchmark (the paper's
specificity level 2 is its instruction) are generated once and their rows counted under each name.

Work is split into shards of examples; each shard runs all conditions and rounds (round r+1 is built from round
r's answers) and is written atomically, so a killed job resumes at the first unfinished shard. The driver sees
the benchmark only through its :class:`~selfcorrect.tasks.Task` and the model only through the
:class:`~selfcorrect.engine.Backend` contract.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, NamedTuple

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
    """One job's fixed parts: its benchmark, its conditions (all with or all without a reasoning stage), how
    prompts become text."""

    task: Task
    conditions: tuple[str, ...]
    registry: Registry
    render: Callable[[Conversation], str]
    settings: Settings

    def __post_init__(self):
        if isinstance(self.conditions, str) or not self.conditions:
            raise TypeError(f"a job's conditions are a non-empty sequence of names, got {self.conditions!r}")
        object.__setattr__(self, "conditions", tuple(self.conditions))
        kinds = {bool(self.registry.condition(c).get("cot", False)) for c in self.conditions}
        if len(kinds) != 1:
            raise ValueError(f"one job runs conditions with the same stages; {list(self.conditions)} mix CoT and "
                             "direct answers")

    @property
    def cot(self) -> bool:
        return bool(self.registry.condition(self.conditions[0]).get("cot", False))

    def computed(self) -> dict[str, list[str]]:
        """Each condition that is generated, with the job's conditions that send exactly its texts (itself first):
        their answers are the same computation, so it is done once."""
        first: dict[str, list[str]] = {}
        for c in self.conditions:
            first.setdefault(self.registry.job_texts_hash(c, self.task.name), []).append(c)
        return {names[0]: names for names in first.values()}

    def conversation(self, condition: str, example: dict, history: list[RoundRecord], stage: str,
                     reasoning: str | None = None) -> Conversation:
        return self.registry.conversation(condition, self.task.name, example, history, stage=stage, reasoning=reasoning)


class Unit(NamedTuple):
    """One example under one condition: a conversation of the job, carried through its rounds."""

    condition: str
    example: dict
    item_id: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.condition, self.item_id)


def run_rounds(backend, job: Job, examples: pd.DataFrame) -> pd.DataFrame:
    """All rounds of the job's conditions for ``examples``: one row per (condition, example, round), ordered by
    condition (the job's order), round and the examples' order.

    A backend that carries each conversation's KV cache from one stage or round to the next needs a batch's units
    to go through all their rounds before the next batch starts, so that the cache is still in memory when the next
    prompt (which starts with the previous one) is encoded.
    """
    exs = examples.to_dict("records")
    ids = job.task.item_ids(examples)
    computed = job.computed()
    units = [Unit(c, ex, i) for c in computed for ex, i in zip(exs, ids)]
    if not backend.carry_kv_between_rounds:
        out = _rounds_of(backend, job, units)
    else:
        order = sorted(range(len(units)), key=_batch_order(backend, job, units))
        parts = []
        with _prompts_bar(backend, job, units) as bar:
            for start in range(0, len(order), backend.batch_size):
                backend.forget()
                parts.append(_rounds_of(backend, job, [units[i] for i in order[start:start + backend.batch_size]],
                                        answered=bar.update))
        backend.forget()
        out = pd.concat(parts, ignore_index=True)
    out = pd.concat([out[out["condition"] == c].assign(condition=alias) for c, names in computed.items()
                     for alias in names], ignore_index=True)
    rank = {item: i for i, item in enumerate(ids)}
    position = {c: i for i, c in enumerate(job.conditions)}
    out["_condition"], out["_rank"] = out["condition"].map(position), out["item_id"].map(rank)
    return (out.sort_values(["_condition", "round", "_rank"], kind="stable").drop(columns=["_condition", "_rank"])
            .reset_index(drop=True))


@contextlib.contextmanager
def _prompts_bar(backend, job: Job, units: list[Unit]):
    """One progress bar for the prompts of ``units``' conversations (each an example under a condition the job
    computes; a condition that sends another's texts is not computed again): one prompt per round, two with a
    reasoning stage, counted as each call answers them. It stands in for the backend's bar per call while that is
    shown: batch by batch, each call answers one stage of one batch, so its own bar jumps from none to all and says
    nothing about the time the job has left."""
    from tqdm.auto import tqdm

    shown = getattr(backend, "progress", True)
    stages = 2 if job.cot else 1
    desc = f"{getattr(backend, 'progress_label', '')}{job.task.name}, {_names(units)}, {job.settings.rounds} rounds"
    bar = tqdm(total=len(units) * job.settings.rounds * stages, desc=desc, unit="prompt", disable=not shown,
               mininterval=2.0)
    try:
        if hasattr(backend, "progress"):
            backend.progress = False
        yield bar
    finally:
        bar.close()
        if hasattr(backend, "progress"):
            backend.progress = shown


def _batch_order(backend, job: Job, units: list[Unit]) -> Callable[[int], object]:
    """Units whose first prompts share prefixes go into one batch (a prefix-tree prefill encodes those once): the
    same context's questions, and one question under the job's conditions, whose texts differ only after it.
    Otherwise similar lengths go together, so that each batch of the whole conversation pads little."""
    stage = "reasoning" if job.cot else "answer"
    first = [job.render(job.conversation(u.condition, u.example, [], stage)) for u in units]
    if backend.prefix_tree_prefill:
        return lambda i: first[i]
    return lambda i: -len(first[i])


def _rounds_of(backend, job: Job, units: list[Unit],
               answered: Callable[[int], object] = lambda n: None) -> pd.DataFrame:
    """Every round of ``units``; ``answered(n)`` after each call of the backend, with the n prompts it answered."""
    task, settings = job.task, job.settings
    spec = job.registry.data["benchmarks"][task.name]
    generate = task.parses_answers(settings.answer_modes)
    keys = [u.key for u in units]
    histories: list[list[RoundRecord]] = [[] for _ in units]
    rows = []
    for rnd in range(1, settings.rounds + 1):
        reasoning = [None] * len(units)
        if job.cot:
            convs = [job.conversation(u.condition, u.example, h, "reasoning") for u, h in zip(units, histories)]
            reasoning = backend.generate([job.render(c) for c in convs], settings.cot_max_new_tokens,
                                         desc=f"{_names(units)} r{rnd} reasoning", keys=keys)
            answered(len(units))
        convs = [job.conversation(u.condition, u.example, h, "answer", r) for u, h, r in zip(units, histories, reasoning)]
        prompts = [job.render(c) for c in convs]
        options = [task.options(u.example, c.prefix, spec) for u, c in zip(units, convs)]
        texts, logprobs = backend.answer(prompts, settings.max_new_tokens if generate else None, options,
                                         desc=f"{_names(units)} r{rnd} answer", keys=keys)
        answered(len(units))
        texts = texts or [None] * len(units)
        for i, u in enumerate(units):
            probs = normalise(logprobs[i])
            slot = int(np.argmax(probs))
            rows.append({
                "item_id": u.item_id, "condition": u.condition, "round": rnd, "prompt_hash": short_hash(prompts[i]),
                "prompt": prompts[i], "reasoning": _text(reasoning[i]), "raw_text": _text(texts[i]),
                # the token limit, not the model, ended the text: a reasoning cut mid-sentence is counted
                "reasoning_reached_limit": _reached_limit(reasoning[i]), "answer_reached_limit": _reached_limit(texts[i]),
                "option_logprobs": logprobs[i], "option_probs": probs, "logprob_slot": slot,
            } | task.answer_columns(u.example, texts[i]))
            histories[i].append(RoundRecord(
                answer=task.previous_answer(u.example, convs[i].prefix, spec, texts[i], slot), reasoning=reasoning[i],
            ))
    return pd.DataFrame(rows)


def _names(units: list[Unit]) -> str:
    """The progress bar's label: the conditions a batch answers."""
    names = list(dict.fromkeys(u.condition for u in units))
    return names[0] if len(names) == 1 else f"{len(names)} conditions"


def _text(text) -> str | None:
    return None if text is None else str(text)


def _reached_limit(text) -> bool | None:
    """Whether the token limit ended ``text`` (a backend's Completion); None where nothing was generated."""
    return None if text is None else bool(getattr(text, "reached_limit", False))


class Shards:
    """A job's resumable shards: shard s holds the rows of examples [s·size, (s+1)·size), in a file named by the job
    key, written atomically, so a killed job resumes at its unfinished shards.

    Several processes of one job (:mod:`selfcorrect.job_processes`) can fill them: a process claims a shard (creates
    a ``.claim`` file beside it, which fails if another process has) before computing it, so no shard is computed
    twice. Claims live as long as the job's processes: the job clears them when they end and when it starts (a
    killed run's).
    """

    def __init__(self, shard_dir: Path, n_examples: int, size: int, key: str):
        self.dir, self.size, self.key = Path(shard_dir), int(size), key
        self.n = max(1, -(-n_examples // self.size))
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, s: int) -> Path:
        return self.dir / f"shard-{s:05d}-of-{self.n:05d}-{self.key}.parquet"

    def _claim_path(self, s: int) -> Path:
        return self.path(s).with_suffix(".claim")

    def missing(self) -> list[int]:
        return [s for s in range(self.n) if not self.path(s).exists()]

    def log_reused(self) -> None:
        for s in range(self.n):
            if self.path(s).exists():
                log.info("shard %d/%d already done: %s", s + 1, self.n, self.path(s).name)

    def claim(self, s: int) -> bool:
        """True for the one process that claims shard ``s`` first (O_EXCL: atomic on a local or NFSv3+ filesystem)."""
        if not 0 <= s < self.n:
            raise IndexError(f"shard {s} of a job of {self.n} shards")
        try:
            os.close(os.open(self._claim_path(s), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return False
        return True

    def release_claims(self) -> None:
        for s in range(self.n):
            self._claim_path(s).unlink(missing_ok=True)

    def fill(self, examples: pd.DataFrame, run: Callable[[pd.DataFrame], pd.DataFrame], claim: bool = False,
             stop: Callable[[], bool] = lambda: False, who: str = "") -> int:
        """Compute the missing shards with ``run`` (with ``claim``: only those this process claims first), until
        ``stop()`` says to; how many this process computed."""
        done = 0
        for s in range(self.n):
            if stop():
                break
            path = self.path(s)
            if path.exists() or (claim and not self.claim(s)):
                continue
            t0 = time.perf_counter()
            chunk = examples.iloc[s * self.size:(s + 1) * self.size]
            log.info("shard %d/%d: %d examples%s", s + 1, self.n, len(chunk), who)  # names the progress bar after it
            part = run(chunk)
            write_parquet(part, path)
            log.info("shard %d/%d: %d rows in %.1fs%s", s + 1, self.n, len(part), time.perf_counter() - t0, who)
            done += 1
        return done

    def read(self) -> pd.DataFrame:
        """Every shard's rows, in example order; all must be there."""
        missing = self.missing()
        if missing:
            raise RuntimeError(f"shards {[s + 1 for s in missing]} of {self.n} in {self.dir} are not computed")
        return pd.concat([pd.read_parquet(self.path(s)) for s in range(self.n)], ignore_index=True)


@dataclass(frozen=True)
class JobInfo:
    """Who answered: the columns every generation row carries, and part of the shard key."""

    model: str
    revision: str | None
    backend: str
    prompt_format: str
    device: str
    benchmark: str
    conditions: tuple[str, ...]


def job_key(item_ids: list[str], settings: Settings, info: JobInfo, texts_hash: str, model_cfg: dict) -> str:
    """Fingerprint of everything a shard's content depends on; a changed input never reuses a stale shard.

    ``model_cfg``: the model's config entry (path, GGUF file, dtype, system prompt, ...), so that editing it
    regenerates rather than reusing shards of the model as it was."""
    parts = [settings.key(), texts_hash, info.model, str(info.revision), info.prompt_format, info.backend,
             "+".join(info.conditions), short_hash("|".join(item_ids)),
             short_hash(json.dumps(model_cfg, sort_keys=True, default=str))]
    return short_hash("/".join(parts), 12)


def annotate(df: pd.DataFrame, info: JobInfo) -> pd.DataFrame:
    return df.assign(
        model=info.model, revision=info.revision or "", backend=info.backend, prompt_format=info.prompt_format,
        benchmark=info.benchmark,
    )
