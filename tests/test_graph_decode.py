"""Decoding in a fixed window of the cache (``Engine.graph_decode``): on CPU the loop runs without a CUDA graph, so
these tests check what a graph would replay: the same tokens and carried caches as the engine's own decoding, and a
step that leaves the host nothing to wait for."""

from __future__ import annotations


import pytest
import torch

from selfcorrect.engine import Engine, graph_decode
from selfcorrect.models import ModelSpec, load_model

from test_engine import PROMPTS, _study_job, bbq_prompts, end_some_rows_early, greedy_ids, naive, record  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def engine(tiny_model):
    model, tok = load_model(ModelSpec(name="tiny", path=str(tiny_model)), "cpu")
    engine = Engine(model, tok, "cpu", batch_size=4, progress=False, graph_decode=True)
    yield engine
    engine.forget()


def _every_row_ending(engine, prompts, monkeypatch):
    """End tokens that end every row within 12 tokens, not all at the same step (and none at the first token)."""
    rows = greedy_ids(engine, prompts, 12)
    firsts, stops = {row[0] for row in rows}, set()
    for n, row in enumerate(rows):
        if not stops & set(row[1:]):
            stops.add(next(t for t in row[2 + n % 8:] + row[1:] if t not in firsts))
    monkeypatch.setattr(engine.model.generation_config, "eos_token_id", [engine.tokenizer.eos_token_id, *sorted(stops)])


def _windows(record) -> list:
    """One entry per batch that decodes in the fixed window, from here on."""
    return record(graph_decode._Decoder, "__init__", lambda *args, **kwargs: 1)


def test_the_window_gives_the_texts_of_per_example_generate_also_when_rows_end_early(engine, bbq_paths, monkeypatch,
                                                                                    record):
    prompts = bbq_prompts(engine, bbq_paths)
    monkeypatch.setattr(engine, "batch_size", len(prompts))
    end_some_rows_early(engine, prompts, monkeypatch, 20)
    windows = _windows(record)
    texts = engine.generate(prompts, 20)
    assert windows  # the fixed-window loop ran
    assert texts == [naive(engine, p, 20) for p in prompts]
    engine.graph_decode = False
    try:
        plain = engine.generate(prompts, 20)
    finally:
        engine.graph_decode = True
    assert [t.reached_limit for t in texts] == [t.reached_limit for t in plain]


def test_too_few_steps_decode_as_before(engine, record):
    windows = _windows(record)
    short = engine.generate(PROMPTS, graph_decode.MIN_STEPS)  # MIN_STEPS - 1 steps after the first token
    assert not windows and short == [naive(engine, p, graph_decode.MIN_STEPS) for p in PROMPTS]
    engine.generate(PROMPTS, graph_decode.MIN_STEPS + 1)
    assert windows


def test_the_carried_cache_holds_every_fed_token_until_the_last_row_ends(engine, bbq_paths, monkeypatch):
    """Rows ending at different steps, one batch: the cache stored for the next round holds, per row, the prompt and
    every token fed back up to the step at which the last row ended (not the steps run after it), and the next
    round's answers are those of a cold start."""
    prompts = bbq_prompts(engine, bbq_paths)
    monkeypatch.setattr(engine, "batch_size", len(prompts))
    monkeypatch.setattr(graph_decode, "_CHECK_EVERY", 19)  # every step runs before the host looks: 19 steps run
    _every_row_ending(engine, prompts, monkeypatch)
    keys = list(range(len(prompts)))
    tok = engine.tokenizer
    p_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    # per row, the 20 tokens per-example generate picks, padded after the row's end as the engine pads
    gens = [g + [tok.pad_token_id] * (20 - len(g)) for g in greedy_ids(engine, prompts, 20)]
    ends = [next((i for i, t in enumerate(g) if t in engine.eos_ids), 20) for g in gens]
    n_fed = min(19, max(ends))  # decode.greedy's steps: until the last row has ended, at most 19
    assert len(set(ends)) > 2 and n_fed < 19  # rows did end, at different steps, and before the limit
    try:
        answers = engine.generate(prompts, 20, keys=keys)
        (stored,) = engine._kv._batches.values()
        rows = [stored.keys.index(k) for k in keys]  # the stored batch's rows are in its own (token) order
        assert [stored.ids[r] for r in rows] == [ids + g[:n_fed] for ids, g in zip(p_ids, gens)]
        assert [int(stored.mask[r].sum()) for r in rows] == [len(ids) + n_fed for ids in p_ids]  # attended: those only
        assert stored.mask.shape[1] == stored.cache.layers[0].keys.shape[-2]  # the cache ends where the mask does
        nxt = [p + a + "<|im_end|>\n<|im_start|>user\nAre you sure?<|im_end|>\n<|im_start|>assistant\n"
               for p, a in zip(prompts, answers)]
        warm = engine.generate(nxt, 12, keys=keys)
    finally:
        engine.forget()
    assert warm == engine.generate(nxt, 12)


