"""Fetch the pinned benchmark files (network or local mirror) and normalise them into typed tables."""

from __future__ import annotations

import json
import re
import shutil
import urllib.parse
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
# The intersectional categories' stereotyped race and second variable are only in their templates
# (../shared/data/bbq/SCORING.md §3); repository paths, pinned in config/sources.yaml like the data files.
BBQ_TEMPLATES = {
    "Race_x_gender": "templates/new_templates - Race_x_gender.csv",
    "Race_x_SES": "templates/new_templates - Race_x_SES.csv",
}


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


# The columns of an intersectional template the R metadata script keeps, and its rename of one Category value
_TEMPLATE_COLUMNS = ("Category", "Q_id", "Known_stereotyped_race", "Known_stereotyped_var2",
                     "Relevant_social_values", "Proper_nouns_only")
_TEMPLATE_CATEGORY = {"Gender_x_race": "Race_x_gender"}


def read_bbq_templates(paths: list[str | Path]) -> pd.DataFrame:
    """The intersectional templates' metadata, one row per (category, question_index).

    Columns: category, question_index, stereotyped_race (the template's JSON list, unparsed, as the R script
    reads it), stereotyped_var2 (M/F or lowSES/highSES), proper_nouns_only (True, or None where blank).
    The R script joins every distinct metadata row of a Q_id, so a Q_id with two different rows would score its
    examples twice (SCORING.md §3.1); the pinned templates have none, and such a file is refused.
    """
    frames = []
    for path in paths:
        t = pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = [c for c in _TEMPLATE_COLUMNS if c not in t.columns]
        if missing:
            raise DataError(f"{path}: no column {missing}; expected a BBQ intersectional template "
                            f"({', '.join(BBQ_TEMPLATES.values())}) with columns {list(_TEMPLATE_COLUMNS)}")
        frames.append(t.loc[t["Q_id"].str.strip() != "", list(_TEMPLATE_COLUMNS)].assign(file=str(path)))
    t = pd.concat(frames, ignore_index=True)
    bad_q = t.loc[~t["Q_id"].str.strip().str.fullmatch(r"\d+"), ["file", "Q_id"]]
    if len(bad_q):
        raise DataError(f"{bad_q.iloc[0]['file']}: Q_id {bad_q.iloc[0]['Q_id']!r} is not a question number")
    bad_p = t.loc[~t["Proper_nouns_only"].isin(["TRUE", ""]), ["file", "Q_id", "Proper_nouns_only"]]
    if len(bad_p):
        r = bad_p.iloc[0]
        raise DataError(f"{r['file']}: Q_id {r['Q_id']}: Proper_nouns_only is {r['Proper_nouns_only']!r}, "
                        "expected TRUE or blank (it decides the \"(names)\" split)")
    t = t.drop(columns="file").drop_duplicates()
    out = pd.DataFrame({
        "category": t["Category"].replace(_TEMPLATE_CATEGORY),
        "question_index": t["Q_id"].str.strip().astype(int),
        "stereotyped_race": t["Known_stereotyped_race"],
        "stereotyped_var2": t["Known_stereotyped_var2"],
        "proper_nouns_only": [True if v == "TRUE" else None for v in t["Proper_nouns_only"]],
    })
    twice = out[out.duplicated(["category", "question_index"], keep=False)]
    if len(twice):
        r = twice.iloc[0]
        raise DataError(f"BBQ templates: {r['category']} Q_id {r['question_index']} has {len(twice)} different "
                        "metadata rows; the R scripts would score its examples once per row. Use the pinned templates.")
    return out.reset_index(drop=True)


def bbq_template_paths(templates: str | Path | list[str | Path] | None, jsonl_paths: list[str | Path],
                       categories: list[str]) -> list[Path]:
    """The template files of ``categories``: given as files, or a folder laid out like the BBQ repository's
    templates/; by default the templates/ folder beside the jsonl files' data/ folder (the repository layout,
    which the data mirror and resources/data/bbq/ keep)."""
    if isinstance(templates, (list, tuple)):
        paths = [Path(p) for p in templates]
    else:
        folder = Path(templates) if templates is not None else Path(jsonl_paths[0]).parent.parent / "templates"
        paths = [folder / Path(BBQ_TEMPLATES[c]).name for c in categories]
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        raise DataError(
            f"BBQ categories {categories} need their templates (Known_stereotyped_race/var2 decide target_loc, "
            f"SCORING.md §3), but {', '.join(absent)} is missing. Fetch the pinned files {sorted(BBQ_TEMPLATES.values())} "
            "(they are in config/sources.yaml) or pass their folder to load_bbq(..., templates=DIR)."
        )
    return paths


def join_bbq_templates(df: pd.DataFrame, templates: pd.DataFrame) -> pd.DataFrame:
    """Left join on (category, question_index), as the R metadata script joins; rows of other categories and
    examples whose question has no template row get None (their target_loc is then NaN)."""
    joined = df.merge(templates, on=["category", "question_index"], how="left", validate="many_to_one")
    cols = ["stereotyped_race", "stereotyped_var2", "proper_nouns_only"]
    return joined.assign(**{c: joined[c].astype(object).where(joined[c].notna(), None) for c in cols})


def check_scorable(df: pd.DataFrame) -> None:
    """Stop where a category loses more examples to a missing ``target_loc`` than the BBQ authors do."""
    from .bbq import AUTHORS_UNSCORABLE, missing_targets

    missing = missing_targets(df)
    bad = missing[missing > AUTHORS_UNSCORABLE]
    if len(bad):
        total = df.groupby("category").size()
        what = "; ".join(f"{c}: {n} of {total[c]} examples" for c, n in bad.items())
        raise DataError(
            f"BBQ target_loc is missing for more examples than the {AUTHORS_UNSCORABLE} the BBQ authors leave "
            f"unscorable in the whole benchmark (SCORING.md §2), and scoring would drop them silently: {what}. "
            "Check that the category's jsonl and (Race_x_gender, Race_x_SES) its template are the pinned files."
        )


def load_bbq(paths: list[str | Path], templates: str | Path | list[str | Path] | None = None) -> pd.DataFrame:
    """Normalised BBQ table with the official ``target_loc`` and ``label_type`` attached.

    ``templates``: the intersectional template files or their folder (see ``bbq_template_paths``); read only
    when Race_x_gender or Race_x_SES is among the data. A category with more than 16 examples without
    ``target_loc`` raises DataError.
    """
    from .bbq import add_target_loc

    df = pd.concat([flatten_bbq(read_jsonl(p)) for p in paths], ignore_index=True)
    intersectional = [c for c in BBQ_TEMPLATES if c in set(df["category"])]
    if intersectional:
        meta = read_bbq_templates(bbq_template_paths(templates, paths, intersectional))
    else:
        meta = pd.DataFrame(columns=["category", "question_index", "stereotyped_race", "stereotyped_var2",
                                     "proper_nouns_only"]).astype({"question_index": int})
    df = add_target_loc(join_bbq_templates(df, meta))
    check_scorable(df)
    return df


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
