"""Pieces every figure uses: the answer mode, the plotted rows, the footer with n and drops, bars with CIs."""

from __future__ import annotations

import textwrap

import pandas as pd

from .. import diagnostics
from .captions import title
from .layout import Inputs

CONTEXTS = {"ambig": "ambiguous", "disambig": "disambiguated"}
BLANK = "#d9d9d9"


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def primary_mode(cells: pd.DataFrame) -> str:
    """The paper's way (generate) where it scored anything, else logprob; the figure says which."""
    scored = cells[cells["bias_score"].notna()] if "bias_score" in cells else cells
    modes = set(scored["answer_mode"]) or set(cells["answer_mode"])
    return "generate" if "generate" in modes else sorted(modes)[0]


def present(conditions: list[str], table: pd.DataFrame) -> list[str]:
    have = set(table["condition"])
    return [c for c in conditions if c in have]


def plotted_items(inp: Inputs, conditions: list[str], mode: str, rounds=(1,)) -> pd.DataFrame:
    it = inp.items
    return it[it["condition"].isin(conditions) & (it["answer_mode"] == mode) & it["round"].isin(rounds)]


def footer(items: pd.DataFrame, mode: str, extra: str = "", **n_kw) -> list[str]:
    """Answer mode and n, then the generate-mode drop line."""
    lines = [f"answer mode: {mode}; {diagnostics.sample_size_line(items, **n_kw)}" + (f"; {extra}" if extra else "")]
    if mode == "generate":
        lines.append(diagnostics.dropped_line(items))
    return [ln for ln in lines if ln]


def new_figure(n: int, ncols: int = 1, nrows: int = 1, width: float = 11, height: float = 4.5):
    fig, axes = pyplot().subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    fig.suptitle(title(n), fontsize=12)
    return fig, axes


def finish(fig, lines: list[str], width_chars: int = 170):
    """Print ``lines`` under the plots and fit the plots above them."""
    wrapped = [w for ln in lines for w in textwrap.wrap(ln, width_chars)]
    fig.text(0.01, 0.005, "\n".join(wrapped), fontsize=7, color="dimgrey", va="bottom")
    bottom = min(0.35, 0.015 + 0.12 * len(wrapped) / fig.get_figheight())
    fig.tight_layout(rect=(0, bottom, 1, 0.95))
    return fig


def empty(fig, msg):
    fig.text(0.5, 0.5, msg, ha="center", va="center", fontsize=11, wrap=True)
    return fig


def with_size(df: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    return df.merge(models[["model", "params_b"]], on="model", how="left")


def log_x(ax, sub, x) -> None:
    if len(sub) and (sub[x] > 0).all():
        ax.set_xscale("log")
    if sub.empty:
        ax.text(0.5, 0.5, "no scored answers", ha="center", va="center", transform=ax.transAxes)


def errorbars(ax, df, x, y, lo="ci_low", hi="ci_high"):
    if lo in df and hi in df:
        d = df[df[[lo, hi]].notna().all(axis=1)]
        ax.errorbar(d[x], d[y], yerr=[d[y] - d[lo], d[hi] - d[y]], fmt="none", ecolor="grey", elinewidth=0.8, capsize=2)


def bar_centres(ax, x_order: list[str], hue_order: list[str]) -> dict:
    """(x, hue) -> the x centre of the bar seaborn drew for it: one container per hue level in ``hue_order``, no bar
    where the value is NaN, each bar within 0.4 of its category's tick."""
    out = {}
    for hue, container in zip(hue_order, ax.containers):
        for patch in container.patches:
            centre = patch.get_x() + patch.get_width() / 2
            out[(x_order[int(round(centre))], hue)] = centre
    return out


def bar_cis(ax, sub: pd.DataFrame, x: str, hue: str, x_order, hue_order, lo="ci_low", hi="ci_high") -> None:
    centres = bar_centres(ax, list(x_order), list(hue_order))
    for _, row in sub.iterrows():
        centre = centres.get((row[x], row[hue]))
        if centre is not None and pd.notna(row.get(lo)) and pd.notna(row.get(hi)):
            ax.plot([centre, centre], [row[lo], row[hi]], color="black", lw=0.8)


def blank_legend(fig, label: str) -> None:
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(facecolor=BLANK, edgecolor="grey", label=label)], loc="lower right", fontsize=7,
               frameon=False, bbox_to_anchor=(1, 0))