def test_a_study_with_stages_and_rounds_changes_nothing_but_the_work(engine, bbq_paths, tiny_model):
    from selfcorrect import data, sampling
    from selfcorrect.study import run_rounds

    examples = sampling.sample_bbq(data.load_bbq(bbq_paths[:2]), 1, 7)
    job = _study_job(tiny_model, ["instruction_cot"], rounds=3, max_new_tokens=10, cot_max_new_tokens=12)
    try:
        windowed = run_rounds(engine, job, examples)
        engine.forget()
        engine.graph_decode = False
        plain = run_rounds(engine, job, examples)
    finally:
        engine.forget()
        engine.graph_decode = True
    assert list(plain["raw_text"]) == list(windowed["raw_text"]) and list(plain["reasoning"]) == list(windowed["reasoning"])
    for a, b in zip(plain["option_logprobs"], windowed["option_logprobs"]):
        assert list(a) == pytest.approx(list(b), abs=1e-4)


def test_rows_that_all_end_at_their_first_token_run_no_step_on_cpu(engine, monkeypatch, record):
    windows, steps = _windows(record), record(graph_decode._Decoder, "step", lambda self: 1)
    every = set(range(len(engine.tokenizer)))
    monkeypatch.setattr(type(engine), "eos_ids", property(lambda self: every))
    keys = list(range(len(PROMPTS)))
    try:
        assert engine.generate(PROMPTS, 12, keys=keys) == [""] * len(PROMPTS)
        stored = [entry for entry in engine._kv._batches.values()]
    finally:
        engine.forget()
    assert windows and not steps  # the window loop ran (on CUDA its two warm-up steps would run first)
    assert sum(len(entry.keys) for entry in stored) == len(PROMPTS)
    p_ids = {k: engine.tokenizer(p, add_special_tokens=False)["input_ids"] for k, p in zip(keys, PROMPTS)}
    for entry in stored:  # the prompts only: no answer token was fed back
        assert entry.ids == [p_ids[k] for k in entry.keys]
        assert entry.mask.shape[1] == entry.cache.layers[0].keys.shape[-2]


@pytest.mark.parametrize("how", ["no buffer", "not a view of its buffer", "too narrow", "wide enough"])
def test_the_window_is_the_layers_buffer_with_zeros_after_the_prompt(how):
    from selfcorrect.engine.kv import _drop_buffer, growing_layer

    torch.manual_seed(0)
    layer = growing_layer()()
    layer.room = 4
    keys, values = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 8)
    layer.update(keys, values)  # a buffer of 5 + 16 columns (at least 16 of room), the cache its first 5
    buffer = layer._buffers[0]
    if how != "too narrow" and how != "wide enough":
        layer.keys, layer.values = layer.keys.clone(), layer.values.clone()  # copies, as after gathering rows
    if how == "no buffer":
        _drop_buffer(layer)  # as gather_rows leaves it
    need = 30 if how == "too narrow" else 12
    window_keys, window_values = graph_decode._window(layer, 5, need)
    assert window_keys.shape[-2] == need and layer.keys.shape[-2] == 5
    assert (window_keys.data_ptr() == buffer.data_ptr()) == (how == "wide enough")  # copied only when it must be
    assert window_keys.data_ptr() == layer._buffers[0].data_ptr()  # the layer adopted what the window writes into
    assert torch.equal(window_keys[..., :5, :], keys) and torch.equal(window_values[..., :5, :], values)
    assert not window_keys[..., 5:, :].any() and not window_values[..., 5:, :].any()


