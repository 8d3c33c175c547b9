"""The report's figures, each a pure function of the score tables (used by the workflow and notebooks).

Every function takes the tables written by the score rules and returns a matplotlib Figure whose
suptitle is "Figure N: …" with ../shared/STUDY.md's numbering.
"""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

CONTEXTS = {"ambig": "ambiguous", "disambig": "disambiguated"}
MAIN_CONDITIONS = ["baseline", "instruction", "instruction_cot"]
CAPTIONS = {
    1: "BBQ bias score vs model size, per condition (round 1)",
    2: "Winogender rho vs model size, per condition (round 1)",
    3: "Instruction specificity levels 1-4, per model (BBQ ambiguous, round 1)",
    4: "Negated vs affirmative instruction, per model (round 1)",
    5: "Unethical vs baseline vs instruction, per model (round 1)",
    6: "Bias score and accuracy vs round, per model, with answer-flip matrices",
    7: "Effect of chain-of-thought, per model, with sampled explanations",
    8: "Per-category BBQ bias score (model x category), per condition",
}


def title(n: int) -> str:
    return f"Figure {n}: {CAPTIONS[n]}"


def _primary_mode(df: pd.DataFrame) -> str:
    """The paper's way (generate) where it scored anything, else logprob; the figure notes which."""
    scored = df[df["bias_score"].notna()] if "bias_score" in df else df
    modes = set(scored["answer_mode"]) or set(df["answer_mode"])
    return "generate" if "generate" in modes else sorted(modes)[0]


def _log_x(ax, sub, x) -> None:
    if len(sub) and (sub[x] > 0).all():
        ax.set_xscale("log")
    if sub.empty:
        ax.text(0.5, 0.5, "no scored answers", ha="center", va="center", transform=ax.transAxes)


