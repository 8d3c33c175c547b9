"""BBQ (Parrish et al. 2022): multiple-choice questions about social groups, scored with the official bias score.

The score itself is :mod:`selfcorrect.bbq` (SCORING.md rule by rule); answers are parsed by :mod:`selfcorrect.parsing`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import data, sampling
from ..parsing import parse_bbq_answer
from .base import Task, space_before

# one per category x context_condition x question_polarity
CELLS_PER_CATEGORY = 4


class BBQ(Task):
    name = "bbq"
    score_tables = ("outcomes", "cells", "differences")
    # what the score and the figures read: the answers, and the texts shown in figure 7 and the outcomes table
    generation_columns = ("item_id", "model", "condition", "round", "generate_slot", "parse_status", "logprob_slot",
                          "raw_text", "reasoning")
    mean_prompt_tokens = 105

    def source_files(self, config: dict, sources: dict) -> list[str]:
        # the intersectional categories' target_loc needs their templates (SCORING.md §3)
        templates = [data.BBQ_TEMPLATES[c] for c in config["categories"] if c in data.BBQ_TEMPLATES]
        return [f"data/{c}.jsonl" for c in config["categories"]] + templates

    def load(self, files: list[Path]) -> pd.DataFrame:
        return data.load_bbq([f for f in files if f.suffix == ".jsonl"], [f for f in files if f.suffix == ".csv"])

    def mirror_hint(self, mirror: Path | None = None) -> str:
        have = sorted(p.stem for p in (Path(mirror) / "bbq" / "data").glob("*.jsonl")) if mirror else []
        narrow = f"e.g. --config 'categories=[{','.join(have)}]' (the categories the mirror has)" if have else \
            "to the categories your mirror has"
        return f" Narrow the run with the `categories:` config key, {narrow}, or drop data_mirror to download them."

    def sample_params(self, config: dict) -> dict:
        return {"categories": list(config["categories"]), "sample_per_cell": config["sample_per_cell"],
                "seed": config["seed"]}

    def sample(self, table: pd.DataFrame, params: dict) -> pd.DataFrame:
        table = table[table["category"].isin(params["categories"])]
        picked = sampling.sample_bbq(table, params["sample_per_cell"], params["seed"])
        return picked.assign(item_id=self.item_ids(picked))

    def item_ids(self, examples: pd.DataFrame) -> list[str]:
        # example_id restarts at 0 in every category file
        return [f"{c}:{i}" for c, i in zip(examples["category"], examples["example_id"])]

    def sample_size(self, config: dict, sources: dict) -> int:
        counts, per_cell = sources["bbq"]["examples"], config["sample_per_cell"] or 0
        return sum(min(counts[c], CELLS_PER_CATEGORY * per_cell) if per_cell else counts[c] for c in config["categories"])

    def lookup(self, data_root: Path, example_id: str, category: str | None = None) -> dict:
        if not category:
            raise ValueError("--category is required for BBQ (e.g. --category Age)")
        path = Path(data_root) / "bbq" / "data" / f"{category}.jsonl"
        if not path.exists():
            have = ", ".join(sorted(p.stem for p in path.parent.glob("*.jsonl")))
            raise ValueError(f"{path} does not exist; categories available there: {have}")
        try:
            wanted = int(example_id)
        except ValueError:
            raise ValueError(f"--example-id {example_id!r}: a BBQ example_id is a whole number, the example_id "
                             "of the category's jsonl (e.g. --example-id 0)") from None
        hit = data.load_bbq([path]).query("example_id == @wanted")
        if hit.empty:
            raise ValueError(f"no bbq example with id {example_id!r} in category {category}")
        return hit.iloc[0].to_dict()

    # ------------------------------------------------------------ prompts
    def fields(self, example: dict, texts: dict) -> dict:
        from ..formats import group_phrase

        labels, bias_types = texts.get("group_labels", {}), texts.get("bias_types", {})
        category = example["category"]
        tags = [str(g) for g in example.get("stereotyped_groups", [])]
        # Race_x_gender and Race_x_SES: the template's second variable (Known_stereotyped_var2: F/M, lowSES/highSES,
        # SCORING.md section 3) is part of the stereotyped group, "Black women" rather than "Black people"
        var2 = example.get("stereotyped_var2")
        if isinstance(var2, str) and var2.strip():
            tags.append(var2.strip())
        return dict(example) | {
            "bias_type": bias_types.get(category, category.replace("_", " ").lower()),
            # in plain English from group_labels (config/conditions.yaml), never the raw tags ("obese", "nonOld")
            "group": group_phrase(tags, labels, f"BBQ {category} example {example.get('example_id')}"),
        }

    def options(self, example: dict, prefix: str, spec: dict) -> list[str]:
        return [space_before(prefix) + o for o in spec["scored_options"]]

    def previous_answer(self, example: dict, prefix: str, spec: dict, generated: str | None, slot: int) -> str:
        if generated is not None:
            return generated
        return f"{space_before(prefix)}{spec['options'][slot]} {example[f'ans{slot}']}."

    def methods_notes(self) -> list[str]:
        return [
            "BBQ scoring: accuracy and the bias score follow the BBQ authors' analysis scripts rule by rule "
            "(../shared/data/bbq/SCORING.md; src/selfcorrect/bbq.py): examples without a target answer are dropped; "
            "'X' and 'X (names)' are separate categories; the ambiguous score is scaled by (1 - accuracy).",
            "BBQ intersectional categories (Race_x_gender, Race_x_SES): the stereotyped group comes from the templates "
            "(Known_stereotyped_race / Known_stereotyped_var2), joined on category and question_index as the authors' "
            "R script does, its quirks included; a category with more than 16 examples without a target stops the run.",
            "BBQ answers (generate mode) are parsed in this order (src/selfcorrect/parsing.py): an echo of the option "
            "list is 'ambiguous'; in the first sentence that names an option (cut at the first connective after it, "
            "e.g. 'because'), one option named by its letter or its text (BBQ's ten UNKNOWN expressions name the "
            "unknown option) is the answer; two different options named is 'ambiguous'; else a refusal phrase is "
            "'refusal', anything else 'unparsed'. Ambiguous, refused and unparsed answers are dropped and counted, "
            "never guessed. Logprob mode takes the option letter with the highest probability after the answer prefix.",
        ]

    # ------------------------------------------------------------ answers and scores
    def parses_answers(self, answer_modes) -> bool:
        return "generate" in answer_modes

    def answer_columns(self, example: dict, text: str | None) -> dict:
        if text is None:  # logprob mode only: nothing generated, nothing parsed
            return {"generate_slot": np.nan, "parse_status": None}
        parsed = parse_bbq_answer(text, [example["ans0"], example["ans1"], example["ans2"]])
        return {"generate_slot": np.nan if parsed.slot is None else float(parsed.slot), "parse_status": parsed.status}

    def score(self, generations: pd.DataFrame, examples: pd.DataFrame, bootstrap: dict, seed: int) -> dict[str, pd.DataFrame]:
        from .. import metrics
        from ..conditions import Registry

        items = metrics.bbq_items(generations, examples)
        resamples, confidence = bootstrap["n_resamples"], bootstrap["confidence"]
        cells = metrics.bbq_cis(items, metrics.bbq_cells(items), resamples, confidence, seed)
        return {
            "outcomes": items.drop(columns=["prompt"], errors="ignore"),
            "cells": cells,
            # Table 3's pairs: each condition's `contrast:` in config/conditions.yaml
            "differences": metrics.condition_differences(items, resamples, confidence, seed,
                                                         pairs=Registry.load().contrasts()),
        }
