"""How a batch is encoded, decided on token ids alone (no torch): its prefix tree and its length groups."""

from __future__ import annotations

import math
import os


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


def common_prefix(a: list[int], b: list[int], limit: int) -> int:
    """How many leading tokens ``a`` and ``b`` share, at most ``limit``."""
    n, limit = 0, min(len(a), len(b), limit)
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def last_token_differs(option_ids: list[list[int]]) -> bool:
    """True when all options have the same tokens except a single, final one."""
    lengths = {len(o) for o in option_ids}
    if len(lengths) != 1 or lengths.pop() == 0:
        return False
    return all(o[:-1] == option_ids[0][:-1] for o in option_ids)
