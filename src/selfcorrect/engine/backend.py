"""What the study asks of a generation backend (the transformers :class:`Engine`, :class:`VLLMEngine`), and the
helpers both share. Callers touch a backend only through :class:`Backend`."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


class Completion(str):
    """A greedy continuation, as text, that also says whether the token limit ended it (rather than an end token or
    a stop string): a chain of thought cut mid-sentence is then counted, not mistaken for a finished one."""

    reached_limit: bool

    def __new__(cls, text: str, reached_limit: bool = False) -> "Completion":
        obj = super().__new__(cls, text)
        obj.reached_limit = bool(reached_limit)
        return obj


def stopped_text(text: str, stop_strings, reached_limit: bool) -> Completion:
    """``text`` cut at its first stop string; a continuation cut there was not ended by the limit."""
    cut = cut_at_stops(text, stop_strings)
    return Completion(cut, reached_limit and cut == text)


@runtime_checkable
class Backend(Protocol):
    """Greedy answers and option log-probabilities for batches of prompts.

    ``keys`` name each prompt's example, so that a backend that carries KV caches between rounds finds the cache
    of the example's previous stage or round (its next prompt starts with the previous one).
    """

    batch_size: int  # prompts per batch (a job's (condition, example) units); 0: the backend schedules its own batches
    # True: a batch's KV cache is kept for its next stage or round, so the caller runs one batch of examples
    # through all its rounds before the next batch, and calls forget() in between
    carry_kv_between_rounds: bool
    # True: prompts that share prefixes are encoded once per batch, so the caller batches them together
    # (sorted by their first prompt)
    prefix_tree_prefill: bool
    stop_strings: tuple[str, ...]  # a continuation is cut at the first of these

    def answer(self, prompts: list[str], max_new_tokens: int | None, options: list[list[str]] | None,
               desc: str = "answer", keys: list | None = None) -> tuple[list[str] | None, list[list[float]] | None]:
        """Greedy answers as :class:`Completion` texts (None when ``max_new_tokens`` is None) and log P(option |
        prompt) per option (None when ``options`` is None)."""
        ...

    def generate(self, prompts: list[str], max_new_tokens: int, desc: str = "generate",
                 keys: list | None = None) -> list[str]:
        """Greedy continuations of ``prompts``, as :class:`Completion` texts."""
        ...

    def forget(self) -> None:
        """Drop every carried KV cache (between batches of examples, and at the end of a job)."""
        ...


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def cut_at_stops(text: str, stop_strings) -> str:
    """The text up to the first of ``stop_strings`` (a base model's next "Human:" turn, for example)."""
    for s in stop_strings:
        i = text.find(s)
        if i >= 0:
            text = text[:i]
    return text


def normalise(logprobs: list[float]) -> list[float]:
    """Probabilities renormalised over the options (a softmax of the option log-probabilities)."""
    a = np.asarray(logprobs, dtype=float)
    a = np.exp(a - a.max())
    return (a / a.sum()).tolist()
