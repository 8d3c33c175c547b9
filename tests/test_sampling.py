"""BBQ contexts in the released data, and samples drawn as whole contexts (issue 13 item 7)."""

from __future__ import annotations

import pandas as pd
import pytest

from selfcorrect import data, sampling

CELL = ["category", "context_condition", "question_polarity"]


@pytest.fixture(scope="module")
def released(bbq_paths):
    return data.load_bbq(bbq_paths)


def test_every_context_of_the_six_files_is_one_story_asked_four_ways(released):
    df = released.assign(context_id=sampling.bbq_context_ids(released))
    groups = df.groupby("context_id")
    assert len(df) == 11956 and groups.ngroups == 11956 // 4
    # exactly the 2 × 2 conditions, once each
    cells = groups.apply(lambda g: frozenset(zip(g["context_condition"], g["question_polarity"])), include_groups=False)
    assert (groups.size() == 4).all()
    assert (cells == {("ambig", "neg"), ("ambig", "nonneg"), ("disambig", "neg"), ("disambig", "nonneg")}).all()
    # the same three answers, the same template question pair, one story: the disambiguated context extends the
    # ambiguous one, and the two questions of a context condition read the same context
    answers = df[["ans0", "ans1", "ans2"]].apply(lambda r: tuple(sorted(r)), axis=1)
    assert (answers.groupby(df["context_id"]).nunique() == 1).all()
    assert (groups["question_index"].nunique() == 1).all()
    assert (df.groupby(["context_id", "context_condition"])["context"].nunique() == 1).all()
    ambig = df[df["context_condition"] == "ambig"].groupby("context_id")["context"].first()
    disambig = df[df["context_condition"] == "disambig"].groupby("context_id")["context"].first()
    assert all(d.startswith(a) for a, d in zip(ambig, disambig.loc[ambig.index]))
    # and a context is four consecutive example_ids of one category
    assert (groups["example_id"].agg(lambda s: s.max() - s.min()) == 3).all()
    assert (groups["category"].nunique() == 1).all()


def test_renumbered_examples_do_not_pass_for_contexts(released):
    shifted = released.assign(example_id=released["example_id"] + 1)
    with pytest.raises(ValueError, match="example_id // 4.*Keep the released example_ids"):
        sampling.bbq_context_ids(shifted)


def test_sample_draws_whole_contexts_with_per_cell_examples_in_every_cell(released):
    per_cell = 3
    s = sampling.sample_bbq(released, per_cell, seed=1234)
    assert (s.groupby(CELL).size() == per_cell).all()
    assert s.groupby(CELL).ngroups == 6 * 2 * 2
    # every drawn context (four consecutive example_ids, as the test above checks) comes with its four questions,
    # and a category contributes per_cell contexts, whatever the table's row order
    for table in (s, sampling.sample_bbq(released.sample(frac=1.0, random_state=1), per_cell, seed=1234)):
        contexts = table.groupby(["category", table["example_id"] // 4])
        assert (contexts.size() == 4).all()
        assert (contexts.size().groupby(level="category").size() == per_cell).all()
    assert (s["context_id"] == sampling.bbq_context_ids(s)).all()


def test_sample_is_the_same_across_calls_and_row_orders_and_moves_with_the_seed(released):
    first = sampling.sample_bbq(released, 2, seed=7)
    pd.testing.assert_frame_equal(first, sampling.sample_bbq(released, 2, seed=7))
    shuffled = released.sample(frac=1.0, random_state=0)
    again = sampling.sample_bbq(shuffled, 2, seed=7)
    key = ["category", "example_id"]
    assert sorted(map(tuple, again[key].values.tolist())) == sorted(map(tuple, first[key].values.tolist()))
    other = sampling.sample_bbq(released, 2, seed=8)
    assert set(other["context_id"]) != set(first["context_id"])


def test_sample_keeps_all_contexts_of_a_small_category_and_everything_without_a_size(released):
    orientation = released[released["category"] == "Sexual_orientation"]
    s = sampling.sample_bbq(orientation, 10_000, seed=0)
    assert len(s) == len(orientation) == 864
    assert len(sampling.sample_bbq(released, 0, seed=0)) == len(released)
