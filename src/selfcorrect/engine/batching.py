"""Rows into batches: sized by the memory plan, retried smaller when a batch runs out of memory; padded."""

from __future__ import annotations

from typing import Callable, NamedTuple

from .memory import BatchSizer, is_oom


class Row(NamedTuple):
    """One prompt of an ``answer`` call."""

    prompt_ids: list[int]
    option_ids: list[list[int]] | None  # the options' tokens, scored on the prompt's cache; None: no scoring
    key: object  # the prompt's example (its KV cache may be carried to the example's next stage); None: not carried


def run_batched(items: list, order: list[int], fn: Callable[[list], list], sizer: BatchSizer,
                planned: Callable[[list[int]], int], device, bar=None, groups: list[list[int]] | None = None) -> list:
    """``fn`` over batches of ``items``, results in the items' order.

    The batches are the given ``groups``, else runs of ``order`` as long as ``sizer`` allows for what ``planned``
    says fits (``planned(candidates)``: how many of those item indices fit in memory, from the first). A batch
    that runs out of memory is split in halves, retried, and caps the batches after it (see ``BatchSizer``).
    """
    out: list = [None] * len(items)
    pending = [list(g) for g in groups] if groups else []
    start = len(order) if groups else 0
    while pending or start < len(order):
        if pending:
            idx = pending.pop(0)
        else:
            idx = order[start:start + sizer.size(sizer.limit)]
            idx = idx[:sizer.size(planned(idx))]
            start += len(idx)
        try:
            results = fn([items[i] for i in idx])
        except RuntimeError as err:
            if len(idx) == 1 or not is_oom(err, device):
                raise
            half = sizer.failed(len(idx))
            pending[:0] = [idx[i:i + half] for i in range(0, len(idx), half)]
            failed = True
        else:
            failed = False
        if failed:  # out of the except block, so that the traceback no longer holds the failed batch's tensors
            release(device)
            continue
        sizer.succeeded()
        for i, r in zip(idx, results):
            out[i] = r
        if bar is not None:
            bar.update(len(idx))
    return out


def pad_left(seqs: list[list[int]], pad_id: int, device):
    """Token ids and attention mask of ``seqs``, left-padded with ``pad_id`` to the longest, on ``device``."""
    import torch

    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for j, s in enumerate(seqs):
        input_ids[j, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[j, width - len(s):] = 1
    return input_ids.to(device), mask.to(device)


def release(device) -> None:
    """Hand the failed batch's cached blocks back, so that its halves start from a clean allocator."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
