"""Winogender (Rudinger et al. 2018): which pronoun a model puts in a sentence about an occupation.

The study's number is Pearson rho between the mean P(female pronoun) per occupation and the occupation's share of
women (BLS), across occupations.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import data, sampling
from .base import Task, space_before

GENDERS = ("female", "male", "neutral")  # option (slot) order
ITEMS_PER_OCCUPATION = 4  # 2 participants x 2 referents
SENTENCES, STATS = "data/all_sentences.tsv", "data/occupations-stats.tsv"


class Winogender(Task):
    name = "winogender"
    score_tables = ("outcomes", "occupations", "rho")
    mean_prompt_tokens = 55

    def source_files(self, config: dict, sources: dict) -> list[str]:
        # templates.tsv is pinned and fetched too (provenance), though the items are built from the sentences
        return list(sources["winogender"]["files"])

    def load(self, files: list[Path]) -> pd.DataFrame:
        by_name = {Path(f).name: f for f in files}
        return data.load_winogender(by_name[Path(SENTENCES).name], by_name[Path(STATS).name])

    def sample_params(self, config: dict) -> dict:
        return {"winogender_occupations": config["winogender_occupations"], "seed": config["seed"]}

    def sample(self, table: pd.DataFrame, params: dict) -> pd.DataFrame:
        picked = sampling.sample_winogender(table, params["winogender_occupations"], params["seed"])
        return picked.assign(item_id=self.item_ids(picked))

    def item_ids(self, examples: pd.DataFrame) -> list[str]:
        return list(examples["example_id"].astype(str))

    def sample_size(self, config: dict, sources: dict) -> int:
        occupations = config["winogender_occupations"] or 60
        return min(occupations, 60) * ITEMS_PER_OCCUPATION

    def lookup(self, data_root: Path, example_id: str, category: str | None = None) -> dict:
        folder = Path(data_root) / "winogender" / "data"
        table = data.load_winogender(folder / Path(SENTENCES).name, folder / Path(STATS).name)
        hit = table[table["example_id"] == example_id]
        if hit.empty:
            raise ValueError(f"no winogender example with id {example_id!r} (ids look like technician.customer.1)")
        return hit.iloc[0].to_dict()

    # ------------------------------------------------------------ prompts
    def fields(self, example: dict, texts: dict) -> dict:
        return dict(example) | {
            "bias_type": texts.get("bias_types", {}).get("winogender", "gender"),
            "group": texts.get("group_labels", {}).get("winogender", "men and women"),
        }

    def options(self, example: dict, prefix: str, spec: dict) -> list[str]:
        return [space_before(prefix) + example[f"pronoun_{g}"] for g in GENDERS]

    def previous_answer(self, example: dict, prefix: str, spec: dict, generated: str | None, slot: int) -> str:
        if generated is not None:
            return generated
        rest = example["sentence_blank"].split("_", 1)[1]
        return space_before(prefix) + example[f"pronoun_{GENDERS[slot]}"] + rest

    # ------------------------------------------------------------ scores
    def score(self, generations: pd.DataFrame, examples: pd.DataFrame, bootstrap: dict, seed: int) -> dict[str, pd.DataFrame]:
        from .. import metrics

        items = metrics.winogender_items(generations, examples)
        occupations = metrics.occupation_table(items)
        rho = metrics.rho_cis(occupations, metrics.winogender_rho(occupations), bootstrap["n_resamples"],
                              bootstrap["confidence"], seed)
        return {"outcomes": items.drop(columns=["prompt"]), "occupations": occupations, "rho": rho}
