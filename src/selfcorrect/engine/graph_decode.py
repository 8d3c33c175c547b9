"""Greedy decoding with shapes and addresses fixed for a whole batch, so that on CUDA one step is captured as a CUDA
graph and replayed (``Engine.graph_decode``).

``decode.greedy`` runs transformers' forward from Python at every token and reads ``done`` on the host after every
step. On a GPU a step is then a few hundred kernel launches issued one by one, and the host waits for each step
before issuing the next: at 135M parameters decoding is bound by launches, not by the chip. Here every tensor a step
reads or writes keeps its shape and address for the whole batch:

- the cache's own buffers, as wide as the prompt plus every token the batch may decode (zeroed beyond the prompt:
  masked columns must not hold NaNs, as 0 x NaN is NaN), each step writing its column with ``index_copy_``;
- a mask over that whole window, the step's column switched on by the step itself;
- the token fed, its position, its column and the step's index in device tensors that the step advances.

One step is captured per batch (its buffers are its own) and replayed; the host reads ``done`` every
``_CHECK_EVERY`` steps only, to stop once every row has ended. The tokens are the same as ``decode.greedy``'s in
fp32 (tested; in bf16 a near-tie can break the other way, as with any change of batch or kernel): the window's
columns not yet written are masked out, and rows that have ended feed padding as there. What differs is the work:

- finished rows stay in the batch (a graph's shapes are fixed), and every step attends to the whole window, masked;
- up to ``_CHECK_EVERY - 1`` steps run after the last row has ended (not kept in the carried cache);
- the cache carried to the next round holds every row's tokens up to the last row's end, where ``decode.greedy``'s
  stops at the step where finished rows first left the batch; the next round then encodes fewer new tokens.

Off CUDA the same loop runs without a graph (the tests' path). A capture that runs out of memory is raised as such
(the batch is halved and retried, as any other); one that fails otherwise stops the job with the error and the
setting that turns graphs off. It is not caught and run eagerly instead: when a capture is invalidated, torch's
``capture_end`` raises before the caching allocator leaves capture mode, so the process cannot be trusted to go on.
"""

from __future__ import annotations

import copy
import functools
from typing import TYPE_CHECKING

from .decode import answer_texts
from .kv import _views_of, all_growing

if TYPE_CHECKING:
    from .engine import Engine

_CHECK_EVERY = 8  # steps replayed between two reads of ``done`` on the host (each read waits for the GPU)
_WARM_UP = 2  # steps run eagerly on the capture's stream before the capture (cuBLAS and the allocator set up there)
MIN_STEPS = 8  # fewer decode steps than this do not pay for a capture: ``decode.greedy`` runs them


def decodes_in_window(cache, max_new_tokens: int) -> bool:
    """Whether a batch can decode in a fixed window: every layer a full-attention growing layer (a sliding-window
    layer keeps a fixed width of its own), and enough steps to pay for the set-up."""
    return max_new_tokens - 1 >= MIN_STEPS and all_growing(cache)


@functools.cache
def window_layer():
    """The WindowLayer class (built on first use, so that importing the engine does not import transformers)."""
    from transformers.cache_utils import DynamicLayer

    class WindowLayer(DynamicLayer):
        """A cache layer whose keys and values are a fixed window of the batch's buffers: a step writes its token at
        the column held in the device tensor ``column`` and attends to the whole window under the step's mask."""

        def __init__(self, keys, values, column):
            super().__init__()
            self.keys, self.values, self.column = keys, values, column
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True

        def update(self, key_states, value_states, *args, **kwargs):
            self.keys.index_copy_(2, self.column, key_states)
            self.values.index_copy_(2, self.column, value_states)
            return self.keys, self.values

    return WindowLayer


def _window(layer, width: int, need: int):
    """The layer's key and value buffers with at least ``need`` columns (copied into new ones only when its own are
    narrower), columns ``width:need`` zeroed; adopted by the layer, whose cache still ends at ``width``."""
    if layer.keys.shape[-2] != width:
        raise ValueError(f"a cache of {layer.keys.shape[-2]} columns under a mask of {width}")
    buffers = layer._buffers
    if (buffers is None or buffers[0].shape[-2] < need or not _views_of(layer.keys, buffers[0])
            or not _views_of(layer.values, buffers[1])):
        buffers = tuple(t.new_empty((*t.shape[:-2], need, t.shape[-1])) for t in (layer.keys, layer.values))
        for buf, t in zip(buffers, (layer.keys, layer.values)):
            buf[..., :width, :] = t
        layer.adopt(*buffers, width)
    for buf in buffers:
        buf[..., width:need, :] = 0
    return tuple(buf[..., :need, :] for buf in buffers)


