"""`selfcorrect` commands given bad arguments: one `error: ...` line naming the argument, exit status 2, nothing written.

Issue #16 items 3 (score-bbq) and 7 (render, estimate).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from selfcorrect.cli import DATA_CANDIDATES, main

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "config" / "config.schema.yaml").read_text())


@pytest.fixture(scope="module")
def age_preds(shared_data) -> list[dict]:
    """The first 20 UnifiedQA predictions of BBQ's Age file, as released."""
    lines = (shared_data / "bbq" / "results" / "UnifiedQA" / "preds_Age.jsonl").read_text().splitlines()[:20]
    return [json.loads(line) for line in lines]


def _write(path: Path, recs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _score(preds, out, *extra) -> int:
    return main(["score-bbq", "--predictions", *map(str, preds), "--prediction-field",
                 "unifiedqa-t5-11b_pred_race", "--out", str(out), *extra])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in err
    return err


# ---------------------------------------------------------------- score-bbq (#16 item 3)


def test_score_bbq_refuses_the_same_file_given_twice(tmp_path, age_preds, shared_data, capsys):
    src = _write(tmp_path / "preds.jsonl", age_preds)
    out = tmp_path / "scores.csv"
    assert _score([src, src], out, "--data", str(shared_data)) == 2
    err = _one_error_line(capsys)
    assert "--predictions" in err and str(src) in err and "more than once" in err
    assert not out.exists()
    # the same file once is scored: 20 examples
    assert _score([src], out, "--data", str(shared_data)) == 0
    assert pd.read_csv(out)["n_scored"].sum() + pd.read_csv(out)["n_dropped"].sum() == 20


def test_score_bbq_refuses_an_example_predicted_twice_naming_it(tmp_path, age_preds, shared_data, capsys):
    src = _write(tmp_path / "preds.jsonl", age_preds + [age_preds[3]])
    out = tmp_path / "scores.csv"
    assert _score([src], out, "--data", str(shared_data)) == 2
    err = _one_error_line(capsys)
    eid = age_preds[3]["example_id"]
    assert "1 predictions repeat" in err and f"Age example_id {eid}: {src}:21 repeats {src}:4" in err
    assert not out.exists()


def test_score_bbq_refuses_a_copy_of_a_file_under_another_name(tmp_path, age_preds, capsys):
    a = _write(tmp_path / "a.jsonl", age_preds)
    b = _write(tmp_path / "b.jsonl", age_preds)
    assert _score([a, b], tmp_path / "scores.csv") == 2
    err = _one_error_line(capsys)
    assert "20 predictions repeat" in err and f"{b}:1 repeats {a}:1" in err and "and 15 more" in err


def test_score_bbq_names_an_empty_predictions_file(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert _score([empty], tmp_path / "scores.csv") == 2
    err = _one_error_line(capsys)
    assert "--predictions" in err and str(empty) in err and "no predictions" in err


def test_score_bbq_names_a_directory_given_as_predictions(tmp_path, capsys):
    assert _score([tmp_path], tmp_path / "scores.csv") == 2
    err = _one_error_line(capsys)
    assert err.startswith(f"error: --predictions: {tmp_path} is a directory")


def test_score_bbq_names_a_directory_given_as_out(tmp_path, age_preds, capsys):
    src = _write(tmp_path / "preds.jsonl", age_preds)
    assert _score([src], tmp_path) == 2
    err = _one_error_line(capsys)
    assert err.startswith(f"error: --out {tmp_path} is a directory")


def test_score_bbq_names_a_bad_data_path_instead_of_using_the_defaults(tmp_path, age_preds, capsys):
    src = _write(tmp_path / "preds.jsonl", age_preds)
    out = tmp_path / "scores.csv"
    bad = tmp_path / "no" / "such" / "dir"
    assert _score([src], out, "--data", str(bad)) == 2
    err = _one_error_line(capsys)
    assert err.startswith(f"error: --data {bad}:")
    assert not any(str(default) in err for default in DATA_CANDIDATES)  # the path given, not the defaults
    assert not out.exists()


def test_score_bbq_names_a_missing_predictions_file(tmp_path, capsys):
    assert _score([tmp_path / "nope.jsonl"], tmp_path / "scores.csv") == 2
    assert "--predictions" in _one_error_line(capsys)


# ---------------------------------------------------------------- render (#16 item 7)


def _render(*extra) -> int:
    return main(["render", "--benchmark", "bbq", "--condition", "instruction", "--category", "Religion", *extra])


def test_render_names_a_non_numeric_bbq_example_id(tiny_model, shared_data, capsys):
    assert _render("--example-id", "abc", "--model", str(tiny_model), "--data", str(shared_data)) == 2
    err = _one_error_line(capsys)
    assert err.startswith("error: --example-id 'abc':") and "whole number" in err


@pytest.mark.parametrize("rnd", [SCHEMA["properties"]["rounds"]["maximum"] + 1, 99, 0])
def test_render_refuses_rounds_outside_the_schema(rnd, tiny_model, shared_data, capsys):
    top = SCHEMA["properties"]["rounds"]["maximum"]
    assert _render("--example-id", "0", "--round", str(rnd), "--model", str(tiny_model), "--data", str(shared_data)) == 2
    err = _one_error_line(capsys)
    assert err.startswith(f"error: --round {rnd}: rounds run from 1 to {top}") and "rounds.maximum" in err


def test_render_accepts_the_schemas_last_round(tiny_model, shared_data, capsys):
    top = SCHEMA["properties"]["rounds"]["maximum"]
    assert _render("--example-id", "0", "--round", str(top), "--model", str(tiny_model), "--data", str(shared_data)) == 0
    assert capsys.readouterr().out.count("Review your previous answer.") == top - 1


# ---------------------------------------------------------------- estimate (#16 item 7)


def _config_with(tmp_path, **changes) -> Path:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text()) | changes
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_estimate_refuses_unknown_config_keys_as_the_workflow_does(tmp_path, capsys):
    path = _config_with(tmp_path, sample_per_cel=3)
    assert main(["estimate", "--configfile", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --configfile {path}: invalid configuration")
    assert "unknown config key(s) ['sample_per_cel'] at the top level" in err


def test_estimate_gives_the_schemas_message_for_a_bad_value(tmp_path, capsys):
    from selfcorrect.config_checks import ConfigError, check_schema

    path = _config_with(tmp_path, rounds=SCHEMA["properties"]["rounds"]["maximum"] + 1)
    assert main(["estimate", "--configfile", str(path)]) == 2
    with pytest.raises(ConfigError) as workflow:
        check_schema(yaml.safe_load(path.read_text()), ROOT / "config" / "config.schema.yaml")
    assert str(workflow.value) in capsys.readouterr().err


def test_estimate_accepts_the_shipped_configs(capsys):
    for cfg in (ROOT / "config.yaml", ROOT / "config" / "paper.yaml"):
        assert main(["estimate", "--configfile", str(cfg)]) == 0
    assert "TOTAL" in capsys.readouterr().out


def test_estimate_names_a_missing_configfile(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["estimate", "--configfile", str(missing)]) == 2
    assert _one_error_line(capsys).startswith(f"error: --configfile {missing}: no such file")
