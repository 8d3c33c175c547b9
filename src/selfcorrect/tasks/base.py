"""What a benchmark is to the study, in one object (as an lm-evaluation-harness task or a HELM scenario + metric).

A task loads and normalises its pinned files, draws the study's sample, names its items, fills the prompt
placeholders of config/conditions.yaml, says which continuations are scored as options and how a previous answer
enters the next round, parses generated answers, and scores a run. Nothing outside ``selfcorrect.tasks`` branches
on a benchmark's name: the workflow, the study driver and the CLI ask the task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import pandas as pd


def space_before(prefix: str) -> str:
    """A continuation after ``prefix`` starts with a space unless the prefix already ends with whitespace."""
    return " " if prefix and not prefix[-1].isspace() else ""


class Task(ABC):
    name: ClassVar[str]
    # tables the score step writes, as results/scores/{name}_{table}.parquet; "outcomes" holds one row per
    # generation row with what the score counts of it
    score_tables: ClassVar[tuple[str, ...]]
    # the columns of the generation tables its score reads (prompts are never read back)
    generation_columns: ClassVar[tuple[str, ...]]
    # mean round-1 prompt length in tokens (question block, instruction, markup), for `selfcorrect estimate`
    mean_prompt_tokens: ClassVar[int]

    # ------------------------------------------------------------ data
    @abstractmethod
    def source_files(self, config: dict, sources: dict) -> list[str]:
        """Repository-relative paths of the pinned files (config/sources.yaml) this study's run reads."""

    @abstractmethod
    def load(self, files: list[Path]) -> pd.DataFrame:
        """The normalised table of all examples, from :meth:`source_files` in the same order."""

    def mirror_hint(self, mirror: Path | None = None) -> str:
        """What to do when the data mirror ``mirror`` lacks one of this task's files."""
        return ""

    @abstractmethod
    def sample_params(self, config: dict) -> dict:
        """The config keys the sample depends on (a change redraws it)."""

    @abstractmethod
    def sample(self, table: pd.DataFrame, params: dict) -> pd.DataFrame:
        """The study's seeded sample, with an ``item_id`` column (see :meth:`item_ids`)."""

    @abstractmethod
    def item_ids(self, examples: pd.DataFrame) -> list[str]:
        """Ids unique across the whole benchmark; generations and scores are joined on them."""

    @abstractmethod
    def sample_size(self, config: dict, sources: dict) -> int:
        """How many examples :meth:`sample` keeps, from the config and the pinned counts alone (no data read)."""

    @abstractmethod
    def lookup(self, data_root: Path, example_id: str, category: str | None = None) -> dict:
        """One example of the released data (laid out like ../shared/data) by id, for `selfcorrect render`."""

    # ------------------------------------------------------------ prompts
    @abstractmethod
    def fields(self, example: dict, texts: dict) -> dict:
        """Placeholder values of one example: its text fields plus ``bias_type`` and ``group`` (names from ``texts``,
        the conditions registry's data)."""

    @abstractmethod
    def options(self, example: dict, prefix: str, spec: dict) -> list[str]:
        """The continuations of the answer prefix whose probabilities are the logprob-mode answer (in slot order)."""

    @abstractmethod
    def previous_answer(self, example: dict, prefix: str, spec: dict, generated: str | None, slot: int) -> str:
        """What the assistant said in a finished round, as later rounds show it: the generated text where there is
        one, else the option of ``slot`` (the logprob-mode answer) written out."""

    # ------------------------------------------------------------ answers and scores
    def parses_answers(self, answer_modes) -> bool:
        """Whether greedy answers are generated and parsed (generate mode) for this task."""
        return False

    def answer_columns(self, example: dict, text: str | None) -> dict:
        """Columns a generated answer adds to a generation row (parsed slot, parse status)."""
        return {}

    def methods_notes(self) -> list[str]:
        """One sentence per choice of this task that could move a number, for the report's methods page."""
        return []

    @abstractmethod
    def score(self, generations: pd.DataFrame, examples: pd.DataFrame, bootstrap: dict, seed: int) -> dict[str, pd.DataFrame]:
        """The tables of :attr:`score_tables` from all generation rows of a run and the sample."""
