"""The ``selfcorrect`` command line: score predictions, list and render prompts, estimate compute."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from .paths import DEFAULT_CONFIG, PROJECT_ROOT, SCHEMA_FILE
from .tasks import TASKS

DATA_CANDIDATES = (PROJECT_ROOT / "resources" / "data", PROJECT_ROOT.parent / "shared" / "data")


class UsageError(ValueError):
    """A command-line argument is wrong: ``main`` prints the message (it names the argument) and exits with 2."""


def _load_config(path: str | None) -> dict:
    where = path or DEFAULT_CONFIG
    if not Path(where).is_file():
        raise UsageError(f"--configfile {where}: no such file (a study config such as config.yaml or config/paper.yaml)")
    try:
        with open(where) as fh:
            cfg = yaml.safe_load(fh)
    except yaml.YAMLError as err:
        raise UsageError(f"--configfile {where}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(cfg, dict):
        raise UsageError(f"--configfile {where}: a study config is a mapping of keys (see config.yaml), not {type(cfg).__name__}")
    return cfg


def _found_data_dir(benchmark: str) -> Path | None:
    """The workflow's downloads, or the shared mirror beside the project, if one holds ``benchmark``."""
    return next((cand for cand in DATA_CANDIDATES if (cand / benchmark).is_dir()), None)


def _data_dir(explicit: str | None, benchmark: str) -> Path:
    """A directory laid out like ../shared/data holding ``benchmark``: the option, the workflow's
    downloads, or the shared mirror beside the project."""
    if explicit:
        # the directory given is the one used: never a silent fall-back to the defaults
        if not (Path(explicit) / benchmark).is_dir():
            raise UsageError(f"--data {explicit}: no {benchmark}/ directory there; pass a directory laid out like "
                             f"../shared/data (holding {benchmark}/data/)")
        return Path(explicit)
    found = _found_data_dir(benchmark)
    if found is None:
        raise UsageError(f"no {benchmark} data found in {', '.join(map(str, DATA_CANDIDATES))}; pass --data DIR "
                         "(a directory laid out like ../shared/data) or run the workflow's download rules first")
    return found


# ---------------------------------------------------------------- score-bbq

def cmd_score_bbq(args) -> int:
    from .predictions import PredictionsError, score_prediction_files

    if Path(args.out).is_dir():
        raise UsageError(f"--out {args.out} is a directory; pass the CSV file to write, e.g. {Path(args.out) / 'bbq_scores.csv'}")
    metadata_dir = _metadata_dir(args.data)
    try:
        table = score_prediction_files(
            args.predictions, args.prediction_field, metadata_dir=metadata_dir,
            ambiguous_only=args.ambiguous_only, split_names=not args.no_names_split,
        )
    except PredictionsError as err:
        raise UsageError(f"{err.argument}: {err}") from None
    from .io import write_csv

    write_csv(table, args.out)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nwrote {args.out}: {len(table)} rows; dropped {int(table['n_dropped'].sum())} examples "
          f"(unmatched answers or no target)", file=sys.stderr)
    return 0


def _metadata_dir(explicit: str | None) -> Path | None:
    """BBQ's released data to join (--data, else a default location); None: the predictions' own metadata."""
    if explicit:
        meta = _data_dir(explicit, "bbq") / "bbq" / "data"
        if not meta.is_dir():
            raise UsageError(f"--data {explicit}: no bbq/data/ directory there (the released BBQ jsonl files)")
        return meta
    found = _found_data_dir("bbq")
    return found / "bbq" / "data" if found else None


# ---------------------------------------------------------------- conditions / render

def cmd_conditions(args) -> int:
    from .conditions import Registry

    rows = Registry.load(args.registry).describe()
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['name']:<16} {','.join(r['benchmarks']):<16} {'(reconstruction) ' if r['reconstruction'] else ''}{r['description']}")
    return 0


def _example(args) -> dict:
    from .tasks import get_task

    return get_task(args.benchmark).lookup(_data_dir(args.data, args.benchmark), args.example_id, args.category)


def max_rounds(schema_path: Path = SCHEMA_FILE) -> int:
    """The most rounds a study may run: ``rounds.maximum`` of the config schema."""
    with open(schema_path) as fh:
        return int(yaml.safe_load(fh)["properties"]["rounds"]["maximum"])


def _check_render_args(args) -> None:
    """Refuse a bad --round before any tokenizer or data is loaded (the example's id is checked by its task)."""
    top = max_rounds()
    if not 1 <= args.round <= top:
        raise UsageError(f"--round {args.round}: rounds run from 1 to {top} "
                         f"(rounds.maximum of {SCHEMA_FILE.relative_to(PROJECT_ROOT)})")


