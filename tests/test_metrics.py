"""BBQ and Winogender numbers with honest CIs (issue 13 items 5-7), on the real released examples.

The answers are made up by rules (always UNKNOWN, follow the stereotype per context, ...); the examples, their
target_loc and their contexts are the real ones from ../shared/data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from selfcorrect import bbq, data, metrics, sampling

B = 1000  # resamples, as config.yaml


@pytest.fixture(scope="module")
def released(bbq_paths):
    df = data.load_bbq(bbq_paths)
    return df.assign(item_id=[f"{c}:{i}" for c, i in zip(df["category"], df["example_id"])])


@pytest.fixture(scope="module")
def sample(released):
    return sampling.sample_bbq(released, 10, seed=1234)


def unknown_slot(ex: pd.DataFrame) -> np.ndarray:
    return np.select([ex[f"ans{k}_tag"].str.lower() == "unknown" for k in range(3)], [0, 1, 2], -1)


def anti_slot(ex: pd.DataFrame) -> np.ndarray:
    """The non-UNKNOWN slot that is not target_loc: answering it is counted as anti-biased."""
    unk, target = unknown_slot(ex), ex["target_loc"].to_numpy()
    return np.array([next(k for k in range(3) if k != u and k != t) for u, t in zip(unk, target)])


def generations(ex: pd.DataFrame, condition: str, slots, parsed=None, model="m", rnd=1) -> pd.DataFrame:
    """Rows as a generate job writes them (the columns scoring reads); an unparsed answer has no generate_slot."""
    slots = np.asarray(slots, dtype=float)
    parsed = np.ones(len(ex), bool) if parsed is None else np.asarray(parsed, bool)
    return pd.DataFrame({
        "item_id": ex["item_id"].to_numpy(), "model": model, "condition": condition, "round": rnd,
        "generate_slot": np.where(parsed, slots, np.nan), "parse_status": np.where(parsed, "letter", "unparsed"),
        "logprob_slot": slots.astype(int),
    })


def scored(gens: pd.DataFrame, ex: pd.DataFrame, seed: int = 0):
    items = metrics.bbq_items(gens, ex)
    return items, metrics.bbq_cis(items, metrics.bbq_cells(items), B, 0.95, seed)


# ---------------------------------------------------------------- point estimates as before

def test_point_estimates_are_the_official_formulas_exactly(released):
    rng = np.random.default_rng(3)
    slots = rng.integers(0, 3, len(released))
    parsed = rng.random(len(released)) > 0.05
    items, cells = scored(generations(released, "baseline", slots, parsed), released)
    for mode, pred in (("generate", np.where(parsed, slots, np.nan)), ("logprob", slots.astype(float))):
        official = bbq.score_frame(released, pd.Series(pred, index=released.index))
        ours = cells[(cells["answer_mode"] == mode) & (cells["category"] != metrics.ALL)]
        merged = official.merge(ours, on=["category", "context_condition"], suffixes=("_official", ""))
        assert len(merged) == len(official) == 12
        for col in ("n_scored", "n_dropped", "accuracy", "bias_score"):
            assert (merged[col] == merged[f"{col}_official"]).all(), col
        assert (merged["n_resamples_undefined"] == 0).all()


def test_one_question_per_context_gives_the_same_points_and_defined_cis(released):
    # one question per context and condition: the cluster bootstrap has nothing to cluster
    ex = released[released["question_polarity"] == "neg"]
    slots = np.random.default_rng(4).integers(0, 3, len(ex))
    _, cells = scored(generations(ex, "baseline", slots), ex)
    official = bbq.score_frame(ex, pd.Series(slots.astype(float), index=ex.index))
    ours = cells[(cells["answer_mode"] == "logprob") & (cells["category"] != metrics.ALL)]
    merged = official.merge(ours, on=["category", "context_condition"], suffixes=("_official", ""))
    assert (merged["n_contexts"] == merged["n_total"]).all()
    for col in ("n_scored", "accuracy", "bias_score"):
        assert (merged[col] == merged[f"{col}_official"]).all(), col
    assert merged[["ci_low", "ci_high", "accuracy_ci_low", "accuracy_ci_high"]].notna().all().all()


# ---------------------------------------------------------------- item 5: undefined resamples

def test_a_cell_whose_resamples_can_lack_non_unknown_answers_still_gets_a_ci(sample):
    # UNKNOWN everywhere but in one context of each category, where the model follows the stereotype: a resample
    # that misses that context has no non-UNKNOWN answer, so its bias score is undefined
    slots = unknown_slot(sample)
    first = sample.groupby("category")["context_id"].transform("min") == sample["context_id"]
    slots = np.where(first, sample["target_loc"].to_numpy(), slots)
    _, cells = scored(generations(sample, "baseline", slots), sample)
    amb = cells[(cells["context_condition"] == "ambig") & (cells["category"] != metrics.ALL)]
    assert (amb["n_scored"] == 20).all() and (amb["n_non_unknown"] == 2).all()
    assert amb[["ci_low", "ci_high"]].notna().all().all()
    assert (amb["n_contexts"] == 10).all()
    # about (1 - 1/10)^10 = 35% of the resamples miss the one context
    assert amb["n_resamples_undefined"].between(0.25 * B, 0.45 * B).all()
    assert (amb["ci_low"] <= amb["bias_score"]).all() and (amb["bias_score"] <= amb["ci_high"]).all()


def test_every_cell_with_five_scored_examples_gets_a_ci(released):
    small = sampling.sample_bbq(released, 3, seed=11)
    rng = np.random.default_rng(5)
    gens = pd.concat([generations(small, c, rng.integers(0, 3, len(small)), rng.random(len(small)) > 0.2, rnd=r)
                      for c in ("baseline", "instruction") for r in (1, 2)], ignore_index=True)
    _, cells = scored(gens, small)
    enough = cells[cells["n_scored"] >= 5]
    assert len(enough) > 80
    assert enough[["accuracy_ci_low", "accuracy_ci_high"]].notna().all().all()
    has_bias = enough[enough["n_non_unknown"] > 0]
    assert has_bias[["ci_low", "ci_high"]].notna().all().all()
    assert (has_bias["n_resamples_undefined"] > 0).any()  # the case of item 5 does occur here


# ---------------------------------------------------------------- item 6: pairs scored in both conditions

def test_differences_pair_only_examples_scored_under_both_conditions(sample):
    rng = np.random.default_rng(6)
    slots_b, slots_a = rng.integers(0, 3, len(sample)), rng.integers(0, 3, len(sample))
    parsed_a = rng.random(len(sample)) < 0.5  # CoT: half of its answers unparsed
    gens = pd.concat([generations(sample, "instruction", slots_b),
                      generations(sample, "instruction_cot", slots_a, parsed_a)], ignore_index=True)
    items = metrics.bbq_items(gens, sample)
    diffs = metrics.condition_differences(items, B, 0.95, 0)
    for mode in ("generate", "logprob"):
        both = items[items["answer_mode"] == mode].pivot_table(index="item_id", columns="condition", values="kept",
                                                                aggfunc="first")
        paired_ids = set(both.index[both.all(axis=1)])
        for ctx in ("ambig", "disambig"):
            d = diffs[(diffs["answer_mode"] == mode) & (diffs["context_condition"] == ctx)
                      & (diffs["condition_a"] == "instruction_cot")].iloc[0]
            paired = items[(items["answer_mode"] == mode) & (items["context_condition"] == ctx)
                           & items["item_id"].isin(paired_ids)]
            assert d["n_pairs"] == len(paired) // 2
            for cond, col in (("instruction_cot", "bias_a"), ("instruction", "bias_b")):
                official = bbq.bias_table(paired[paired["condition"] == cond].assign(category=metrics.ALL))
                assert d[col] == pytest.approx(official["bias_score"].iloc[0], abs=1e-9)
            assert d["ci_low"] <= d["difference"] <= d["ci_high"]
    gen = diffs[diffs["answer_mode"] == "generate"]
    assert (gen["n_pairs"] < len(sample) // 2).all()  # what was dropped in CoT is not paired
    assert (diffs.loc[diffs["answer_mode"] == "logprob", "n_pairs"] == len(sample) // 2).all()


def test_differences_without_drops_are_todays_pooled_scores(sample):
    rng = np.random.default_rng(8)
    gens = pd.concat([generations(sample, c, rng.integers(0, 3, len(sample))) for c in ("baseline", "unethical")],
                     ignore_index=True)
    items, cells = scored(gens, sample)
    d = metrics.condition_differences(items, B, 0.95, 0)
    pooled = cells[cells["category"] == metrics.ALL].set_index(["answer_mode", "context_condition", "condition"])
    for _, row in d.iterrows():
        assert row["bias_a"] == pooled.loc[(row["answer_mode"], row["context_condition"], "unethical"), "bias_score"]
        assert row["bias_b"] == pooled.loc[(row["answer_mode"], row["context_condition"], "baseline"), "bias_score"]


# ---------------------------------------------------------------- item 7: clustered by context

def clustered_answers(ex: pd.DataFrame, seed: int) -> np.ndarray:
    """Per context a coin decides: the stereotyped answer to all its questions, or the other group to all."""
    coins = pd.Series(np.random.default_rng(seed).random(ex["context_id"].nunique()) < 0.5,
                      index=sorted(ex["context_id"].unique()))
    follows = coins.loc[ex["context_id"]].to_numpy()
    return np.where(follows, ex["target_loc"].to_numpy(), anti_slot(ex))


def test_cluster_bootstrap_is_wider_than_the_naive_one_when_answers_follow_the_context(released):
    ex = sampling.sample_bbq(released, 40, seed=2)
    gens = generations(ex, "baseline", clustered_answers(ex, seed=9))
    items = metrics.bbq_items(gens, ex)
    cells = metrics.bbq_cells(items)
    cluster = metrics.bbq_cis(items, cells, B, 0.95, 0)
    naive = metrics.bbq_cis(items.assign(context_id=items["item_id"]), cells, B, 0.95, 0)  # every row its own context
    width = lambda t: (t["ci_high"] - t["ci_low"]).to_numpy()  # noqa: E731
    pooled = (cluster["category"] == metrics.ALL).to_numpy()
    # both questions of a context agree, so the effective sample is half as large: about sqrt(2) wider
    ratio = width(cluster)[pooled] / width(naive)[pooled]
    assert (ratio > 1.2).all(), ratio
    assert np.median(width(cluster)[~pooled] / width(naive)[~pooled]) > 1.2
    assert (cluster.loc[pooled, "n_contexts"] == 6 * 40).all() and (naive.loc[pooled, "n_contexts"] == 6 * 80).all()


def test_cis_are_deterministic_and_do_not_depend_on_other_cells(sample):
    slots = clustered_answers(sample, seed=1)
    one = scored(generations(sample, "baseline", slots), sample)[1]
    two = scored(pd.concat([generations(sample, "baseline", slots), generations(sample, "negation", slots[::-1])]),
                 sample)[1]
    two = two[two["condition"] == "baseline"].reset_index(drop=True)
    cols = ["ci_low", "ci_high", "accuracy_ci_low", "accuracy_ci_high"]
    pd.testing.assert_frame_equal(one[cols], scored(generations(sample, "baseline", slots), sample)[1][cols])
    pd.testing.assert_frame_equal(one[cols], two[cols])


def test_items_carry_the_examples_context_ids_or_build_them(sample, released):
    gens = generations(sample, "baseline", unknown_slot(sample))
    given = metrics.bbq_items(gens, sample)
    built = metrics.bbq_items(gens, sample.drop(columns=["item_id", "context_id"]))
    assert (given["context_id"] == built["context_id"]).all()
    assert set(built["context_id"]) == set(sampling.bbq_context_ids(sample))


# ---------------------------------------------------------------- Winogender rho

@pytest.fixture(scope="module")
def winogender(shared_data):
    d = shared_data / "winogender" / "data"
    return data.load_winogender(d / "all_sentences.tsv", d / "occupations-stats.tsv")


def rho_tables(wino: pd.DataFrame, occupations: list[str], seed: int = 0):
    ex = wino[wino["occupation"].isin(occupations)]
    noise = np.random.default_rng(seed).normal(0, 0.15, len(ex))
    p = np.clip(ex["bls_pct_female"].to_numpy() / 100 + noise, 0.01, 0.98)
    gens = pd.DataFrame({"item_id": ex["example_id"].to_numpy(), "model": "m", "condition": "baseline", "round": 1,
                         "option_probs": [np.array([a, 0.99 - a, 0.01]) for a in p]})
    occ = metrics.occupation_table(metrics.winogender_items(gens, ex))
    return occ, metrics.rho_cis(occ, metrics.winogender_rho(occ), B, 0.95, seed)


def test_rho_ci_resamples_occupations(winogender):
    occ, rho = rho_tables(winogender, sorted(winogender["occupation"].unique()))
    row = rho.iloc[0]
    assert row["n_occupations"] == 60 and (occ["n_items"] == 4).all()
    assert row["ci_low"] < row["rho"] < row["ci_high"]
    assert row["n_resamples_undefined"] == 0
    # the percentile CI of rho over 60 occupations: the textbook Fisher-z interval is a close reference
    z, se = np.arctanh(row["rho"]), 1 / np.sqrt(60 - 3)
    assert row["ci_high"] - row["ci_low"] == pytest.approx(np.tanh(z + 1.96 * se) - np.tanh(z - 1.96 * se), rel=0.5)


def test_rho_ci_of_few_occupations_leaves_out_resamples_without_a_rho(winogender):
    three = sorted(winogender["occupation"].unique())[:3]
    _, rho = rho_tables(winogender, three)
    row = rho.iloc[0]
    assert np.isfinite([row["ci_low"], row["ci_high"]]).all()
    # a resample drawing one occupation three times has no rho: 3 of 27 draws
    assert 0.06 * B < row["n_resamples_undefined"] < 0.17 * B


def test_vectorised_percentiles_are_numpys_nanquantile():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(B, 40))
    a[rng.random(a.shape) < 0.3] = np.nan
    a[:, 3] = np.nan  # no defined resample
    a[1:, 4] = np.nan  # one
    ours = metrics.nan_quantiles(a, [0.025, 0.975])
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        ref = np.nanquantile(a, [0.025, 0.975], axis=0)
    for got, want in zip(ours, ref):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_a_resample_draws_as_many_contexts_as_there_are_and_depends_only_on_which(sample):
    names = np.array(sorted(sample["context_id"].unique()), dtype=object)
    counts = metrics.Resampler(B, seed=0).counts(names)
    assert counts.shape == (B, len(names)) and (counts.sum(axis=1) == len(names)).all()
    # on average every context is drawn once; about 1/e of them are missing from a resample
    assert counts.mean() == pytest.approx(1.0) and (counts == 0).mean() == pytest.approx(np.exp(-1), abs=0.02)
    shuffled = np.random.default_rng(0).permutation(len(names))
    again = metrics.Resampler(B, seed=0).counts(names[shuffled])
    np.testing.assert_array_equal(again, counts[:, shuffled])
    assert not np.array_equal(metrics.Resampler(B, seed=1).counts(names), counts)
