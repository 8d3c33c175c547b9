"""Batch sizes planned from memory, and any allocation failure taken for out-of-memory (issue 17, item 1).

The planner's arithmetic is checked on real model shapes (Llama-2-7B on an 80 GB card); the engine's halving and
growing back on the tiny random Llama, whose forward is patched to fail the way cuDNN's attention failed on an
H100 at the 7B shape.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig

from selfcorrect.engine import Backend, Engine, KVStore, new_cache
from selfcorrect.engine.memory import (BatchSizer, activation_bytes_per_row, free_memory, is_oom, kv_bytes_per_token,
                                       plan_batch_size)
from test_engine import PROMPTS, engine, naive, real_tokens, record  # noqa: F401  (fixtures shared with the engine's tests)

MiB, GiB = 1 << 20, 1 << 30
# what cuDNN's attention raised when it could not get its workspace (issue 17)
CUDNN = "Expected mha_graph.execute(handle, variant_pack, workspace_ptr.get()).is_good() to be true, but got false."
# Llama-2-7B: 32 layers, 32 heads of 128 (no GQA), 6.74e9 parameters
LLAMA2_7B = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                        vocab_size=32000)
CARD_80GB = 80 * 10**9
FREE_AFTER_7B = CARD_80GB - 2 * 6_738_415_616  # bfloat16 weights loaded: 66.52 GB left


def test_kv_bytes_per_token_from_the_models_shape():
    assert kv_bytes_per_token(LLAMA2_7B, torch.bfloat16) == 0.5 * MiB  # 32 x 32 x 128 x 2 x 2 bytes
    assert kv_bytes_per_token(LLAMA2_7B, "float32") == 1 * MiB
    gqa = LlamaConfig(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8)
    assert kv_bytes_per_token(gqa, torch.bfloat16) == 0.125 * MiB  # 8 KV heads share the 32 query heads
    # neither num_key_value_heads nor head_dim: one KV head per head, each hidden / heads wide
    bare = SimpleNamespace(num_hidden_layers=2, num_attention_heads=4, hidden_size=32)
    assert kv_bytes_per_token(bare, torch.float32) == 2 * 4 * 8 * 2 * 4
    with pytest.raises(ValueError, match="'bfloat17'"):
        kv_bytes_per_token(LLAMA2_7B, "bfloat17")


def test_plan_batch_size_for_llama2_7b_on_an_80gb_card():
    kv = kv_bytes_per_token(LLAMA2_7B, torch.bfloat16)
    # rows of 1024 tokens take 0.5 GiB each: 66.52e9 / 2**29 = 123.9
    assert plan_batch_size(FREE_AFTER_7B, kv, 1024, 0, 0, max_batch=256) == 123
    assert plan_batch_size(FREE_AFTER_7B, kv, 1024, 0, 0, max_batch=64) == 64  # the configured size caps it
    # the job's 64 examples each carry 1024 tokens to their next round: 32 GiB gone first, 59.9 rows left
    assert plan_batch_size(FREE_AFTER_7B, kv, 1024, 1024, 0, max_batch=64) == 59
    # 0.5 GiB of activations per row doubles each row's need: 61.9
    assert plan_batch_size(FREE_AFTER_7B, kv, 1024, 0, GiB // 2, max_batch=256) == 61
    assert plan_batch_size(0, kv, 1024, 0, 0, max_batch=256) == 1  # never below one row
    with pytest.raises(ValueError, match="max_batch"):
        plan_batch_size(FREE_AFTER_7B, kv, 1024, 0, 0, max_batch=0)
    with pytest.raises(ValueError, match="tokens_per_row.: -5"):
        plan_batch_size(FREE_AFTER_7B, kv, -5, 0, 0, max_batch=8)


def test_the_engines_plan_for_the_7b_shape_is_smaller_than_the_batch_that_crashed():
    """Issue 17: 256 prompts with 128 tokens of CoT crashed at the 7B shape; batch 32 completed."""
    model = SimpleNamespace(config=LLAMA2_7B, dtype=torch.bfloat16)
    eng = Engine(model, SimpleNamespace(), "cpu", batch_size=256, progress=False)
    eng._free_bytes = FREE_AFTER_7B
    cot = eng.planned_rows(prompt_tokens=400, room=128, carried=False)
    assert 32 <= cot < 256
    assert eng.planned_rows(prompt_tokens=400, room=0, carried=False) > cot  # short answers leave more room
    eng.batch_size = 64  # the paper preset: with carry-over, the job's 64 examples keep their caches
    assert eng.planned_rows(prompt_tokens=1500, room=256, carried=True) < eng.planned_rows(1500, 256, carried=False)
    assert activation_bytes_per_row(LLAMA2_7B, torch.bfloat16, 400) < kv_bytes_per_token(LLAMA2_7B, torch.bfloat16) * 400


def test_free_memory_on_cpu_is_the_hosts_available_memory():
    import psutil

    assert 0 < free_memory("cpu") <= psutil.virtual_memory().total


@pytest.mark.parametrize("err, oom", [
    (RuntimeError(CUDNN), True),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True),
    (RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"), True),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x32 and 64x32)"), False),
    (ValueError("out of memory"), False),  # only a RuntimeError comes from a kernel
])
def test_allocation_failures_are_out_of_memory(err, oom):
    assert is_oom(err, "cpu") is oom


def test_on_cuda_any_runtime_error_while_memory_is_short_is_out_of_memory(monkeypatch):
    import selfcorrect.engine.memory as memory

    err = RuntimeError("CUDNN_STATUS_EXECUTION_FAILED")  # a kernel that failed without saying why
    monkeypatch.setattr(memory, "free_memory", lambda device: 100 * MiB)
    assert is_oom(err, "cuda:0") and not is_oom(err, "cpu")
    monkeypatch.setattr(memory, "free_memory", lambda device: 20 * GiB)
    assert not is_oom(err, "cuda:0")


def test_batch_sizer_halves_then_grows_back_but_never_past_the_plan():
    sizer = BatchSizer(16, grow_after=2)
    assert sizer.size(planned=100) == 16 and sizer.size(planned=5) == 5 and sizer.size(planned=0) == 1
    assert sizer.failed(16) == 8 and sizer.size(100) == 8
    sizer.succeeded()
    assert sizer.size(100) == 8
    sizer.succeeded()
    assert sizer.size(100) == 16 and sizer.cap is None  # back to the configured size
    sizer.failed(16)
    sizer.succeeded()
    sizer.succeeded()
    assert sizer.size(planned=3) == 3  # grown back, the plan still limits


@pytest.fixture
def prompts(engine, bbq_paths):
    from selfcorrect import data
    from selfcorrect.conditions import Registry
    from selfcorrect.formats import render

    registry = Registry.load()
    df = data.load_bbq(bbq_paths[:1]).head(8)
    return [render(registry.conversation("instruction", "bbq", ex, []), "chat", registry.data["dialogue"], engine.tokenizer)
            for ex in df.to_dict("records")] + PROMPTS


def failing_forward(monkeypatch, model, err: Exception, max_rows: int, times: int | None = None) -> dict:
    """Make ``model``'s forward raise ``err`` on more than ``max_rows`` rows (the first ``times`` times only)."""
    real, raised = model.forward, {"n": 0}

    @functools.wraps(real)
    def forward(*args, input_ids=None, **kwargs):
        if input_ids.shape[0] > max_rows and (times is None or raised["n"] < times):
            raised["n"] += 1
            raise err
        return real(*args, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    return raised


def test_cudnn_workspace_failure_halves_the_batch_and_later_batches_grow_back(engine, prompts, monkeypatch, record):
    monkeypatch.setattr(engine, "batch_size", 4)
    monkeypatch.setattr(engine, "_sizer", BatchSizer(4, grow_after=2))
    want = engine.generate(prompts, 6)
    # memory is short for two batches (of 4, then of 2 rows), then enough again
    raised = failing_forward(monkeypatch, engine.model, RuntimeError(CUDNN), max_rows=1, times=2)
    tried = record(engine, "_answer_batch", lambda batch, n: len(batch))
    got = engine.generate(prompts, 6)
    assert raised["n"] == 2
    assert tried == [4, 2, 1, 1, 2, 2, 4, 2]  # halved twice; doubled after every two good batches, up to 4
    assert got == want == [naive(engine, p, 6) for p in prompts]


def test_a_runtime_error_that_is_not_out_of_memory_propagates(engine, prompts, monkeypatch):
    monkeypatch.setattr(engine, "batch_size", 4)
    monkeypatch.setattr(engine, "_sizer", BatchSizer(4))
    failing_forward(monkeypatch, engine.model, RuntimeError("mat1 and mat2 shapes cannot be multiplied"), max_rows=1)
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        engine.generate(prompts, 3)
    assert engine._sizer.cap is None  # nothing was halved


def test_on_cpu_the_plan_only_caps_the_batch(engine, prompts, monkeypatch, record):
    monkeypatch.setattr(engine, "batch_size", 4)
    monkeypatch.setattr(engine, "_sizer", BatchSizer(4))
    tried = record(engine, "_answer_batch", lambda batch, n: len(batch))
    roomy = engine.generate(prompts, 5)
    assert tried == [4, 4, 4]
    tried.clear()
    monkeypatch.setattr(engine, "_free_bytes", 0)  # nothing fits: one row at a time, never none
    assert engine.generate(prompts, 5) == roomy
    assert tried == [1] * len(prompts)


def test_kv_store_finds_a_batch_by_its_examples_in_any_order(tiny_model):
    from transformers import AutoConfig

    cache = new_cache(AutoConfig.from_pretrained(tiny_model))
    rows = torch.arange(3, dtype=torch.float)[:, None, None, None].expand(3, 2, 5, 4)  # row r holds r everywhere
    for layer in cache.layers:
        layer.lazy_initialization(rows, rows)
        layer.keys, layer.values = rows.clone(), rows.clone()
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    store = KVStore()
    store.put(["a", "b", "c"], [[1] * 5, [2] * 4, [3] * 3], mask, cache)
    # positions in the stored rows' order (a, b, c), so that popping them needs no reordering copy
    assert store.groups(["c", "a", "b"]) == [[1, 2, 0]] and store.groups(["a", "z"]) is None
    stored = cache.layers[0].keys.data_ptr()
    in_order = store.pop(["a", "b", "c"])
    assert in_order.cache.layers[0].keys.data_ptr() == stored  # the stored cache itself, not a copy
    store.put(["a", "b", "c"], in_order.ids, in_order.mask, in_order.cache)
    assert store.pop(["a", "b"]) is None  # a batch's cache is found by the same examples only
    got = store.pop(["c", "a", "b"])
    assert got.keys == ["c", "a", "b"] and got.ids == [[3] * 3, [1] * 5, [2] * 4]
    assert got.mask.sum(1).tolist() == [3, 5, 4] and got.cache.layers[0].keys[:, 0, 0, 0].tolist() == [2, 0, 1]
    assert len(store) == 0 and store.pop(["c", "a", "b"]) is None  # taken out
    with pytest.raises(ValueError, match="None"):
        store.put(["a", None], [[1], [2]], mask[:2], cache)


def test_the_engine_is_a_backend_and_forget_drops_its_carried_caches(engine):
    assert isinstance(engine, Backend)
    keys = list(range(len(PROMPTS)))
    engine.generate(PROMPTS, 3, keys=keys)
    assert len(engine._kv) > 0
    engine.forget()
    assert len(engine._kv) == 0
    engine.carry_kv_between_rounds = False
    try:
        engine.generate(PROMPTS, 3, keys=keys)
        assert len(engine._kv) == 0  # nothing carried when carry-over is off
    finally:
        engine.carry_kv_between_rounds = True


def test_a_divided_batch_is_stored_as_pieces_each_found_by_its_examples_and_the_stored_cache_let_go(tiny_model):
    import gc
    import weakref

    from transformers import AutoConfig

    cache = new_cache(AutoConfig.from_pretrained(tiny_model), room=2)
    rows = torch.arange(5, dtype=torch.float)[:, None, None, None].expand(5, 2, 4, 3).clone()  # row r holds r
    for layer in cache.layers:
        layer.update(rows, rows)  # real growing buffers, with room for in-place appends
    buffers = [weakref.ref(layer._buffers[0]) for layer in cache.layers]
    mask = torch.ones(5, 4, dtype=torch.long)
    store = KVStore()
    store.put(list("abcde"), [[i] for i in range(5)], mask, cache)
    held = store.nbytes()
    assert held == 2 * len(cache.layers) * 5 * 2 * (4 + 16) * 3 * 4  # keys and values, 4 columns + 16 of room, float32
    assert store.divisible(list("ecabd")) and not store.divisible(list("abcd")) and not store.divisible(list("abcdee"))
    assert store.divide(list("ecabd"), 2) == [["a", "b"], ["c", "d"], ["e"]]  # the stored row order, not the caller's
    del cache, layer
    gc.collect()
    assert all(b() is None for b in buffers)  # the stored buffers are let go once their rows are copied
    assert store.nbytes() == 2 * len(buffers) * 5 * 2 * 4 * 3 * 4  # the pieces hold their rows, no room
    assert store.groups(list("abcde")) == [[0, 1], [2, 3], [4]]
    first, middle, last = store.pop(["a", "b"]), store.pop(["d", "c"]), store.pop(["e"])
    assert middle.ids == [[3], [2]] and middle.mask.shape == (2, 4)
    assert middle.cache.layers[0].keys[:, 0, 0, 0].tolist() == [3, 2]
    # appends to one piece (the one at row 0, and a one-row piece) leave the others as they were
    for piece in (first, last):
        for layer in piece.cache.layers:
            new = torch.full((len(piece.keys), 2, 1, 3), 9.0)
            layer.update(new, new)
    assert first.cache.layers[0].keys[:, 0, :, 0].tolist() == [[0, 0, 0, 0, 9], [1, 1, 1, 1, 9]]
    assert last.cache.layers[-1].values[:, 1, :, 2].tolist() == [[4, 4, 4, 4, 9]]
    assert middle.cache.layers[0].keys.shape == (2, 2, 4, 3) and middle.cache.layers[0].keys[:, :, :, :].unique().tolist() == [2, 3]


def test_a_carried_batch_that_outgrew_the_plan_is_divided_and_still_reuses_its_cache(engine, monkeypatch, record):
    """Round 2's prompts hold round 1's conversation: more tokens per row than round 1 was planned for. A stored
    batch used to run whole whatever the plan said (an H100 at the 7B shape ran out of memory there)."""
    monkeypatch.setattr(engine, "batch_size", 4)
    monkeypatch.setattr(engine, "_sizer", BatchSizer(4))
    keys = list(range(len(PROMPTS)))
    nxt = [p + " (c) Can't be determined.<|im_end|>\n<|im_start|>user\nAre you sure?<|im_end|>\n<|im_start|>assistant\n"
           for p in PROMPTS]
    cold = engine.generate(nxt, 4)
    longest_first_round = max(len(engine.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in PROMPTS)
    # memory for 4 rows of round 1's length, for 2 of round 2's
    monkeypatch.setattr(engine, "planned_rows",
                        lambda tokens, room, carried: 4 if tokens <= longest_first_round else 2)
    batches = record(engine, "_answer_batch", lambda batch, n: len(batch))
    steps = record(engine, "_step", lambda ids, mask, *a, **k: (ids.shape[1], real_tokens(ids, mask)))
    try:
        engine.generate(PROMPTS, 4, keys=keys)
        assert batches == [4] and len(engine._kv) == 1
        batches.clear(), steps.clear()
        warm = engine.generate(nxt, 4, keys=keys)
    finally:
        engine.forget()
    assert batches == [2, 2]  # divided as planned, no out-of-memory retry
    assert warm == cold
    new_tokens = sum(len(engine.tokenizer(n, add_special_tokens=False)["input_ids"]) -
                     len(engine.tokenizer(p, add_special_tokens=False)["input_ids"]) for p, n in zip(PROMPTS, nxt))
    encoded = sum(n for width, n in steps if width > 1)
    assert encoded <= new_tokens + 4 * len(PROMPTS)  # only the new tokens (and the answers fed back): cache reused


def test_free_memory_on_cuda_stays_under_the_processs_cap(monkeypatch):
    """``torch.cuda.set_per_process_memory_fraction`` caps the allocator below what the driver reports free."""
    import selfcorrect.engine.memory as memory

    total, allocated, reserved = 80 * GiB, 10 * GiB, 12 * GiB
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (60 * GiB, total))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: allocated)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: reserved)
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device=None: 1.0)
    assert memory.free_memory("cuda:0") == 62 * GiB  # the driver's free and the allocator's unused blocks
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device=None: 0.25)
    assert memory.free_memory("cuda:0") == 10 * GiB  # 20 GiB allowed, 10 of them allocated
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device=None: 0.1)
    assert memory.free_memory("cuda:0") == 0  # already past the cap: nothing, not a negative size


