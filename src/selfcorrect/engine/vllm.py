"""Generation with vLLM on GPUs: the :class:`~selfcorrect.engine.backend.Backend` contract, as the transformers engine.

vLLM schedules its own batches (continuous batching, paged attention) and reuses the KV cache of any prefix it has
seen (automatic prefix caching), so a later round, whose prompt starts with the earlier one, is encoded from where
that prompt ended without the engine's explicit bookkeeping. Prompts are passed as token ids, tokenised exactly as
the transformers engine does, so both backends see the same tokens; greedy decoding (temperature 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..models import ModelLoadError, ModelSpec, _hint, _source
from .backend import stopped_text
from .plan import last_token_differs


@dataclass
class VLLMEngine:
    llm: object
    tokenizer: object
    stop_strings: tuple[str, ...] = ()
    progress: bool = True
    sampling_params: type | None = None  # vllm.SamplingParams; injectable so the adapter is testable without vLLM
    # vLLM schedules its own batches, and its prefix caching (switched on in :func:`load_vllm`) finds a later
    # round's shared prefix wherever the earlier prompt was batched: the caller need not batch for either
    batch_size: int = 0
    carry_kv_between_rounds: bool = False
    prefix_tree_prefill: bool = False

    def forget(self) -> None:
        """Nothing to drop: vLLM's prefix cache evicts on its own."""

    def _params(self, **kwargs):
        if self.sampling_params is None:
            from vllm import SamplingParams

            self.sampling_params = SamplingParams
        return self.sampling_params(temperature=0.0, **kwargs)

    def _run(self, sequences: list[list[int]], params) -> list:
        return self.llm.generate([{"prompt_token_ids": s} for s in sequences], params, use_tqdm=self.progress)

    def generate(self, prompts: list[str], max_new_tokens: int, desc: str = "generate", keys: list | None = None) -> list[str]:
        return self.answer(prompts, max_new_tokens, None, desc, keys)[0]

    def answer(self, prompts: list[str], max_new_tokens: int | None, options: list[list[str]] | None,
               desc: str = "answer", keys: list | None = None) -> tuple[list[str] | None, list[list[float]] | None]:
        p_ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        texts = None
        if max_new_tokens:
            outs = self._run(p_ids, self._params(max_tokens=max_new_tokens, skip_special_tokens=True))
            texts = [stopped_text(o.outputs[0].text, self.stop_strings, o.outputs[0].finish_reason == "length")
                     for o in outs]
        return texts, (self._option_scores(p_ids, options) if options else None)

    def _option_scores(self, p_ids: list[list[int]], options: list[list[str]]) -> list[list[float]]:
        """log P(option | prompt) per option.

        vLLM skips prefix-cache reads for a request that asks for prompt log-probabilities, so scoring each option
        as prompt + option with ``prompt_logprobs`` would prefill the whole prompt once per option. Where the options
        share all tokens but their last (" (a"/" (b"/" (c", " she"/" he"/" they"), they are scored instead from the
        next-token distribution (``logprobs=-1``: the whole vocabulary) after the prompt and after each shared token:
        ordinary generation requests, which read and extend the prompt's cached prefix, one new token each.
        Options of other shapes fall back to one ``prompt_logprobs`` request per option.
        """
        o_ids = [self.tokenizer(list(o), add_special_tokens=False)["input_ids"] for o in options]
        scores = [[math.nan] * len(o) for o in o_ids]
        shared = [i for i, o in enumerate(o_ids) if last_token_differs(o)]
        if shared:
            # request j of example i: the prompt and the first j shared tokens; it scores shared token j (or, after
            # all of them, every option's last token)
            steps = [(i, j) for i in shared for j in range(len(o_ids[i][0]))]
            outs = self._run([p_ids[i] + o_ids[i][0][:j] for i, j in steps], self._params(max_tokens=1, logprobs=-1))
            for (i, j), out in zip(steps, outs):
                dist = out.outputs[0].logprobs[0]  # token id -> Logprob at the first generated position
                for k, option in enumerate(o_ids[i]):
                    # before the last step option[j] is the token all options share; at it, each option's own
                    step = dist[option[j]].logprob
                    scores[i][k] = step if j == 0 else scores[i][k] + step
        rest = [i for i in range(len(o_ids)) if i not in set(shared)]
        requests = [(i, k, p_ids[i] + o) for i in rest for k, o in enumerate(o_ids[i])]
        if requests:
            outs = self._run([seq for _, _, seq in requests], self._params(max_tokens=1, prompt_logprobs=0))
            for (i, k, seq), out in zip(requests, outs):
                first = len(seq) - len(o_ids[i][k])
                # prompt_logprobs[t] maps the prompt's token t (and the top alternatives) to log P(token t | tokens < t)
                scores[i][k] = sum(out.prompt_logprobs[t][seq[t]].logprob for t in range(first, len(seq)))
        return scores


def load_vllm(spec: ModelSpec, local_dir: str | None, seed: int, gpus: int = 1, stop_strings: tuple[str, ...] = ()):
    """A :class:`VLLMEngine` for ``spec``; any failure is a :class:`ModelLoadError` that names the model."""
    try:
        from vllm import LLM
    except ImportError as err:
        raise ModelLoadError(
            f"model {spec.name!r}: generation.backend is 'vllm' but vLLM is not installed; run the workflow with "
            "`--sdm conda` (envs/vllm.yaml) or `pip install vllm`, or set generation.backend: transformers"
        ) from err
    if spec.gguf_file and local_dir is None:
        raise ModelLoadError(f"model {spec.name!r}: GGUF models reach vLLM through the prepare_model step (local_dir)")
    src, kwargs = _source(spec, local_dir)
    try:
        llm = LLM(model=src, tokenizer=src, revision=kwargs.get("revision"), dtype=spec.dtype,
                  trust_remote_code=spec.trust_remote_code, tensor_parallel_size=max(1, gpus),
                  enable_prefix_caching=True, seed=seed,
                  # option scores read the whole next-token distribution (SamplingParams(logprobs=-1)), which vLLM
                  # refuses above max_logprobs (default 20); -1 lifts the cap
                  max_logprobs=-1)
    except Exception as err:
        raise ModelLoadError(f"cannot load model {spec.name!r} from {src!r} with vLLM: {err}.{_hint(spec, err)}") from err
    return VLLMEngine(llm, llm.get_tokenizer(), stop_strings=stop_strings)
