"""Winogender (Rudinger et al. 2018): which pronoun a model puts in a sentence about an occupation.

The study's number is Pearson rho between P(female pronoun) per occupation and the occupation's share of women
(BLS), across occupations, over the sentences Ganguli et al. (2023) ask about (:func:`counted`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import data, sampling
from .base import Task, space_before

GENDERS = data.GENDERS  # option (slot) order
SENTENCES, STATS = "data/all_sentences.tsv", "data/occupations-stats.tsv"

# Which sentences count (issue 13, item 9). Each occupation has 4 items: the pronoun refers to the occupation
# (Winogender's answer 0, templates.tsv header "occupation(0)") or to the other participant (answer 1), and the other
# participant is named ("the customer") or is "someone". Ganguli et al. ask for the pronoun of the person with the
# occupation; the public reproduction of their prompts keeps exactly one sentence per occupation, the one whose
# pronoun refers to the occupation with the participant named, and skips the "someone" duplicates
# (https://github.com/rgambee/self-correction-reproduction, loaders/winogender.py, WinogenderLoader._entry_to_sample,
# commit 1b33daa74b36bef1003eebc5b5e1867aa737a628). A sentence whose pronoun refers to the customer says nothing about
# which gender the model gives the occupation, so averaging it in dilutes P(female) toward the participant's.
OCCUPATION_REFERENT = 0  # Winogender's `answer` when the pronoun refers to the occupation
UNNAMED_PARTICIPANT = "someone"  # the participant of the duplicate sentences the reproduction skips
ITEMS_PER_OCCUPATION = 1  # the counted sentences of one occupation


def counted(examples: pd.DataFrame) -> pd.Series:
    """Which Winogender items count, as in Ganguli et al.'s setup: the pronoun refers to the occupation and the other
    participant is named (not "someone"). One per occupation."""
    return examples["answer"].eq(OCCUPATION_REFERENT) & examples["participant"].ne(UNNAMED_PARTICIPANT)


class Winogender(Task):
    name = "winogender"
    score_tables = ("outcomes", "occupations", "rho")
    generation_columns = ("item_id", "model", "condition", "round", "option_probs", "option_logprobs", "logprob_slot",
                          "reasoning")
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
        # only the counted sentences are asked: the others would cost generations (CoT reasoning, rounds) and are
        # never scored. Every occupation keeps its one sentence, so the occupations drawn are those of the full table.
        picked = sampling.sample_winogender(table[counted(table)], params["winogender_occupations"], params["seed"])
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
        from ..formats import with_article

        return dict(example) | {
            "bias_type": texts.get("bias_types", {}).get("winogender", "gender"),
            "group": texts.get("group_labels", {}).get("winogender", "men and women"),
            # "an accountant", "a hygienist": the occupation as an instruction names it
            "occupation_with_article": with_article(example["occupation"]),
        }

    def options(self, example: dict, prefix: str, spec: dict) -> list[str]:
        return [space_before(prefix) + example[f"pronoun_{g}"] for g in GENDERS]

    def previous_answer(self, example: dict, prefix: str, spec: dict, generated: str | None, slot: int) -> str:
        if generated is not None:
            return generated
        gender = GENDERS[slot]  # the pronoun with its own rest of the sentence: "they were", not "they was/were"
        return space_before(prefix) + example[f"pronoun_{gender}"] + example[f"rest_{gender}"]

    # ------------------------------------------------------------ scores
    def score(self, generations: pd.DataFrame, examples: pd.DataFrame, bootstrap: dict, seed: int) -> dict[str, pd.DataFrame]:
        from .. import metrics

        # every generation row stays in the outcomes, marked; only the counted ones make P(female) per occupation
        # (the sample holds only those, but generations of an older, fuller sample must not be averaged in)
        items = metrics.winogender_items(generations, examples)
        items = items.assign(counted=counted(items).to_numpy())
        occupations = metrics.occupation_table(items[items["counted"]])
        rho = metrics.rho_cis(occupations, metrics.winogender_rho(occupations), bootstrap["n_resamples"],
                              bootstrap["confidence"], seed)
        return {"outcomes": items.drop(columns=["prompt"], errors="ignore"), "occupations": occupations, "rho": rho}

    # ------------------------------------------------------------ methods page
    def methods_notes(self) -> list[str]:
        """One sentence per choice of this task that the report's methods page prints."""
        return [
            "Winogender: only the sentence whose pronoun refers to the occupation, with the other participant named "
            "(not 'someone'), is asked and scored, one per occupation, as in the public reproduction of Ganguli et "
            "al.'s prompts (github.com/rgambee/self-correction-reproduction, loaders/winogender.py); rho is between "
            "its P(female) and the BLS % female, over occupations.",
            "Winogender: where the neutral sentence changes the verb ('they were' for 'he was'), the blank shows "
            "both forms ('_ was/were') so that no candidate pronoun is offered a verb that disagrees with it; "
            "P(she/he/they) is read at the blank, before the verb.",
            "Winogender chain of thought: after the reasoning, the follow-up turn asks for the sentence written out "
            "with the blank filled (cot.followup.winogender in config/conditions.yaml, our wording), not for an "
            "answer choice as in BBQ; the assistant turn then continues the sentence up to the blank.",
        ]
