"""BBQ's released files as one typed table: the jsonl examples, joined with the templates where scoring needs them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .sources import DataError

BBQ_CATEGORIES = (
    "Age", "Disability_status", "Gender_identity", "Nationality", "Physical_appearance",
    "Race_ethnicity", "Race_x_SES", "Race_x_gender", "Religion", "SES", "Sexual_orientation",
)
# The intersectional categories' stereotyped race and second variable are only in their templates
# (../shared/data/bbq/SCORING.md §3); repository paths, pinned in config/sources.yaml like the data files.
BBQ_TEMPLATES = {
    "Race_x_gender": "templates/new_templates - Race_x_gender.csv",
    "Race_x_SES": "templates/new_templates - Race_x_SES.csv",
}


def read_jsonl(path: str | Path) -> list[dict]:
    rows = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({err})") from err
    return rows


def flatten_bbq(records: list[dict]) -> pd.DataFrame:
    """One row per BBQ example with the answer slots' texts and group tags as columns."""
    rows = []
    for r in records:
        info = r["answer_info"]
        meta = r.get("additional_metadata") or {}
        row = {
            "example_id": int(r["example_id"]),
            "category": r["category"],
            "question_index": int(r["question_index"]),
            "question_polarity": r["question_polarity"],
            "context_condition": r["context_condition"],
            "context": r["context"],
            "question": r["question"],
            "label": int(r["label"]),
            "stereotyped_groups": [str(g) for g in meta.get("stereotyped_groups", [])],
            "subcategory": str(meta.get("subcategory", "")),
        }
        for k in range(3):
            row[f"ans{k}"] = r[f"ans{k}"]
            row[f"ans{k}_text"] = info[f"ans{k}"][0]
            row[f"ans{k}_tag"] = info[f"ans{k}"][1]
        rows.append(row)
    return pd.DataFrame(rows)


# The columns of an intersectional template the R metadata script keeps, and its rename of one Category value
_TEMPLATE_COLUMNS = ("Category", "Q_id", "Known_stereotyped_race", "Known_stereotyped_var2",
                     "Relevant_social_values", "Proper_nouns_only")
_TEMPLATE_CATEGORY = {"Gender_x_race": "Race_x_gender"}


def read_bbq_templates(paths: list[str | Path]) -> pd.DataFrame:
    """The intersectional templates' metadata, one row per (category, question_index).

    Columns: category, question_index, stereotyped_race (the template's JSON list, unparsed, as the R script
    reads it), stereotyped_var2 (M/F or lowSES/highSES), proper_nouns_only (True, or None where blank).
    The R script joins every distinct metadata row of a Q_id, so a Q_id with two different rows would score its
    examples twice (SCORING.md §3.1); the pinned templates have none, and such a file is refused.
    """
    frames = []
    for path in paths:
        t = pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = [c for c in _TEMPLATE_COLUMNS if c not in t.columns]
        if missing:
            raise DataError(f"{path}: no column {missing}; expected a BBQ intersectional template "
                            f"({', '.join(BBQ_TEMPLATES.values())}) with columns {list(_TEMPLATE_COLUMNS)}")
        frames.append(t.loc[t["Q_id"].str.strip() != "", list(_TEMPLATE_COLUMNS)].assign(file=str(path)))
    t = pd.concat(frames, ignore_index=True)
    bad_q = t.loc[~t["Q_id"].str.strip().str.fullmatch(r"\d+"), ["file", "Q_id"]]
    if len(bad_q):
        raise DataError(f"{bad_q.iloc[0]['file']}: Q_id {bad_q.iloc[0]['Q_id']!r} is not a question number")
    bad_p = t.loc[~t["Proper_nouns_only"].isin(["TRUE", ""]), ["file", "Q_id", "Proper_nouns_only"]]
    if len(bad_p):
        r = bad_p.iloc[0]
        raise DataError(f"{r['file']}: Q_id {r['Q_id']}: Proper_nouns_only is {r['Proper_nouns_only']!r}, "
                        "expected TRUE or blank (it decides the \"(names)\" split)")
    t = t.drop(columns="file").drop_duplicates()
    out = pd.DataFrame({
        "category": t["Category"].replace(_TEMPLATE_CATEGORY),
        "question_index": t["Q_id"].str.strip().astype(int),
        "stereotyped_race": t["Known_stereotyped_race"],
        "stereotyped_var2": t["Known_stereotyped_var2"],
        "proper_nouns_only": [True if v == "TRUE" else None for v in t["Proper_nouns_only"]],
    })
    twice = out[out.duplicated(["category", "question_index"], keep=False)]
    if len(twice):
        r = twice.iloc[0]
        raise DataError(f"BBQ templates: {r['category']} Q_id {r['question_index']} has {len(twice)} different "
                        "metadata rows; the R scripts would score its examples once per row. Use the pinned templates.")
    return out.reset_index(drop=True)


