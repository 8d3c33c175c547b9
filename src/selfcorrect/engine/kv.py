"""The KV cache: transformers' DynamicCache with layers that grow in place, its compaction and row selection, and
the store that carries a batch's cache to the next stage or round of its examples."""

from __future__ import annotations

import copy
import functools
from typing import NamedTuple


def new_cache(config, room: int = 0):
    """A DynamicCache whose full-attention layers append in place (see ``growing_layer``), with ``room`` free
    columns reserved after the prompt (more are added when needed)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=config)
    cache.layers = [growing_layer()() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    reserve(cache, room)
    return cache


def reserve(cache, room: int) -> None:
    """Announce how many columns the next appends will need, so that a growing layer allocates them at once."""
    for layer in cache.layers:
        layer.room = room


@functools.cache
def growing_layer():
    """The GrowingLayer class (built on first use, so that importing the engine does not import transformers)."""
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


def _views_of(tensor, buffer) -> bool:
    return tensor.numel() == 0 or (tensor.data_ptr() == buffer.data_ptr() and tensor.shape[:-2] == buffer.shape[:-2])


def all_growing(cache) -> bool:
    """Rows of such a cache can be prefilled apart and joined (sliding-window layers keep a fixed width)."""
    return all(type(layer) is growing_layer() for layer in cache.layers)


def compact(cache, mask, min_saving: float = 0.1):
    """Drop the cache columns that no row attends to, each row's tokens moved right in order; the new mask.

    Prefix-tree levels, length groups and stale tokens of a reused prompt leave padding in the middle of rows;
    every decode step reads the whole cache, so it is worth one copy to drop it. Kept as is (no copy) when
    that would save less than ``min_saving`` of the columns, or when a layer cannot be re-laid out.
    """
    import torch

    width = int(mask.sum(1).max())
    if width > (1 - min_saving) * mask.shape[1] or not all_growing(cache):
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


def _own_layers(cache):
    """A shallow copy of ``cache`` with layer objects of its own, whose tensors can be replaced without touching it."""
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    return out


def rows_of(cache, index):
    """A cache holding only rows ``index`` of ``cache``, which is left as it is (a stored prefix may be reused)."""
    out = _own_layers(cache)
    gather_rows(out, index)
    return out


def storages(cache) -> dict[int, int]:
    """The device buffers a cache's layers hold, by address: their sizes in bytes (views of one buffer count once)."""
    found = {}
    for layer in cache.layers:
        for t in (layer.keys, layer.values, *(getattr(layer, "_buffers", None) or ())):
            if t is not None and t.numel():
                found[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return found


def gather_rows(cache, index) -> None:
    """Select (and repeat) batch rows of a KV cache in place."""
    import torch

    for layer in cache.layers:
        layer.keys, layer.values = torch.index_select(layer.keys, 0, index), torch.index_select(layer.values, 0, index)
        _drop_buffer(layer)  # the rows are a copy now: the old buffer would otherwise stay alive until the next append


def _drop_buffer(layer) -> None:
    """Let a growing layer's buffer go once its keys and values no longer view it (other layer types have none)."""
    if getattr(layer, "_buffers", None) is not None:
        layer._buffers = None


class StoredBatch(NamedTuple):
    keys: list  # the batch's examples, one per row
    ids: list[list[int]]  # per row, the tokens its cache holds (the prompt, then the answer's tokens fed back)
    mask: object  # (rows, columns): which columns of the cache each row attends to
    cache: object


class KVStore:
    """KV caches of answered batches, by their examples' keys, until the same examples come back.

    The next stage or round of an example's conversation starts with its previous prompt and answer, so a batch of
    the same examples encodes only its new tokens on the stored cache. A batch's cache is found only by the same
    set of examples (in any order); ``groups`` tells a caller how to batch its rows so that each batch finds one.
    """

    def __init__(self) -> None:
        self._batches: dict[frozenset, StoredBatch] = {}

    def __len__(self) -> int:
        return len(self._batches)

    def put(self, keys: list, ids: list[list[int]], mask, cache) -> None:
        """Keep a batch's cache under its examples' ``keys`` (replacing what the same examples stored before)."""
        if None in keys:
            raise ValueError(f"every row of a stored batch needs an example key, got {keys!r}")
        self._batches[frozenset(keys)] = StoredBatch(list(keys), ids, mask, cache)

    def pop(self, keys: list) -> StoredBatch | None:
        """The cache stored by exactly these examples, its rows in the order of ``keys``, taken out of the store
        (the batch stores its grown cache again once it has answered); None if they stored none together."""
        import torch

        if None in keys:
            return None
        entry = self._batches.pop(frozenset(keys), None)
        if entry is None:
            return None
        order = [entry.keys.index(k) for k in keys]
        mask = entry.mask
        if order != list(range(len(order))):
            index = torch.tensor(order, device=mask.device)
            gather_rows(entry.cache, index)
            mask = mask[index]
        return StoredBatch(list(keys), [entry.ids[i] for i in order], mask, entry.cache)

    def divisible(self, keys: list) -> bool:
        """Whether exactly these examples, each once, stored one batch together, in a cache whose rows can be
        divided (every layer a growing one: other layer types may keep per-row state beside their keys)."""
        entry = self._batches.get(frozenset(keys))
        return (entry is not None and len(entry.keys) == len(keys) == len(set(keys))
                and all_growing(entry.cache))

    def divide(self, keys: list, size: int) -> list[list]:
        """Store the batch of exactly these examples as consecutive pieces of at most ``size`` rows, in its row
        order; the pieces' keys. Each piece gets a copy of its rows, layer by layer, and each stored layer is let go
        once copied: at most one layer more than the cache is alive (views would keep the whole stored cache alive
        until the last piece has run: about twice the cache, which the plan does not count)."""
        entry = self._batches.pop(frozenset(keys))
        bounds = [(start, start + size) for start in range(0, len(entry.keys), size)]
        caches = [_own_layers(entry.cache) for _ in bounds]
        for n, layer in enumerate(entry.cache.layers):
            for (start, stop), cache in zip(bounds, caches):
                piece = cache.layers[n]
                piece.keys, piece.values = layer.keys[start:stop].clone(), layer.values[start:stop].clone()
                _drop_buffer(piece)  # a fresh buffer at the first append, never the stored one
            layer.keys = layer.values = None
            _drop_buffer(layer)
        pieces = []
        for (start, stop), cache in zip(bounds, caches):
            piece = entry.keys[start:stop]
            self._batches[frozenset(piece)] = StoredBatch(piece, entry.ids[start:stop],
                                                          entry.mask[start:stop].clone(), cache)
            pieces.append(piece)
        return pieces

    def nbytes(self) -> int:
        """Device memory the stored caches hold (a buffer that several layers or views share counted once)."""
        held = {}
        for entry in self._batches.values():
            held.update(storages(entry.cache))
        return sum(held.values())

    def groups(self, keys: list | None) -> list[list[int]] | None:
        """Positions in ``keys`` batched as they were stored, so that each batch finds its cache, and ordered as
        its stored rows, so that ``pop`` copies nothing (a reordered cache is a copy of every layer: at the 7B
        shape a third copy of the cache beside the stored one and the one the batch grows into); None unless
        every key has a stored cache."""
        if not self._batches or keys is None or None in keys:
            return None
        where = {k: (n, row) for n, entry in enumerate(self._batches.values()) for row, k in enumerate(entry.keys)}
        if any(k not in where for k in keys):
            return None
        groups: dict[int, list[int]] = {}
        for i in sorted(range(len(keys)), key=lambda i: where[keys[i]]):
            groups.setdefault(where[keys[i]][0], []).append(i)
        return list(groups.values())

    def clear(self) -> None:
        self._batches.clear()
