"""Memory: how many rows a batch can take, planned from the model's shape and the free memory, and which errors
mean that a batch did not fit after all.

A batch's memory is dominated by its KV cache: per token, every layer keeps a key and a value vector per KV head.
Weights are loaded before the engine starts, so what is free then is what the batches and the carried caches share;
on CUDA the engine reads it again at every call (other models, compiled graphs and its own carried caches change it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

# error texts of kernels that could not allocate. cuDNN's attention raises the first when it cannot get its
# workspace (seen at batch 32 on an H100 at the 7B shape, issue 17); cuBLAS the second; a CUDA launch the third
OOM_TEXTS = (
    "Expected mha_graph.execute(handle, variant_pack, workspace_ptr.get()).is_good() to be true",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDA error: out of memory",
    "out of memory",  # the caching allocator's own message ("CUDA out of memory. Tried to allocate ...")
)
# on CUDA, any RuntimeError raised while less than this is free is taken for an allocation failure: kernels that
# fail to allocate do not all say so
LOW_FREE_BYTES = 1 << 30
# the share of the free memory a plan hands out; the rest is for the allocator's fragmentation and kernel workspaces
PLAN_SHARE = 0.9


def _dtype_size(dtype) -> int:
    import torch

    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        if not isinstance(getattr(torch, name, None), torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}: use a torch dtype name such as 'bfloat16' or 'float32'")
        dtype = getattr(torch, name)
    return torch.empty((), dtype=dtype).element_size()


def _text_config(config):
    """The language model's part of a config (multimodal configs nest it)."""
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def kv_bytes_per_token(config, dtype) -> int:
    """Bytes of KV cache one token takes: layers x KV heads x head dim x 2 (key and value) x the dtype's size.

    Configs without ``num_key_value_heads`` have one KV head per attention head (no GQA); without ``head_dim``
    (or with None) a head is ``hidden_size / num_attention_heads`` wide.
    """
    config = _text_config(config)
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers * kv_heads * head_dim * 2 * _dtype_size(dtype)


def activation_bytes_per_row(config, dtype, tokens: int) -> int:
    """A generous estimate of one row's transient memory in a forward pass over ``tokens`` tokens.

    Layers run one after another, so one layer's activations count: the hidden states and their q/k/v/o and
    MLP projections, the boolean attention mask (tokens x tokens), and the last position's logits in float32
    with their log-softmax.
    """
    config = _text_config(config)
    width = 4 * config.hidden_size + 3 * getattr(config, "intermediate_size", 4 * config.hidden_size)
    return tokens * width * _dtype_size(dtype) + tokens * tokens + 3 * 4 * config.vocab_size


def plan_batch_size(free_bytes: int, kv_bytes_per_token: int, tokens_per_row: int, carried_tokens_per_row: int,
                    activation_bytes_per_row: int, max_batch: int) -> int:
    """The most rows a batch can take, between 1 and ``max_batch``.

    ``free_bytes`` is the memory free for batches and carried caches, the weights loaded. Out of it come first
    the caches carried between rounds: the caller runs up to ``max_batch`` examples through all their rounds
    together, and each keeps ``carried_tokens_per_row`` tokens of KV cache for its next stage or round whichever
    rows are running (0 without carry-over). The rest is shared by the batch's rows, each of which needs
    ``tokens_per_row`` tokens of KV cache (its prompt and answer, and copies the engine makes of them) plus
    ``activation_bytes_per_row``. At least 1: a row that does not fit is left to fail as out-of-memory.

    Example: Llama-2-7B in bfloat16 takes 0.5 MiB of cache per token; on an 80 GB card with 66.5 GB free
    after its weights, rows of 1024 tokens (0.5 GiB each; activations aside) fit 123 to a batch.
    """
    sizes = dict(free_bytes=free_bytes, kv_bytes_per_token=kv_bytes_per_token, tokens_per_row=tokens_per_row,
                 carried_tokens_per_row=carried_tokens_per_row, activation_bytes_per_row=activation_bytes_per_row)
    negative = {name: value for name, value in sizes.items() if value < 0}
    if negative:
        raise ValueError(f"plan_batch_size takes sizes >= 0, got {negative}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    left = free_bytes - max_batch * carried_tokens_per_row * kv_bytes_per_token
    per_row = tokens_per_row * kv_bytes_per_token + activation_bytes_per_row
    rows = left // per_row if per_row else max_batch
    return int(max(1, min(max_batch, rows)))


def free_memory(device) -> int:
    """Bytes that tensors on ``device`` can still take: on CUDA what the driver has free plus what torch's caching
    allocator holds unused, but no more than this process's cap (``torch.cuda.set_per_process_memory_fraction``)
    leaves; elsewhere the host's available memory."""
    if str(device).startswith("cuda"):
        import torch

        free, total = torch.cuda.mem_get_info(device)
        allocated = torch.cuda.memory_allocated(device)
        unused = free + torch.cuda.memory_reserved(device) - allocated
        # the allocator refuses past total x fraction, whatever the driver has free (seen on an H100: a plan that
        # read only the driver's figure halved a batch seven times under a cap; benchmarks/README.md)
        get_fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
        if get_fraction is not None:
            index = torch.device(device).index
            index = torch.cuda.current_device() if index is None else index  # it takes no bare 'cuda'
            unused = min(unused, int(total * get_fraction(index)) - allocated)
        return int(max(0, unused))
    import psutil  # a dependency of accelerate, which the generate extra installs

    return int(psutil.virtual_memory().available)


def is_oom(err: BaseException, device=None) -> bool:
    """True when ``err`` says that memory ran out: torch's OutOfMemoryError, a kernel's allocation failure by its
    text (``OOM_TEXTS``), or, on CUDA, any RuntimeError raised while less than ``LOW_FREE_BYTES`` is free."""
    import torch

    if isinstance(err, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)):
        return True
    if not isinstance(err, RuntimeError):
        return False
    text = str(err).lower()
    if any(t.lower() in text for t in OOM_TEXTS):
        return True
    return str(device).startswith("cuda") and free_memory(device) < LOW_FREE_BYTES


@dataclass
class BatchSizer:
    """How many rows the next batch takes: the configured size, the memory plan, and what out-of-memory taught.

    An out-of-memory error halves the failed batch and caps later ones at that size; after ``grow_after``
    batches in a row succeed at the cap, it doubles, until the configured size (and the plan) limit again.
    """

    limit: int  # the configured batch size
    grow_after: int = 2
    cap: int | None = None  # set by an out-of-memory error
    _succeeded: int = 0

    def size(self, planned: int) -> int:
        """Rows for the next batch, given how many the memory plan allows."""
        return max(1, min(self.limit, planned, self.cap or self.limit))

    def failed(self, rows: int) -> int:
        """A batch of ``rows`` ran out of memory: the size to retry its rows at."""
        self.cap, self._succeeded = max(1, rows // 2), 0
        log.warning("out of memory: batch of %d rows halved to %d, retrying", rows, self.cap)
        return self.cap

    def succeeded(self) -> None:
        if self.cap is None:
            return
        self._succeeded += 1
        if self._succeeded >= self.grow_after:
            self.cap, self._succeeded = self.cap * 2, 0
            if self.cap >= self.limit:
                self.cap = None
