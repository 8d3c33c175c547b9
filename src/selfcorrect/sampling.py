"""Deterministic, seeded subsamples of the benchmarks: whole BBQ contexts, whole Winogender occupations."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

BBQ_CELL = ["category", "context_condition", "question_polarity"]
# One BBQ context: the BBQ authors' generator (create_templating_dicts in utils.py, called by both
# generate_from_template_*.py scripts) writes the four questions of one filled template as consecutive example_ids
# nn..nn+3 and then adds 4 to nn: ambiguous × negative, disambiguated × negative, ambiguous × non-negative,
# disambiguated × non-negative, all with the same three answers. So example_id // 4 names the context within a
# category.
QUESTIONS_PER_CONTEXT = 4
CONTEXT_CELLS = frozenset((c, p) for c in ("ambig", "disambig") for p in ("neg", "nonneg"))


def stratified_sample(df: pd.DataFrame, by: list[str], per_cell: int | None, seed: int) -> pd.DataFrame:
    """``per_cell`` rows of every cell of ``by`` (all rows of smaller cells); 0 or None keeps all.

    The draw depends only on the seed and the table's content order, so a rerun picks the same rows.
    """
    if not per_cell:
        return df.reset_index(drop=True)
    picked = [
        grp.sample(n=min(per_cell, len(grp)), random_state=seed)
        for _, grp in df.groupby(by, sort=True)
    ]
    return pd.concat(picked).sort_index().reset_index(drop=True)


def bbq_context_ids(df: pd.DataFrame) -> pd.Series:
    """The BBQ context each example belongs to, e.g. "Age:ctx3" for example_ids 12..15 of Age.

    Checked on the rows given: within a context no (context_condition, question_polarity) repeats, and all questions
    have the same question_index and the same three answers. Verified on all 11,956 rows of the six released files in
    ../shared/data (tests/test_sampling.py); a table that breaks it (renumbered example_ids) stops here.
    """
    ids = df["category"].astype(str) + ":ctx" + (df["example_id"].astype("int64") // QUESTIONS_PER_CONTEXT).astype(str)
    ids = pd.Series(ids.to_numpy(dtype=object), index=df.index, name="context_id")
    _check_contexts(df, ids)
    return ids


def _check_contexts(df: pd.DataFrame, ids: pd.Series) -> None:
    checks = {"context_id": ids.to_numpy()}
    answers = [c for c in ("ans0", "ans1", "ans2") if c in df]
    if answers:
        # the same three answers, in any order (the order is the example's, and is not checked)
        checks["answer_set"] = ["\x00".join(sorted(a)) for a in zip(*(df[c].astype(str) for c in answers))]
    if "question_index" in df:
        checks["question_index"] = df["question_index"].astype(str).to_numpy()
    frame = pd.DataFrame(checks | {"cell": list(zip(df["context_condition"], df["question_polarity"]))})
    repeated = frame.loc[frame.duplicated(["context_id", "cell"]), "context_id"].unique()
    problems = [f"{c}: a (context_condition, question_polarity) cell appears twice" for c in repeated]
    g = frame.groupby("context_id", sort=False)
    for col in ("answer_set", "question_index"):
        if col in frame:
            varies = g[col].nunique() > 1
            problems += [f"{c}: its questions differ in {col}" for c in varies[varies].index]
    odd = set(frame["cell"]) - CONTEXT_CELLS
    if odd:
        problems.append(f"unknown (context_condition, question_polarity) values {sorted(odd)}")
    if problems:
        raise ValueError(
            "BBQ rows do not form contexts of four consecutive example_ids (example_id // 4), as the released files "
            f"do: {'; '.join(problems[:5])}{' ...' if len(problems) > 5 else ''}. Keep the released example_ids "
            "(data.load_bbq does) instead of renumbering them."
        )


def _category_rng(seed: int, category: str) -> np.random.Generator:
    # one stream per category, so adding or removing a category leaves the others' draws unchanged
    return np.random.default_rng([int(seed), zlib.crc32(category.encode("utf-8"))])


def sample_bbq(df: pd.DataFrame, per_cell: int | None, seed: int) -> pd.DataFrame:
    """Whole contexts: ``per_cell`` contexts of every category, so every category × context_condition ×
    question_polarity cell holds ``per_cell`` examples (each context gives one to each of its four cells).

    Only complete contexts (all four questions present) are drawn; a category with fewer keeps all of them. The
    draw depends on the seed and the table's content, not on its row order. The table comes back in its own row
    order with a ``context_id`` column (see ``bbq_context_ids``); 0 or None keeps every example.
    """
    ctx = bbq_context_ids(df)
    out = df.assign(context_id=ctx)
    if not per_cell:
        return out.reset_index(drop=True)
    contexts = pd.DataFrame({"category": df["category"].to_numpy(), "context_id": ctx.to_numpy(),
                             "number": df["example_id"].to_numpy(dtype="int64") // QUESTIONS_PER_CONTEXT})
    sizes = contexts.groupby(["category", "context_id", "number"]).size().rename("n").reset_index()
    complete = sizes[sizes["n"] == QUESTIONS_PER_CONTEXT]
    keep = []
    for category, grp in complete.groupby("category", sort=True):
        # in example_id order, so the candidates' order is the data's, whatever the table's row order
        candidates = grp.sort_values("number")["context_id"].to_numpy()
        n = min(int(per_cell), len(candidates))
        keep.extend(candidates[_category_rng(seed, str(category)).choice(len(candidates), size=n, replace=False)])
    return out[out["context_id"].isin(set(keep))].reset_index(drop=True)


def sample_winogender(df: pd.DataFrame, occupations: int | None, seed: int) -> pd.DataFrame:
    """All items of ``occupations`` occupations drawn at random (ρ is over occupations); 0 keeps all."""
    if not occupations:
        return df.reset_index(drop=True)
    occ = pd.Series(sorted(df["occupation"].unique())).sample(n=min(occupations, df["occupation"].nunique()), random_state=seed)
    return df[df["occupation"].isin(set(occ))].reset_index(drop=True)
