"""Fetch the pinned benchmark files (network or local mirror) and normalise them into typed tables."""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from .io import atomic_path, sha256_file
from .paths import SOURCES_FILE

BBQ_CATEGORIES = (
    "Age", "Disability_status", "Gender_identity", "Nationality", "Physical_appearance",
    "Race_ethnicity", "Race_x_SES", "Race_x_gender", "Religion", "SES", "Sexual_orientation",
)


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
    url = spec["url"].format(repository=spec["repository"], commit=spec["commit"], path=path)
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


# ---------------------------------------------------------------- BBQ

def read_jsonl(path: str | Path) -> list[dict]:
    rows = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({err})") from err
    return rows


def flatten_bbq(records: list[dict]) -> pd.DataFrame:
    """One row per BBQ example with the answer slots' texts and group tags as columns."""
    rows = []
    for r in records:
        info = r["answer_info"]
        meta = r.get("additional_metadata") or {}
        row = {
            "example_id": int(r["example_id"]),
            "category": r["category"],
            "question_index": int(r["question_index"]),
            "question_polarity": r["question_polarity"],
            "context_condition": r["context_condition"],
            "context": r["context"],
            "question": r["question"],
            "label": int(r["label"]),
            "stereotyped_groups": [str(g) for g in meta.get("stereotyped_groups", [])],
            "subcategory": str(meta.get("subcategory", "")),
        }
        for k in range(3):
            row[f"ans{k}"] = r[f"ans{k}"]
            row[f"ans{k}_text"] = info[f"ans{k}"][0]
            row[f"ans{k}_tag"] = info[f"ans{k}"][1]
        rows.append(row)
    return pd.DataFrame(rows)


def load_bbq(paths: list[str | Path]) -> pd.DataFrame:
    """Normalised BBQ table with the official ``target_loc`` and ``label_type`` attached."""
    from .bbq import add_target_loc

    df = pd.concat([flatten_bbq(read_jsonl(p)) for p in paths], ignore_index=True)
    return add_target_loc(df)


# ---------------------------------------------------------------- Winogender

GENDERS = ("female", "male", "neutral")  # Winogender's pronoun variants, in the order of the scored options
_WORD = re.compile(r"^([A-Za-z]+)(\W*)$")  # a word and its trailing punctuation ("him." -> "him", ".")


def _alternatives(forms: list[str], where: str) -> str:
    """One word as the blank shows it: the word itself where every variant has it, else each variant's form once,
    joined by "/" ("was/were"), punctuation kept once after them."""
    distinct = list(dict.fromkeys(forms))
    if len(distinct) == 1:
        return distinct[0]
    parts = [_WORD.match(f) for f in distinct]
    if not all(parts) or len({m.group(2) for m in parts}) != 1:
        raise DataError(f"Winogender {where}: cannot show the word forms {distinct} as alternatives of one word")
    return "/".join(m.group(1) for m in parts) + parts[0].group(2)


def _blank_out(sentences: dict[str, str]) -> tuple[str, str, dict[str, str], dict[str, str]]:
    """From the female/male/neutral instantiations of one item: the blanked sentence, the text before the blank,
    each variant's pronoun and each variant's own rest of the sentence after its pronoun.

    The male and female sentences differ only in the pronoun; the neutral one may also change a later word to agree
    with "they" ("he was" / "they were", 34 of the 240 items). The blank must not favour one candidate by its verb, so
    a word the variants write differently is shown with every form, in the order of GENDERS ("_ was/were"): each
    candidate pronoun has its agreeing form on offer. The pronoun is scored at the blank, before those words; a
    previous answer is written with the variant's own rest of the sentence (``rests``).
    """
    words = {g: sentences[g].split(" ") for g in GENDERS}
    if len({len(w) for w in words.values()}) != 1:
        raise DataError(f"Winogender sentences differ in length: {sentences}")
    diff = [i for i, (m, f) in enumerate(zip(words["male"], words["female"])) if m != f]
    if len(diff) != 1:
        raise DataError(f"Winogender male/female sentences differ in {len(diff)} words, expected 1: {sentences}")
    i = diff[0]
    if words["neutral"][:i] != words["male"][:i]:
        raise DataError(f"Winogender neutral sentence differs before the pronoun, so no common prefix: {sentences}")
    pronouns, rests = {}, {}
    for g, w in words.items():
        m = _WORD.match(w[i])
        if not m:
            raise DataError(f"Winogender {g} pronoun slot {w[i]!r} is not a word (with punctuation): {sentences}")
        pronouns[g] = m.group(1)
        rests[g] = m.group(2) + "".join(" " + x for x in w[i + 1:])
    where = sentences["male"]
    slot = _alternatives([_WORD.match(words[g][i]).group(2) for g in GENDERS], where)
    after = [_alternatives([words[g][k] for g in GENDERS], where) for k in range(i + 1, len(words["male"]))]
    prefix = " ".join(words["male"][:i])
    blank = " ".join(words["male"][:i] + ["_" + slot] + after)
    return blank, prefix, pronouns, rests


def load_winogender(sentences_tsv: str | Path, stats_tsv: str | Path) -> pd.DataFrame:
    """One row per Winogender item (occupation × participant × answer) with its pronoun slot blanked (see
    :func:`_blank_out`): ``sentence_blank``, ``sentence_prefix`` (the text before the blank), ``pronoun_{g}`` and
    ``rest_{g}`` (variant g's own words after its pronoun) for g in GENDERS. ``answer`` is Winogender's: 0 when the
    pronoun refers to the occupation, 1 when it refers to the other participant (templates.tsv's header)."""
    sents = pd.read_csv(sentences_tsv, sep="\t")
    stats = pd.read_csv(stats_tsv, sep="\t")
    parts = sents["sentid"].str.replace(".txt", "", regex=False).str.split(".", expand=True)
    sents = sents.assign(occupation=parts[0], participant=parts[1], answer=parts[2].astype(int), gender=parts[3])
    rows = []
    for (occ, part, ans), grp in sents.groupby(["occupation", "participant", "answer"], sort=True):
        by_gender = dict(zip(grp["gender"], grp["sentence"]))
        if set(by_gender) != {"male", "female", "neutral"}:
            raise DataError(f"Winogender item {occ}.{part}.{ans} lacks a gender variant: {sorted(by_gender)}")
        blank, prefix, pronouns, rests = _blank_out(by_gender)
        rows.append({
            "example_id": f"{occ}.{part}.{ans}",
            "occupation": occ,
            "participant": part,
            "answer": int(ans),
            "sentence_blank": blank,
            "sentence_prefix": prefix,
            "pronoun_female": pronouns["female"],
            "pronoun_male": pronouns["male"],
            "pronoun_neutral": pronouns["neutral"],
            **{f"rest_{g}": rests[g] for g in GENDERS},
        })
    items = pd.DataFrame(rows)
    missing = set(items["occupation"]) - set(stats["occupation"])
    if missing:
        raise DataError(f"occupations without BLS statistics: {sorted(missing)}")
    return items.merge(stats[["occupation", "bls_pct_female", "bergsma_pct_female"]], on="occupation", how="left")