def cmd_render(args) -> int:
    from .conditions import Registry
    from .formats import render
    from .models import ModelSpec, load_tokenizer, prompt_format

    _check_render_args(args)
    example = _example(args)  # a bad --example-id/--category is named before a tokenizer loads
    registry = Registry.load(args.registry)
    cfg = _load_config(args.configfile)
    name = args.model or next(iter(cfg["models"]))
    spec = ModelSpec.from_config(name, cfg["models"][name]) if name in cfg["models"] else ModelSpec(name=name, path=name)
    local = PROJECT_ROOT / "resources" / "models" / spec.name
    tok = load_tokenizer(spec, local if (local / "tokenizer_config.json").exists() else None)
    fmt = args.format or prompt_format(spec, tok)
    cot = bool(registry.condition(args.condition).get("cot"))
    history = registry.placeholder_history(args.condition, args.round - 1)
    conv = registry.conversation(args.condition, args.benchmark, example, history, stage="answer",
                                 reasoning=" [reasoning]" if cot else None)
    print(render(conv, fmt, registry.data["dialogue"], tok, spec.system_prompt))
    return 0


# ---------------------------------------------------------------- estimate

def cmd_estimate(args) -> int:
    from .config_checks import ConfigError, with_defaults
    from .estimate import estimate, format_estimate

    cfg = _load_config(args.configfile)
    try:
        cfg = with_defaults(cfg)  # the workflow's own first check (unknown keys, types, ranges), then its defaults
    except ConfigError as err:
        raise UsageError(f"--configfile {args.configfile or DEFAULT_CONFIG}: {err}") from None
    print(format_estimate(estimate(cfg), cfg))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="selfcorrect", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score-bbq", help="official BBQ accuracy and bias score of a predictions jsonl")
    s.add_argument("--predictions", nargs="+", required=True, help="jsonl files of BBQ examples with a prediction field")
    s.add_argument("--prediction-field", required=True, help="field holding the answer (free text or a letter a/b/c)")
    s.add_argument("--out", required=True, help="CSV to write, one row per (category, context_condition)")
    s.add_argument("--data", help="directory laid out like ../shared/data; its BBQ metadata is joined as the R scripts do")
    s.add_argument("--ambiguous-only", action="store_true",
                   help="score ambiguous contexts only (what the BBQ scripts do for question-only baselines)")
    s.add_argument("--no-names-split", action="store_true", help='do not split "X (names)" from "X"')
    s.set_defaults(func=cmd_score_bbq)

    s = sub.add_parser("conditions", help="list the prompt conditions of the registry")
    s.add_argument("--format", choices=["json", "table"], default="table")
    s.add_argument("--registry", default=str(PROJECT_ROOT / "config" / "conditions.yaml"))
    s.set_defaults(func=cmd_conditions)

    s = sub.add_parser("render", help="print the exact text a model reads for one example, condition and round")
    s.add_argument("--benchmark", choices=sorted(TASKS), required=True)
    s.add_argument("--condition", required=True)
    s.add_argument("--round", type=int, default=1, help="round to render: 1 (the condition) up to rounds.maximum of config/config.schema.yaml")
    s.add_argument("--example-id", required=True, help="BBQ example_id (with --category) or Winogender id, e.g. technician.customer.1")
    s.add_argument("--category", help="BBQ category, e.g. Age")
    s.add_argument("--model", help="a key of the config's models: (default: the first, the offline model) or a hub id/path")
    s.add_argument("--format", choices=["chat", "base"], help="override the model's prompt format")
    s.add_argument("--configfile", help="study config (default: config.yaml)")
    s.add_argument("--data", help="directory laid out like ../shared/data")
    s.add_argument("--registry", default=str(PROJECT_ROOT / "config" / "conditions.yaml"))
    s.set_defaults(func=cmd_render)

    s = sub.add_parser("estimate", help="prompts, tokens and device hours of a study config, prefill and decode "
                                        "apart, from measured rates (which it prints)")
    s.add_argument("--configfile", help="study config (default: config.yaml)")
    s.set_defaults(func=cmd_estimate)

    s = sub.add_parser("pin-revisions", help="look up each hub model's commit and (with --write) pin it in the config")
    s.add_argument("--configfile", default="config/paper.yaml")
    s.add_argument("--write", action="store_true", help="write the resolved commits into the config's revision: fields")
    s.set_defaults(func=cmd_pin_revisions)
    return p


# ---------------------------------------------------------------- pin-revisions

def cmd_pin_revisions(args) -> int:
    from .revisions import hub_models, resolve, write_pins

    path = Path(args.configfile)
    cfg = yaml.safe_load(path.read_text())
    resolved = resolve(hub_models(cfg))
    pins = {name: sha for name, sha in resolved.items() if isinstance(sha, str)}
    for name, got in resolved.items():
        current = cfg["models"][name].get("revision")
        state = f"error: {str(got).splitlines()[0][:120]}" if not isinstance(got, str) else (
            "unchanged" if current == got else f"{current or 'unpinned'} -> {got}")
        print(f"{name:<28} {cfg['models'][name]['path']:<40} {state}")
    failed = sorted(set(resolved) - set(pins))
    if args.write and pins:
        path.write_text(write_pins(path.read_text(), pins))
        print(f"wrote {len(pins)} revisions into {path}")
    if failed:
        print(f"error: could not resolve {', '.join(failed)} (hub unreachable, or gated without a token: "
              "`huggingface-cli login` or HF_TOKEN); nothing was written for them", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, OSError) as err:  # UsageError, ConfigError, DataError, unreadable files
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
