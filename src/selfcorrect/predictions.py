"""Score any jsonl of BBQ predictions (e.g. UnifiedQA's) the official way; behind `selfcorrect score-bbq`."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import bbq, data

_LETTER = re.compile(r"^\s*\(?\s*([abcABC])\s*\)?\s*\.?\s*$")
JOIN_KEYS = ["example_id", "category", "question_index"]


def _slot_from_letter_or_index(value):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value in (0, 1, 2):
        return float(value)
    m = _LETTER.match(str(value)) if isinstance(value, str) else None
    return float("abc".index(m.group(1).lower())) if m else None


def read_predictions(paths: list[str], field: str) -> pd.DataFrame:
    records = []
    for path in paths:
        for lineno, rec in enumerate(data.read_jsonl(path), 1):
            if field not in rec:
                raise ValueError(f"{path}:{lineno}: no field {field!r}; fields there: {', '.join(sorted(rec))}")
            records.append(rec)
    flat = data.flatten_bbq(records)
    return flat.assign(prediction=[r[field] for r in records])


def predicted_slots(df: pd.DataFrame) -> pd.Series:
    """A letter (a/b/c, "(b)") or index picks its slot; free text goes through SCORING.md §2."""
    letters = df["prediction"].map(_slot_from_letter_or_index)
    text = bbq.match_predictions(df.assign(prediction=df["prediction"].astype(str)), "prediction")
    return letters.astype("float64").fillna(text)


def with_metadata(preds: pd.DataFrame, metadata_dir: Path | None) -> pd.DataFrame:
    """The released data files' metadata (tags, stereotyped groups), joined as the R scripts do.

    Without them, the predictions file's own metadata is used.
    """
    if metadata_dir is None:
        return bbq.add_target_loc(preds)
    paths = [Path(metadata_dir) / f"{c}.jsonl" for c in sorted(preds["category"].unique())]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"BBQ metadata files missing: {', '.join(missing)}")
    meta = data.load_bbq(paths)
    merged = preds[JOIN_KEYS + ["prediction"]].merge(meta, on=JOIN_KEYS, how="left", validate="many_to_one")
    if merged["context_condition"].isna().any():
        raise ValueError(f"{int(merged['context_condition'].isna().sum())} predictions match no example of the released data")
    return merged


def score_prediction_files(paths, field, metadata_dir=None, ambiguous_only=False, split_names=True) -> pd.DataFrame:
    df = with_metadata(read_predictions(paths, field), metadata_dir)
    if ambiguous_only:
        df = df[df["context_condition"] == "ambig"].reset_index(drop=True)
    table = bbq.score_frame(df, predicted_slots(df), split_names=split_names)
    cols = ["category", "context_condition", "n_scored", "accuracy", "bias_score", "n_dropped", "n_non_unknown", "n_biased"]
    return table[cols]
