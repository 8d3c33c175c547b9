"""Shared fixtures: the real data beside the project, and a tiny random Llama built at test time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SELFCORRECT_SHARED", ROOT.parent / "shared")) / "data"
SIX = ["Age", "Disability_status", "Nationality", "Physical_appearance", "Religion", "Sexual_orientation"]
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def pytest_configure(config):
    if not (SHARED / "bbq" / "data" / "Age.jsonl").exists():
        raise pytest.UsageError(f"the real data is expected at {SHARED} (set SELFCORRECT_SHARED to its parent)")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def bbq_paths() -> list[Path]:
    return [SHARED / "bbq" / "data" / f"{c}.jsonl" for c in SIX]


def copy_project(dest: Path) -> Path:
    """The workflow's own files (no results) copied to ``dest``, for tests that edit them or run there."""
    import shutil

    for name in ("rules", "scripts", "config", "src"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(ROOT / name, dest / name)
    return dest


def _corpus() -> list[str]:
    lines = []
    for c in SIX:
        with open(SHARED / "bbq" / "data" / f"{c}.jsonl") as fh:
            for i, line in enumerate(fh):
                if i % 7 == 0:
                    r = json.loads(line)
                    lines += [r["context"], r["question"], r["ans0"], r["ans1"], r["ans2"]]
    lines += (SHARED / "winogender" / "data" / "all_sentences.tsv").read_text().splitlines()
    return lines


def build_tiny_model(out: Path, chat: bool = True, seed: int = 0) -> Path:
    """A 2-layer random Llama with a BPE tokenizer trained on the benchmarks' own text."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token="<|im_start|>")
    if chat:
        fast.chat_template = CHATML
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id)
    model = LlamaForCausalLM(cfg)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out


def slice_width(out_features: int) -> int:
    """The widest width that cuts an output layer of ``out_features`` rows into two or more equal slices: the tiny
    model's vocabulary is too small for the engine's own widths (``output_layer.SLICE_ROWS_CHOICES``)."""
    return next(w for w in range(out_features // 2, 1, -1) if out_features % w == 0)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-base"), chat=False)


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/* from the current code")
