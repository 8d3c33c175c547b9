"""Batched greedy generation and option scoring with transformers.

Prompts are sorted by length and left-padded into batches, so padding is small and every row of a
batch ends where the model continues. A CUDA out-of-memory error halves the batch and retries it.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

# finished rows leave a decoding batch once they are 1/_LEAVE_AT of it and more than 8 steps are left: then the
# copy of the cache that it takes pays for itself
_LEAVE_AT = 4


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def _is_oom(err: BaseException) -> bool:
    import torch

    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


@dataclass
class Engine:
    model: object
    tokenizer: object
    device: str
    batch_size: int = 16
    progress: bool = True
    stop_strings: tuple[str, ...] = ()
    # KV cache of the last batch, keyed by its examples. When the same examples come back (the next stage or round
    # of their conversations, whose prompts start with the previous ones), only the new tokens are computed. None: off.
    prefix_store: dict | None = None
    # Prompts of one batch that start alike (the four questions of one BBQ context, the pronoun variants of one
    # Winogender sentence, one system prompt for all) have their shared prefix encoded once: a radix tree of the
    # batch is prefilled level by level, each level's KV cache gathered to the rows below it.
    share_prefixes: bool = True
    min_shared: int = 8
    # A batch's rows are prefilled in groups of similar length when that saves more padded tokens than this per
    # extra group (a forward pass costs launches and copies of the cache). None: by device (CPU 32, GPU 4096).
    split_cost: int | None = None
    # real (unpadded) tokens run through the model, a device tensor once counting starts, so that counting costs no sync
    _processed: object = field(default=0, init=False, repr=False)

    def __post_init__(self):
        if self.split_cost is None:
            self.split_cost = 4096 if str(self.device).startswith("cuda") else 32
        if str(self.device) == "cpu":
            use_grouped_attention(self.model)

    def reuse_prefixes(self, on: bool = True) -> None:
        self.prefix_store = {} if on else None

    # the Backend contract (interim names, until the engine package lands)
    @property
    def carry_kv_between_rounds(self) -> bool:
        return self.prefix_store is not None

    @property
    def prefix_tree_prefill(self) -> bool:
        return self.share_prefixes

    def forget(self) -> None:
        if self.prefix_store is not None:
            self.prefix_store.clear()

    # ------------------------------------------------------------ batching
    def _run_batched(self, items: list, sort_keys: list, fn, desc: str, groups: list[list[int]] | None = None) -> list:
        """``fn`` over batches of ``items``: the given ``groups``, else slices of batch_size in ``sort_keys`` order."""
        from tqdm.auto import tqdm

        out: list = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: sort_keys[i])
        pending = list(groups) if groups else [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        bar = tqdm(total=len(items), desc=desc, disable=not self.progress, unit="seq", mininterval=2.0)
        while pending:
            idx = pending.pop(0)
            try:
                results = fn([items[i] for i in idx])
            except RuntimeError as err:
                if not _is_oom(err) or len(idx) == 1:
                    raise
                import torch

                torch.cuda.empty_cache()
                self.batch_size = max(1, min(self.batch_size, len(idx)) // 2)
                log.warning("out of memory: batch size halved to %d, retrying the batch", self.batch_size)
                pending[:0] = [idx[i:i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
                continue
            for i, r in zip(idx, results):
                out[i] = r
            bar.update(len(idx))
        bar.close()
        return out

    # ------------------------------------------------------------ generation
    @property
    def eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        extra = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids |= set(extra) if isinstance(extra, (list, tuple)) else ({extra} if extra is not None else set())
        return {i for i in ids if i is not None}

    def generate(self, prompts: list[str], max_new_tokens: int, desc: str = "generate", keys: list | None = None) -> list[str]:
        """Greedy continuations of ``prompts`` (special tokens dropped, cut at the first stop string)."""
        return self.answer(prompts, max_new_tokens, None, desc, keys)[0]

    def answer(self, prompts: list[str], max_new_tokens: int | None, options: list[list[str]] | None,
               desc: str = "answer", keys: list | None = None) -> tuple[list[str] | None, list[list[float]] | None]:
        """Greedy answers and option log-probabilities from one prefill of each prompt.

        The prompt is encoded once; the options' tokens are scored on its KV cache (then cropped off
        again) and greedy decoding continues from the same cache. ``max_new_tokens=None`` skips decoding.
        """
        tok = self.tokenizer
        p_ids = tok(prompts, add_special_tokens=False)["input_ids"]
        o_ids = [tok(list(o), add_special_tokens=False)["input_ids"] for o in options] if options else [None] * len(prompts)
        if options and not all(_last_token_differs(o) for o in o_ids):
            texts = self.answer(prompts, max_new_tokens, None, desc, keys)[0] if max_new_tokens else None
            return texts, self._sequence_scores(p_ids, o_ids, desc)
        rows = list(zip(p_ids, o_ids, keys if keys is not None else [None] * len(prompts)))
        results = self._run_batched(rows, self._batch_order(p_ids), lambda b: self._answer_batch(b, max_new_tokens), desc,
                                    groups=self._stored_groups(keys))
        texts = [r[0] for r in results] if max_new_tokens else None
        scores = [r[1] for r in results] if options else None
        return texts, scores

    def _batch_order(self, p_ids: list[list[int]]) -> list:
        """Sort keys: token order puts prompts with shared prefixes in one batch; else longest first, to pad little."""
        return [tuple(p) for p in p_ids] if self.share_prefixes else [-len(p) for p in p_ids]

    def _step(self, input_ids, mask, positions, cache, keep: int):
        """One forward pass that appends to ``cache`` in place (transformers renamed the argument in 5.x)."""
        import inspect

        if not hasattr(self, "_cache_arg"):
            params = inspect.signature(self.model.forward).parameters
            self._cache_arg = "cache" if "cache" in params else "past_key_values"
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=keep, **{self._cache_arg: cache})
        self._processed = self._processed + mask[:, -input_ids.shape[1]:].sum()
        return out.logits.float(), cache

    @property
    def tokens_processed(self) -> int:
        """Tokens the model has encoded or decoded so far, padding not counted (shared prefixes count once)."""
        return int(self._processed)

    def _answer_batch(self, batch, max_new_tokens):
        import torch

        with torch.inference_mode():
            # room for the tokens this batch will append: option scoring's shared tokens, then the decoded ones
            room = (max_new_tokens or 0) + (len(batch[0][1][0]) if batch[0][1] is not None else 0)
            logits, mask, positions, cache = self._prefill([r[0] for r in batch], [r[2] for r in batch], room)
            last = logits[:, -1]
            scores = [None] * len(batch)
            if batch[0][1] is not None:
                scores = self._score_on_cache(batch, last, mask, positions, cache)
            texts, fed = [None] * len(batch), [[] for _ in batch]
            if max_new_tokens:
                texts, fed, mask = self._greedy(last, mask, positions[:, -1:], cache, max_new_tokens)
            self._keep([r[2] for r in batch], [r[0] + f for r, f in zip(batch, fed)], mask, cache)
        return list(zip(texts, scores))

    def _keep(self, keys: list, ids: list[list[int]], mask, cache) -> None:
        """Store the batch's cache (prompt and answer tokens, ``ids``; ``mask`` covers all its columns) for the
        next stage or round of its examples."""
        if self.prefix_store is not None and None not in keys:
            self.prefix_store[frozenset(keys)] = (list(keys), ids, mask, cache)

    def _prefill(self, p_ids: list[list[int]], keys: list, room: int = 0):
        """Encode the prompts; where this batch's examples were encoded together before, reuse that KV cache.

        The stored cache keeps its columns; each row masks out its stored tokens past the longest common prefix
        with its new prompt and appends only the new tokens: [stored columns][pad][new tokens].
        """
        import torch

        entry = self._stored(keys)
        if entry is None:
            levels = prefix_levels(p_ids, self.min_shared) if self.share_prefixes else None
            levels = levels or [(p_ids, None)]
            cache = new_cache(self.model.config, room)
            mask = torch.zeros((len(levels[0][0]), 0), dtype=torch.long, device=self.device)
            for segments, parents in levels:
                logits, mask, positions = self._extend(cache, mask, segments, parents)
        else:
            order, old_ids, mask, cache = entry
            mask = mask.clone()
            suffixes = []
            for j, (ids, prev) in enumerate(zip(p_ids, old_ids)):
                n = _common_prefix(prev, ids, len(ids) - 1)
                cols = mask[j].nonzero().squeeze(-1)
                mask[j, cols[n:]] = 0  # stale tokens of the previous prompt: masked, never attended
                suffixes.append(ids[n:])
            _reserve(cache, room)
            logits, mask, positions = self._extend(cache, mask, suffixes)
        mask = _compact(cache, mask)
        return logits, mask, positions, cache

    def _extend(self, cache, mask, segments: list[list[int]], parents: list[int] | None = None):
        """Append ``segments`` to rows ``parents`` of the cache (all rows, in order, when None), in place.

        Afterwards the cache has one row per segment. Rows are run in groups of similar segment length
        (``length_groups``), so that short segments are not padded to the longest one; a group's new columns
        are right-aligned, the gap before them masked like any padding. Returns the last token's logits
        (rows, 1, vocab), the new mask, and the new tokens' positions.
        """
        import torch

        index = None if parents is None else torch.tensor(parents, device=self.device)
        groups = length_groups([len(s) for s in segments], self.split_cost) if _all_growing(cache) else None
        if groups is None or len(groups) == 1:
            if index is not None:
                _gather_rows(cache, index)
                mask = mask[index]
            input_ids, new_mask = self._pad_left(segments)
            mask = torch.cat([mask, new_mask], dim=1)
            positions = _positions(mask)[:, -new_mask.shape[1]:]
            logits, _ = self._step(input_ids, mask, positions, cache, 1)
            return logits, mask, positions
        old_width, width = mask.shape[1], max(map(len, segments))
        rows_of = torch.arange(len(mask), device=self.device) if index is None else index
        new_mask = torch.zeros((len(segments), old_width + width), dtype=mask.dtype, device=self.device)
        new_mask[:, :old_width] = mask[rows_of]
        logits = positions = None
        runs = []
        for group in groups:
            seg_width = max(len(segments[i]) for i in group)
            if seg_width == 0:
                continue  # nothing to encode: these rows keep their parent's columns
            rows = torch.tensor(group, device=self.device)
            sub = _rows_of(cache, rows_of[rows]) if old_width else new_cache(self.model.config)
            _reserve(sub, 0)  # the batch's room is reserved once, in the merged cache
            input_ids, seg_mask = self._pad_left([segments[i] for i in group])
            sub_mask = torch.cat([new_mask[rows, :old_width], seg_mask], dim=1)
            sub_pos = _positions(sub_mask)[:, -seg_width:]
            sub_logits, _ = self._step(input_ids, sub_mask, sub_pos, sub, 1)
            cols = slice(old_width + width - seg_width, old_width + width)
            new_mask[rows, cols] = seg_mask
            if logits is None:
                logits = sub_logits.new_zeros((len(segments), *sub_logits.shape[1:]))
                positions = torch.zeros((len(segments), width), dtype=sub_pos.dtype, device=self.device)
            logits[rows] = sub_logits
            positions[rows, width - seg_width:] = sub_pos
            runs.append((rows, cols, sub))
        for n, layer in enumerate(cache.layers):
            merged = []
            for name in ("keys", "values"):
                like = getattr(runs[0][2].layers[n], name)
                # with the room the batch will append, so that decoding writes in place
                t = like.new_empty((len(segments), *like.shape[1:-2], old_width + width + layer.room, like.shape[-1]))
                if old_width:
                    t[:, :, :old_width] = getattr(layer, name) if index is None else getattr(layer, name)[index]
                t[:, :, old_width:old_width + width] = 0  # gaps are masked, but must not hold NaNs (0 x NaN is NaN)
                for rows, cols, sub in runs:
                    t[rows, :, cols] = getattr(sub.layers[n], name)[:, :, old_width:]
                merged.append(t)
            if not layer.is_initialized:
                layer.lazy_initialization(*merged)
            layer.adopt(*merged, old_width + width)
        return logits, new_mask, positions

    def _stored_groups(self, keys: list | None) -> list[list[int]] | None:
        """Batch the rows as they were batched last time, so that each batch finds its stored cache."""
        if not self.prefix_store or keys is None or None in keys:
            return None
        where = {k: n for n, key_set in enumerate(self.prefix_store) for k in key_set}
        if any(k not in where for k in keys):
            return None
        groups: dict[int, list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(where[k], []).append(i)
        return list(groups.values())

    def _stored(self, keys: list):
        """(row order, previous ids, mask, cache) stored by this batch's examples (see ``_keep``), or None."""
        import torch

        if self.prefix_store is None or None in keys:
            return None
        entry = self.prefix_store.pop(frozenset(keys), None)  # replaced by this batch's cache once it has answered
        if entry is None:
            return None
        old_keys, old_ids, mask, cache = entry
        order = [old_keys.index(k) for k in keys]
        if order != list(range(len(order))):
            index = torch.tensor(order, device=mask.device)
            _gather_rows(cache, index)
            mask = mask[index]
        return order, [old_ids[i] for i in order], mask, cache

    def _score_on_cache(self, batch, last, mask, positions, cache):
        """log P(option) for options that share all tokens but the last; the cache is left as found."""
        import torch

        shared = [tuple(r[1][0][:-1]) for r in batch]
        n = len(shared[0])
        if any(len(s) != n for s in shared):
            raise ValueError("options of one batch must share the same number of leading tokens")
        logp = [torch.log_softmax(last, dim=-1)]
        if n:
            ids = torch.tensor(shared, dtype=torch.long, device=self.device)
            ext = torch.cat([mask, torch.ones_like(ids)], dim=1)
            pos = positions[:, -1:] + 1 + torch.arange(n, device=self.device)
            logits, cache = self._step(ids, ext, pos, cache, n)
            cache.crop(-n)
            logp += [torch.log_softmax(logits[:, t], dim=-1) for t in range(n)]
        out = []
        for j, (_, opts, _) in enumerate(batch):
            head = sum(float(logp[t][j, shared[j][t]]) for t in range(n))
            out.append([head + float(logp[n][j, o[-1]]) for o in opts])
        return out

    def _greedy(self, last, mask, position, cache, max_new_tokens):
        """Greedy decoding; once a quarter of the rows still decoding have finished, they leave the batch.

        Returns the texts, and the tokens fed into ``cache`` per row with its mask: the answer's KV cache, which
        the next round reuses where its prompt repeats the answer. Rows that leave continue in a copy, so
        ``cache`` then holds the tokens up to that step.
        """
        import torch

        eos = torch.tensor(sorted(self.eos_ids), device=self.device)
        pad = self.tokenizer.pad_token_id
        nxt = last.argmax(-1)
        gen = torch.full((len(nxt), max_new_tokens), pad, dtype=nxt.dtype, device=self.device)
        gen[:, 0] = nxt
        rows = torch.arange(len(nxt), device=self.device)  # which rows of the batch are still in the cache
        done = torch.isin(nxt, eos)
        prompt_width, kept = mask.shape[1], None  # the mask of ``cache`` once rows have left it
        for step in range(1, max_new_tokens):
            finished = int(done.sum())
            if finished == len(done):
                break
            if finished * _LEAVE_AT >= len(done) and max_new_tokens - step > 8:
                keep = (~done).nonzero().squeeze(1)
                kept = mask if kept is None else kept
                cache = _rows_of(cache, keep)
                mask, position, nxt, done, rows = mask[keep], position[keep], nxt[keep], done[keep], rows[keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            position = position + 1
            logits, cache = self._step(nxt[:, None], mask, position, cache, 1)
            nxt = torch.where(done, torch.full_like(nxt, pad), logits[:, -1].argmax(-1))
            gen[rows, step] = nxt
            done |= torch.isin(nxt, eos)
        kept = mask if kept is None else kept
        n_fed = kept.shape[1] - prompt_width
        texts, fed = [], []
        for row in gen.tolist():
            cut = next((i for i, t in enumerate(row) if t in self.eos_ids), len(row))
            texts.append(cut_at_stops(self.tokenizer.decode(row[:cut], skip_special_tokens=True), self.stop_strings))
            fed.append(row[:n_fed])
        return texts, fed, kept

    # ------------------------------------------------------------ option scoring
    def _pad_left(self, seqs: list[list[int]]):
        import torch

        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for j, s in enumerate(seqs):
            input_ids[j, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[j, width - len(s):] = 1
        return input_ids.to(self.device), mask.to(self.device)

    def option_logprobs(self, prompts: list[str], options: list[list[str]], desc: str = "logprob") -> list[list[float]]:
        """log P(option | prompt) for every option of every prompt.

        Prompt and options are tokenised separately and concatenated, so every option is scored on the
        same prompt tokens. Where the options share all tokens but their last (" (a"/" (b"/" (c",
        " he"/" she"/" they"), one forward pass per prompt scores them all; otherwise one row per option.
        """
        return self.answer(prompts, None, options, desc)[1]

    def _sequence_scores(self, p_ids, o_ids, desc):
        import torch

        rows = [(i, k, ids, o) for i, (ids, opts) in enumerate(zip(p_ids, o_ids)) for k, o in enumerate(opts)]

        def run(batch):
            input_ids, mask = self._pad_left([r[2] + r[3] for r in batch])
            keep = 1 + max(len(r[3]) for r in batch)
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids, attention_mask=mask, logits_to_keep=keep).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)  # position t predicts token t+1
            width = input_ids.shape[1]
            res = []
            for j, r in enumerate(batch):
                n = len(r[3])
                res.append(sum(float(logp[j, keep - 1 - n + t, input_ids[j, width - n + t]]) for t in range(n)))
            return res

        scores = self._run_batched(rows, [-len(r[2]) - len(r[3]) for r in rows], run, desc)
        out = [[math.nan] * len(o) for o in o_ids]
        for (i, k, _, _), s in zip(rows, scores):
            out[i][k] = s
        return out


