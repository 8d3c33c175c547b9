"""Winogender's released files as one typed table: each item's sentence with its pronoun blanked, the three
variants' pronouns, and the occupation's BLS share of women."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from .sources import DataError

GENDERS = ("female", "male", "neutral")  # Winogender's pronoun variants, in the order of the scored options
_WORD = re.compile(r"^([A-Za-z]+)(\W*)$")  # a word and its trailing punctuation ("him." -> "him", ".")


def _alternatives(forms: list[str], where: str) -> str:
    """One word as the blank shows it: the word itself where every variant has it, else each variant's form once,
    joined by "/" ("was/were"), punctuation kept once after them."""
    distinct = list(dict.fromkeys(forms))
    if len(distinct) == 1:
        return distinct[0]
    parts = [_WORD.match(f) for f in distinct]
    if not all(parts) or len({m.group(2) for m in parts}) != 1:
        raise DataError(f"Winogender {where}: cannot show the word forms {distinct} as alternatives of one word")
    return "/".join(m.group(1) for m in parts) + parts[0].group(2)


def _blank_out(sentences: dict[str, str]) -> tuple[str, str, dict[str, str], dict[str, str]]:
    """From the female/male/neutral instantiations of one item: the blanked sentence, the text before the blank,
    each variant's pronoun and each variant's own rest of the sentence after its pronoun.

    The male and female sentences differ only in the pronoun; the neutral one may also change a later word to agree
    with "they" ("he was" / "they were", 34 of the 240 items). The blank must not favour one candidate by its verb, so
    a word the variants write differently is shown with every form, in the order of GENDERS ("_ was/were"): each
    candidate pronoun has its agreeing form on offer. The pronoun is scored at the blank, before those words; a
    previous answer is written with the variant's own rest of the sentence (``rests``).
    """
    words = {g: sentences[g].split(" ") for g in GENDERS}
    if len({len(w) for w in words.values()}) != 1:
        raise DataError(f"Winogender sentences differ in length: {sentences}")
    diff = [i for i, (m, f) in enumerate(zip(words["male"], words["female"])) if m != f]
    if len(diff) != 1:
        raise DataError(f"Winogender male/female sentences differ in {len(diff)} words, expected 1: {sentences}")
    i = diff[0]
    if words["neutral"][:i] != words["male"][:i]:
        raise DataError(f"Winogender neutral sentence differs before the pronoun, so no common prefix: {sentences}")
    pronouns, rests = {}, {}
    for g, w in words.items():
        m = _WORD.match(w[i])
        if not m:
            raise DataError(f"Winogender {g} pronoun slot {w[i]!r} is not a word (with punctuation): {sentences}")
        pronouns[g] = m.group(1)
        rests[g] = m.group(2) + "".join(" " + x for x in w[i + 1:])
    where = sentences["male"]
    slot = _alternatives([_WORD.match(words[g][i]).group(2) for g in GENDERS], where)
    after = [_alternatives([words[g][k] for g in GENDERS], where) for k in range(i + 1, len(words["male"]))]
    prefix = " ".join(words["male"][:i])
    blank = " ".join(words["male"][:i] + ["_" + slot] + after)
    return blank, prefix, pronouns, rests


def load_winogender(sentences_tsv: str | Path, stats_tsv: str | Path) -> pd.DataFrame:
    """One row per Winogender item (occupation × participant × answer) with its pronoun slot blanked (see
    :func:`_blank_out`): ``sentence_blank``, ``sentence_prefix`` (the text before the blank), ``pronoun_{g}`` and
    ``rest_{g}`` (variant g's own words after its pronoun) for g in GENDERS. ``answer`` is Winogender's: 0 when the
    pronoun refers to the occupation, 1 when it refers to the other participant (templates.tsv's header)."""
    sents = pd.read_csv(sentences_tsv, sep="\t")
    stats = pd.read_csv(stats_tsv, sep="\t")
    parts = sents["sentid"].str.replace(".txt", "", regex=False).str.split(".", expand=True)
    sents = sents.assign(occupation=parts[0], participant=parts[1], answer=parts[2].astype(int), gender=parts[3])
    rows = []
    for (occ, part, ans), grp in sents.groupby(["occupation", "participant", "answer"], sort=True):
        by_gender = dict(zip(grp["gender"], grp["sentence"]))
        if set(by_gender) != {"male", "female", "neutral"}:
            raise DataError(f"Winogender item {occ}.{part}.{ans} lacks a gender variant: {sorted(by_gender)}")
        blank, prefix, pronouns, rests = _blank_out(by_gender)
        rows.append({
            "example_id": f"{occ}.{part}.{ans}",
            "occupation": occ,
            "participant": part,
            "answer": int(ans),
            "sentence_blank": blank,
            "sentence_prefix": prefix,
            "pronoun_female": pronouns["female"],
            "pronoun_male": pronouns["male"],
            "pronoun_neutral": pronouns["neutral"],
            **{f"rest_{g}": rests[g] for g in GENDERS},
        })
    items = pd.DataFrame(rows)
    missing = set(items["occupation"]) - set(stats["occupation"])
    if missing:
        raise DataError(f"occupations without BLS statistics: {sorted(missing)}")
    return items.merge(stats[["occupation", "bls_pct_female", "bergsma_pct_female"]], on="occupation", how="left")
