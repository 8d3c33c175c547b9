"""Batched greedy generation and option scoring with transformers: the :class:`Backend` the study runs on CPU and
on a single GPU.

Prompts are batched in token order when prompts sharing a prefix are encoded together (``prefix_tree_prefill``),
else longest first, and left-padded, so that every row of a batch ends where the model continues. Batches are
sized by a memory plan (``memory.plan_batch_size``); one that runs out of memory all the same is halved and
retried, and later batches grow back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from . import batching
from .batching import Row
from .decode import greedy, score_on_cache, sequence_scores
from .graph_decode import decodes_in_window, greedy_in_window
from .kv import KVStore
from .memory import (PLAN_SHARE, BatchSizer, activation_bytes_per_row, free_memory, is_oom, kv_bytes_per_token,
                     plan_batch_size)
from .plan import last_token_differs
from .prefill import prefill

log = logging.getLogger(__name__)


@dataclass
class Engine:
    model: object
    tokenizer: object
    device: str
    batch_size: int = 16
    # Prompts of one batch that start alike (the four questions of one BBQ context, the pronoun variants of one
    # Winogender sentence, one system prompt for all) have their shared prefix encoded once: a radix tree of the
    # batch is prefilled level by level, each level's KV cache gathered to the rows below it.
    prefix_tree_prefill: bool = True
    # A batch's KV cache is kept, by its examples' keys, for their next stage or round (whose prompts start with
    # this one's prompt and answer), so that only the new tokens are computed; forget() drops what is kept.
    carry_kv_between_rounds: bool = True
    stop_strings: tuple[str, ...] = ()
    progress: bool = True
    progress_label: str = ""  # before each progress bar's label: which process of a job (job_processes)
    min_shared: int = 8  # the fewest tokens a shared prefix of the prefix tree holds
    # the most levels of the prefix tree: a study's prompts share a system prompt, a context (BBQ's ambiguous
    # context is the start of its disambiguated one), a question with its options, and under the conditions of one
    # job the start of their instructions
    prefix_depth: int = 6
    # A batch's rows are prefilled in groups of similar length when that saves more padded tokens than this per
    # extra group (a forward pass costs launches and copies of the cache). None: by device (CPU 32, GPU 4096).
    split_cost: int | None = None
    # Greedy decoding in a window of the cache fixed for the whole batch, one step captured as a CUDA graph per
    # batch and replayed (graph_decode.py): no per-token launches from Python, the host reading the batch every few
    # steps. Off CUDA the same loop runs without graphs (slower there: each step attends to the whole window).
    graph_decode: bool = False
    # real (unpadded) tokens run through the model, a device tensor once counting starts, so that counting costs no sync
    _processed: object = field(default=0, init=False, repr=False)
    _kv: KVStore = field(default_factory=KVStore, init=False, repr=False)
    _sizer: BatchSizer = field(default=None, init=False, repr=False)
    _free_bytes: int = field(default=0, init=False, repr=False)  # for the plan: CPU reads it once, CUDA per call
    _kv_per_token: int | None = field(default=None, init=False, repr=False)
    _graph_pool: object = field(default=None, init=False, repr=False)  # the CUDA graphs' memory, shared by batches

    def __post_init__(self):
        from .attention import use_grouped_attention
        from .output_layer import use_sliced_output_layer

        if self.split_cost is None:
            self.split_cost = 4096 if str(self.device).startswith("cuda") else 32
        if str(self.device) == "cpu":
            use_grouped_attention(self.model)
            use_sliced_output_layer(self.model)
        self._sizer = BatchSizer(self.batch_size)
        self._free_bytes = free_memory(self.device)
        try:
            self._kv_per_token = kv_bytes_per_token(self.model.config, self.model.dtype)
        except AttributeError as err:  # a config without the usual shape fields: batches are not planned
            log.info("no memory plan for this model (%s): batches of %d", err, self.batch_size)

    # ------------------------------------------------------------ the Backend contract
    def generate(self, prompts: list[str], max_new_tokens: int, desc: str = "generate", keys: list | None = None) -> list[str]:
        """Greedy continuations of ``prompts`` (special tokens dropped, cut at the first stop string)."""
        return self.answer(prompts, max_new_tokens, None, desc, keys)[0]

    def answer(self, prompts: list[str], max_new_tokens: int | None, options: list[list[str]] | None,
               desc: str = "answer", keys: list | None = None) -> tuple[list[str] | None, list[list[float]] | None]:
        """Greedy answers and option log-probabilities from one prefill of each prompt.

        The prompt is encoded once; the options' tokens are scored on its KV cache (then cropped off
        again) and greedy decoding continues from the same cache. ``max_new_tokens=None`` skips decoding.
        Prompt and options are tokenised separately and concatenated, so every option is scored on the same
        prompt tokens; options that differ in more than their last token are scored one row per option.
        """
        tok = self.tokenizer
        p_ids = tok(prompts, add_special_tokens=False)["input_ids"]
        o_ids = [tok(list(o), add_special_tokens=False)["input_ids"] for o in options] if options else [None] * len(prompts)
        if options and not all(last_token_differs(o) for o in o_ids):
            texts = self.answer(prompts, max_new_tokens, None, desc, keys)[0] if max_new_tokens else None
            return texts, sequence_scores(self, p_ids, o_ids, desc)
        if keys is None or not self.carry_kv_between_rounds:
            keys = [None] * len(prompts)
        rows = [Row(p, o, k) for p, o, k in zip(p_ids, o_ids, keys)]
        room = (max_new_tokens or 0) + max((len(o[0]) for o in o_ids if o), default=0)
        results = self.run_batched(rows, self._batch_order(p_ids), lambda b: self._answer_batch(b, max_new_tokens),
                                   desc, [len(p) for p in p_ids], room, None not in keys, self._kv.groups(keys))
        texts = [r[0] for r in results] if max_new_tokens else None
        scores = [r[1] for r in results] if options else None
        return texts, scores

    def forget(self) -> None:
        """Drop every carried KV cache."""
        self._kv.clear()

    # ------------------------------------------------------------ batching
    def run_batched(self, items: list, sort_keys: list, fn, desc: str, lengths: list[int], room: int, carried: bool,
                    groups: list[list[int]] | None = None) -> list:
        """``fn`` over batches of ``items`` (the given ``groups``, else runs in ``sort_keys`` order) as large as
        the memory plan allows for rows of ``lengths`` tokens that will append ``room`` more."""
        from tqdm.auto import tqdm

        order = sorted(range(len(items)), key=lambda i: sort_keys[i])
        self._sizer.limit = self.batch_size
        if str(self.device).startswith("cuda"):
            # planned on what is free now: other models, compiled graphs (a baseline's static-cache generate) and
            # the caches this job carries take their share after the engine's start. The carried caches are added
            # back because the plan counts them itself. On CPU the host's free memory drifts with other processes
            # and would change batch compositions, and so the outputs' last bits, from run to run: read once.
            self._free_bytes = free_memory(self.device) + (self._kv.nbytes() if carried else 0)
        if groups:
            groups = self._fitted(items, groups, lengths, room)
        bar = tqdm(total=len(items), desc=f"{self.progress_label}{desc}", disable=not self.progress, unit="seq", mininterval=2.0)
        try:
            return batching.run_batched(items, order, fn, self._sizer,
                                        lambda idx: self.planned_rows(max(lengths[i] for i in idx), room, carried),
                                        self.device, bar, groups)
        finally:
            bar.close()

    def _fitted(self, items: list, groups: list[list[int]], lengths: list[int], room: int) -> list[list[int]]:
        """The carried batches as large as the memory plan allows: one that has outgrown it (its rows now hold a
        round more) is divided into consecutive rows of its stored cache (``KVStore.divide``). A group that is not
        exactly one stored batch (some of its examples, or a key twice) finds no cache anyway: cut into plan-sized
        runs."""
        fitted = []
        for group in groups:
            size = self._sizer.size(self.planned_rows(max(lengths[i] for i in group), room, carried=True))
            if size >= len(group):
                fitted.append(group)
                continue
            keys, runs = [items[i].key for i in group], [group[i:i + size] for i in range(0, len(group), size)]
            if not self._kv.divisible(keys):
                fitted += runs
                log.info("carried batch of %d rows cut into runs of %d for the memory plan, encoded anew",
                         len(group), size)
                continue
            where = dict(zip(keys, group))
            try:
                fitted += [[where[k] for k in piece] for piece in self._kv.divide(keys, size)]
            except RuntimeError as err:
                # the copies are made when memory is short, outside the batches' retry: the cache is lost, not the job
                if not is_oom(err, self.device):
                    raise
                batching.release(self.device)
                fitted += runs
                log.warning("out of memory dividing a carried batch of %d rows: its runs of %d are encoded anew",
                            len(group), size)
                continue
            log.info("carried batch of %d rows divided into pieces of %d for the memory plan", len(group), size)
        return fitted

    def planned_rows(self, prompt_tokens: int, room: int, carried: bool) -> int:
        """How many rows of ``prompt_tokens`` tokens, each appending ``room`` more, a batch can take.

        Every row's cache is counted twice: decoding copies the cache of the rows that go on when finished rows
        leave the batch. With carry-over, one of the two is the cache the example keeps for its next round,
        which the job holds for each of its examples (up to ``batch_size``) whichever rows are running.
        """
        if self._kv_per_token is None:
            return self.batch_size
        full = prompt_tokens + room
        activations = activation_bytes_per_row(self.model.config, self.model.dtype, prompt_tokens)
        return plan_batch_size(int(self._free_bytes * PLAN_SHARE), self._kv_per_token, full if carried else 2 * full,
                               full if carried else 0, activations, self.batch_size)

    def _batch_order(self, p_ids: list[list[int]]) -> list:
        """Sort keys: token order puts prompts with shared prefixes in one batch; else longest first, to pad little."""
        return [tuple(p) for p in p_ids] if self.prefix_tree_prefill else [-len(p) for p in p_ids]

    # ------------------------------------------------------------ one batch
    def _answer_batch(self, batch: list[Row], max_new_tokens: int | None) -> list[tuple]:
        import torch

        keys = [r.key for r in batch]
        with torch.inference_mode():
            # room for the tokens this batch will append: option scoring's shared tokens, then the decoded ones
            room = (max_new_tokens or 0) + (len(batch[0].option_ids[0]) if batch[0].option_ids is not None else 0)
            logits, mask, positions, cache = prefill(self, [r.prompt_ids for r in batch], self._kv.pop(keys), room)
            last = logits[:, -1]
            scores = [None] * len(batch)
            if batch[0].option_ids is not None:
                scores = score_on_cache(self, batch, last, mask, positions, cache)
            texts, fed = [None] * len(batch), [[] for _ in batch]
            if max_new_tokens:
                windowed = self.graph_decode and decodes_in_window(cache, max_new_tokens)
                decode = greedy_in_window if windowed else greedy
                texts, fed, mask = decode(self, last, mask, positions[:, -1:], cache, max_new_tokens)
            if None not in keys:  # kept for the next stage or round: the prompt's and the answer's tokens
                self._kv.put(keys, [r.prompt_ids + f for r, f in zip(batch, fed)], mask, cache)
        return list(zip(texts, scores))

    def _step(self, input_ids, mask, positions, cache, keep: int):
        """One forward pass that appends to ``cache`` in place (transformers renamed the argument in 5.x)."""
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=keep, **{self.cache_argument: cache})
        self._processed = self._processed + mask[:, -input_ids.shape[1]:].sum()
        return out.logits.float(), cache

    @property
    def cache_argument(self) -> str:
        """The forward's name for the KV cache: ``cache`` in recent transformers, ``past_key_values`` before."""
        import inspect

        if not hasattr(self, "_cache_arg"):
            params = inspect.signature(self.model.forward).parameters
            self._cache_arg = "cache" if "cache" in params else "past_key_values"
        return self._cache_arg

    @property
    def eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        extra = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids |= set(extra) if isinstance(extra, (list, tuple)) else ({extra} if extra is not None else set())
        return {i for i in ids if i is not None}

    @property
    def tokens_processed(self) -> int:
        """Tokens the model has encoded or decoded so far, padding not counted (shared prefixes count once)."""
        return int(self._processed)
