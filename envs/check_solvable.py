"""Check that each conda env's pip section resolves as written, against PyPI, for Linux x86_64 and the env's Python.

    python envs/check_solvable.py [envs/generate.yaml ...]     (default: every envs/*.yaml)

Runs ``pip install --dry-run --ignore-installed --report`` on the pins (isolated from any local pip config, find-links
or constraints, so only PyPI answers) and prints, per env, whether it resolved and the versions chosen for the
packages it pins, plus torch's CUDA build. Needs network access to PyPI; installs nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from packaging.version import Version

ENVS = Path(__file__).resolve().parent


def pip_pins(env_file: Path) -> list[str]:
    spec = yaml.safe_load(env_file.read_text())
    return next((d["pip"] for d in spec["dependencies"] if isinstance(d, dict)), [])


def resolve(pins: list[str]) -> tuple[int, dict, str]:
    with tempfile.TemporaryDirectory() as tmp:
        req, report = Path(tmp) / "requirements.txt", Path(tmp) / "report.json"
        req.write_text("\n".join(pins) + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
        cert = os.environ.get("PIP_CERT")
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--ignore-installed",
                               "--quiet", "--report", str(report), "--target", str(Path(tmp) / "t"), "-r", str(req)]
                              + (["--cert", cert] if cert else []), env=env, capture_output=True, text=True)
        chosen = {}
        if report.exists():
            for item in json.loads(report.read_text())["install"]:
                meta = item["metadata"]
                chosen[meta["name"].lower().replace("_", "-")] = (meta["version"], meta.get("requires_dist") or [])
        return proc.returncode, chosen, proc.stderr


def _same(got: str, pinned: str) -> bool:
    """Equal as versions (PEP 440: 13.0.3.0 is 13.0.3)."""
    return bool(got) and Version(got) == Version(pinned)


def main(argv: list[str]) -> int:
    files = [Path(a) for a in argv] or sorted(ENVS.glob("*.yaml"))
    failed = 0
    for env_file in files:
        pins = pip_pins(env_file)
        rc, chosen, err = resolve(pins)
        wrong = [p for p in pins if not _same(chosen.get(p.split("==")[0].lower().replace("_", "-"), ("",))[0],
                                               p.split("==")[1])]
        ok = rc == 0 and not wrong
        failed += not ok
        print(f"{env_file.name}: {'resolves' if ok else 'DOES NOT RESOLVE'} ({len(chosen)} packages)")
        for p in wrong:
            got = chosen.get(p.split("==")[0].lower().replace("_", "-"), ("not installed",))[0]
            print(f"  {p}: resolved to {got}")
        if "torch" in chosen:
            cuda = [d for d in chosen["torch"][1] if d.startswith("cuda-toolkit")]
            print(f"  torch {chosen['torch'][0]}: {cuda[0] if cuda else 'no cuda-toolkit requirement (CPU build?)'}")
        if not ok:
            print("  " + "\n  ".join(err.strip().splitlines()[-5:]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
