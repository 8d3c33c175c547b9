"""Tables (CSV + LaTeX), figure files and the assembled ``report/paper_figures.pdf``."""

from __future__ import annotations

import json
import platform
import textwrap
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402

from . import formats, parsing  # noqa: E402
from .conditions import Registry  # noqa: E402
from .determinism import determinism_note  # noqa: E402
from .io import atomic_path, sha256_file, write_csv, write_text  # noqa: E402
from .tasks import get_task  # noqa: E402

PACKAGES = ["selfcorrect", "torch", "transformers", "snakemake", "pandas", "numpy", "scipy", "seaborn", "matplotlib", "pyarrow", "gguf"]
RECONSTRUCTED = (
    "Reconstructions (not the paper's own material): the wordings of the specificity, negation, affirmative and "
    "unethical instructions; the multi-round protocol details; the model revisions; decoding settings "
    "(greedy). Numbers here are this workflow's, never the paper's."
)


def models_table(models: dict, backend: str, metas: list[dict]) -> pd.DataFrame:
    """One row per configured model; format and backend as the generation jobs recorded them."""
    fmt = {m["model"]: m.get("prompt_format") for m in metas}
    used = {m["model"]: m.get("backend") for m in metas}
    rows = []
    for name, m in models.items():
        rows.append({
            "model": name, "path": m["path"], "family": m.get("family", ""), "params_b": m.get("params_b"),
            "alignment": m.get("alignment", ""), "revision": m.get("revision") or "", "format": fmt.get(name, m.get("format", "auto")),
            "backend": used.get(name, backend),
        })
    return pd.DataFrame(rows)


def results_table(bbq: pd.DataFrame, rho: pd.DataFrame | None) -> pd.DataFrame:
    cols = ["model", "condition", "round", "answer_mode", "category", "context_condition", "n_scored", "n_dropped",
            "accuracy", "accuracy_ci_low", "accuracy_ci_high", "bias_score", "ci_low", "ci_high", "n_refusal", "n_unparsed"]
    out = bbq[[c for c in cols if c in bbq]].assign(benchmark="bbq", metric="bias_score")
    if rho is not None and len(rho):
        w = rho.rename(columns={"rho": "value", "n_occupations": "n_scored"}).assign(
            benchmark="winogender", metric="rho", category="occupations", context_condition="")
        out = pd.concat([out, w[["model", "condition", "round", "answer_mode", "benchmark", "metric", "category",
                                 "context_condition", "n_scored", "value", "ci_low", "ci_high"]]], ignore_index=True)
    return out


def parse_rules() -> list[str]:
    """The parser's rules as its module docstring states them, in its order (the methods page quotes them)."""
    return textwrap.dedent(parsing.__doc__ or "").strip().splitlines()


POSITION_BIAS = (
    "Position bias (figure 9, Table 5): per model, condition, round and answer mode, the share of answers per "
    "option letter, and over the negative and non-negative question of each BBQ context (same context, same options "
    "in the same order) the share answered with the same letter. A model that answers one letter throughout names "
    "the same group for both questions, whose biased and anti-biased answers cancel: its bias score is 0 whatever "
    "its social bias (exactly 0 where both questions of every context are in the sample)."
)


def write_table(df: pd.DataFrame, csv_path: str, tex_path: str, float_format: str = "%.3f") -> None:
    write_csv(df, csv_path)
    write_text(df.to_latex(index=False, float_format=float_format.__mod__, na_rep="--"), tex_path)


