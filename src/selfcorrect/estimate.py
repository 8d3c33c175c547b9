"""``selfcorrect estimate``: prompts, tokens and device hours of a study config, from measured rates.

Cost model (stated, so that it can be argued with):
- a call is one model request: per example and round, one answer call, plus one reasoning call for CoT conditions;
  round r's prompt is the round-1 prompt plus, for every earlier round, the previous answer, the feedback turn and
  (CoT) the reasoning and the follow-up turn; prompt lengths are each task's `mean_prompt_tokens`;
- prefill: the tokens a backend encodes. With the KV cache carried between calls (the transformers engine's
  `carry_kv_between_rounds`, vLLM's prefix caching) a call encodes only what follows the previous call's prompt and
  answer; otherwise its whole conversation. Time = 2 x parameters x tokens / the engine's measured model FLOP rate
  at that size (a whole-run rate, decode included, so a lower bound on the prefill rate: the time is an upper bound);
- decode: greedy decoding is bound by step latency, not FLOPs: a batch decodes one token per row per step, so a
  model's sequential steps = generated tokens / batch_size, each at the measured step time at that size;
- sizes between two measured ones are interpolated; a larger model's decode step grows with its parameters (each
  step reads every weight), its prefill rate stays at the largest measured one; a smaller one takes the smallest's;
- a model with gpus >= 1 uses the GPU figures, one with gpus: 0 the CPU figures; hours are single-device
  equivalents: tensor parallelism over N GPUs divides the wall time by up to N, not the GPU hours;
- no vLLM figure is recorded yet: vLLM models use the transformers engine's figures (vLLM's CUDA graphs and paged
  attention should decode faster, so their rows are upper bounds).
Every figure names its machine and the line it comes from (``figures_used``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from .conditions import Registry
from .data import load_sources
from .tasks import get_task

FEEDBACK_TOKENS = 45  # feedback turn with instruction and turn markup
FOLLOWUP_TOKENS = 25  # "Based on the above..." turn and the new answer prefix


@dataclass(frozen=True)
class Figure:
    """One measured rate: ``value`` at model size ``params_b`` on ``machine``, and where it is recorded."""

    kind: str  # "prefill_tflops" (model FLOP/s of the engine, 1e12) or "step_ms" (one decode step at the batch)
    device: str  # "gpu" or "cpu"
    machine: str
    params_b: float
    value: float
    source: str  # file:line, or the issue that recorded it
    quote: str  # the recorded text the value is read or derived from (checked against the file by the tests)


H100 = "NVIDIA H100 80GB HBM3, bf16, transformers engine"
CPU = "2 cores of an AMD EPYC (this project's machine), fp32, transformers engine"
MATMUL_H100_TFLOPS = 765.0  # the low end of the measured bf16 matmul limit, benchmarks/README.md:93

FIGURES = (
    # the engine's model FLOP rate = its roofline fraction (2 x params x tokens processed / time) x the matmul limit
    Figure("prefill_tflops", "gpu", H100, 0.1345, 0.015 * MATMUL_H100_TFLOPS, "benchmarks/README.md:89",
           "| SmolLM2-135M | 134.5 M | 340× | 246× | 0.95× / 0.97× | 0.80 | 1.5% / 2.7% |"),
    Figure("prefill_tflops", "gpu", H100, 1.17, 0.117 * MATMUL_H100_TFLOPS, "benchmarks/README.md:90",
           "| Llama, 1.2 B (hidden 2048, 22 layers, GQA 4) | 1,170 M | 243× | 187× | 0.93× / 0.84× | 0.58 | 11.7% / 20.2% |"),
    Figure("prefill_tflops", "gpu", H100, 6.879, 0.237 * MATMUL_H100_TFLOPS, "benchmarks/README.md:91",
           "| Llama-2-7B shape (hidden 4096, 32 layers) | 6,879 M | 160× | 242× | 1.10× / 1.77× | 0.82 | 23.7% / 40.9% |"),
    # one batch of 256 BBQ prompts, 128 new tokens each: the engine's whole run / 128 steps (its one prefill
    # included, so an upper bound on the step); engine time = batched generate's time / the engine's speedup
    Figure("step_ms", "gpu", H100, 0.1345, 2.89 / 1.05 / 128 * 1e3, "issue #17",
           "1.05x / 0.88x at 135M ... took ... 2.89 s at 135M (256 prompts, 128 new tokens each)"),
    Figure("step_ms", "gpu", H100, 6.879, 8.25 / 1.24 / 128 * 1e3, "issue #17",
           "1.24x at 7B for CoT ... took 4.73 s instead of 8.25 s at the 7B shape"),
    # SmolLM2-135M, batch 64, CoT (the offline study's shape)
    Figure("prefill_tflops", "cpu", CPU, 0.1345, 2 * 0.1345e9 / 2.2e-3 / 1e12, "benchmarks/README.md:127",
           "Where the CPU time goes (batch 64, CoT): prefill is compute-bound (~2.2 ms per token, near the matmul rate), about"),
    Figure("step_ms", "cpu", CPU, 0.1345, 360.0, "benchmarks/README.md:128",
           "14 s; a decode step costs ~360 ms, of which ~235 ms are the matrix products (17 GFLOP at M=64: small-M GEMMs reach"),
)


def _measured(kind: str, device: str) -> list[Figure]:
    return sorted((f for f in FIGURES if f.kind == kind and f.device == device), key=lambda f: f.params_b)


def at_size(kind: str, device: str, params_b: float) -> float:
    """A figure at ``params_b``: interpolated in log(params) between measured sizes; outside them, the nearest
    one's, except that a decode step of a larger model grows with its parameters (it reads every weight)."""
    points = _measured(kind, device)
    lo, hi = points[0], points[-1]
    if params_b <= lo.params_b:
        return lo.value
    if params_b >= hi.params_b:
        return hi.value * (params_b / hi.params_b if kind == "step_ms" else 1.0)
    for a, b in zip(points, points[1:]):
        if a.params_b <= params_b <= b.params_b:
            t = (math.log(params_b) - math.log(a.params_b)) / (math.log(b.params_b) - math.log(a.params_b))
            return a.value + t * (b.value - a.value)
    raise AssertionError("unreachable: the sizes are sorted")


