"""Figures 8 and 9: heatmaps of models x categories (bias score) and of models x conditions (position bias)."""

from __future__ import annotations

import numpy as np

from .. import diagnostics
from .base import BLANK, blank_legend, empty, finish, footer, new_figure, plotted_items, present, primary_mode
from .layout import Inputs


def figure8(inp: Inputs):
    import seaborn as sns

    mode, bbq = primary_mode(inp.cells), inp.cells
    d = bbq[(bbq["category"] != "All") & (bbq["round"] == 1) & (bbq["answer_mode"] == mode) & (bbq["context_condition"] == "ambig")]
    conditions = list(dict.fromkeys(present(inp.layout.order(), d) + list(dict.fromkeys(d["condition"]))))
    ncols = min(4, max(1, len(conditions)))
    nrows = max(1, -(-len(conditions) // ncols))
    fig, axes = new_figure(8, ncols=ncols, nrows=nrows, width=14, height=3.2 * nrows + 1.5)
    for ax, cond in zip(axes.flat, conditions):
        m = d[d["condition"] == cond].pivot_table(index="model", columns="category", values="bias_score", dropna=False)
        ax.set_facecolor(BLANK)
        sns.heatmap(m, annot=True, fmt=".0f", cmap="RdBu_r", center=0, vmin=-100, vmax=100, cbar=False, ax=ax,
                    annot_kws={"fontsize": 7}, xticklabels=True, yticklabels=True)
        ax.set(title=cond, xlabel="", ylabel="")
        ax.tick_params(axis="x", rotation=45, labelsize=7)
    for ax in list(axes.flat)[len(conditions):]:
        ax.axis("off")
    blank_legend(fig, "blank: no bias score (no scored answer named a group: all UNKNOWN or dropped)")
    items = plotted_items(inp, conditions, mode)
    return finish(fig, footer(items[items["context_condition"] == "ambig"], mode, "ambiguous contexts",
                              by=["category"], unit="cell"))


def figure9(inp: Inputs):
    import seaborn as sns

    table = diagnostics.position_bias_table(inp.items[inp.items["round"] == 1])
    modes = [m for m in ("generate", "logprob") if m in set(table["answer_mode"])]
    fig, axes = new_figure(9, ncols=2, nrows=max(1, len(modes)), width=13, height=3.4 * max(1, len(modes)) + 1.5)
    if table.empty:
        return empty(fig, "no BBQ answers in this run")
    conditions = list(dict.fromkeys(present(inp.layout.order(), table) + list(table["condition"])))
    shares = table[[f"share_{x}" for x in diagnostics.LETTERS]].fillna(-1).to_numpy()
    top = shares.max(axis=1)
    table = table.assign(top_share=np.where(top < 0, np.nan, top),
                         top=[f"({diagnostics.LETTERS[i]}) {100 * s:.0f}%" if s >= 0 else ""
                              for i, s in zip(shares.argmax(axis=1), top)])
    for row, mode in zip(axes, modes):
        t = table[table["answer_mode"] == mode]
        grid = lambda col: t.pivot_table(index="model", columns="condition", values=col, aggfunc="first",  # noqa: E731
                                         dropna=False).reindex(columns=[c for c in conditions if c in set(t["condition"])])
        top, top_text = grid("top_share") * 100, grid("top")
        same = grid("same_letter") * 100
        for ax, values, text, label in ((row[0], top, top_text, "most frequent letter, share of answers"),
                                        (row[1], same, same.round().astype("Int64").astype(str).replace("<NA>", ""),
                                         "same letter for the negative and non-negative question (%)")):
            ax.set_facecolor(BLANK)
            sns.heatmap(values.astype(float), annot=text.fillna("").to_numpy(), fmt="", cmap="Oranges", vmin=0, vmax=100,
                        cbar=False, ax=ax, annot_kws={"fontsize": 7}, xticklabels=True, yticklabels=True)
            ax.set(title=f"{label} ({mode})", xlabel="", ylabel="")
            ax.tick_params(axis="x", rotation=30, labelsize=7)
    blank_legend(fig, "blank: no answer (left) or no question pair with both answers (right)")
    n_ans, n_pairs = diagnostics.span(table["n_answers"]), diagnostics.span(table["n_pairs"])
    items = inp.items[(inp.items["round"] == 1) & inp.items["answer_mode"].isin(modes)]
    lines = [f"answer modes: {', '.join(modes)}; n per cell: {n_ans} answers with a letter, {n_pairs} question pairs "
             f"(from {items['item_id'].nunique()} examples, {diagnostics.context_ids(items).nunique()} BBQ contexts); "
             "33%: letters drawn at random"]
    if "generate" in modes:
        lines.append(diagnostics.dropped_line(items))
    return finish(fig, lines)
