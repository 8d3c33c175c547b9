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


# what flatten_bbq reads from each record (the released data's fields)
BBQ_FIELDS = ("example_id", "category", "question_index", "question_polarity", "context_condition", "context",
              "question", "label", "answer_info", "ans0", "ans1", "ans2")


class PredictionsError(ValueError):
    """A predictions file cannot be scored as given; the message names the file and what to fix.

    ``argument`` is the command-line option of `selfcorrect score-bbq` that holds the bad value.
    """

    def __init__(self, message: str, argument: str = "--predictions"):
        super().__init__(message)
        self.argument = argument


def _check_record(path, number: int, rec: dict, field: str) -> None:
    if field not in rec:
        raise PredictionsError(f"{path}:{number}: no field {field!r}; fields there: {', '.join(sorted(rec))}",
                               argument="--prediction-field")
    missing = [f for f in BBQ_FIELDS if f not in rec]
    if missing:
        raise PredictionsError(f"{path}:{number}: not a BBQ example, it lacks {', '.join(missing)} "
                               "(keep the released data's fields beside the prediction)")


def duplicate_predictions(sources: list[tuple[str, int]], keys: list[tuple[str, int]]) -> list[str]:
    """One entry per prediction of an example that was already predicted: ``file:record`` of both, and the example.

    ``sources`` are (file, record number) and ``keys`` (category, example_id) of each prediction, in reading order.
    An example counted twice would weigh twice in accuracy and bias score.
    """
    first: dict[tuple[str, int], tuple[str, int]] = {}
    lines = []
    for (path, number), key in zip(sources, keys):
        if key in first:
            p0, n0 = first[key]
            lines.append(f"{key[0]} example_id {key[1]}: {path}:{number} repeats {p0}:{n0}")
        else:
            first[key] = (path, number)
    return lines


def read_predictions(paths: list[str], field: str) -> pd.DataFrame:
    """The predictions of ``paths`` flattened like the released data; refuses empty files and repeated examples."""
    given_twice = sorted({str(p) for p in paths if sum(Path(q).resolve() == Path(p).resolve() for q in paths) > 1})
    if given_twice:
        raise PredictionsError(f"{', '.join(given_twice)} given more than once; each example must be scored once")
    records, sources = [], []
    for path in paths:
        if Path(path).is_dir():
            raise PredictionsError(f"{path} is a directory; pass the jsonl files in it (e.g. {path}/*.jsonl)")
        if not Path(path).is_file():
            raise PredictionsError(f"{path} does not exist")
        recs = data.read_jsonl(path)
        if not recs:
            raise PredictionsError(f"{path} holds no predictions (no records in it)")
        for number, rec in enumerate(recs, 1):
            _check_record(path, number, rec, field)
            records.append(rec)
            sources.append((str(path), number))
    repeated = duplicate_predictions(sources, [(str(r["category"]), int(r["example_id"])) for r in records])
    if repeated:
        more = f"; and {len(repeated) - 5} more" if len(repeated) > 5 else ""
        raise PredictionsError(f"{len(repeated)} predictions repeat an example already predicted (file:N is the N-th "
                               f"record of the file; each example must be scored once): {'; '.join(repeated[:5])}{more}")
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
