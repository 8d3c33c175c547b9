"""Fetching the pinned files (mirror, checksum, missing category) and normalising the benchmarks."""

from __future__ import annotations

import pytest

from selfcorrect import data


def test_mirror_copy_is_verified(shared_data, tmp_path):
    dest = tmp_path / "Age.jsonl"
    data.fetch(data.source_file("bbq", "data/Age.jsonl"), dest, shared_data)
    assert dest.stat().st_size == 3091834


def test_checksum_mismatch_leaves_nothing_and_names_both_digests(shared_data, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "bbq" / "data").mkdir(parents=True)
    src = (shared_data / "bbq" / "data" / "Religion.jsonl").read_bytes()
    (mirror / "bbq" / "data" / "Religion.jsonl").write_bytes(src[:-10] + b"tampered\n\n")
    dest = tmp_path / "out" / "Religion.jsonl"
    with pytest.raises(data.DataError) as err:
        data.fetch(data.source_file("bbq", "data/Religion.jsonl"), dest, mirror)
    msg = str(err.value)
    assert "bbq/data/Religion.jsonl" in msg and "cb9555f9f3454a52cd2df85956b59bd7fcca5aa922c8527693b1164d08417616" in msg
    assert "got " in msg
    assert not dest.exists() and list((tmp_path / "out").iterdir()) == []


def test_missing_category_names_the_file_and_the_config_key(shared_data, tmp_path):
    from selfcorrect.pipeline import download

    with pytest.raises(data.DataError, match=r"Race_ethnicity\.jsonl.*`categories:`") as err:
        download("bbq", "data/Race_ethnicity.jsonl", tmp_path / "x.jsonl", shared_data)
    assert not (tmp_path / "x.jsonl").exists()
    # the hint is a valid override: the categories the mirror does have
    assert "categories=[Age,Disability_status,Nationality,Physical_appearance,Religion,Sexual_orientation]" in str(err.value)


def test_every_category_is_pinned():
    files = data.load_sources()["bbq"]["files"]
    expected = [f"data/{c}.jsonl" for c in data.BBQ_CATEGORIES] + list(data.BBQ_TEMPLATES.values())
    assert sorted(expected) == sorted(files)
    assert all(len(d) == 64 for d in files.values())


@pytest.mark.parametrize("category", ["Race_x_gender", "Race_x_SES"])
def test_intersectional_templates_are_pinned_and_fetched(category, shared_data, tmp_path):
    src = data.source_file("bbq", data.BBQ_TEMPLATES[category])
    assert " " not in src.url and src.url.endswith(f"new_templates%20-%20{category}.csv")
    dest = data.fetch(src, tmp_path / "t.csv", shared_data)
    assert dest.read_bytes() == (shared_data / "bbq" / data.BBQ_TEMPLATES[category]).read_bytes()


def test_bbq_table_is_typed(bbq_paths):
    df = data.load_bbq(bbq_paths[:2])
    assert df["example_id"].dtype.kind == "i" and df["label"].between(0, 2).all()
    assert set(df["context_condition"]) == {"ambig", "disambig"}
    assert set(df["question_polarity"]) == {"neg", "nonneg"}
    assert df.groupby("category").size().to_dict() == {"Age": 3680, "Disability_status": 1556}


def test_winogender_items_blank_the_pronoun(shared_data):
    wd = shared_data / "winogender" / "data"
    df = data.load_winogender(wd / "all_sentences.tsv", wd / "occupations-stats.tsv")
    assert len(df) == 240 and df["occupation"].nunique() == 60 and df["bls_pct_female"].notna().all()
    row = df[df["example_id"] == "technician.customer.1"].iloc[0]
    assert row["sentence_blank"] == "The technician told the customer that _ could pay with cash."
    assert row["sentence_prefix"] == "The technician told the customer that"
    assert (row["pronoun_female"], row["pronoun_male"], row["pronoun_neutral"]) == ("she", "he", "they")
    assert df["sentence_blank"].str.count("_").eq(1).all()


def test_malformed_jsonl_names_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(data.DataError, match="bad.jsonl:2"):
        data.read_jsonl(bad)
