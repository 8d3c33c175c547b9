"""Figures 6 and 7: answers across rounds (with flip matrices) and the effect of chain of thought."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd

from .. import diagnostics
from .base import CONTEXTS, bar_centres, bar_cis, errorbars, finish, footer, new_figure, plotted_items, present, primary_mode
from .layout import Inputs


FLIP_LABELS = {"ambig": ["UNKNOWN", "biased", "anti-biased"], "disambig": ["correct", "incorrect"]}


def answer_class(items: pd.DataFrame) -> pd.Series:
    """UNKNOWN / biased / anti-biased in ambiguous contexts, correct / incorrect in disambiguated ones."""
    amb = np.where(~items["kept"], "dropped",
                   np.where(~items["non_unknown"], "UNKNOWN", np.where(items["biased"], "biased", "anti-biased")))
    dis = np.where(~items["kept"], "dropped", np.where(items["correct"], "correct", "incorrect"))
    return pd.Series(np.where(items["context_condition"] == "ambig", amb, dis), index=items.index)


def flip_matrices(items: pd.DataFrame, condition: str, mode: str) -> dict:
    """Counts of answer classes between consecutive rounds, per (model, context, round pair)."""
    d = items[(items["condition"] == condition) & (items["answer_mode"] == mode)].assign(cls=lambda x: answer_class(x))
    out = {}
    for (model, ctx), grp in d.groupby(["model", "context_condition"]):
        wide = grp.pivot_table(index="item_id", columns="round", values="cls", aggfunc="first")
        labels = FLIP_LABELS[ctx] + ["dropped"]
        for r in range(1, int(grp["round"].max())):
            if r + 1 in wide:
                m = pd.crosstab(wide[r], wide[r + 1]).reindex(index=labels, columns=labels, fill_value=0)
                out[(model, ctx, r)] = m.loc[(m.sum(axis=1) > 0), (m.sum(axis=0) > 0)] if m.values.sum() else m
    return out


def figure6(inp: Inputs):
    import seaborn as sns

    mode, bbq = primary_mode(inp.cells), inp.cells
    conditions = present(inp.layout.figure_conditions(6), bbq)
    d = bbq[(bbq["category"] == "All") & (bbq["answer_mode"] == mode) & bbq["condition"].isin(conditions)]
    flip = inp.layout.flip_condition()
    flips = flip_matrices(inp.items, flip, mode) if flip else {}
    n_flip = min(len(flips), 4)
    fig, axes = new_figure(6, ncols=max(3, n_flip), nrows=2, height=8)
    for ax, (metric, ctx) in zip(axes[0], [("bias_score", "ambig"), ("bias_score", "disambig"), ("accuracy", "ambig")]):
        sub = d[d["context_condition"] == ctx]
        sns.lineplot(sub, x="round", y=metric, hue="condition", hue_order=conditions or None, style="model",
                     marker="o", ax=ax, legend=ax is axes[0][0])
        lo, hi = ("ci_low", "ci_high") if metric == "bias_score" else ("accuracy_ci_low", "accuracy_ci_high")
        errorbars(ax, sub, "round", metric, lo, hi)
        ax.set(title=f"{metric.replace('_', ' ')} ({CONTEXTS[ctx]})", xticks=sorted(d["round"].unique()))
    if axes[0][0].get_legend():
        sns.move_legend(axes[0][0], "upper left", bbox_to_anchor=(0, -0.15), fontsize=6, ncol=3, title=None)
    for ax in axes[0][3:]:
        ax.axis("off")
    for ax, ((model, ctx, r), m) in zip(axes[1], list(flips.items())[:n_flip]):
        sns.heatmap(m, annot=True, fmt="d", cbar=False, cmap="Blues", ax=ax)
        ax.set(title=f"{model}\n{CONTEXTS[ctx]}: round {r}→{r + 1}", xlabel=f"round {r + 1}", ylabel=f"round {r}")
        ax.title.set_fontsize(9)
    for ax in axes[1][n_flip:]:
        ax.axis("off")
    rounds = tuple(sorted(d["round"].unique()))
    extra = "bars: 95% bootstrap CI" + (f"; flip matrices: condition {flip}" if flips else "")
    return finish(fig, footer(plotted_items(inp, conditions, mode, rounds), mode, extra))


# ---------------------------------------------------------------- figure 7: chain of thought

def explanations_sample(items: pd.DataFrame, cot_conditions, seed: int, n: int = 3) -> pd.DataFrame:
    """``n`` round-1 reasoning texts of the CoT conditions, drawn with ``seed`` (one per model and example); none
    where the outcomes table carries no texts."""
    if not {"reasoning", "raw_text", "question"} <= set(items.columns):
        return items.iloc[:0]
    cot = items[items["condition"].isin(list(cot_conditions)) & (items["round"] == 1) & items["reasoning"].notna()]
    cot = cot.drop_duplicates(["model", "condition", "item_id"])
    return cot.sample(n=min(n, len(cot)), random_state=seed) if len(cot) else cot


def cot_differences(inp: Inputs, mode: str) -> pd.DataFrame:
    """Round-1 rows of Table 3 whose first condition reasons (CoT) and whose second is its contrast, with the CoT
    condition's accuracy and a flag where its score is -100 at accuracy 0."""
    diffs = inp.differences if inp.differences is not None else pd.DataFrame()
    pairs = inp.layout.cot_contrasts()
    if diffs.empty or not pairs:
        return pd.DataFrame()
    pair = pd.Series(list(zip(diffs["condition_a"], diffs["condition_b"])), index=diffs.index)
    d = diffs[pair.isin(pairs) & (diffs["round"] == 1) & (diffs["answer_mode"] == mode)]
    acc = inp.cells[inp.cells["category"] == "All"][["model", "condition", "round", "answer_mode", "context_condition", "accuracy"]]
    d = d.merge(acc.rename(columns={"condition": "condition_a", "accuracy": "accuracy_a"}),
                on=["model", "condition_a", "round", "answer_mode", "context_condition"], how="left")
    # Why not "CoT reduces bias" there: a bias score of -100 at accuracy 0 means every answer named the
    # anti-stereotyped group and none was right (not one UNKNOWN where the context is ambiguous). That is a bias in
    # the other direction, as far from an unbiased 0 as +100 is, so the negative difference it yields is no
    # reduction of bias; those bars are marked instead of read.
    d["anti_stereotyped_and_wrong"] = (d["bias_a"] <= -100 + 1e-9) & (d["accuracy_a"] == 0)
    return d.assign(contrast=d["condition_a"] + " − " + d["condition_b"])


