"""Evaluation data: the default set, any table, PANDORA's two files, balanced samples, label checks."""

from __future__ import annotations

import logging
from collections import Counter

import pandas as pd
import pytest

from evaluation.data import (
    DataError,
    DataSpec,
    balanced_sample,
    check_labels,
    load_eval_data,
    load_pandora,
    model_labels,
)
from training.data import load_table


@pytest.fixture
def pandora(tmp_path):
    comments = tmp_path / "comments.csv"
    pd.DataFrame(
        {
            "author": ["ann", "bob", "cyd", "ann", "dee", "bob", "eve"],
            "body": ["first", "second", "third", "", "fifth", "sixth", "seventh"],
        }
    ).to_csv(comments, index=False)
    profiles = tmp_path / "profiles.csv"
    pd.DataFrame(
        {
            "author": ["ann", "bob", "cyd", "eve"],
            "gender": ["f", " M ", "other", None],
            "age": [30, 40, 50, 60],
        }
    ).to_csv(profiles, index=False)
    return comments, profiles


def test_pandora_keeps_authors_with_a_gender_in_comment_order(pandora, caplog):
    with caplog.at_level(logging.WARNING):
        table = load_pandora(*pandora)
    # cyd's gender is not m/f, eve has none, dee has no profile; row 4 is empty and reported.
    assert table.texts == ["first", "second", "sixth"]
    assert table.labels == ["f", "m", "m"]
    assert table.rows == [1, 2, 6] and table.skipped_rows == 1
    assert "comments.csv: skipped 1 row (4) with empty text" in caplog.text
    named = load_pandora(*pandora, label_names={"m": "male", "f": "female"})
    assert named.labels == ["female", "male", "male"] and named.label_names == ("male", "female")


def test_pandora_through_the_spec(pandora):
    comments, profiles = pandora
    table = load_eval_data(DataSpec(str(comments), profiles=str(profiles), label_names="m=male,f=female"))
    assert table.labels == ["female", "male", "male"]


def test_pandora_errors_name_file_row_and_problem(pandora, tmp_path):
    comments, profiles = pandora
    with pytest.raises(DataError, match=r"profiles.csv: no column 'sex'"):
        load_pandora(comments, profiles, gender_column="sex")
    with pytest.raises(DataError, match=r"comments.csv: no column 'text'"):
        load_pandora(comments, profiles, text_column="text")
    twice = tmp_path / "twice.csv"
    pd.DataFrame({"author": ["ann", "ann"], "gender": ["f", "m"]}).to_csv(twice, index=False)
    with pytest.raises(DataError, match=r"twice.csv: row 2: author 'ann' has genders 'f' and 'm'"):
        load_pandora(comments, twice)
    nobody = tmp_path / "nobody.csv"
    pd.DataFrame({"author": ["zed"], "gender": ["f"]}).to_csv(nobody, index=False)
    with pytest.raises(DataError, match="comments.csv: no comment's author has gender m or f"):
        load_pandora(comments, nobody)
    no_author = tmp_path / "no_author.csv"
    pd.DataFrame({"author": ["ann", None], "body": ["x", "y"]}).to_csv(no_author, index=False)
    with pytest.raises(DataError, match=r"no_author.csv: column 'author' has no label in 1 row \(2\)"):
        load_pandora(no_author, profiles)
    anonymous = tmp_path / "anonymous.csv"
    pd.DataFrame({"author": ["ann", None], "gender": ["f", "m"]}).to_csv(anonymous, index=False)
    with pytest.raises(DataError, match=r"anonymous.csv: row 2: gender 'm' without an author"):
        load_pandora(comments, anonymous)
    with pytest.raises(DataError, match="names have no entry for genders"):
        load_pandora(comments, profiles, label_names={"f": "female"})


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_any_table_with_named_columns(tmp_path, suffix):
    frame = pd.DataFrame({"review": ["good", "bad", "fine"], "stars": ["5", "1", "5"]})
    path = tmp_path / f"set{suffix}"
    {
        ".csv": lambda: frame.to_csv(path, index=False),
        ".parquet": lambda: frame.to_parquet(path),
        ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
    }[suffix]()
    spec = DataSpec(
        str(path), text_column="review", label_column="stars", label_names="1=negative,5=positive"
    )
    table = load_eval_data(spec)
    assert table.texts == ["good", "bad", "fine"] and table.labels == ["positive", "negative", "positive"]


def test_bad_tables_name_file_row_and_problem(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.csv: file is empty"):
        load_eval_data(DataSpec(str(empty)))
    numbers = tmp_path / "numbers.jsonl"
    numbers.write_text('{"text": "ok", "label": 1}\n{"text": 42, "label": 0}\n')
    with pytest.raises(DataError, match=r"numbers.jsonl: column 'text' has non-text values in 1 row \(2\)"):
        load_eval_data(DataSpec(str(numbers)))
    unlabelled = tmp_path / "unlabelled.csv"
    unlabelled.write_text("text,label\na,1\nb,\n")
    with pytest.raises(DataError, match=r"unlabelled.csv: column 'label' has no label in 1 row \(2\)"):
        load_eval_data(DataSpec(str(unlabelled)))
    with pytest.raises(DataError, match="no column 'body'"):
        load_eval_data(DataSpec(str(unlabelled), text_column="body"))


def test_balanced_sample_is_balanced_seeded_and_in_file_order(tmp_path):
    path = tmp_path / "skewed.csv"
    pd.DataFrame({"text": [f"t{i}" for i in range(100)], "label": ["a"] * 80 + ["b"] * 20}).to_csv(
        path, index=False
    )
    table = load_table(path)
    sample = balanced_sample(table, 30, seed=1)
    assert Counter(sample.labels) == {"a": 15, "b": 15}
    assert sample.rows == sorted(sample.rows)
    assert balanced_sample(table, 30, seed=1).rows == sample.rows != balanced_sample(table, 30, seed=2).rows
    few = balanced_sample(table, 50, seed=0)  # only 20 b: the rest is filled with a
    assert Counter(few.labels) == {"a": 30, "b": 20}
    assert balanced_sample(table, 500).rows == table.rows


def test_default_data_is_dreaddit_test_with_the_models_label_names():
    table = load_eval_data(DataSpec())
    assert len(table) == 715 and table.label_names == ("not_stress", "stress")
    sample = load_eval_data(DataSpec(sample=40, seed=3))
    assert Counter(sample.labels) == {"not_stress": 20, "stress": 20}


def test_labels_the_model_does_not_know_are_named_with_rows(tmp_path, tiny_artifact):
    path = tmp_path / "x.csv"
    pd.DataFrame({"text": ["a", "b", "c"], "label": ["label_1", "label_0", "meh"]}).to_csv(path, index=False)
    labels = model_labels(tiny_artifact)
    assert labels == ["label_0", "label_1"]
    with pytest.raises(DataError, match=r"x.csv: labels \['meh'\] in 1 rows \(3\) are not among the labels"):
        check_labels(load_table(path), labels)
    check_labels(load_table(path).select([0, 1]), labels)  # known labels pass


def test_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="sample must be >= 1, got 0"):
        DataSpec(sample=0)
    with pytest.raises(ValueError, match="profiles .PANDORA. must come with data"):
        DataSpec(profiles="p.csv")