def bbq_template_paths(templates: str | Path | list[str | Path] | None, jsonl_paths: list[str | Path],
                       categories: list[str]) -> list[Path]:
    """The template files of ``categories``: given as files, or a folder laid out like the BBQ repository's
    templates/; by default the templates/ folder beside the jsonl files' data/ folder (the repository layout,
    which the data mirror and resources/data/bbq/ keep)."""
    if isinstance(templates, (list, tuple)):
        paths = [Path(p) for p in templates]
    else:
        folder = Path(templates) if templates is not None else Path(jsonl_paths[0]).parent.parent / "templates"
        paths = [folder / Path(BBQ_TEMPLATES[c]).name for c in categories]
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        raise DataError(
            f"BBQ categories {categories} need their templates (Known_stereotyped_race/var2 decide target_loc, "
            f"SCORING.md §3), but {', '.join(absent)} is missing. Fetch the pinned files {sorted(BBQ_TEMPLATES.values())} "
            "(they are in config/sources.yaml) or pass their folder to load_bbq(..., templates=DIR)."
        )
    return paths


def join_bbq_templates(df: pd.DataFrame, templates: pd.DataFrame) -> pd.DataFrame:
    """Left join on (category, question_index), as the R metadata script joins; rows of other categories and
    examples whose question has no template row get None (their target_loc is then NaN)."""
    joined = df.merge(templates, on=["category", "question_index"], how="left", validate="many_to_one")
    cols = ["stereotyped_race", "stereotyped_var2", "proper_nouns_only"]
    return joined.assign(**{c: joined[c].astype(object).where(joined[c].notna(), None) for c in cols})


def check_scorable(df: pd.DataFrame) -> None:
    """Stop where a category loses more examples to a missing ``target_loc`` than the BBQ authors do."""
    from ..bbq import AUTHORS_UNSCORABLE, missing_targets

    missing = missing_targets(df)
    bad = missing[missing > AUTHORS_UNSCORABLE]
    if len(bad):
        total = df.groupby("category").size()
        what = "; ".join(f"{c}: {n} of {total[c]} examples" for c, n in bad.items())
        raise DataError(
            f"BBQ target_loc is missing for more examples than the {AUTHORS_UNSCORABLE} the BBQ authors leave "
            f"unscorable in the whole benchmark (SCORING.md §2), and scoring would drop them silently: {what}. "
            "Check that the category's jsonl and (Race_x_gender, Race_x_SES) its template are the pinned files."
        )


def load_bbq(paths: list[str | Path], templates: str | Path | list[str | Path] | None = None) -> pd.DataFrame:
    """Normalised BBQ table with the official ``target_loc`` and ``label_type`` attached.

    ``templates``: the intersectional template files or their folder (see ``bbq_template_paths``); read only
    when Race_x_gender or Race_x_SES is among the data. A category with more than 16 examples without
    ``target_loc`` raises DataError.
    """
    from ..bbq import add_target_loc

    df = pd.concat([flatten_bbq(read_jsonl(p)) for p in paths], ignore_index=True)
    intersectional = [c for c in BBQ_TEMPLATES if c in set(df["category"])]
    if intersectional:
        meta = read_bbq_templates(bbq_template_paths(templates, paths, intersectional))
    else:
        meta = pd.DataFrame(columns=["category", "question_index", "stereotyped_race", "stereotyped_var2",
                                     "proper_nouns_only"]).astype({"question_index": int})
    df = add_target_loc(join_bbq_templates(df, meta))
    check_scorable(df)
    return df
