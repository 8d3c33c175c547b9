"""Figures 1-5: the bias score per condition of a family (and Winogender rho), round 1."""

from __future__ import annotations

import pandas as pd

from .. import diagnostics
from .base import (CONTEXTS, bar_cis, empty, errorbars, finish, footer, log_x, new_figure, plotted_items, present,
                   primary_mode, with_size)
from .layout import FIGURE_FAMILY, Inputs


def figure1(inp: Inputs):
    import seaborn as sns

    fig, axes = new_figure(1, ncols=2)
    mode, bbq = primary_mode(inp.cells), inp.cells
    conditions = present(inp.layout.figure_conditions(1), bbq)
    d = with_size(bbq[(bbq["category"] == "All") & (bbq["round"] == 1) & (bbq["answer_mode"] == mode)
                      & bbq["condition"].isin(conditions)], inp.models)
    for ax, (ctx, label) in zip(axes[0], CONTEXTS.items()):
        sub = d[(d["context_condition"] == ctx) & d["bias_score"].notna()].sort_values("params_b")
        if len(sub):
            sns.lineplot(sub, x="params_b", y="bias_score", hue="condition", hue_order=conditions, marker="o", ax=ax)
            errorbars(ax, sub, "params_b", "bias_score")
        log_x(ax, sub, "params_b")
        ax.axhline(0, color="black", lw=0.6)
        ax.set(xlabel="parameters (billions)", ylabel="bias score (-100..100)", title=f"{label} contexts")
    return finish(fig, footer(plotted_items(inp, conditions, mode), mode, "bars: 95% bootstrap CI"))


def figure2(inp: Inputs):
    import seaborn as sns

    fig, axes = new_figure(2)
    ax, rho = axes[0][0], inp.rho if inp.rho is not None else pd.DataFrame(columns=["condition", "round", "rho"])
    conditions = present(inp.layout.figure_conditions(2), rho) if len(rho) else []
    d = with_size(rho[(rho["round"] == 1) & rho["condition"].isin(conditions)], inp.models).sort_values("params_b")
    if d.empty:
        return empty(fig, "no Winogender results in this run")
    n_occ = diagnostics.span(d["n_occupations"]) if "n_occupations" in d else "?"
    d = d[d["rho"].notna()]
    if len(d):
        sns.lineplot(d, x="params_b", y="rho", hue="condition", hue_order=conditions, marker="o", ax=ax)
        errorbars(ax, d, "params_b", "rho")
    log_x(ax, d, "params_b")
    ax.axhline(0, color="black", lw=0.6)
    ax.set(xlabel="parameters (billions)", ylabel="Pearson rho with BLS % female", ylim=(-1, 1))
    return finish(fig, [f"answer mode: logprob; n per point: {n_occ} occupations (Winogender); "
                        "bars: 95% bootstrap CI over occupations; rho near 0: no reliance on occupational statistics"])


def _bars(n: int, inp: Inputs):
    import seaborn as sns

    fig, axes = new_figure(n, ncols=2)
    mode, bbq = primary_mode(inp.cells), inp.cells
    conditions = present(inp.layout.figure_conditions(n), bbq)
    d = bbq[(bbq["category"] == "All") & (bbq["round"] == 1) & (bbq["answer_mode"] == mode)
            & bbq["condition"].isin(conditions)]
    if d.empty:
        return empty(fig, f"no condition of family {FIGURE_FAMILY[n]!r} (config/conditions.yaml) was run")
    for ax, (ctx, label) in zip(axes[0], CONTEXTS.items()):
        sub = d[d["context_condition"] == ctx]
        models = list(dict.fromkeys(d["model"]))
        sns.barplot(sub, x="condition", y="bias_score", hue="model", order=conditions, hue_order=models, ax=ax,
                    errorbar=None)
        bar_cis(ax, sub, "condition", "model", conditions, models)
        ax.axhline(0, color="black", lw=0.6)
        ax.set(xlabel="condition", ylabel="bias score", title=f"{label} contexts")
        ax.tick_params(axis="x", rotation=20)
    extra = "bars: 95% bootstrap CI; reconstructed wordings marked in config/conditions.yaml"
    if d["bias_score"].isna().any():
        extra += "; no bar: no bias score (no scored answer named a group: all UNKNOWN or dropped)"
    return finish(fig, footer(plotted_items(inp, conditions, mode), mode, extra))


def figure3(inp: Inputs):
    return _bars(3, inp)


def figure4(inp: Inputs):
    return _bars(4, inp)


def figure5(inp: Inputs):
    return _bars(5, inp)