def cut_at_stops(text: str, stop_strings) -> str:
    """The text up to the first of ``stop_strings`` (a base model's next "Human:" turn, for example)."""
    for s in stop_strings:
        i = text.find(s)
        if i >= 0:
            text = text[:i]
    return text


def new_cache(config, room: int = 0):
    """A DynamicCache whose full-attention layers append in place (see ``_growing_layer``), with ``room`` free
    columns reserved after the prompt (more are added when needed)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=config)
    cache.layers = [_growing_layer()() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    _reserve(cache, room)
    return cache


def _reserve(cache, room: int) -> None:
    """Announce how many columns the next appends will need, so that a growing layer allocates them at once."""
    for layer in cache.layers:
        layer.room = room


@functools.cache
def _growing_layer():
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """Keys and values live in a buffer with room to spare, so that a decode step writes its token in place.

        DynamicLayer concatenates, i.e. re-allocates and copies the whole cache at every step of every layer; on
        CPU that costs as much as the step's matrix products. ``keys``/``values`` stay views of the valid part, so
        cropping, row gathering (which leaves the buffer) and transformers' own length checks work unchanged.
        """

        room = 0
        _buffers = None

        def adopt(self, keys, values, width: int) -> None:
            """Take ``keys``/``values`` as the buffers, their first ``width`` columns as the cache."""
            self._buffers = (keys, values)
            self.keys, self.values = keys[..., :width, :], values[..., :width, :]

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            old = self.keys.shape[-2] if self.keys.numel() else 0
            new = old + key_states.shape[-2]
            buf = self._buffers
            fresh = buf is None or not _views_of(self.keys, buf[0]) or not _views_of(self.values, buf[1])
            if fresh or buf[0].shape[-2] < new:
                # a new layout reserves the announced room; outgrowing it adds a quarter, so long answers copy rarely
                room = new + max(self.room, 16, 0 if fresh else new // 4)
                buf = tuple(key_states.new_empty((*s.shape[:-2], room, s.shape[-1])) for s in (key_states, value_states))
                if old:
                    buf[0][..., :old, :] = self.keys
                    buf[1][..., :old, :] = self.values
                self._buffers = buf
            buf[0][..., old:new, :] = key_states
            buf[1][..., old:new, :] = value_states
            self.keys, self.values = buf[0][..., :new, :], buf[1][..., :new, :]
            return self.keys, self.values

    return GrowingLayer


def _compact(cache, mask, min_saving: float = 0.1):
    """Drop the cache columns that no row attends to, each row's tokens moved right in order; the new mask.

    Prefix-tree levels, length groups and stale tokens of a reused prompt leave padding in the middle of rows;
    every decode step reads the whole cache, so it is worth one copy to drop it. Kept as is (no copy) when
    that would save less than ``min_saving`` of the columns, or when a layer cannot be re-laid out.
    """
    import torch

    width = int(mask.sum(1).max())
    if width > (1 - min_saving) * mask.shape[1] or not _all_growing(cache):
        return mask
    # a stable sort of the 0/1 mask puts each row's padding first and its tokens after, in their order
    index = torch.sort(mask, dim=1, stable=True).indices[:, -width:]
    room = cache.layers[0].room
    # the gathered buffers get the room the batch will append (filled with copies of a column, overwritten later)
    padded = torch.cat([index, index[:, -1:].expand(-1, room)], dim=1)
    for layer in cache.layers:
        cols = padded[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[-1])
        layer.adopt(layer.keys.gather(2, cols), layer.values.gather(2, cols), width)
    return mask.gather(1, index)


def _all_growing(cache) -> bool:
    """Rows of such a cache can be prefilled apart and joined (sliding-window layers keep a fixed width)."""
    return all(type(layer) is _growing_layer() for layer in cache.layers)


def _positions(mask):
    return (mask.cumsum(-1) - 1).clamp(min=0)


def length_groups(lengths: list[int], split_cost: int) -> list[list[int]]:
    """Indices grouped by length so that padding plus ``split_cost`` tokens per group is least.

    The groups are runs of the lengths in sorted order; an exact dynamic programme over the cut points.
    Empty lengths always form a group of their own (they need no forward pass).
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best, cut = [0.0] + [math.inf] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        for i in range(j):
            cost = best[i] + (j - i) * longest + (split_cost if longest else 0)
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


