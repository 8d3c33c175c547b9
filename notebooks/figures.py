# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The report's figures, rebuilt from the workflow's result tables
#
# Run the workflow first (`make paper DATA_MIRROR=../shared/data`). This notebook reads the score tables it wrote and
# calls the same library function the `figure` rule calls, so a figure here is the figure in the report.
# `SELFCORRECT_RESULTS` points at another run's directory (default: the project root).

# %%
import os
from pathlib import Path

import pandas as pd

from selfcorrect import plotting
from selfcorrect.pipeline import figure

RUN = Path(os.environ.get("SELFCORRECT_RESULTS", Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()))
OUT = Path(os.environ.get("SELFCORRECT_NOTEBOOK_OUT", RUN / "results" / "notebook_figures"))
OUT.mkdir(parents=True, exist_ok=True)
scores = RUN / "results" / "scores"
rho = scores / "winogender_rho.parquet"
cells = pd.read_parquet(scores / "bbq_cells.parquet")
cells.head()

# %% [markdown]
# ## Figures 1-9
# `layout` left out: the conditions of config/conditions.yaml that the run holds, grouped as the figure rule groups them.

# %%
for n in sorted(plotting.FIGURES):
    figure(n, str(scores / "bbq_cells.parquet"), str(scores / "bbq_outcomes.parquet"),
           str(rho) if rho.exists() else None, str(RUN / "report" / "tables" / "models.csv"),
           str(scores / "bbq_differences.parquet"), seed=1234,
           pdf_out=str(OUT / f"figure{n}.pdf"), png_out=str(OUT / f"figure{n}.png"))
    print(plotting.title(n), "->", OUT / f"figure{n}.png")

# %% [markdown]
# ## The numbers behind figure 1 (pooled over categories, round 1)

# %%
main = cells[(cells["category"] == "All") & (cells["round"] == 1)]
main[["model", "condition", "answer_mode", "context_condition", "n_scored", "accuracy", "bias_score", "ci_low", "ci_high"]]
