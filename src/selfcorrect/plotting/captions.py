"""Every figure's title and caption, in this one place: the figure rule hands :func:`caption` to the Snakemake
report's caption template (report/figure.rst), and each figure's suptitle is :func:`title`. Imports nothing heavy,
so the workflow reads it at parse time."""

from __future__ import annotations

CAPTIONS = {
    1: ("BBQ bias score vs model size, per condition of the main family (round 1)",
        "Bias score (-100..100; positive: answers follow the stereotype) of the conditions of family `main` "
        "(config/conditions.yaml: Q, Q+IF, Q+IF+CoT) against model size, in ambiguous and disambiguated contexts "
        "pooled over categories; bars: 95% bootstrap CIs."),
    2: ("Winogender rho vs model size, per condition of the main family (round 1)",
        "Pearson rho between a model's mean P(female) per occupation and the BLS % female (0: no reliance on "
        "occupational statistics), per condition of family `main`; logprob mode; bars: 95% bootstrap CIs over "
        "occupations."),
    3: ("Instruction specificity levels, per model (BBQ, round 1)",
        "Bias score per condition of family `specificity` in level order (reconstructed wordings), ambiguous and "
        "disambiguated contexts pooled over categories; bars: 95% bootstrap CIs."),
    4: ("Negated vs affirmative instruction, per model (BBQ, round 1)",
        "Bias score per condition of family `negation` (reconstructed wordings), ambiguous and disambiguated "
        "contexts pooled over categories; bars: 95% bootstrap CIs."),
    5: ("Unethical instruction vs the conditions it is contrasted with, per model (BBQ, round 1)",
        "Bias score of family `unethical` beside its `contrast:` conditions (baseline and instruction in the "
        "default registry), ambiguous and disambiguated contexts pooled over categories; bars: 95% bootstrap CIs."),
    6: ("Bias score and accuracy vs round, per model, with answer-flip matrices (BBQ)",
        "Top: bias score and accuracy per round for the conditions of family `main`; rounds >= 2 append the "
        "feedback of STUDY.md and the condition's instruction. Bottom: how answers moved between consecutive rounds "
        "(UNKNOWN / biased / anti-biased in ambiguous contexts, correct / incorrect in disambiguated ones) under "
        "the main family's highest-level condition without chain of thought. Other conditions' rounds: Table 2."),
    7: ("Effect of chain-of-thought, per model, with sampled explanations (BBQ, round 1)",
        "Left: bias score of each chain-of-thought condition minus its `contrast:` condition on the examples "
        "scored under both, with a paired-bootstrap 95% CI; negative means fewer stereotyped answers with CoT, "
        "except on bars marked x, where the CoT score is -100 at accuracy 0 (every answer anti-stereotyped and "
        "wrong). Right: reasoning texts drawn at random (seeded), verbatim."),
    8: ("Per-category BBQ bias score (model x category), per condition (ambiguous contexts, round 1)",
        "One heatmap per condition; a blank cell has no bias score (no scored answer named a group: all UNKNOWN "
        "or dropped)."),
    9: ("Position bias: answer letters per model and condition (BBQ, round 1)",
        "Left: the letter a model chose most often and its share of the answers. Right: the share of a context's "
        "negative and non-negative question (same context, same options in the same order) answered with the same "
        "letter; 33% for letters drawn at random. A model that gives the same letter whatever the question names "
        "the same option for both questions; where that option is a group, one answer counts as biased and the "
        "other as anti-biased: they cancel, and its bias score is 0 whatever its social bias (exactly 0 where both "
        "questions of every context are in the sample). Where the share is near 100%, a bias score near 0 measures "
        "a preferred position, not fairness. In ambiguous contexts both correct answers are the UNKNOWN "
        "option, so a high share there can also mean correct answers: Table 5 gives the share with the same group "
        "(same_group) and the full letter distribution per round."),
}
UNDER_EVERY_FIGURE = ("Under the figure: the answer mode, n (examples and BBQ contexts, or occupations) and, in "
                      "generate mode, the share of answers dropped by parse status (Table 4).")


def title(n: int) -> str:
    return f"Figure {n}: {CAPTIONS[n][0]}"


def caption(n: int) -> str:
    """The figure's caption for the HTML report: title, what it shows, what is printed under it."""
    return f"{title(n)}. {CAPTIONS[n][1]} {UNDER_EVERY_FIGURE}"