def grouped_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' SDPA attention, except that grouped key/value heads reach torch as they are under a mask.

    transformers repeats GQA's key/value heads whenever a padding mask is given (CUDA kernels would otherwise
    fall back to the math kernel), i.e. copies the whole KV cache in every layer; torch's CPU kernels take the
    heads grouped, with or without a mask, and give the same numbers.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is None or query.shape[1] == key.shape[1] or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                                           scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def use_grouped_attention(model) -> None:
    """Switch a model that uses transformers' SDPA attention to ``grouped_sdpa`` (same numbers, no KV copies)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return
    AttentionInterface.register("grouped_sdpa", grouped_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register("grouped_sdpa", sdpa_mask)
    model.set_attn_implementation("grouped_sdpa")


def _views_of(tensor, buffer) -> bool:
    return tensor.numel() == 0 or (tensor.data_ptr() == buffer.data_ptr() and tensor.shape[:-2] == buffer.shape[:-2])


def _rows_of(cache, index):
    """A cache holding only rows ``index`` of ``cache``, which is left as it is (a stored prefix may be reused)."""
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    _gather_rows(out, index)
    return out


def _gather_rows(cache, index) -> None:
    """Select (and repeat) batch rows of a KV cache in place."""
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[index], layer.values[index]


def _prefix_cuts(seqs: list[list[int]], min_shared: int, max_depth: int) -> list[list[int]]:
    """Per sequence, the positions where its shared prefixes end (a radix tree of the batch, at most ``max_depth``
    levels, nodes of at least ``min_shared`` tokens). Every sequence keeps at least its last token to itself."""
    cuts: list[list[int]] = [[] for _ in seqs]

    def split(rows: list[int], start: int, depth: int) -> None:
        if len(rows) < 2 or depth >= max_depth:
            return
        limit = min(len(seqs[r]) for r in rows) - 1
        end = start + len(os.path.commonprefix([seqs[r][start:limit] for r in rows]))
        if end - start >= min_shared:
            for r in rows:
                cuts[r].append(end)
            start, depth = end, depth + 1
        branches: dict[int, list[int]] = {}
        for r in rows:
            branches.setdefault(seqs[r][end], []).append(r)
        if len(branches) > 1:
            for branch in branches.values():
                split(branch, start, depth)

    split(list(range(len(seqs))), 0, 0)
    return cuts


def prefix_levels(seqs: list[list[int]], min_shared: int = 8, max_depth: int = 3, min_saving: float = 0.1):
    """The batch as levels of a prefix tree: [(segments, parent index per segment or None), ...], or None.

    Level 0 holds the distinct shared prefixes; each further level holds the distinct continuations of the nodes
    above it (an empty segment where a sequence has no node at that level); the last level has one segment per
    sequence, in order. Concatenating a sequence's segments down the tree gives the sequence back. None when the
    tree would save less than ``min_saving`` of the tokens (one plain prefill is then cheaper).
    """
    cuts = _prefix_cuts(seqs, min_shared, max_depth)
    depth = max(map(len, cuts), default=0)
    if depth == 0:
        return None
    ends = [c + [c[-1] if c else 0] * (depth - len(c)) for c in cuts]
    levels, node_of = [], [None] * len(seqs)
    for level in range(depth):
        index: dict = {}
        segments, parents = [], []
        for r, seq in enumerate(seqs):
            start = ends[r][level - 1] if level else 0
            key = (node_of[r], tuple(seq[start:ends[r][level]]))
            if key not in index:
                index[key] = len(segments)
                segments.append(list(key[1]))
                parents.append(node_of[r])
            node_of[r] = index[key]
        levels.append((segments, parents if level else None))
    levels.append(([seq[e[-1]:] for seq, e in zip(seqs, ends)], list(node_of)))
    encoded = sum(len(s) for segments, _ in levels for s in segments)
    if encoded > (1 - min_saving) * sum(map(len, seqs)):
        return None
    return levels


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    n, limit = 0, min(len(a), len(b), limit)
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def _last_token_differs(option_ids: list[list[int]]) -> bool:
    """True when all options have the same tokens except a single, final one."""
    lengths = {len(o) for o in option_ids}
    if len(lengths) != 1 or lengths.pop() == 0:
        return False
    return all(o[:-1] == option_ids[0][:-1] for o in option_ids)


def normalise(logprobs: list[float]) -> list[float]:
    """Probabilities renormalised over the options (a softmax of the option log-probabilities)."""
    a = np.asarray(logprobs, dtype=float)
    a = np.exp(a - a.max())
    return (a / a.sum()).tolist()
