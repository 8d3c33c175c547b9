"""The pinned benchmark files: where each comes from (config/sources.yaml), fetched from the network or a local
mirror, and checked against its sha256 when it arrives and again before it is read."""

from __future__ import annotations

import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..io import atomic_path, sha256_file
from ..paths import SOURCES_FILE


class DataError(RuntimeError):
    """A benchmark file is missing, corrupt or malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class SourceFile:
    benchmark: str
    path: str  # repository-relative, e.g. data/Age.jsonl
    sha256: str
    url: str
    commit: str


def load_sources(path: str | Path = SOURCES_FILE) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def source_file(benchmark: str, path: str, sources: dict | None = None) -> SourceFile:
    sources = sources or load_sources()
    spec = sources[benchmark]
    if path not in spec["files"]:
        raise DataError(f"{benchmark}: no pinned file {path!r}; known: {sorted(spec['files'])}")
    # quoted: the BBQ template files have spaces in their names
    url = spec["url"].format(repository=spec["repository"], commit=spec["commit"], path=urllib.parse.quote(path))
    return SourceFile(benchmark, path, spec["files"][path], url, spec["commit"])


def fetch(src: SourceFile, dest: str | Path, mirror: str | Path | None = None, hint: str = "") -> Path:
    """Copy ``src`` from ``mirror`` (laid out like ../shared/data) or download it; verify sha256.

    The file appears at ``dest`` only once its digest is verified, so a mismatch leaves nothing behind. ``hint``
    (the task's) is added when the mirror lacks the file.
    """
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        if mirror:
            origin = Path(mirror) / src.benchmark / src.path
            if not origin.is_file():
                raise DataError(f"{origin} is not in the data mirror {mirror}.{hint}")
            shutil.copyfile(origin, tmp)
        else:
            try:
                with urllib.request.urlopen(src.url, timeout=60) as resp, open(tmp, "wb") as out:
                    shutil.copyfileobj(resp, out)
            except OSError as err:
                raise DataError(
                    f"could not download {src.url}: {err}. On an offline machine pass "
                    "--config data_mirror=DIR with a directory laid out like ../shared/data."
                ) from err
        actual = sha256_file(tmp)
        if actual != src.sha256:
            raise DataError(
                f"checksum mismatch for {src.benchmark}/{src.path}: expected sha256 {src.sha256}, "
                f"got {actual}. The file was not kept; check the mirror or the pinned commit {src.commit}."
            )
    return dest


def pinned_file_of(benchmark: str, path: str | Path, sources: dict | None = None) -> SourceFile:
    """The pinned file that ``path`` is a copy of: the one whose repository path ``path`` ends with
    (resources/data/bbq/data/Religion.jsonl is bbq's data/Religion.jsonl)."""
    sources = sources or load_sources()
    posix = Path(path).as_posix()
    matches = [p for p in sources[benchmark]["files"] if posix == p or posix.endswith("/" + p)]
    if not matches:
        raise DataError(f"{path} is not one of the files pinned for {benchmark} in config/sources.yaml "
                        f"({sorted(sources[benchmark]['files'])})")
    return source_file(benchmark, max(matches, key=len), sources)


def verify_pinned(benchmark: str, paths: list[str | Path], sources: dict | None = None) -> None:
    """Stop unless each of ``paths`` still has its pinned sha256.

    ``fetch`` checks a file once, when it arrives; a file edited afterwards would otherwise be read as if it were
    the benchmark (one changed byte of a BBQ jsonl changes a label and every score after it).
    """
    sources = sources or load_sources()
    for path in paths:
        src = pinned_file_of(benchmark, path, sources)
        actual = sha256_file(path)
        if actual != src.sha256:
            raise DataError(
                f"{path} is not the pinned {src.benchmark}/{src.path}: its sha256 is {actual}, config/sources.yaml "
                f"pins {src.sha256} (commit {src.commit}); it changed after it was fetched. Delete it (rm '{path}') "
                "and run again to fetch it anew."
            )