def test_free_memory_on_a_bare_cuda_device_asks_the_cap_of_the_current_one(monkeypatch):
    """torch's get_per_process_memory_fraction rejects a device without an index (seen on an H100): the engine's
    device is usually plain "cuda"."""
    import selfcorrect.engine.memory as memory

    def fraction(device=None):
        if not isinstance(device, int):
            raise ValueError(f"Expected a torch.device with a specified index or an integer, but got:{device}")
        return {0: 0.5, 1: 0.25}[device]

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (60 * GiB, 80 * GiB))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 10 * GiB)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 10 * GiB)
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", fraction)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert memory.free_memory("cuda") == 10 * GiB  # the current device's cap: 20 GiB, 10 allocated
    assert memory.free_memory("cuda:0") == 30 * GiB  # 40 GiB allowed on device 0


def test_gathering_rows_lets_the_old_buffer_go(tiny_model):
    """A growing layer keeps its buffer for in-place appends; once its rows are gathered (a copy) the buffer must
    not stay alive beside the copy until the next append: two copies of a 7B batch's cache do not fit."""
    import gc
    import weakref

    from transformers import AutoConfig

    from selfcorrect.engine.kv import gather_rows

    cache = new_cache(AutoConfig.from_pretrained(tiny_model), room=4)
    kv = torch.randn(3, 2, 5, 4)
    for layer in cache.layers:
        layer.update(kv, kv)
    old = weakref.ref(cache.layers[0]._buffers[0])
    gather_rows(cache, torch.tensor([2, 0]))
    gc.collect()
    assert old() is None
    assert cache.layers[0].keys.shape[0] == 2 and torch.equal(cache.layers[0].keys[1], kv[0])
    more = torch.randn(2, 2, 1, 4)
    keys, _ = cache.layers[0].update(more, more)  # appends still work: a fresh buffer with room
    assert keys.shape == (2, 2, 6, 4) and torch.equal(keys[:, :, -1:], more)