class _Decoder:
    """The state of one batch's decoding, all in device tensors, and the step that advances it."""

    def __init__(self, eng: Engine, last, mask, position, cache, max_new_tokens: int):
        import torch

        device = mask.device
        self.eng, self.width = eng, mask.shape[1]
        self.need = self.width + max_new_tokens - 1  # the prompt and every token a step can feed
        column = torch.tensor([self.width], device=device)
        windows = [_window(layer, self.width, self.need) for layer in cache.layers]
        self.cache = copy.copy(cache)  # the same cache object type, its layers the windows
        self.cache.layers = [window_layer()(k, v, column) for k, v in windows]
        self.column, self.step_index = column, torch.tensor([1], device=device)
        self.mask = torch.zeros((len(mask), self.need), dtype=mask.dtype, device=device)
        self.mask[:, :self.width] = mask
        self.position = position.clone()
        self.eos = torch.tensor(sorted(eng.eos_ids), device=device)
        self.pad = torch.full_like(last[:, 0], eng.tokenizer.pad_token_id, dtype=torch.long)
        first = last.argmax(-1)
        self.token = first[:, None].clone()
        self.gen = torch.full((len(first), max_new_tokens), eng.tokenizer.pad_token_id, dtype=first.dtype, device=device)
        self.gen[:, 0] = first
        self.done = self.ended(first)

    def ended(self, tokens):
        """Which of ``tokens`` end their row (compared with every end token: ``torch.isin`` may sort)."""
        return (tokens[:, None] == self.eos).any(-1)

    def step(self) -> None:
        """Feed the last token, write its keys and values at ``column``, pick the next token; everything in place."""
        import torch

        self.mask.index_fill_(1, self.column, 1)
        self.position.add_(1)
        out = self.eng.model(input_ids=self.token, attention_mask=self.mask[:, None, None, :].bool(),
                             position_ids=self.position, use_cache=True, logits_to_keep=1,
                             **{self.eng.cache_argument: self.cache})
        nxt = torch.where(self.done, self.pad, out.logits[:, -1].argmax(-1))
        self.gen.index_copy_(1, self.step_index, nxt[:, None])
        self.done |= self.ended(nxt)
        self.token.copy_(nxt[:, None])
        self.column.add_(1)
        self.step_index.add_(1)


class GraphCaptureError(RuntimeError):
    """A decode step could not be captured as a CUDA graph (for a reason other than memory)."""


def _capture(eng: Engine, decoder: _Decoder, stream):
    """One step of ``decoder`` captured as a CUDA graph on ``stream`` (recorded, not run: the state does not move).

    Running out of memory is raised as it came (the batch is halved and retried); any other failure as a
    ``GraphCaptureError`` that names the setting to turn graphs off.
    """
    import torch

    from .memory import is_oom

    graph = torch.cuda.CUDAGraph()
    try:
        # the outer context gives the caller's stream back even when the capture fails at its end, where
        # torch.cuda.graph's own exit would leave ``stream`` current
        with torch.cuda.stream(stream), torch.cuda.graph(graph, pool=eng._graph_pool, stream=stream):
            decoder.step()
    except Exception as err:  # what a capture raises varies with the kernel that refused
        if is_oom(err, eng.device):
            raise
        first = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        raise GraphCaptureError(f"capturing a decode step as a CUDA graph failed ({first}); set generation.graph_decode: "
                                f"false in the config (or snakemake --config 'generation={{graph_decode: false}}') to "
                                f"decode without CUDA graphs") from err
    return graph


def _graph_after_warm_up(eng: Engine, decoder: _Decoder, steps: int) -> tuple[object, int]:
    """The first steps run eagerly on a side stream (the capture's, so that its libraries are set up there), then one
    step captured: (the graph or None, the steps run)."""
    import torch

    if eng._graph_pool is None:
        eng._graph_pool = torch.cuda.graph_pool_handle()
    stream, run = torch.cuda.Stream(), 0
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        while run < min(_WARM_UP, steps):
            decoder.step()
            run += 1
    torch.cuda.current_stream().wait_stream(stream)
    return (_capture(eng, decoder, stream) if run < steps else None), run


def greedy_in_window(eng: Engine, last, mask, position, cache, max_new_tokens: int):
    """``decode.greedy``'s results (texts, the tokens fed per row, the mask of the cache) by the fixed-window loop.

    Afterwards the cache's layers hold every row's tokens up to the step at which the last row ended. (Where rows
    left the batch, ``decode.greedy``'s cache ends at the step they left: the next round then encodes a little more.)
    """
    decoder = _Decoder(eng, last, mask, position, cache, max_new_tokens)
    steps, graph, run = max_new_tokens - 1, None, 0
    if str(eng.device).startswith("cuda") and eng.graph_decode:
        graph, run = _graph_after_warm_up(eng, decoder, steps)
    while run < steps and not bool(decoder.done.all()):
        for _ in range(min(_CHECK_EVERY, steps - run)):
            if graph is not None:
                graph.replay()
            else:
                decoder.step()
            run += 1
    del graph
    gen = decoder.gen.tolist()
    texts, ends = answer_texts(eng, gen)
    # decode.greedy feeds tokens back until every row has ended, at most ``steps`` of them
    n_fed = min(steps, max(ends))
    eng._processed = eng._processed + len(gen) * run  # the steps run, those after the last row's end too
    for layer in cache.layers:
        layer.adopt(*layer._buffers, decoder.width + n_fed)
    return texts, [row[:n_fed] for row in gen], decoder.mask[:, :decoder.width + n_fed]