def save_figure(fig, pdf_path: str, png_path: str | None = None) -> None:
    with atomic_path(pdf_path) as tmp:
        fig.savefig(tmp, format="pdf")
    if png_path:
        with atomic_path(png_path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _versions() -> dict:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def _hardware(metas: list[dict]) -> str:
    devices = sorted({f"{m.get('device')} ({m.get('device_name')})" for m in metas})
    return f"{platform.platform()}; generation on: {', '.join(devices) or 'n/a'}"


def methods_text(config: dict, metas: list[dict], data_files: list[str], sources: dict, registry: Registry) -> str:
    texts = registry.texts(config["conditions"])
    prompt_hash = registry.texts_hash(config["conditions"])
    wall = sum(float(m.get("wall_seconds", 0)) for m in metas)
    lines = ["Methods", "", "Data"]
    for bench in config["benchmarks"]:
        s = sources[bench]
        lines.append(f"  {bench}: {s['repository']} @ {s['commit']} ({s['license']})")
    for f in data_files:
        lines.append(f"    {Path(f).name}  sha256 {sha256_file(f)}")
    lines += ["", "Study", f"  BBQ categories: {', '.join(config['categories'])}",
              f"  sample_per_cell={config.get('sample_per_cell')}, winogender_occupations={config.get('winogender_occupations')}, "
              f"seed={config.get('seed')}, rounds={config['rounds']}, answer modes={', '.join(config['answer_modes'])}",
              f"  generation: {json.dumps(config.get('generation', {}), sort_keys=True)}",
              "", "Models"]
    system = {m["model"]: m.get("system_prompt_used") for m in metas if "system_prompt_used" in m}
    loaded = {}
    for meta in metas:
        loaded.setdefault(meta["model"], set()).add(str(meta.get("resolved_revision") or ""))
    for name, m in config["models"].items():
        commits = sorted(c for c in loaded.get(name, ()) if c)
        lines.append(f"  {name}: {m['path']} revision={m.get('revision') or 'unpinned'}"
                     + (f", loaded: {', '.join(commits)}" if commits else "")
                     + (" (WARNING: jobs loaded different commits)" if len(commits) > 1 else "")
                     + (f" gguf={m['gguf_file']}" if m.get("gguf_file") else ""))
        if name in system:
            lines.append(f"    system text the model reads: {system[name]!r}" if system[name] else
                         "    system text the model reads: none")
    lines += ["", "Prompt format"] + [f"  {note}" for note in formats.methods_notes()]
    lines += ["", f"Prompt texts (config/conditions.yaml, sha256/16 of the texts used: {prompt_hash})"]
    for name in config["conditions"]:
        c = registry.condition(name)
        for bench, text in (c.get("instruction") or {}).items():
            lines.append(f"  {name} [{bench}]{' (CoT)' if c.get('cot') else ''}: {text or '(no instruction)'}")
    lines.append(f"  feedback (rounds >= 2): {' '.join(texts['feedback'].split())}")
    lines += ["", "What is scored, what is dropped"]
    for bench in config["benchmarks"]:
        lines += [f"  {note}" for note in get_task(bench).methods_notes()]
    lines += [f"  Parse statuses (generate mode): selfcorrect/parsing.py applies its rules in the order of its docstring "
              f"(quoted at the end of these pages), giving each answer one of: {', '.join(parsing.STATUSES)}; an answer "
              "without a slot is dropped, never guessed. Table 4 counts each status per model, condition and round, and "
              "every generate-mode figure prints the share dropped by status.",
              f"  {POSITION_BIAS}",
              "  Uncertainty: 95% CIs are percentile bootstraps (config `bootstrap:`) that resample whole BBQ contexts "
              "(the four questions of a context together) within each cell, and occupations for Winogender rho; "
              "resamples whose score is undefined (e.g. no non-unknown answer) are left out and counted "
              "(n_resamples_undefined); a condition difference uses only examples scored under both conditions.",
              "  Sample: BBQ draws sample_per_cell whole contexts per category (seeded), each giving one question to "
              "every context x polarity cell."]
    lines += ["", "Generation limits"] + limit_lines(metas) + shared_computation_lines(metas)
    lines += ["", "Reproducibility", f"  {determinism_note(metas)}"]
    lines += ["", "Software: " + ", ".join(f"{k} {v}" for k, v in _versions().items()),
              f"Hardware: {_hardware(metas)}",
              f"Generation wall time: {wall / 60:.1f} min over {len(metas)} jobs; backends: "
              f"{', '.join(sorted({m.get('backend', '?') for m in metas}))}",
              f"Built: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}", "", RECONSTRUCTED,
              "", "Parse rules (the docstring of selfcorrect/parsing.py)"]
    lines += [f"  {line}" for line in parse_rules()]
    return "\n".join(lines)


def limit_lines(metas: list[dict]) -> list[str]:
    """How often the token limit, not the model, ended a text: per model, benchmark and condition with chain of
    thought, the share of reasoning texts cut at cot_max_new_tokens (and of answers cut at max_new_tokens wherever
    any was). A job's meta holds these shares per condition."""
    shares = sorted(((m["model"], m["benchmark"], c, m) for m in metas for c in m.get("conditions", [])),
                    key=lambda row: row[:3])
    lines = []
    for model, benchmark, condition, m in shares:
        cot = (m.get("share_reasoning_reached_limit") or {}).get(condition)
        ans = (m.get("share_answer_reached_limit") or {}).get(condition)
        if cot is not None:
            lines.append(f"  {model} {benchmark} {condition}: {cot:.0%} of reasoning texts cut at "
                         f"{m.get('cot_max_new_tokens')} tokens")
        if ans:
            lines.append(f"  {model} {benchmark} {condition}: {ans:.0%} of answers cut at {m.get('max_new_tokens')} tokens")
    return lines or ["  no text reached its token limit"]


def shared_computation_lines(metas: list[dict]) -> list[str]:
    """Conditions that send the same texts as another (the paper's specificity level 2 is its instruction): their
    answers were generated once and counted under both names, as generating them twice gives the same answers."""
    same = sorted({(m["benchmark"], alias, first) for m in metas for alias, first in (m.get("computed_as") or {}).items()})
    return [f"  {b}: {alias} sends the same texts as {first}; its answers are {first}'s, generated once"
            for b, alias, first in same]


def _text_pages(pdf: PdfPages, text: str, title: str, lines_per_page: int = 70) -> None:
    wrapped = []
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        wrapped += textwrap.wrap(line, 120, subsequent_indent=" " * (indent + 4)) or [""]
    for start in range(0, max(1, len(wrapped)), lines_per_page):
        fig = plt.figure(figsize=(8.27, 11.69))
        fig.text(0.05, 0.97, title, fontsize=13, weight="bold", va="top")
        fig.text(0.05, 0.94, "\n".join(wrapped[start:start + lines_per_page]), family="monospace", fontsize=6.3, va="top")
        pdf.savefig(fig)
        plt.close(fig)


def _table_pages(pdf: PdfPages, df: pd.DataFrame, title: str, rows_per_page: int = 45) -> None:
    shown = df.copy()
    for c in shown.select_dtypes("float").columns:
        shown[c] = shown[c].map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
    for start in range(0, max(1, len(shown)), rows_per_page):
        chunk = shown.iloc[start:start + rows_per_page]
        fig, ax = plt.subplots(figsize=(11.69, 8.27))
        ax.axis("off")
        ax.set_title(f"{title} ({start + 1}-{start + len(chunk)} of {len(shown)})", fontsize=11)
        tab = ax.table(cellText=chunk.astype(str).values, colLabels=list(chunk.columns), loc="upper center", cellLoc="left")
        tab.auto_set_font_size(False)
        tab.set_fontsize(5.5)
        tab.scale(1, 0.95)
        pdf.savefig(fig)
        plt.close(fig)


def build_pdf(out: str, methods: str, figure_pdfs: list[str], tables: dict[str, pd.DataFrame]) -> None:
    """Methods page, then every figure (vector pages copied from their own files), then the tables."""
    from pypdf import PdfReader, PdfWriter

    with atomic_path(out) as tmp:
        front = Path(str(tmp) + ".front.pdf")
        back = Path(str(tmp) + ".back.pdf")
        try:
            with PdfPages(front) as pdf:
                _text_pages(pdf, methods, "Smaller LLMs can do moral self-correction: reproduction report")
            with PdfPages(back) as pdf:
                for name, df in tables.items():
                    _table_pages(pdf, df, name)
            writer = PdfWriter()
            for part in [front, *figure_pdfs, back]:
                for page in PdfReader(part).pages:
                    writer.add_page(page)
            with open(tmp, "wb") as fh:
                writer.write(fh)
        finally:
            front.unlink(missing_ok=True)
            back.unlink(missing_ok=True)
