"""The generation benchmark's baseline and bound (benchmarks/generation.py), on real BBQ prompts and a tiny Llama."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from conftest import slice_width
from selfcorrect.models import ModelSpec, load_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_generation", ROOT / "benchmarks" / "generation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model_and_tok(tiny_model):
    return load_model(ModelSpec(name="tiny", path=str(tiny_model)), "cpu")


@pytest.fixture(scope="module")
def bbq_prompts(model_and_tok, bbq_paths):
    """Two whole contexts of one category, four questions each (as the study and the benchmark draw them)."""
    from selfcorrect import data
    from selfcorrect.conditions import Registry
    from selfcorrect.formats import render

    registry = Registry.load()
    df = data.load_bbq(bbq_paths[:1])
    rows = df[df["example_id"] // 4 < 2].to_dict("records")
    return [render(registry.conversation("instruction", "bbq", ex, []), "chat", registry.data["dialogue"], model_and_tok[1])
            for ex in rows]


def test_batched_generate_baseline_equals_per_example_generate(bench, model_and_tok, bbq_prompts):
    """Left padding and the batch change nothing in fp32: the baseline answers what each prompt alone answers, and
    its answer lengths are the tokens generated up to and with the end-of-sequence token."""
    model, tok = model_and_tok
    eos = {tok.eos_token_id}
    prompts = bbq_prompts + ["short"]  # one far shorter prompt, so that the batch is padded
    texts, lengths, batch = bench.hf_batched_generate(model, tok, prompts, 10, 4, "cpu", eos)
    assert batch == 4
    assert texts == bench.naive_generate(model, tok, prompts, 10, "cpu", eos)
    for p, n in zip(prompts, lengths):
        enc = tok(p, return_tensors="pt", add_special_tokens=False)
        ids = model.generate(**enc, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=sorted(eos))
        row = ids[0, enc["input_ids"].shape[1]:].tolist()
        assert n == (row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row))


def test_static_cache_baseline_gives_the_same_answers(bench, model_and_tok, bbq_prompts):
    model, tok = model_and_tok
    eos = {tok.eos_token_id}
    plain = bench.hf_batched_generate(model, tok, bbq_prompts, 6, 8, "cpu", eos)
    static = bench.hf_batched_generate(model, tok, bbq_prompts, 6, 8, "cpu", eos, static=True)
    bench.forget_static_cache(model)
    assert static[:2] == plain[:2]


def test_baselines_run_on_the_attention_the_user_loaded(bench, model_and_tok, bbq_prompts, monkeypatch):
    """Building the engine on CPU switches the model to the engine's grouped-KV attention; the baselines must not
    profit from it, and the engine must get it back."""
    from selfcorrect.engine import Engine

    model, tok = model_and_tok
    Engine(model, tok, "cpu", progress=False)
    engines_choice = model.config._attn_implementation
    assert engines_choice != "sdpa"
    seen = []
    real = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: (seen.append(model.config._attn_implementation), real(**kw))[1])
    bench.hf_batched_generate(model, tok, bbq_prompts[:2], 2, 2, "cpu", {tok.eos_token_id})
    bench.naive_generate(model, tok, bbq_prompts[:1], 2, "cpu", {tok.eos_token_id})
    assert seen == ["sdpa", "sdpa"]
    assert model.config._attn_implementation == engines_choice


def test_baselines_run_on_the_output_layer_the_user_loaded(bench, model_and_tok, bbq_prompts, monkeypatch):
    """On CPU the engine computes the output layer in slices of the vocabulary: the baselines run the stock layer,
    and the engine gets its slices back."""
    from selfcorrect.engine import output_layer

    model, tok = model_and_tok
    head = model.get_output_embeddings()
    monkeypatch.setattr(output_layer, "SLICE_ROWS_CHOICES", (slice_width(head.out_features),))
    assert output_layer.use_sliced_output_layer(model)
    seen = []
    real = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: (seen.append(output_layer.is_sliced(head)), real(**kw))[1])
    bench.hf_batched_generate(model, tok, bbq_prompts[:2], 2, 2, "cpu", {tok.eos_token_id})
    bench.naive_generate(model, tok, bbq_prompts[:1], 2, "cpu", {tok.eos_token_id})
    assert seen == [False, False]
    assert output_layer.is_sliced(head)
    output_layer.use_stock_output_layer(model)


def test_answer_of_cuts_at_the_first_end_token_and_counts_it(bench):
    assert bench.answer_of([5, 6, 2, 2, 2], {2}) == ([5, 6], 3)
    assert bench.answer_of([5, 6, 7], {2}) == ([5, 6, 7], 3)  # cut at the maximum: no end token
    assert bench.answer_of([2, 9], {2, 9}) == ([], 1)


def test_distinct_prefix_tokens_count_a_shared_context_once(bench, model_and_tok, bbq_prompts):
    tok = model_and_tok[1]
    seqs = tok(bbq_prompts, add_special_tokens=False)["input_ids"]
    every_prefix = {tuple(s[:k]) for s in seqs for k in range(1, len(s) + 1)}
    assert bench.distinct_prefix_tokens(seqs) == len(every_prefix)
    # the four questions of a context share its text: far fewer tokens than every prompt in full
    assert bench.distinct_prefix_tokens(seqs) < 0.8 * sum(map(len, seqs))
    assert bench.distinct_prefix_tokens(seqs[:1]) == len(seqs[0])


@pytest.mark.parametrize("batch", [1, 2, 3, 8])
def test_bound_reads_the_weights_per_step_or_runs_the_steps_flops(bench, batch):
    lengths = [8, 1, 3, 3, 6, 2, 8, 5]  # answer tokens, the end token counted
    prefill = 2 * 100 / 1e3
    # memory-bound: each step costs one read of the weights, and a batch takes as many steps as its longest answer
    # minus the one the prefill gives; longest answers batched together take the fewest steps
    memory_bound = bench.generation_bound_s(100, lengths, batch, 2.0, 1e3, 1e3, 1.0)
    ordered = sorted(lengths, reverse=True)
    steps = sum(ordered[i] - 1 for i in range(0, len(ordered), batch))
    assert memory_bound == pytest.approx(prefill + steps * 1e3)
    # compute-bound: every token fed to a decode step costs its FLOPs, whatever the batching
    compute_bound = bench.generation_bound_s(100, lengths, batch, 2.0, 1e-9, 1e3, 1.0)
    assert compute_bound == pytest.approx(prefill + sum(n - 1 for n in lengths) * 2.0 / 1e3)


def test_matmul_weights_leave_out_an_untied_input_embedding(bench):
    from transformers import LlamaConfig, LlamaForCausalLM

    kw = dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    untied = LlamaForCausalLM(LlamaConfig(tie_word_embeddings=False, **kw))
    tied = LlamaForCausalLM(LlamaConfig(tie_word_embeddings=True, **kw))
    total = sum(p.numel() for p in untied.parameters())
    assert bench.matmul_weights(untied) == (total - 50 * 16, 4 * (total - 50 * 16))
    # tied, the one matrix is the output layer that every step multiplies by
    total = sum(p.numel() for p in tied.parameters())
    assert bench.matmul_weights(tied) == (total, 4 * total)
