"""The report's figures, each a pure function of the score tables (used by the workflow and notebooks).

Every figure returns a matplotlib Figure whose suptitle is "Figure N: …" with ../shared/STUDY.md's numbering,
and prints under it the answer mode, n (examples and BBQ contexts, or occupations) and, in generate mode, the
share of answers dropped by parse status. Which conditions a figure shows comes from config/conditions.yaml
(``family``, ``level``, ``contrast``, ``cot``) through :class:`Layout`, never from condition names here.

Captions: :mod:`.captions`, their only source. matplotlib and seaborn are imported where a figure is drawn, so
that the workflow can read the captions without loading them.
"""

from __future__ import annotations

from .bias import figure1, figure2, figure3, figure4, figure5
from .captions import CAPTIONS, UNDER_EVERY_FIGURE, caption, title
from .heatmaps import figure8, figure9
from .layout import FIGURE_FAMILY, Inputs, Layout
from .rounds import answer_class, cot_differences, explanations_sample, figure6, figure7, flip_matrices

FIGURES = {1: figure1, 2: figure2, 3: figure3, 4: figure4, 5: figure5, 6: figure6, 7: figure7, 8: figure8, 9: figure9}


def draw(n: int, inp: Inputs):
    """Figure ``n`` of the report."""
    if n not in FIGURES:
        raise ValueError(f"no figure {n}; the report has figures {sorted(FIGURES)}")
    return FIGURES[n](inp)


__all__ = ["CAPTIONS", "FIGURES", "FIGURE_FAMILY", "UNDER_EVERY_FIGURE", "Inputs", "Layout", "answer_class", "caption",
           "cot_differences", "draw", "explanations_sample", "flip_matrices", "title"]
