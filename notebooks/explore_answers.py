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
# # Individual answers and chain-of-thought explanations
#
# Every generation table holds, per example and round, the exact prompt, the model's reasoning (CoT conditions),
# its raw answer, how the answer was parsed, and the option probabilities.

# %%
import os
from pathlib import Path

import pandas as pd

RUN = Path(os.environ.get("SELFCORRECT_RESULTS", Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()))
items = pd.read_parquet(RUN / "results" / "scores" / "bbq_outcomes.parquet")
items.groupby(["model", "condition", "round", "answer_mode"])["kept"].mean().unstack("answer_mode")

# %% [markdown]
# ## How generated answers were read (letter, answer text, refusal, unparsed)

# %%
gen = items[items["answer_mode"] == "generate"]
gen.groupby(["condition", "round"])["parse_status"].value_counts().unstack(fill_value=0)

# %% [markdown]
# ## Chain-of-thought explanations, verbatim

# %%
cot = gen[(gen["condition"] == "instruction_cot") & gen["reasoning"].notna()]
for _, row in cot.head(5).iterrows():
    print(f"--- {row['model']} | {row['item_id']} | round {row['round']} | {row['context_condition']}")
    print("Q:", row["context"], row["question"])
    print("Options:", row["ans0"], "|", row["ans1"], "|", row["ans2"])
    print("Reasoning:", row["reasoning"].strip())
    print("Answer:", (row["raw_text"] or "").strip(), f"[{row['parse_status']}]")

# %% [markdown]
# ## Answers that could not be read

# %%
gen[gen["parse_status"].isin(["refusal", "unparsed"])][["model", "condition", "round", "item_id", "raw_text"]].head(20)
