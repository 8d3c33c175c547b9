"""What a rerun of the generation jobs reproduces bit for bit, and what it does not, for the methods page.

The CPU half is measured and tested (docs/RELIABILITY.md, "Determinism"; tests/test_reliability.py); the GPU half
states what the code does and does not pin, since CUDA libraries give no guarantee unless told to.
"""

from __future__ import annotations

from . import MKL_CBWR

CPU = ("On CPU a generation job is bit-reproducible: run again on the same CPU type with the same threads per "
       "process and software, it writes identical tables (Intel MKL's Conditional Numerical Reproducibility, "
       f"MKL_CBWR={MKL_CBWR}, is set for every job; without it MKL's results depend on memory alignment and threaded "
       "scheduling), as long as free memory does not cut its batches (batch sizes are planned from the memory free "
       "when the job starts, net of what a job or process running beside it holds). A job of a small model runs as "
       "processes of one share of its threads each (cluster.generate_processes; each shard is computed by one of "
       "them, and its .meta.json records threads_per_process). Another CPU type or thread count may change "
       "log-probabilities in their last digits; shards are reused whatever the thread count, so a job resumed with "
       "another thread count may combine shards written with both.")
GPU = ("On GPU the workflow does not make runs bit-reproducible: it does not call "
       "torch.use_deterministic_algorithms or set CUBLAS_WORKSPACE_CONFIG, so cuBLAS and the attention kernels may "
       "choose different algorithms or reduction orders from one run to the next; batch sizes are planned from the "
       "GPU memory free when a job starts, and a batch that runs out of memory is retried at half its size, which "
       "changes padding. Log-probabilities can therefore differ in their last digits between reruns on the same "
       "GPU, and a greedy answer can change where two tokens are almost tied; the sample, prompts, rounds and "
       "decoding settings are the same.")
VLLM = ("vLLM schedules requests into batches as they arrive and finish, so its log-probabilities are not "
        "bit-reproducible either.")


def determinism_note(metas: list[dict]) -> str:
    """The methods page's paragraph on reproducibility for a run whose generation jobs wrote ``metas``
    (their .meta.json): the CPU and GPU statements, vLLM's where it ran, and which devices this run used."""
    devices = sorted({str(m.get("device", "?")) for m in metas})
    backends = {m.get("backend") for m in metas}
    text = f"{CPU} {GPU}"
    if "vllm" in backends:
        text += f" {VLLM}"
    return text + (f" This run generated on: {', '.join(devices)}." if devices else "")
