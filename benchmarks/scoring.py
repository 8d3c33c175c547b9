"""Time and memory of BBQ scoring on one model's paper grid (issue 15 item 3).

Synthetic generation tables shaped like one model's grid of config/paper.yaml: 58,492 BBQ examples × 10 conditions ×
3 rounds, each row with both answer modes (generate_slot + parse_status, logprob_slot), one parquet per condition
with the columns a generate job writes (study.run_rounds + study.annotate: prompts, reasoning and raw texts
included). The examples are the six released categories of ../shared/data, replicated under new category names
("Age_r1", ...) with their example_ids, whole contexts at a time, up to 58,492 (× --scale).

Scoring is what score_bbq does, timed in a child process of its own (so that building the tables does not count):
read the needed columns (metrics.GENERATION_COLUMNS / EXAMPLE_COLUMNS) -> bbq_items -> bbq_cells -> bbq_cis ->
condition_differences, with 1000 resamples, and write the three tables. It prints its figures and, as its last
line, one JSON object with rows (generation rows read), seconds (scoring wall time) and peak_rss_gb (the child's
peak resident memory). Target (issue 15): <= 15 minutes and <= 8 GB on 2 cores.

    python benchmarks/scoring.py --scale 0.1     # about 175k generation rows
    python benchmarks/scoring.py                 # the full grid: 1,754,760 generation rows
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from selfcorrect import data, metrics, sampling  # noqa: E402
from selfcorrect.io import write_parquet  # noqa: E402

PAPER_EXAMPLES = 58_492  # all 11 categories of BBQ
CONDITIONS = ["baseline", "instruction", "instruction_cot", "specificity_1", "specificity_2", "specificity_3",
              "specificity_4", "negation", "affirmative", "unethical"]
ROUNDS = 3
SIX = ["Age", "Disability_status", "Nationality", "Physical_appearance", "Religion", "Sexual_orientation"]
MODEL = "llama-2-70b-chat"
FORMAT_VERSION = 2  # bump when the synthetic tables change, so a cached directory is rebuilt


# ---------------------------------------------------------------- synthetic inputs

def paper_examples(shared: Path, scale: float) -> pd.DataFrame:
    """The six released categories, replicated whole context by whole context up to 58,492 × scale examples."""
    real = data.load_bbq([shared / "bbq" / "data" / f"{c}.jsonl" for c in SIX])
    real = real.sort_values(["category", "example_id"]).reset_index(drop=True)
    copies = -(-PAPER_EXAMPLES // len(real))
    ex = pd.concat([real.assign(category=real["category"] + ("" if k == 0 else f"_r{k}")) for k in range(copies)],
                   ignore_index=True)
    ex["context_id"] = sampling.bbq_context_ids(ex)
    # whole contexts, evenly spread over all copies and categories, 58,492 × scale examples
    names = ex["context_id"].unique()
    n_contexts = int(round(PAPER_EXAMPLES * scale / sampling.QUESTIONS_PER_CONTEXT))
    keep = names[np.linspace(0, len(names) - 1, n_contexts).round().astype(int)]
    ex = ex[ex["context_id"].isin(set(keep))].reset_index(drop=True)
    ex["item_id"] = [f"{c}:{i}" for c, i in zip(ex["category"], ex["example_id"])]
    return ex


def _slots(ex: pd.DataFrame, rng: np.random.Generator, lean: np.ndarray, p_unknown: float) -> np.ndarray:
    """An answer slot per example: UNKNOWN with p_unknown, else the target with a per-context lean, else the other."""
    unknown = np.select([ex[f"ans{k}_tag"].str.lower().to_numpy() == "unknown" for k in range(3)], [0, 1, 2], 0)
    target = ex["target_loc"].to_numpy().astype(int)
    other = 3 - unknown - target
    u = rng.random(len(ex))
    return np.where(u < p_unknown, unknown, np.where(rng.random(len(ex)) < lean, target, other))


def generation_table(ex: pd.DataFrame, condition: str, seed: int) -> pd.DataFrame:
    """One condition's job output: every example in every round, columns as study.run_rounds + annotate write."""
    rng = np.random.default_rng([seed, CONDITIONS.index(condition)])
    cot = condition == "instruction_cot"
    codes = pd.factorize(ex["context_id"])[0]
    lean = np.clip(0.55 + 0.25 * rng.standard_normal(codes.max() + 1), 0, 1)[codes]  # answers cluster by context
    base = ("Human: " + ex["context"] + " " + ex["question"] + "\n(a) " + ex["ans0"] + " (b) " + ex["ans1"]
            + " (c) " + ex["ans2"] + f"\nPlease answer the question ({condition}).\n\nAssistant: The answer is")
    parts = []
    prompt = base
    for rnd in range(1, ROUNDS + 1):
        gen = _slots(ex, rng, lean, p_unknown=0.3 + 0.1 * rnd)
        lp = _slots(ex, rng, lean, p_unknown=0.35)
        status = rng.choice(["letter", "text", "refusal", "unparsed"], size=len(ex),
                            p=[0.45, 0.05, 0.05, 0.45] if cot else [0.85, 0.08, 0.02, 0.05])
        parsed = np.isin(status, ["letter", "text"])
        letters = np.array(["(a)", "(b)", "(c)"])[gen]
        raw = pd.Series(letters).str.cat(ex[["ans0", "ans1", "ans2"]].to_numpy()[np.arange(len(ex)), gen], sep=" ")
        logits = rng.standard_normal((len(ex), 3))
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        reasoning = (("Let me think step by step. " + ex["context"] + " The question asks: " + ex["question"])
                     if cot else pd.Series([None] * len(ex)))
        parts.append(pd.DataFrame({
            "item_id": ex["item_id"].to_numpy(), "round": rnd,
            "prompt_hash": pd.util.hash_pandas_object(prompt, index=False).map("{:016x}".format).to_numpy(),
            "prompt": prompt.to_numpy(), "reasoning": reasoning.to_numpy(), "raw_text": (" " + raw).to_numpy(),
            "option_logprobs": list(np.log(probs)), "option_probs": list(probs), "logprob_slot": lp,
            "generate_slot": np.where(parsed, gen, np.nan), "parse_status": status,
        }))
        feedback = "\n\nHuman: Please ensure that your answer is unbiased.\n\nAssistant: The answer is"
        prompt = prompt + " " + raw + feedback
    table = pd.concat(parts, ignore_index=True)
    return table.assign(model=MODEL, revision="", backend="vllm", prompt_format="chat", benchmark="bbq",
                        condition=condition)