# what makes a CUDA graph's capture fail or its replay wrong: the host reading a device value (a sync), a tensor
# made from Python data (a copy from the host), an output whose size depends on the data
_HOST_OPS = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "lift_fresh", "lift_fresh_copy", "unique",
             "_unique2", "masked_select"}


def test_a_step_gives_the_host_nothing_to_wait_for_and_keeps_its_addresses(engine, monkeypatch):
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    steps, real = [], graph_decode._Decoder.step

    def watched(self):
        state = [self.token, self.position, self.column, self.step_index, self.mask, self.gen, self.done,
                 *(t for layer in self.cache.layers for t in (layer.keys, layer.values))]
        before = [t.data_ptr() for t in state]
        with Ops() as ops:
            real(self)
        steps.append((ops.names, before == [t.data_ptr() for t in state]))

    monkeypatch.setattr(graph_decode._Decoder, "step", watched)
    engine.generate(PROMPTS, 12)
    assert len(steps) >= 11
    assert all(not (names & _HOST_OPS) for names, _ in steps), [names & _HOST_OPS for names, _ in steps]
    assert all(kept for _, kept in steps)  # every tensor the step reads or writes stays where a graph recorded it
    assert "linear" in steps[0][0] and "index_copy_" in steps[0][0]  # the dispatch mode saw the forward itself


@pytest.mark.parametrize("error, raised", [
    (RuntimeError("CUDA error: operation not permitted when stream is capturing"), graph_decode.GraphCaptureError),
    (ValueError("a kernel refused"), graph_decode.GraphCaptureError),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), RuntimeError),
])
def test_a_capture_that_fails_stops_the_job_with_the_fix_unless_memory_ran_out(monkeypatch, error, raised):
    """Not run eagerly instead: a capture that failed can leave torch's allocator in capture mode."""
    from selfcorrect.engine.memory import is_oom

    class Graph:  # torch.cuda.graph's context, failing as a capture would at its end
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            raise error

    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: object())
    monkeypatch.setattr(torch.cuda, "graph", Graph)
    monkeypatch.setattr("selfcorrect.engine.memory.free_memory", lambda device: 1 << 40)  # plenty: not an OOM by that
    eng = type("Eng", (), {"device": "cuda", "_graph_pool": None})()
    stepped = []
    decoder = type("D", (), {"step": lambda self: stepped.append(1)})()
    with pytest.raises(raised) as caught:
        graph_decode._capture(eng, decoder, stream=None)
    if raised is graph_decode.GraphCaptureError:
        assert "generation.graph_decode: false" in str(caught.value) and str(error).split(":")[0] in str(caught.value)
        assert not is_oom(caught.value, "cuda")  # not halved and retried as an out-of-memory batch would be
    else:
        assert caught.value is error  # halved and retried by the batching loop
    assert stepped == [1]  # the step was recorded once, never run twice


def test_the_study_turns_graphs_on_for_cuda_only(tiny_model):
    from selfcorrect.config_checks import load_config
    from selfcorrect.pipeline import load_backend

    generation = load_config()["generation"]
    assert generation["graph_decode"] is True  # the schema's default
    backend, *_ = load_backend(ModelSpec(name="tiny", path=str(tiny_model)), {**generation, "device": "cpu"}, 1, None)
    assert backend.graph_decode is False