def figure7(inp: Inputs, n_samples: int = 3):
    import seaborn as sns

    fig, axes = new_figure(7, ncols=2, nrows=1, height=8.5)
    mode = primary_mode(inp.cells)
    ax = axes[0][0]
    d = cot_differences(inp, mode)
    if d.empty:
        wanted = inp.layout.cot_contrasts()
        ax.text(0.5, 0.5, "no chain-of-thought condition was run beside its contrast" + (f" ({wanted})" if wanted else ""),
                ha="center", va="center", transform=ax.transAxes, wrap=True)
    else:
        # name the contrast under each bar only where the run has more than one CoT contrast
        d = d.assign(bar=d["model"] + ("\n" + d["contrast"] if d["contrast"].nunique() > 1 else ""))
        bars, contexts = list(dict.fromkeys(d["bar"])), list(CONTEXTS)
        sns.barplot(d, x="bar", y="difference", hue="context_condition", order=bars, hue_order=contexts, ax=ax,
                    errorbar=None)
        bar_cis(ax, d, "bar", "context_condition", bars, contexts)
        centres = bar_centres(ax, bars, contexts)
        for _, row in d[d["anti_stereotyped_and_wrong"]].iterrows():
            ax.annotate("x", (centres.get((row["bar"], row["context_condition"]), bars.index(row["bar"])), row["difference"]),
                        ha="center", va="top", fontsize=12, color="darkred")
    ax.axhline(0, color="black", lw=0.6)
    marked = bool(len(d)) and bool(d["anti_stereotyped_and_wrong"].any())
    ax.text(0.01, 0.01, "negative: CoT reduces bias" + (", except bars marked x" if marked else ""),
            transform=ax.transAxes, fontsize=8, color="dimgrey")
    contrasts = ", ".join(dict.fromkeys(d["contrast"])) if len(d) else ""
    ax.set(xlabel="", ylabel="bias score difference", title=f"CoT effect: {contrasts}" if contrasts else "CoT effect")
    ax.tick_params(axis="x", labelsize=7)
    ax = axes[0][1]
    ax.axis("off")
    lines = []
    for _, r in explanations_sample(inp.items, inp.layout.cot, inp.seed, n_samples).iterrows():
        lines.append(f"[{r['model']} | {r['condition']} | {r['item_id']} | {r['context_condition']}]")
        lines += textwrap.wrap("Q: " + str(r["question"]), 70)
        lines += textwrap.wrap("CoT: " + " ".join(str(r["reasoning"]).split())[:420], 70)
        lines += textwrap.wrap("Answer: " + " ".join(str(r["raw_text"]).split())[:120], 70)
        lines.append("")
    ax.text(0, 1, "\n".join(lines) or "no CoT explanations", va="top", family="monospace", fontsize=6.5)
    ax.set_title("Sampled explanations (verbatim, seeded sample)")
    conditions = sorted({c for a, b in inp.layout.cot_contrasts() for c in (a, b)})
    pairs = f"paired examples per bar: {diagnostics.span(d['n_pairs'])}" if len(d) else ""
    extra = "; ".join(x for x in [pairs, "bars: paired-bootstrap 95% CI",
                                  "x: CoT score -100 at accuracy 0 (anti-stereotyped and wrong, not less biased)"
                                  if len(d) and d["anti_stereotyped_and_wrong"].any() else ""] if x)
    return finish(fig, footer(plotted_items(inp, conditions, mode), mode, extra, unit="bar"))