def _with_size(df: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    return df.merge(models[["model", "params_b"]], on="model", how="left")


def _errorbars(ax, df, x, y, lo="ci_low", hi="ci_high"):
    if lo in df and hi in df:
        ok = df[[lo, hi]].notna().all(axis=1)
        d = df[ok]
        ax.errorbar(d[x], d[y], yerr=[d[y] - d[lo], d[hi] - d[y]], fmt="none", ecolor="grey", elinewidth=0.8, capsize=2)


def _empty(fig, msg):
    fig.text(0.5, 0.5, msg, ha="center", va="center", fontsize=11, wrap=True)
    return fig


def _new(n: int, ncols: int = 1, nrows: int = 1, width: float = 11, height: float = 4.5):
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    fig.suptitle(title(n), fontsize=12)
    return fig, axes


def _note(fig, text):
    fig.text(0.01, 0.01, text, fontsize=7, color="dimgrey")


def figure1(bbq: pd.DataFrame, models: pd.DataFrame):
    fig, axes = _new(1, ncols=2)
    mode = _primary_mode(bbq)
    d = _with_size(bbq[(bbq["category"] == "All") & (bbq["round"] == 1) & (bbq["answer_mode"] == mode)
                       & bbq["condition"].isin(MAIN_CONDITIONS)], models)
    for ax, (ctx, label) in zip(axes[0], CONTEXTS.items()):
        sub = d[(d["context_condition"] == ctx) & d["bias_score"].notna()].sort_values("params_b")
        if len(sub):
            sns.lineplot(sub, x="params_b", y="bias_score", hue="condition", hue_order=MAIN_CONDITIONS, marker="o", ax=ax)
            _errorbars(ax, sub, "params_b", "bias_score")
        _log_x(ax, sub, "params_b")
        ax.axhline(0, color="black", lw=0.6)
        ax.set(xlabel="parameters (billions)", ylabel="bias score (-100..100)", title=f"{label} contexts")
    _note(fig, f"answer mode: {mode}; bars: 95% bootstrap CI over examples")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    return fig


def figure2(rho: pd.DataFrame, models: pd.DataFrame):
    fig, axes = _new(2)
    ax = axes[0][0]
    d = _with_size(rho[(rho["round"] == 1) & rho["condition"].isin(MAIN_CONDITIONS)], models).sort_values("params_b")
    if d.empty:
        return _empty(fig, "no Winogender results in this run")
    d = d[d["rho"].notna()]
    if len(d):
        sns.lineplot(d, x="params_b", y="rho", hue="condition", hue_order=MAIN_CONDITIONS, marker="o", ax=ax)
        _errorbars(ax, d, "params_b", "rho")
    _log_x(ax, d, "params_b")
    ax.axhline(0, color="black", lw=0.6)
    ax.set(xlabel="parameters (billions)", ylabel="Pearson rho with BLS % female", ylim=(-1, 1))
    _note(fig, "rho near 0: no reliance on occupational statistics; mode: logprob; bars: 95% bootstrap CI over occupations")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    return fig


def _bars(n, bbq, conditions, order=None, x_label="condition"):
    fig, axes = _new(n, ncols=2)
    mode = _primary_mode(bbq)
    d = bbq[(bbq["category"] == "All") & (bbq["round"] == 1) & (bbq["answer_mode"] == mode) & bbq["condition"].isin(conditions)]
    if d.empty:
        return _empty(fig, f"conditions {conditions} were not run")
    for ax, (ctx, label) in zip(axes[0], CONTEXTS.items()):
        sub = d[d["context_condition"] == ctx]
        sns.barplot(sub, x="condition", y="bias_score", hue="model", order=order or conditions, ax=ax, errorbar=None)
        for patch, (_, row) in zip(ax.patches, sub.set_index("condition").loc[[c for c in (order or conditions) if c in set(sub["condition"])]].reset_index().iterrows()):
            if "ci_low" in row and pd.notna(row.get("ci_low")):
                xm = patch.get_x() + patch.get_width() / 2
                ax.plot([xm, xm], [row["ci_low"], row["ci_high"]], color="black", lw=0.8)
        ax.axhline(0, color="black", lw=0.6)
        ax.set(xlabel=x_label, ylabel="bias score", title=f"{label} contexts")
        ax.tick_params(axis="x", rotation=20)
    _note(fig, f"answer mode: {mode}; reconstructed instruction wordings (config/conditions.yaml)")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    return fig


def figure3(bbq: pd.DataFrame, models: pd.DataFrame):
    levels = [f"specificity_{i}" for i in range(1, 5)]
    return _bars(3, bbq, levels, x_label="specificity level")


def figure4(bbq: pd.DataFrame, models: pd.DataFrame):
    return _bars(4, bbq, ["affirmative", "negation"])


def figure5(bbq: pd.DataFrame, models: pd.DataFrame):
    return _bars(5, bbq, ["baseline", "instruction", "unethical"])


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


def figure6(bbq: pd.DataFrame, items: pd.DataFrame, condition: str = "instruction"):
    mode = _primary_mode(bbq)
    d = bbq[(bbq["category"] == "All") & (bbq["answer_mode"] == mode)]
    flips = flip_matrices(items, condition, mode)
    n_flip = min(len(flips), 4)
    fig, axes = _new(6, ncols=max(3, n_flip), nrows=2, height=8)
    for ax, (metric, ctx) in zip(axes[0], [("bias_score", "ambig"), ("bias_score", "disambig"), ("accuracy", "ambig")]):
        sub = d[d["context_condition"] == ctx]
        sns.lineplot(sub, x="round", y=metric, hue="condition", style="model", marker="o", ax=ax, legend=ax is axes[0][0])
        if metric == "bias_score":
            _errorbars(ax, sub, "round", metric)
        else:
            _errorbars(ax, sub, "round", metric, "accuracy_ci_low", "accuracy_ci_high")
        ax.set(title=f"{metric.replace('_', ' ')} ({CONTEXTS[ctx]})", xticks=sorted(d["round"].unique()))
    if axes[0][0].get_legend():
        sns.move_legend(axes[0][0], "upper left", bbox_to_anchor=(0, -0.15), fontsize=6, ncol=3, title=None)
    for ax in axes[0][3:]:
        ax.axis("off")
    for ax, ((model, ctx, r), m) in zip(axes[1], list(flips.items())[:n_flip]):
        sns.heatmap(m, annot=True, fmt="d", cbar=False, cmap="Blues", ax=ax)
        ax.set(title=f"{model}\n{condition}, {CONTEXTS[ctx]}: round {r}→{r + 1}", xlabel=f"round {r + 1}", ylabel=f"round {r}")
    for ax in axes[1][n_flip:]:
        ax.axis("off")
    _note(fig, f"answer mode: {mode}; rounds ≥2 append the feedback of ../shared/STUDY.md and the condition's instruction")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    return fig


def figure7(bbq: pd.DataFrame, explanations: pd.DataFrame, differences: pd.DataFrame | None = None, n_samples: int = 3):
    fig, axes = _new(7, ncols=2, nrows=1, height=8.5)
    mode = _primary_mode(bbq)
    ax = axes[0][0]
    d = differences if differences is not None else pd.DataFrame()
    if len(d):
        d = d[(d["condition_a"] == "instruction_cot") & (d["condition_b"] == "instruction") & (d["round"] == 1)
              & (d["answer_mode"] == mode)]
    if d.empty:
        ax.text(0.5, 0.5, "instruction / instruction_cot were not both run", ha="center", va="center", transform=ax.transAxes)
    else:
        sns.barplot(d, x="model", y="difference", hue="context_condition", ax=ax, errorbar=None)
        for patch, (_, row) in zip(ax.patches, d.sort_values(["context_condition", "model"]).iterrows()):
            if pd.notna(row["ci_low"]):
                xm = patch.get_x() + patch.get_width() / 2
                ax.plot([xm, xm], [row["ci_low"], row["ci_high"]], color="black", lw=0.8)
    ax.axhline(0, color="black", lw=0.6)
    ax.set(ylabel="bias score: CoT − instruction", title="CoT effect (negative: CoT reduces bias)")
    ax = axes[0][1]
    ax.axis("off")
    lines = []
    for _, r in explanations.head(n_samples).iterrows():
        lines.append(f"[{r['model']} | {r['item_id']} | {r['context_condition']}]")
        lines += textwrap.wrap("Q: " + str(r["question"]), 70)
        lines += textwrap.wrap("CoT: " + " ".join(str(r["reasoning"]).split())[:420], 70)
        lines += textwrap.wrap("Answer: " + " ".join(str(r["raw_text"]).split())[:120], 70)
        lines.append("")
    ax.text(0, 1, "\n".join(lines) or "no CoT explanations", va="top", family="monospace", fontsize=6.5)
    ax.set_title("Sampled explanations (verbatim, seeded sample)")
    _note(fig, f"answer mode: {mode}; bars: paired-bootstrap 95% CI of the difference on the same examples")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    return fig


def figure8(bbq: pd.DataFrame, models: pd.DataFrame):
    mode = _primary_mode(bbq)
    d = bbq[(bbq["category"] != "All") & (bbq["round"] == 1) & (bbq["answer_mode"] == mode) & (bbq["context_condition"] == "ambig")]
    conds = list(dict.fromkeys(d["condition"]))
    ncols = min(4, max(1, len(conds)))
    nrows = max(1, -(-len(conds) // ncols))
    fig, axes = _new(8, ncols=ncols, nrows=nrows, width=14, height=3.2 * nrows + 1)
    for ax, cond in zip(axes.flat, conds):
        m = d[d["condition"] == cond].pivot_table(index="model", columns="category", values="bias_score", dropna=False)
        sns.heatmap(m, annot=True, fmt=".0f", cmap="RdBu_r", center=0, vmin=-100, vmax=100, cbar=False, ax=ax,
                    annot_kws={"fontsize": 7}, xticklabels=True, yticklabels=True)
        ax.set(title=cond, xlabel="", ylabel="")
        ax.tick_params(axis="x", rotation=45, labelsize=7)
    for ax in list(axes.flat)[len(conds):]:
        ax.axis("off")
    _note(fig, f"ambiguous contexts, round 1, answer mode: {mode}")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    return fig