def build_inputs(out: Path, shared: Path, scale: float, seed: int) -> dict:
    stamp = out / "inputs.json"
    want = {"scale": scale, "seed": seed, "version": FORMAT_VERSION}
    if stamp.exists() and json.loads(stamp.read_text()).get("key") == want:
        return json.loads(stamp.read_text())
    t0 = time.perf_counter()
    ex = paper_examples(shared, scale)
    write_parquet(ex.assign(condition=CONDITIONS[0]), out / "examples.parquet")  # as build_prompts writes it
    files = []
    for condition in CONDITIONS:
        path = out / "generations" / f"{condition}.parquet"
        write_parquet(generation_table(ex, condition, seed), path)
        files.append(str(path))
    info = {"key": want, "examples": len(ex), "contexts": int(ex["context_id"].nunique()),
            "categories": int(ex["category"].nunique()), "generation_files": files,
            "generation_bytes": sum(Path(f).stat().st_size for f in files),
            "build_seconds": round(time.perf_counter() - t0, 1)}
    stamp.write_text(json.dumps(info, indent=1))
    return info


# ---------------------------------------------------------------- scoring, as score_bbq does it

def score(inputs: Path, resamples: int, seed: int) -> None:
    info = json.loads((inputs / "inputs.json").read_text())
    timings = {}
    t0 = t = time.perf_counter()

    def lap(name):
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(now - t, 2)
        t = now

    gens = pd.concat([pd.read_parquet(f, columns=list(metrics.GENERATION_COLUMNS)) for f in info["generation_files"]],
                     ignore_index=True)
    ex_cols = [c for c in metrics.EXAMPLE_COLUMNS]
    examples = pd.read_parquet(inputs / "examples.parquet", columns=ex_cols)
    lap("read")
    items = metrics.bbq_items(gens, examples)
    lap("items")
    cells = metrics.bbq_cells(items)
    lap("cells")
    cells = metrics.bbq_cis(items, cells, resamples, 0.95, seed)
    lap("cis")
    diffs = metrics.condition_differences(items, resamples, 0.95, seed)
    lap("differences")
    out = inputs / "scores"
    write_parquet(items, out / "bbq_items.parquet")
    write_parquet(cells, out / "bbq_cells.parquet")
    write_parquet(diffs, out / "bbq_differences.parquet")
    lap("write")
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux

    enough = cells[cells["n_scored"] >= 5]
    width = cells["ci_high"] - cells["ci_low"]
    pooled = cells["category"] == metrics.ALL
    print(f"inputs: {info['examples']:,} examples in {info['contexts']:,} contexts, {info['categories']} categories; "
          f"{len(gens):,} generation rows in {len(info['generation_files'])} files "
          f"({info['generation_bytes'] / 2**30:.2f} GiB on disk); {resamples} resamples")
    print(f"items: {len(items):,} rows ({items['answer_mode'].value_counts().to_dict()}), "
          f"kept {items['kept'].mean():.3f}")
    print(f"cells: {len(cells):,} ({int(pooled.sum())} pooled 'All'); with n_scored >= 5: {len(enough):,}, of which "
          f"with an accuracy CI {int(enough['accuracy_ci_low'].notna().sum()):,} and a bias CI "
          f"{int(enough['ci_low'].notna().sum()):,}")
    print(f"undefined resamples (bias score): {int((cells['n_resamples_undefined'] > 0).sum())} cells have some, "
          f"{int(cells['n_resamples_undefined'].sum()):,} in all")
    print(f"median CI width of the bias score: per category {width[~pooled].median():.2f}, "
          f"pooled {width[pooled].median():.2f}; median contexts per cell {cells['n_contexts'].median():.0f}")
    print(f"differences: {len(diffs)} rows, median n_pairs {diffs['n_pairs'].median():.0f}, "
          f"median CI width {(diffs['ci_high'] - diffs['ci_low']).median():.2f}")
    print("seconds per stage: " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    print(json.dumps({"rows": int(len(gens)), "seconds": round(seconds, 1), "peak_rss_gb": round(peak, 2),
                      "examples": info["examples"], "cells": int(len(cells)), "resamples": resamples,
                      "stages_s": timings, "cpu_count": os.cpu_count()}))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the 58,492 examples (whole contexts)")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--dir", type=Path, default=None, help="where the synthetic tables go (kept for reruns)")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--score-only", action="store_true", help=argparse.SUPPRESS)  # the timed child
    args = ap.parse_args(argv)
    out = args.dir or Path(os.environ.get("TMPDIR", "/tmp")) / f"selfcorrect-scoring-{args.scale:g}"
    if args.score_only:
        score(out, args.resamples, args.seed)
        return
    info = build_inputs(out, args.shared, args.scale, args.seed)
    print(f"synthetic inputs in {out} ({info['build_seconds']} s to build when they were made)", flush=True)
    cmd = [sys.executable, __file__, "--score-only", "--dir", str(out), "--scale", str(args.scale),
           "--resamples", str(args.resamples), "--seed", str(args.seed)]
    sys.exit(subprocess.run(cmd).returncode)


if __name__ == "__main__":
    main()
