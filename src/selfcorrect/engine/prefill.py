"""Prefill: a batch's prompts into its KV cache, level by level of their prefix tree, rows grouped by length, or
on top of the cache that the same examples carried from their previous stage or round."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .batching import pad_left
from .kv import StoredBatch, all_growing, compact, gather_rows, new_cache, reserve, rows_of
from .plan import common_prefix, length_groups, prefix_levels

if TYPE_CHECKING:
    from .engine import Engine


def positions(mask):
    """Each column's position in its row: the count of attended columns before it."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def prefill(eng: Engine, p_ids: list[list[int]], carried: StoredBatch | None, room: int = 0):
    """Encode the prompts (on the ``carried`` cache of the same examples, if any); (logits, mask, positions, cache).

    A carried cache keeps its columns; each row masks out its stored tokens past the longest common prefix
    with its new prompt and appends only the new tokens: [stored columns][pad][new tokens].
    """
    import torch

    if carried is None:
        levels = prefix_levels(p_ids, eng.min_shared, eng.prefix_depth) if eng.prefix_tree_prefill else None
        levels = levels or [(p_ids, None)]
        cache = new_cache(eng.model.config, room)
        mask = torch.zeros((len(levels[0][0]), 0), dtype=torch.long, device=eng.device)
        for segments, parents in levels:
            logits, mask, pos = extend(eng, cache, mask, segments, parents)
    else:
        mask, cache = carried.mask.clone(), carried.cache
        suffixes = []
        for j, (ids, prev) in enumerate(zip(p_ids, carried.ids)):
            n = common_prefix(prev, ids, len(ids) - 1)
            cols = mask[j].nonzero().squeeze(-1)
            mask[j, cols[n:]] = 0  # stale tokens of the previous prompt: masked, never attended
            suffixes.append(ids[n:])
        reserve(cache, room)
        logits, mask, pos = extend(eng, cache, mask, suffixes)
    mask = compact(cache, mask)
    return logits, mask, pos, cache


def extend(eng: Engine, cache, mask, segments: list[list[int]], parents: list[int] | None = None):
    """Append ``segments`` to rows ``parents`` of the cache (all rows, in order, when None), in place.

    Afterwards the cache has one row per segment. Rows are run in groups of similar segment length
    (``length_groups``), so that short segments are not padded to the longest one; a group's new columns
    are right-aligned, the gap before them masked like any padding. Returns the last token's logits
    (rows, 1, vocab), the new mask, and the new tokens' positions.
    """
    import torch

    index = None if parents is None else torch.tensor(parents, device=eng.device)
    groups = length_groups([len(s) for s in segments], eng.split_cost) if all_growing(cache) else None
    if groups is None or len(groups) == 1:
        if index is not None:
            gather_rows(cache, index)
            mask = mask[index]
        input_ids, new_mask = pad_left(segments, eng.tokenizer.pad_token_id, eng.device)
        mask = torch.cat([mask, new_mask], dim=1)
        pos = positions(mask)[:, -new_mask.shape[1]:]
        logits, _ = eng._step(input_ids, mask, pos, cache, 1)
        return logits, mask, pos
    old_width, width = mask.shape[1], max(map(len, segments))
    rows_from = torch.arange(len(mask), device=eng.device) if index is None else index
    new_mask = torch.zeros((len(segments), old_width + width), dtype=mask.dtype, device=eng.device)
    new_mask[:, :old_width] = mask[rows_from]
    logits = pos = None
    runs = []
    for group in groups:
        seg_width = max(len(segments[i]) for i in group)
        if seg_width == 0:
            continue  # nothing to encode: these rows keep their parent's columns
        rows = torch.tensor(group, device=eng.device)
        sub = rows_of(cache, rows_from[rows]) if old_width else new_cache(eng.model.config)
        reserve(sub, 0)  # the batch's room is reserved once, in the merged cache
        input_ids, seg_mask = pad_left([segments[i] for i in group], eng.tokenizer.pad_token_id, eng.device)
        sub_mask = torch.cat([new_mask[rows, :old_width], seg_mask], dim=1)
        sub_pos = positions(sub_mask)[:, -seg_width:]
        sub_logits, _ = eng._step(input_ids, sub_mask, sub_pos, sub, 1)
        cols = slice(old_width + width - seg_width, old_width + width)
        new_mask[rows, cols] = seg_mask
        if logits is None:
            logits = sub_logits.new_zeros((len(segments), *sub_logits.shape[1:]))
            pos = torch.zeros((len(segments), width), dtype=sub_pos.dtype, device=eng.device)
        logits[rows] = sub_logits
        pos[rows, width - seg_width:] = sub_pos
        runs.append((rows, cols, sub))
    _merge(cache, index, runs, len(segments), old_width, width)
    return logits, new_mask, pos


def _merge(cache, index, runs, n_rows: int, old_width: int, width: int) -> None:
    """Join the length groups' sub-caches into ``cache``: its old columns (gathered to ``index``), then ``width``
    new columns, each group's right-aligned."""
    for n, layer in enumerate(cache.layers):
        merged = []
        for name in ("keys", "values"):
            like = getattr(runs[0][2].layers[n], name)
            # with the room the batch will append, so that decoding writes in place
            t = like.new_empty((n_rows, *like.shape[1:-2], old_width + width + layer.room, like.shape[-1]))
            if old_width:
                t[:, :, :old_width] = getattr(layer, name) if index is None else getattr(layer, name)[index]
            t[:, :, old_width:old_width + width] = 0  # gaps are masked, but must not hold NaNs (0 x NaN is NaN)
            for rows, cols, sub in runs:
                t[rows, :, cols] = getattr(sub.layers[n], name)[:, :, old_width:]
            merged.append(t)
        if not layer.is_initialized:
            layer.lazy_initialization(*merged)
        layer.adopt(*merged, old_width + width)
