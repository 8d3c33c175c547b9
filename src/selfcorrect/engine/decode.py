"""After prefill: option scoring on the prompt's cache, and greedy decoding from the same cache."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .backend import stopped_text
from .batching import pad_left
from .kv import rows_of

if TYPE_CHECKING:
    from .batching import Row
    from .engine import Engine

# finished rows leave a decoding batch once they are 1/_LEAVE_AT of it and more than 8 steps are left: then the
# copy of the cache that it takes pays for itself
_LEAVE_AT = 4


def score_on_cache(eng: Engine, batch: list[Row], last, mask, positions, cache) -> list[list[float]]:
    """log P(option) for options that share all tokens but the last; the cache is left as found."""
    import torch

    shared = [tuple(r.option_ids[0][:-1]) for r in batch]
    n = len(shared[0])
    if any(len(s) != n for s in shared):
        raise ValueError("options of one batch must share the same number of leading tokens")
    logp = [torch.log_softmax(last, dim=-1)]
    if n:
        ids = torch.tensor(shared, dtype=torch.long, device=eng.device)
        ext = torch.cat([mask, torch.ones_like(ids)], dim=1)
        pos = positions[:, -1:] + 1 + torch.arange(n, device=eng.device)
        logits, cache = eng._step(ids, ext, pos, cache, n)
        cache.crop(-n)
        logp += [torch.log_softmax(logits[:, t], dim=-1) for t in range(n)]
    out = []
    for j, row in enumerate(batch):
        head = sum(float(logp[t][j, shared[j][t]]) for t in range(n))
        out.append([head + float(logp[n][j, o[-1]]) for o in row.option_ids])
    return out


def greedy(eng: Engine, last, mask, position, cache, max_new_tokens: int):
    """Greedy decoding; once a quarter of the rows still decoding have finished, they leave the batch.

    Returns the texts, and the tokens fed into ``cache`` per row with its mask: the answer's KV cache, which
    the next round reuses where its prompt repeats the answer. Rows that leave continue in a copy, so
    ``cache`` then holds the tokens up to that step.
    """
    import torch

    eos = torch.tensor(sorted(eng.eos_ids), device=eng.device)
    pad = eng.tokenizer.pad_token_id
    nxt = last.argmax(-1)
    gen = torch.full((len(nxt), max_new_tokens), pad, dtype=nxt.dtype, device=eng.device)
    gen[:, 0] = nxt
    rows = torch.arange(len(nxt), device=eng.device)  # which rows of the batch are still in the cache
    done = torch.isin(nxt, eos)
    prompt_width, kept = mask.shape[1], None  # the mask of ``cache`` once rows have left it
    for step in range(1, max_new_tokens):
        finished = int(done.sum())
        if finished == len(done):
            break
        if finished * _LEAVE_AT >= len(done) and max_new_tokens - step > 8:
            keep = (~done).nonzero().squeeze(1)
            kept = mask if kept is None else kept
            cache = rows_of(cache, keep)
            mask, position, nxt, done, rows = mask[keep], position[keep], nxt[keep], done[keep], rows[keep]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        position = position + 1
        logits, cache = eng._step(nxt[:, None], mask, position, cache, 1)
        nxt = torch.where(done, torch.full_like(nxt, pad), logits[:, -1].argmax(-1))
        gen[rows, step] = nxt
        done |= torch.isin(nxt, eos)
    kept = mask if kept is None else kept
    n_fed = kept.shape[1] - prompt_width
    rows = gen.tolist()
    texts, _ = answer_texts(eng, rows)
    return texts, [row[:n_fed] for row in rows], kept


def answer_texts(eng: Engine, rows: list[list[int]]):
    """Each decoded row's text (up to its first end token, special tokens dropped, cut at the first stop string),
    and where each row's answer ends: at that end token, else at the row's length (the token limit)."""
    eos = eng.eos_ids
    ends = [next((i for i, t in enumerate(row) if t in eos), len(row)) for row in rows]
    texts = [stopped_text(eng.tokenizer.decode(row[:cut], skip_special_tokens=True), eng.stop_strings,
                          reached_limit=cut == len(row)) for row, cut in zip(rows, ends)]
    return texts, ends


def sequence_scores(eng: Engine, p_ids: list[list[int]], o_ids: list[list[list[int]]], desc: str) -> list[list[float]]:
    """log P(option | prompt) with one row per (prompt, option): for options that differ in more than their last
    token, so that no shared prefill scores them all."""
    import torch

    rows = [(i, k, ids, o) for i, (ids, opts) in enumerate(zip(p_ids, o_ids)) for k, o in enumerate(opts)]

    def run(batch):
        input_ids, mask = pad_left([prompt + option for _, _, prompt, option in batch], eng.tokenizer.pad_token_id, eng.device)
        keep = 1 + max(len(option) for *_, option in batch)
        with torch.inference_mode():
            logits = eng.model(input_ids=input_ids, attention_mask=mask, logits_to_keep=keep).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)  # position t predicts token t+1
        width = input_ids.shape[1]
        res = []
        for j, (*_, option) in enumerate(batch):
            n = len(option)
            res.append(sum(float(logp[j, keep - 1 - n + t, input_ids[j, width - n + t]]) for t in range(n)))
        return res

    lengths = [len(r[2]) + len(r[3]) for r in rows]
    scores = eng.run_batched(rows, [-n for n in lengths], run, desc, lengths, room=0, carried=False)
    out = [[math.nan] * len(o) for o in o_ids]
    for (i, k, _, _), s in zip(rows, scores):
        out[i][k] = s
    return out
