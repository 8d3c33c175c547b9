"""``selfcorrect estimate``: prompts, tokens and GPU hours of a study config, from an explicit simple model.

Cost model (stated, so that it can be argued with):
- a call is one model request: per example and round, one answer call, plus one reasoning call for CoT conditions;
- each call re-encodes its whole conversation; round r's prompt is the round-1 prompt plus, for every earlier round,
  the previous answer, the feedback turn and (CoT) the reasoning and the follow-up turn;
- prompt lengths are each task's `mean_prompt_tokens` (measured on SmolLM2's tokenizer over the BBQ and Winogender prompts
  of config/conditions.yaml; GPT-2, Llama-2 and OLMo tokenizers are within ~15%);
- FLOPs = 2 x parameters x (prompt + generated tokens); GPU hours = FLOPs / (peak x MFU).
"""

from __future__ import annotations

import pandas as pd

from .conditions import Registry
from .data import load_sources
from .tasks import get_task

FEEDBACK_TOKENS = 45  # feedback turn with instruction and turn markup
FOLLOWUP_TOKENS = 25  # "Based on the above..." turn and the new answer prefix


def examples_per_benchmark(cfg: dict) -> dict[str, int]:
    sources = load_sources()
    return {bench: get_task(bench).sample_size(cfg, sources) for bench in cfg["benchmarks"]}


def calls_and_tokens(cfg: dict, registry: Registry) -> pd.DataFrame:
    g = cfg["generation"]
    cot_tokens = int(g["cot_max_new_tokens"])
    rows = []
    for bench, n in examples_per_benchmark(cfg).items():
        task = get_task(bench)
        # an answer is generated where the task parses answers, else one option token is scored
        gen_answer = int(g["max_new_tokens"]) if task.parses_answers(cfg["answer_modes"]) else 1
        for cond in registry.conditions_for(bench, cfg["conditions"]):
            cot = bool(registry.condition(cond).get("cot"))
            per_round_growth = gen_answer + FEEDBACK_TOKENS + ((cot_tokens + FOLLOWUP_TOKENS) if cot else 0)
            prompt = generated = calls = 0
            for r in range(cfg["rounds"]):
                base = task.mean_prompt_tokens + r * per_round_growth
                if cot:
                    prompt += base
                    generated += cot_tokens
                    calls += 1
                prompt += base + (cot_tokens + FOLLOWUP_TOKENS if cot else 0)
                generated += gen_answer
                calls += 1
            rows.append({"benchmark": bench, "condition": cond, "examples": n, "calls": n * calls,
                         "prompt_tokens": n * prompt, "generated_tokens": n * generated})
    return pd.DataFrame(rows)


def estimate(cfg: dict, tflops: float = 989.0, mfu: float = 0.35) -> pd.DataFrame:
    work = calls_and_tokens(cfg, Registry.load())
    rows = []
    for name, m in cfg["models"].items():
        params = float(m.get("params_b") or 0) * 1e9
        p_tok, g_tok = int(work["prompt_tokens"].sum()), int(work["generated_tokens"].sum())
        flops = 2 * params * (p_tok + g_tok)
        rows.append({"model": name, "params_b": m.get("params_b"), "gpus": m.get("gpus", 1), "prompts": int(work["calls"].sum()),
                     "prompt_tokens": p_tok, "generated_tokens": g_tok,
                     "gpu_hours": flops / (tflops * 1e12 * mfu) / 3600})
    table = pd.DataFrame(rows)
    total = {"model": "TOTAL", "params_b": None, "gpus": None, "prompts": table["prompts"].sum(),
             "prompt_tokens": table["prompt_tokens"].sum(), "generated_tokens": table["generated_tokens"].sum(),
             "gpu_hours": table["gpu_hours"].sum()}
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def format_estimate(table: pd.DataFrame, tflops: float, mfu: float) -> str:
    shown = table.copy()
    for c in ("prompts", "prompt_tokens", "generated_tokens"):
        shown[c] = shown[c].map(lambda v: f"{int(v):,}")
    shown["gpu_hours"] = shown["gpu_hours"].map(lambda v: f"{v:,.1f}")
    shown["params_b"] = shown["params_b"].map(lambda v: "" if v is None or pd.isna(v) else f"{v:g}")
    shown["gpus"] = shown["gpus"].map(lambda v: "" if v is None or pd.isna(v) else f"{int(v)}")
    head = (f"Reference GPU: {tflops:g} TFLOP/s dense bf16 (H100 SXM) at {mfu:.0%} of peak; "
            "FLOPs = 2 x params x tokens; every round re-encodes its conversation.\n")
    return head + shown.to_string(index=False)