def examples_per_benchmark(cfg: dict) -> dict[str, int]:
    sources = load_sources()
    return {bench: get_task(bench).sample_size(cfg, sources) for bench in cfg["benchmarks"]}


def calls_and_tokens(cfg: dict, registry: Registry) -> pd.DataFrame:
    """Per (benchmark, condition): calls, prompt tokens (every call's whole conversation), the tokens encoded when
    the KV cache is carried from call to call, and generated tokens (each call's maximum)."""
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
            prompt = carried_prefill = generated = calls = 0
            in_cache = 0  # tokens of the previous call's prompt and answer, which a carried KV cache holds
            for r in range(cfg["rounds"]):
                base = task.mean_prompt_tokens + r * per_round_growth
                if cot:
                    prompt += base
                    carried_prefill += base - in_cache
                    in_cache = base + cot_tokens
                    generated += cot_tokens
                    calls += 1
                answer_prompt = base + (cot_tokens + FOLLOWUP_TOKENS if cot else 0)
                prompt += answer_prompt
                carried_prefill += answer_prompt - in_cache
                in_cache = answer_prompt + gen_answer
                generated += gen_answer
                calls += 1
            rows.append({"benchmark": bench, "condition": cond, "examples": n, "calls": n * calls,
                         "prompt_tokens": n * prompt, "carried_prefill_tokens": n * carried_prefill,
                         "generated_tokens": n * generated})
    return pd.DataFrame(rows)


def carries_kv(model_cfg: dict, generation: dict) -> bool:
    """Whether a model's backend encodes only each call's new tokens: vLLM (prefix caching) always, the engine
    with carry_kv_between_rounds."""
    from .config_checks import model_backend

    return model_backend(model_cfg, generation) == "vllm" or bool(generation.get("carry_kv_between_rounds", True))


def estimate(cfg: dict) -> pd.DataFrame:
    """One row per model (and a TOTAL): calls, tokens, decode steps and device hours, prefill and decode apart."""
    from .config_checks import model_backend

    work = calls_and_tokens(cfg, Registry.load())
    g = cfg["generation"]
    batch = int(g["batch_size"])
    generated = int(work["generated_tokens"].sum())
    rows = []
    for name, m in cfg["models"].items():
        params_b = float(m.get("params_b") or 0)
        device = "gpu" if int(m.get("gpus") or 0) >= 1 else "cpu"
        prefill = int(work["carried_prefill_tokens" if carries_kv(m, g) else "prompt_tokens"].sum())
        steps = math.ceil(generated / batch)
        prefill_s = 2 * params_b * 1e9 * prefill / (at_size("prefill_tflops", device, params_b) * 1e12)
        decode_s = steps * at_size("step_ms", device, params_b) / 1e3
        rows.append({"model": name, "params_b": params_b, "backend": model_backend(m, g), "gpus": int(m.get("gpus") or 0),
                     "prompts": int(work["calls"].sum()), "prefill_tokens": prefill, "generated_tokens": generated,
                     "decode_steps": steps, "prefill_hours": prefill_s / 3600, "decode_hours": decode_s / 3600,
                     "device_hours": (prefill_s + decode_s) / 3600})
    table = pd.DataFrame(rows)
    total = {c: table[c].sum() for c in ("prompts", "prefill_tokens", "generated_tokens", "decode_steps",
                                         "prefill_hours", "decode_hours", "device_hours")}
    total.update(model="TOTAL", params_b=None, backend="", gpus=None)
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def figures_used(cfg: dict) -> list[Figure]:
    """The measured figures the estimate of ``cfg`` reads: those of the devices its models run on."""
    devices = {"gpu" if int(m.get("gpus") or 0) >= 1 else "cpu" for m in cfg["models"].values()}
    return [f for f in FIGURES if f.device in devices]


def format_estimate(table: pd.DataFrame, cfg: dict) -> str:
    shown = table.copy()
    for c in ("prompts", "prefill_tokens", "generated_tokens", "decode_steps"):
        shown[c] = shown[c].map(lambda v: f"{int(v):,}")
    for c in ("prefill_hours", "decode_hours", "device_hours"):
        shown[c] = shown[c].map(lambda v: f"{v:,.2f}")
    shown["params_b"] = shown["params_b"].map(lambda v: "" if v is None or pd.isna(v) else f"{v:g}")
    shown["gpus"] = shown["gpus"].map(lambda v: "" if v is None or pd.isna(v) else f"{int(v)}")
    names = {"prefill_tflops": "model FLOP rate (prefill)", "step_ms": "decode step"}
    units = {"prefill_tflops": "TFLOP/s", "step_ms": "ms"}
    lines = [f"Decode steps = generated tokens / batch_size {cfg['generation']['batch_size']}, each at the measured "
             "step time; prefill = 2 x params x tokens encoded / the measured model FLOP rate; device hours = "
             "single-device equivalents (vLLM models use the engine's figures: none recorded for vLLM).",
             "Figures used (interpolated between sizes; see src/selfcorrect/estimate.py):"]
    for f in figures_used(cfg):
        lines.append(f"  {f.machine}: {names[f.kind]} {f.value:,.1f} {units[f.kind]} at {f.params_b:g} B params "
                     f"({f.source})")
    return "\n".join(lines) + "\n" + shown.to_string(index=False)
