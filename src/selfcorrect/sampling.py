"""Deterministic, seeded, stratified subsamples of the benchmarks."""

from __future__ import annotations

import pandas as pd

BBQ_CELL = ["category", "context_condition", "question_polarity"]


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


def sample_bbq(df: pd.DataFrame, per_cell: int | None, seed: int) -> pd.DataFrame:
    return stratified_sample(df, BBQ_CELL, per_cell, seed)


def sample_winogender(df: pd.DataFrame, occupations: int | None, seed: int) -> pd.DataFrame:
    """All items of ``occupations`` occupations drawn at random (ρ is over occupations); 0 keeps all."""
    if not occupations:
        return df.reset_index(drop=True)
    occ = pd.Series(sorted(df["occupation"].unique())).sample(n=min(occupations, df["occupation"].nunique()), random_state=seed)
    return df[df["occupation"].isin(set(occ))].reset_index(drop=True)
