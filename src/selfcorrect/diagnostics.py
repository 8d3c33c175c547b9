"""What a BBQ bias score alone does not say, read from the outcomes table of the score step.

``results/scores/bbq_outcomes.parquet`` has one row per generation row per answer mode, with ``parse_status``
(generate mode), ``pred`` (the chosen slot, NaN where none was read), ``kept`` (scored) and the example's
columns. From it: how many answers were dropped and why (parse statuses), whether a model answers by position
(the same letter whatever the question), and how many examples and contexts a number rests on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import bbq, parsing

RUN = ["model", "condition", "round"]
RUN_MODE = RUN + ["answer_mode"]
LETTERS = "abc"
# a slot was read, but SCORING.md §3.7 drops the example: no single slot holds the stereotyped group
NO_TARGET = "no target"
# the BBQ generator writes the four questions of one context (ambiguous/disambiguated x negative/non-negative)
# as example_ids 4k..4k+3 of its category; the score step's context_id uses the same rule where it is present
QUESTIONS_PER_CONTEXT = 4


def context_ids(items: pd.DataFrame) -> pd.Series:
    """The BBQ context of each row: the table's ``context_id`` where present, else category + example_id // 4."""
    if "context_id" in items:
        return items["context_id"].astype(str)
    category = items["category"].astype(str).str.replace(r" \(names\)$", "", regex=True)
    return category + ":ctx" + (items["example_id"].astype("int64") // QUESTIONS_PER_CONTEXT).astype(str)


def span(values) -> str:
    """"12" when every value is 12, else "10-12"."""
    values = pd.Series(values).dropna()
    if values.empty:
        return "0"
    lo, hi = int(values.min()), int(values.max())
    return str(lo) if lo == hi else f"{lo}–{hi}"


def _pct(share: float) -> str:
    if share > 0 and share < 0.005:
        return "<1%"
    return f"{100 * share:.0f}%"


# ---------------------------------------------------------------- sample sizes

def sample_size_line(items: pd.DataFrame, by: list[str] | None = None, unit: str = "point") -> str:
    """How many examples and BBQ contexts each plotted number rests on, and how many of them were scored.

    ``items``: the outcomes rows of the plotted runs (one answer mode); a number is one (model, condition,
    round, context_condition) plus ``by`` (e.g. category).
    """
    if items.empty:
        return "n: no answers"
    keys = RUN_MODE + ["context_condition"] + list(by or [])
    per = (items.assign(context=context_ids(items)).groupby(keys, dropna=False)
           .agg(examples=("item_id", "nunique"), contexts=("context", "nunique"), scored=("kept", "sum")))
    return (f"n per {unit}: {span(per['examples'])} examples from {span(per['contexts'])} BBQ contexts, "
            f"{span(per['scored'])} of them scored")


# ---------------------------------------------------------------- parse statuses (generate mode)

def drop_reasons(items: pd.DataFrame) -> pd.Series:
    """Why each row is not scored: its parse status where no slot was read, NO_TARGET where a slot was read but
    the example has no target (SCORING.md §3.7); "" where the row is scored."""
    reason = np.where(items["pred"].isna(), items["parse_status"].astype(object).fillna("unparsed").astype(str),
                      NO_TARGET)
    return pd.Series(np.where(items["kept"].to_numpy(bool), "", reason), index=items.index)


def _statuses(found) -> list[str]:
    """parsing.STATUSES in the parser's order, then any other status the table holds."""
    known = list(parsing.STATUSES)
    return known + sorted(set(found) - set(known))


def parse_status_table(items: pd.DataFrame) -> pd.DataFrame:
    """Generate-mode answers per (model, condition, round): how many got each parse status, and how many were
    dropped from the scores (no slot read, or no target), pooled over categories and contexts."""
    gen = items[items["answer_mode"] == "generate"]
    statuses = _statuses(gen["parse_status"].dropna().unique())
    cols = RUN + ["n_answers"] + [f"n_{s}" for s in statuses] + ["n_no_target", "n_dropped", "share_dropped"]
    if gen.empty:
        return pd.DataFrame(columns=cols)
    counts = pd.crosstab([gen[k] for k in RUN], gen["parse_status"]).reindex(columns=statuses, fill_value=0)
    counts.columns = [f"n_{s}" for s in statuses]
    reason = drop_reasons(gen)
    totals = gen.assign(no_target=reason.eq(NO_TARGET), dropped=reason.ne("")).groupby(RUN).agg(
        n_answers=("item_id", "size"), n_no_target=("no_target", "sum"), n_dropped=("dropped", "sum"))
    out = totals.join(counts).reset_index()
    out["share_dropped"] = out["n_dropped"] / out["n_answers"]
    return out[cols].sort_values(RUN, ignore_index=True)


def dropped_line(items: pd.DataFrame) -> str:
    """One line for a generate-mode figure: the share of its answers dropped, by reason, and by condition where
    the conditions differ (a drop confined to one condition biases the comparison)."""
    gen = items[items["answer_mode"] == "generate"]
    if gen.empty:
        return ""
    reason = drop_reasons(gen)
    dropped = reason.ne("")
    line = f"generate mode: {_pct(dropped.mean())} of {len(gen)} answers dropped"
    if dropped.any():
        counts = reason[dropped].value_counts()
        line += " (" + ", ".join(f"{r} {_pct(c / len(gen))}" for r, c in counts.items()) + ")"
    by_condition = dropped.groupby(gen["condition"], sort=False).mean()
    if len(by_condition) > 1 and by_condition.nunique() > 1:
        line += "; by condition: " + ", ".join(f"{c} {_pct(s)}" for c, s in by_condition.items())
    return line


# ---------------------------------------------------------------- position bias

def polarity_pairs(items: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, answer mode, context, context_condition) whose negative and non-negative questions both
    got a slot: ``pred_neg``, ``pred_nonneg`` and whether each is the UNKNOWN option.

    The two questions of a pair share the category, the context text and the three options in the same order
    (checked on all 11,956 rows of the six released files, tests/test_report.py), so the same letter is the same
    option.
    """
    answered = items[items["pred"].notna()]
    answered = answered.assign(context=context_ids(answered),
                               unknown=bbq.slot_tag(answered, answered["pred"]).eq("unknown").to_numpy())
    keys = RUN_MODE + ["context", "context_condition"]
    wide = answered.pivot_table(index=keys, columns="question_polarity", values=["pred", "unknown"],
                                aggfunc="first")
    if wide.empty or ("pred", "neg") not in wide or ("pred", "nonneg") not in wide:
        return pd.DataFrame(columns=keys + ["pred_neg", "pred_nonneg", "unknown_neg", "unknown_nonneg"])
    wide.columns = [f"{v}_{p}" for v, p in wide.columns]
    return wide.dropna(subset=["pred_neg", "pred_nonneg"]).reset_index()


def position_bias_table(items: pd.DataFrame) -> pd.DataFrame:
    """Per (model, condition, round, answer mode): the share of answers per option letter, the share naming the
    UNKNOWN option, and, over a context's negative/non-negative question pairs, the share answered with the
    same letter (``same_letter``) and with the same group, i.e. the same non-UNKNOWN option (``same_group``).

    A pair with the same group contributes one biased and one anti-biased answer, so it adds nothing to the
    bias score; a model that answers one letter throughout has same_letter = 1 and a bias score of 0. A run whose
    answers all went without a slot (generate mode) keeps its row, with n_answers = 0 and no shares.
    """
    answered = items[items["pred"].notna()]
    cols = (RUN_MODE + ["n_answers"] + [f"share_{x}" for x in LETTERS]
            + ["share_unknown", "n_pairs", "same_letter", "same_group"])
    if items.empty:
        return pd.DataFrame(columns=cols)
    # every run keeps its row: one whose answers were all dropped (generate mode) shows n_answers = 0
    runs = items[RUN_MODE].drop_duplicates().set_index(RUN_MODE)
    letters = answered.assign(letter=[LETTERS[int(s)] for s in answered["pred"]],
                              unknown=bbq.slot_tag(answered, answered["pred"]).eq("unknown").to_numpy())
    counts = pd.DataFrame({x: letters["letter"].eq(x) for x in LETTERS}).groupby([letters[k] for k in RUN_MODE]).sum()
    shares = counts.div(counts.sum(axis=1), axis=0).add_prefix("share_")
    per_run = letters.groupby(RUN_MODE).agg(n_answers=("item_id", "size"), share_unknown=("unknown", "mean"))
    pairs = polarity_pairs(items)
    same = pairs.assign(same_letter=pairs["pred_neg"] == pairs["pred_nonneg"])
    same = same.assign(same_group=same["same_letter"] & ~same["unknown_neg"].astype(bool))
    per_pair = same.groupby(RUN_MODE).agg(n_pairs=("same_letter", "size"), same_letter=("same_letter", "mean"),
                                          same_group=("same_group", "mean"))
    out = runs.join(per_run).join(shares).join(per_pair).reset_index()
    out[["n_answers", "n_pairs"]] = out[["n_answers", "n_pairs"]].fillna(0).astype(int)
    return out[cols].sort_values(RUN_MODE, ignore_index=True)
