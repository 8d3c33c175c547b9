"""The registry of prompt conditions (config/conditions.yaml) and the conversations it defines.

A conversation is built from the registry, one example and the history of earlier rounds; it is pure
data (turns plus the text the assistant turn starts with), rendered to a string by :mod:`formats`.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .io import short_hash
from .paths import CONDITIONS_FILE

# the chain-of-thought texts (config/conditions.yaml `cot:`), each given per benchmark: the assistant's opening of
# its reasoning, the user's follow-up turn after it, and the prefix the answer continues
COT_TEXTS = ("trigger", "followup", "answer_prefix")
REASONING_PLACEHOLDER = "[reasoning]"
ANSWER_PLACEHOLDER = "[previous answer]"
# the generation jobs of grouped conditions: those that answer directly, those that reason first (Registry.job_groups)
JOB_GROUPS = ("answer", "reasoning")


class RegistryError(ValueError):
    """The condition registry or a requested condition is invalid; the message names it."""


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    content: str


@dataclass(frozen=True)
class Conversation:
    turns: tuple[Turn, ...]
    prefix: str  # text the assistant turn starts with; the model continues it
    stage: str  # "reasoning" or "answer"


@dataclass
class RoundRecord:
    """What the model said in one finished round (the history later rounds are built from)."""

    answer: str
    reasoning: str | None = None


@dataclass
class Registry:
    data: dict
    path: Path = field(default=CONDITIONS_FILE)

    @classmethod
    def load(cls, path: str | Path = CONDITIONS_FILE) -> "Registry":
        with open(path) as fh:
            reg = cls(yaml.safe_load(fh), Path(path))
        reg.validate()
        return reg

    # ------------------------------------------------------------ queries
    @property
    def names(self) -> list[str]:
        return list(self.data["conditions"])

    def condition(self, name: str) -> dict:
        try:
            return self.data["conditions"][name]
        except KeyError:
            raise RegistryError(
                f"unknown condition {name!r}; defined in {self.path}: {', '.join(self.names)}"
            ) from None

    def conditions_for(self, benchmark: str, names: list[str]) -> list[str]:
        return [n for n in names if benchmark in self.condition(n)["benchmarks"]]

    def describe(self) -> list[dict]:
        rows = []
        for name, c in self.data["conditions"].items():
            rows.append({
                "name": name,
                "benchmarks": list(c["benchmarks"]),
                "description": c.get("description", ""),
                "cot": bool(c.get("cot", False)),
                "family": c.get("family"),
                "level": c.get("level"),
                "reconstruction": bool(c.get("reconstruction", False)),
                "instruction": c.get("instruction", {}),
            })
        return rows

    # ------------------------------------------------------------ how the report groups conditions
    def families(self, names: list[str] | None = None) -> dict[str, list[str]]:
        """Conditions per ``family:`` (the figure each is drawn in), each family ordered by ``level:`` and then by
        its place in the registry; only ``names`` (a run's conditions) when given."""
        keep = self.names if names is None else [n for n in self.names if n in set(names)]
        out: dict[str, list[str]] = {}
        for n in keep:
            family = self.condition(n).get("family")
            if family:
                out.setdefault(str(family), []).append(n)
        rank = {n: i for i, n in enumerate(self.names)}
        return {f: sorted(members, key=lambda n: (self.condition(n).get("level", 0), rank[n]))
                for f, members in out.items()}

    def contrasts(self, names: list[str] | None = None) -> list[tuple[str, str]]:
        """(condition, the condition it is compared with) for every ``contrast:``, in registry order; only pairs
        whose two conditions are both in ``names`` when given (Table 3's rows, figure 7's bars)."""
        keep = set(self.names if names is None else names)
        pairs = []
        for n in self.names:
            for other in self._contrast_of(n):
                if n in keep and other in keep:
                    pairs.append((n, other))
        return pairs

    def cot_conditions(self, names: list[str] | None = None) -> list[str]:
        """Conditions whose model reasons (chain of thought) before it answers."""
        return [n for n in (self.names if names is None else names) if self.condition(n).get("cot")]

    def _contrast_of(self, name: str) -> list[str]:
        other = self.condition(name).get("contrast") or []
        return [other] if isinstance(other, str) else list(other)

    def texts(self, names: list[str]) -> dict:
        """Every text a run with these conditions sends (for the methods page and its hash)."""
        keep = {k: v for k, v in self.data.items() if k != "conditions"}
        keep["conditions"] = {n: self.condition(n) for n in names}
        return keep

    def texts_hash(self, names: list[str]) -> str:
        """Hash of :meth:`texts`: changes whenever any text these conditions send changes."""
        return short_hash(json.dumps(self.texts(names), sort_keys=True))

    def job_texts(self, condition: str, benchmark: str) -> dict:
        """The texts one condition sends for one benchmark, and nothing else: editing another condition's or
        benchmark's wording leaves this hash alone (a job's hash is its conditions', :meth:`group_texts_hash`)."""
        c, d = self.condition(condition), self.data
        cot = bool(c.get("cot", False))
        return {
            "dialogue": d["dialogue"], "feedback": d["feedback"], "benchmark": d["benchmarks"][benchmark],
            "bias_types": d.get("bias_types", {}), "group_labels": d.get("group_labels", {}),
            "cot": {part: d["cot"][part][benchmark] for part in COT_TEXTS} if cot else None,
            "instruction": (c.get("instruction") or {}).get(benchmark),
        }

    def job_texts_hash(self, condition: str, benchmark: str) -> str:
        return short_hash(json.dumps(self.job_texts(condition, benchmark), sort_keys=True))

    def group_texts_hash(self, conditions: list[str], benchmark: str) -> str:
        """The texts a job running ``conditions`` sends: editing a condition of another job leaves it alone."""
        return short_hash("/".join(f"{c}={self.job_texts_hash(c, benchmark)}" for c in conditions))

    def job_groups(self, benchmark: str, names: list[str], group: bool = True) -> dict[str, list[str]]:
        """The generation jobs of ``benchmark`` for the run's conditions ``names``: {job name: its conditions}.

        ``group``: the conditions that answer directly form one job (``answer``) and those that reason first
        another (``reasoning``): one model load each, and one example's prompts under the different conditions share
        their common prefix's KV cache. Otherwise one job per condition, named after it (more, smaller jobs for a
        cluster to run side by side).
        """
        # in the registry's order: reordering the config's `conditions:` changes no job
        wanted = set(self.conditions_for(benchmark, names))
        names = [n for n in self.names if n in wanted]
        if not group:
            return {n: [n] for n in names}
        cot = self.cot_conditions(names)
        direct, reasoning = JOB_GROUPS
        jobs = {direct: [n for n in names if n not in cot], reasoning: cot}
        return {job: conds for job, conds in jobs.items() if conds}

    # ------------------------------------------------------------ validation
    def validate(self) -> None:
        d = self.data
        for key in ("benchmarks", "conditions", "feedback", "cot", "dialogue"):
            if key not in d:
                raise RegistryError(f"{self.path}: missing top-level key {key!r}")
        for part in COT_TEXTS:
            if not isinstance(d["cot"].get(part), dict):
                shape = ", ".join(f'{b}: "..."' for b in d["benchmarks"])
                raise RegistryError(f"{self.path}: cot.{part} must map each benchmark to its own text, got "
                                    f"{d['cot'].get(part)!r}; write it as `{part}: {{{shape}}}`")
        for bench, spec in d["benchmarks"].items():
            allowed = set(spec["placeholders"])
            self._check(spec["question"], allowed, f"benchmarks.{bench}.question")
            self._check(spec["answer_prefix"], allowed, f"benchmarks.{bench}.answer_prefix")
            for part in COT_TEXTS:
                text = d["cot"][part].get(bench)
                if not isinstance(text, str) or not text.strip():
                    raise RegistryError(f"{self.path}: cot.{part}.{bench} is missing or empty; every benchmark "
                                        f"needs its own CoT {part} text")
                self._check(text, allowed, f"cot.{part}.{bench}")
        for name, c in d["conditions"].items():
            unknown_b = set(c.get("benchmarks", [])) - set(d["benchmarks"])
            if not c.get("benchmarks") or unknown_b:
                raise RegistryError(f"condition {name!r}: benchmarks must be a subset of {sorted(d['benchmarks'])}")
            for bench in c["benchmarks"]:
                text = (c.get("instruction") or {}).get(bench)
                if text:
                    self._check(text, set(d["benchmarks"][bench]["placeholders"]), f"conditions.{name}.instruction.{bench}")
        self._check_report_keys()

    def _check_report_keys(self) -> None:
        """``level:`` is a number and ``contrast:`` names defined conditions (other than itself)."""
        for name, c in self.data["conditions"].items():
            level = c.get("level", 0)
            if isinstance(level, bool) or not isinstance(level, (int, float)):
                raise RegistryError(f"{self.path}: conditions.{name}.level is {level!r}; give a number, e.g. level: 1")
            bad = [o for o in self._contrast_of(name) if o not in self.data["conditions"] or o == name]
            if bad:
                raise RegistryError(
                    f"{self.path}: conditions.{name}.contrast names {bad}; give other defined conditions, one of: "
                    f"{', '.join(n for n in self.names if n != name)}"
                )

    def _check(self, template: str, allowed: set[str], where: str) -> None:
        bad = placeholders(template) - allowed
        if bad:
            raise RegistryError(
                f"{self.path}: {where} uses unknown placeholder(s) {sorted(bad)}; allowed: {sorted(allowed)}"
            )

    # ------------------------------------------------------------ building conversations
    def fields(self, benchmark: str, example: dict) -> dict:
        """Placeholder values of one example (its text fields plus bias_type and group), as its task fills them."""
        from .tasks import get_task

        return get_task(benchmark).fields(example, self.data)

    def conversation(
        self, condition: str, benchmark: str, example: dict, history: list[RoundRecord],
        stage: str = "answer", reasoning: str | None = None,
    ) -> Conversation:
        """The conversation for round ``len(history) + 1`` at ``stage``.

        ``reasoning`` is the current round's CoT text, needed at the answer stage of a CoT condition.
        """
        c = self.condition(condition)
        if benchmark not in c["benchmarks"]:
            raise RegistryError(f"condition {condition!r} is not defined for {benchmark!r}")
        d, values = self.data, self.fields(benchmark, example)
        spec = d["benchmarks"][benchmark]
        fill = lambda t: t.format_map(values)  # noqa: E731
        instruction = (c.get("instruction") or {}).get(benchmark)
        cot = bool(c.get("cot", False))
        first = fill(spec["question"]) + (" " + fill(instruction) if instruction else "")
        later = " ".join(d["feedback"].split()) + (" " + fill(instruction) if instruction else "")
        trigger = fill(d["cot"]["trigger"][benchmark])
        prefix = fill(d["cot"]["answer_prefix"][benchmark] if cot else spec["answer_prefix"])
        rounds = list(history) + [RoundRecord(answer="", reasoning=reasoning)]
        turns: list[Turn] = []
        for i, rec in enumerate(rounds):
            current = i == len(rounds) - 1
            turns.append(Turn("user", first if i == 0 else later))
            if cot:
                if current and stage == "reasoning":
                    return Conversation(tuple(turns), trigger, "reasoning")
                if rec.reasoning is None:
                    raise RegistryError(f"condition {condition!r} needs the round's reasoning before it can answer")
                turns.append(Turn("assistant", trigger + rec.reasoning))
                turns.append(Turn("user", fill(d["cot"]["followup"][benchmark])))
            if current:
                return Conversation(tuple(turns), prefix, "answer")
            turns.append(Turn("assistant", prefix + rec.answer))
        raise AssertionError("unreachable")

    def placeholder_history(self, condition: str, rounds_before: int) -> list[RoundRecord]:
        cot = bool(self.condition(condition).get("cot", False))
        return [
            RoundRecord(answer=" " + ANSWER_PLACEHOLDER, reasoning=(" " + REASONING_PLACEHOLDER) if cot else None)
            for _ in range(rounds_before)
        ]