def test_a_call_with_some_of_a_stored_batchs_examples_is_cut_to_the_plan_and_encoded_cold(engine, monkeypatch, record):
    """Only the examples that stored a batch together find its cache; a group of some of them is still planned."""
    monkeypatch.setattr(engine, "batch_size", 4)
    monkeypatch.setattr(engine, "_sizer", BatchSizer(4))
    three = PROMPTS[:3]
    cold = engine.generate(three, 4)
    try:
        engine.generate(PROMPTS, 4, keys=list(range(len(PROMPTS))))
        monkeypatch.setattr(engine, "planned_rows", lambda tokens, room, carried: 2)
        batches = record(engine, "_answer_batch", lambda batch, n: len(batch))
        got = engine.generate(three, 4, keys=[0, 1, 2])
        assert engine._kv.divisible([0, 1, 2, 3])  # the stored batch of four stays stored, whole
    finally:
        engine.forget()
    assert batches == [2, 1] and got == cold


def test_a_stored_batch_with_a_key_twice_or_layers_that_do_not_grow_is_not_divided(tiny_model):
    from transformers import AutoConfig, DynamicCache

    config = AutoConfig.from_pretrained(tiny_model)
    kv = torch.zeros(3, 2, 4, 3)
    store = KVStore()
    twice = new_cache(config)
    for layer in twice.layers:
        layer.update(kv, kv)
    store.put(["a", "a", "b"], [[1], [1], [2]], torch.ones(3, 4), twice)
    assert not store.divisible(["a", "b"])  # pieces [a], [a], [b] would give position a twice
    plain = DynamicCache(config=config)  # layers that may keep per-row state of their own
    for layer in plain.layers:
        layer.lazy_initialization(kv, kv)
        layer.keys, layer.values = kv.clone(), kv.clone()
    store.put(["c", "d", "e"], [[1], [2], [3]], torch.ones(3, 4), plain)
    assert not store.divisible(["c", "d", "e"])


def test_running_out_of_memory_while_dividing_loses_the_cache_not_the_job(engine, monkeypatch, record):
    monkeypatch.setattr(engine, "batch_size", 4)
    monkeypatch.setattr(engine, "_sizer", BatchSizer(4))
    keys = list(range(len(PROMPTS)))
    nxt = [p + " Are you sure?" for p in PROMPTS]
    cold = engine.generate(nxt, 4)

    def no_memory(keys, size):
        raise RuntimeError(CUDNN)

    try:
        engine.generate(PROMPTS, 4, keys=keys)
        monkeypatch.setattr(engine, "planned_rows", lambda tokens, room, carried: 2)
        monkeypatch.setattr(engine._kv, "divide", no_memory)
        batches = record(engine, "_answer_batch", lambda batch, n: len(batch))
        warm = engine.generate(nxt, 4, keys=keys)
    finally:
        engine.forget()
    assert batches == [2, 2] and warm == cold
