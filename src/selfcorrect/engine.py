"""Batched greedy generation and option scoring with transformers.

Prompts are sorted by length and left-padded into batches, so padding is small and every row of a
batch ends where the model continues. A CUDA out-of-memory error halves the batch and retries it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


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

    # ------------------------------------------------------------ batching
    def _run_batched(self, items: list, lengths: list[int], fn, desc: str) -> list:
        from tqdm.auto import tqdm

        out: list = [None] * len(items)
        order = sorted(range(len(items)), key=lambda i: -lengths[i])
        bar = tqdm(total=len(items), desc=desc, disable=not self.progress, unit="seq", mininterval=2.0)
        pos = 0
        while pos < len(order):
            idx = order[pos:pos + self.batch_size]
            try:
                results = fn([items[i] for i in idx])
            except RuntimeError as err:
                if not _is_oom(err) or self.batch_size == 1:
                    raise
                import torch

                torch.cuda.empty_cache()
                self.batch_size = max(1, self.batch_size // 2)
                log.warning("out of memory: batch size halved to %d, retrying the batch", self.batch_size)
                continue
            for i, r in zip(idx, results):
                out[i] = r
            pos += len(idx)
            bar.update(len(idx))
        bar.close()
        return out

    def _encode(self, texts: list[str]):
        return self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)

    def token_lengths(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    # ------------------------------------------------------------ generation
    def generate(self, prompts: list[str], max_new_tokens: int, desc: str = "generate") -> list[str]:
        """Greedy continuations of ``prompts`` (special tokens dropped, cut at the first stop string)."""
        import torch
        from transformers import GenerationConfig

        cfg = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
        )

        def run(batch: list[str]) -> list[str]:
            enc = self._encode(batch)
            with torch.inference_mode():
                out = self.model.generate(**enc, generation_config=cfg)
            new = out[:, enc["input_ids"].shape[1]:]
            return [self._cut(t) for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

        return self._run_batched(prompts, self.token_lengths(prompts), run, desc)

    def _cut(self, text: str) -> str:
        for s in self.stop_strings:
            i = text.find(s)
            if i >= 0:
                text = text[:i]
        return text

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
        tok = self.tokenizer
        p_ids = tok(prompts, add_special_tokens=False)["input_ids"]
        o_ids = [tok(list(opts), add_special_tokens=False)["input_ids"] for opts in options]
        if all(_last_token_differs(o) for o in o_ids):
            return self._last_token_scores(p_ids, o_ids, desc)
        return self._sequence_scores(p_ids, o_ids, desc)

    def _last_token_scores(self, p_ids, o_ids, desc):
        import torch

        rows = [(ids + o[0][:-1], o) for ids, o in zip(p_ids, o_ids)]

        def run(batch):
            input_ids, mask = self._pad_left([r[0] for r in batch])
            shared = [r[1][0][:-1] for r in batch]
            keep = 1 + max(len(s) for s in shared)
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids, attention_mask=mask, logits_to_keep=keep).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            res = []
            for j, (_, opts) in enumerate(batch):
                n = len(shared[j])
                # log P of the shared tokens, then of each option's own last token
                head = sum(float(logp[j, keep - 1 - n + t, opts[0][t]]) for t in range(n))
                res.append([head + float(logp[j, keep - 1, o[-1]]) for o in opts])
            return res

        return self._run_batched(rows, [len(r[0]) for r in rows], run, desc)

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

        scores = self._run_batched(rows, [len(r[2]) + len(r[3]) for r in rows], run, desc)
        out = [[math.nan] * len(o) for o in o_ids]
        for (i, k, _, _), s in zip(rows, scores):
            out[i][k] = s
        return out


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
