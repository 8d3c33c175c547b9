"""One decoding step of SmolLM2-135M-Instruct on CPU with the output layer whole and in slices of the vocabulary.

    python benchmarks/output_layer.py [--rows 64] [--cached 200] [--repeats 6] [--threads 1 2]

The model is the workflow's converted one (resources/models/smollm2-135m-instruct; converted first if missing), with
the engine's grouped attention. A step is ``--rows`` rows of one new token over ``--cached`` cached tokens; each
timing is the mean of two steps, and the two ways alternate (whole, sliced, then sliced, whole, ...) so that the
machine's drift falls on both. Last line: one JSON object with the median step of each way per thread count, their
ratio, and whether the two ways gave the same logits, bit for bit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

import generation  # noqa: E402
from selfcorrect.engine import Engine  # noqa: E402
from selfcorrect.engine.output_layer import use_sliced_output_layer, use_stock_output_layer  # noqa: E402


def step_times(engine: Engine, rows: int, cached: int, repeats: int) -> tuple[dict[str, list[float]], bool]:
    model = engine.model
    torch.manual_seed(0)
    with torch.inference_mode():
        cache = model(input_ids=torch.randint(0, model.config.vocab_size, (rows, cached)), use_cache=True,
                      logits_to_keep=1).past_key_values
        token = torch.randint(0, model.config.vocab_size, (rows, 1))
        position = torch.full((rows, 1), cached)

        def step():
            logits = model(input_ids=token, position_ids=position, use_cache=True, logits_to_keep=1,
                           **{engine.cache_argument: cache}).logits
            cache.crop(-1)
            return logits

        times, logits = {"whole": [], "sliced": []}, {}
        for r in range(repeats):
            for way in (("whole", "sliced") if r % 2 == 0 else ("sliced", "whole")):
                (use_sliced_output_layer if way == "sliced" else use_stock_output_layer)(model)
                step()
                t0 = time.perf_counter()
                logits[way] = step()
                step()
                times[way].append((time.perf_counter() - t0) / 2)
    use_stock_output_layer(model)
    return times, torch.equal(logits["whole"], logits["sliced"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=64, help="rows of the batch (the offline study's: 64)")
    ap.add_argument("--cached", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--model-dir", default=str(ROOT / "resources" / "models" / "smollm2-135m-instruct"))
    args = ap.parse_args()
    load_args = argparse.Namespace(random_weights=None, model_dir=args.model_dir)
    model, tok, _ = generation.load(load_args, "cpu")
    engine = Engine(model, tok, "cpu", progress=False)  # its grouped attention; its slices are switched per step
    out = {"rows": args.rows, "cached": args.cached, "repeats": args.repeats, "torch": torch.__version__}
    for threads in args.threads:
        torch.set_num_threads(threads)
        times, same = step_times(engine, args.rows, args.cached, args.repeats)
        whole, sliced = (statistics.median(times[w]) for w in ("whole", "sliced"))
        print(f"{threads} thread(s): whole {[round(t * 1e3, 1) for t in times['whole']]} ms, "
              f"sliced {[round(t * 1e3, 1) for t in times['sliced']]} ms", flush=True)
        out[f"step_ms_whole_{threads}t"] = round(whole * 1e3, 1)
        out[f"step_ms_sliced_{threads}t"] = round(sliced * 1e3, 1)
        out[f"ratio_{threads}t"] = round(sliced / whole, 3)
        out[f"logits_equal_{threads}t"] = same
    print(json.dumps(out))


if __name__ == "__main__":
    main()
