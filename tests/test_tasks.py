"""The benchmarks as Task objects: what the rest of the code may rely on, checked on the real data."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from selfcorrect import data
from selfcorrect.conditions import Registry, placeholders
from selfcorrect.tasks import TASKS, get_task

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = Registry.load()


@pytest.fixture(scope="module")
def tables(bbq_paths, shared_data):
    wd = shared_data / "winogender" / "data"
    return {"bbq": data.load_bbq(bbq_paths),
            "winogender": data.load_winogender(wd / "all_sentences.tsv", wd / "occupations-stats.tsv")}


def test_item_ids_are_unique_across_each_whole_benchmark(tables):
    for name, table in tables.items():
        ids = get_task(name).item_ids(table)
        assert len(ids) == len(table) and len(set(ids)) == len(ids), name


def test_every_declared_placeholder_is_filled_for_every_real_example(tables):
    """A placeholder the registry allows but the task does not fill would fail only at generation time."""
    for name, table in tables.items():
        declared = set(REGISTRY.data["benchmarks"][name]["placeholders"])
        for example in table.drop_duplicates(["category"] if name == "bbq" else ["occupation"]).to_dict("records"):
            assert declared <= set(get_task(name).fields(example, REGISTRY.data)), (name, example.get("example_id"))


def test_every_instruction_renders_for_every_real_category(tables):
    for name, table in tables.items():
        for example in table.drop_duplicates(["category"] if name == "bbq" else ["occupation"]).to_dict("records"):
            for condition in REGISTRY.conditions_for(name, REGISTRY.names):
                conv = REGISTRY.conversation(condition, name, example, [], stage="answer",
                                             reasoning=" r" if REGISTRY.condition(condition).get("cot") else None)
                text = " ".join(t.content for t in conv.turns)
                assert not placeholders(text.replace("{}", "")) and "{" not in text.replace("{}", ""), (condition, text)


def test_sample_carries_item_ids_and_is_the_same_on_every_call(tables):
    for name, table in tables.items():
        task = get_task(name)
        params = task.sample_params({"categories": ["Age", "Religion"], "sample_per_cell": 2,
                                     "winogender_occupations": 5, "seed": 3})
        a, b = task.sample(table, params), task.sample(table, params)
        pd.testing.assert_frame_equal(a, b)
        assert list(a["item_id"]) == task.item_ids(a) and a["item_id"].is_unique


def test_options_and_previous_answers_follow_the_answer_prefix(tables):
    bbq, wino = get_task("bbq"), get_task("winogender")
    spec = REGISTRY.data["benchmarks"]
    ex = tables["bbq"].iloc[0].to_dict()
    assert bbq.options(ex, "The answer is", spec["bbq"]) == [" (a", " (b", " (c"]
    assert bbq.previous_answer(ex, "The answer is", spec["bbq"], None, 1) == f" (b) {ex['ans1']}."
    assert bbq.previous_answer(ex, "The answer is ", spec["bbq"], " (a) x", 1) == " (a) x"
    w = tables["winogender"].iloc[0].to_dict()
    opts = wino.options(w, w["sentence_prefix"], spec["winogender"])
    assert [o.strip() for o in opts] == [w["pronoun_female"], w["pronoun_male"], w["pronoun_neutral"]]


def test_sample_size_from_config_matches_the_drawn_sample(tables):
    sources = data.load_sources()
    cfg = {"categories": ["Age", "Religion"], "sample_per_cell": 2, "winogender_occupations": 5, "seed": 3}
    for name, table in tables.items():
        task = get_task(name)
        assert task.sample_size(cfg, sources) == len(task.sample(table, task.sample_params(cfg))), name


def test_no_code_outside_the_tasks_branches_on_a_benchmark_name():
    """Adding a benchmark means adding a task module: nothing else may test which benchmark it is running."""
    out = subprocess.run(["grep", "-rnE", r"benchmark ?==|== ?\"(bbq|winogender)\"", "src", "rules", "scripts"],
                         cwd=ROOT, capture_output=True, text=True).stdout
    hits = [line for line in out.splitlines() if not line.startswith("src/selfcorrect/tasks/")]
    assert not hits, hits


def test_every_configured_benchmark_has_a_task_and_its_texts():
    for name, task in TASKS.items():
        assert name in REGISTRY.data["benchmarks"] and name in data.load_sources()
        assert task.score_tables and "outcomes" in task.score_tables
