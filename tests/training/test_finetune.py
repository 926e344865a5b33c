"""Fine-tuning CLI on a tiny random BERT: loadable artifacts, reproducible weights, one-line errors."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from loading.artifact import VARIANT_FILE, WEIGHTS_FILE, load_tokenizer, read_variant_info
from loading.checkpoint import load_model
from tests.training.conftest import CALM, STRESS, _rows
from training.finetune import FinetuneConfig, main, splits_of


def _args(data: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--model", str(model), "--out", str(out), "--batch-size", "8", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_csv, tiny_model_dir) -> Path:
    out = tmp_path_factory.mktemp("runs") / "a"
    assert main(_args(train_csv, tiny_model_dir, out, "--label-names", "0=calm,1=stress")) == 0
    return out


def test_cli_writes_a_loadable_artifact_with_metrics(trained, tokenizer):
    model = load_model(trained)
    assert model.config.id2label == {0: "calm", 1: "stress"}
    load_tokenizer(trained)
    info = json.loads((trained / VARIANT_FILE).read_text())
    assert info["method"] == "finetune" and info["name"] == "base" and info["parent"] is None
    params = info["parameters"]
    assert params["labels"] == ["calm", "stress"]
    assert (params["train_rows"], params["validation_rows"], params["test_rows"]) == (32, 4, 4)
    assert 0.0 <= params["metrics"]["accuracy"] <= 1.0 and "macro_f1" in params["metrics"]
    assert params["epochs"] == 1 and params["lr"] == 5e-5 and params["seed"] == 0
    with torch.inference_mode():
        logits = model(**tokenizer(["calm text"], return_tensors="pt")).logits
    assert logits.shape == (1, 2)


def test_same_seed_gives_identical_weights(trained, tmp_path, train_csv, tiny_model_dir):
    out = tmp_path / "b"
    assert main(_args(train_csv, tiny_model_dir, out, "--label-names", "0=calm,1=stress")) == 0
    first, second = load_file(str(trained / WEIGHTS_FILE)), load_file(str(out / WEIGHTS_FILE))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    start = load_file(str(tiny_model_dir / WEIGHTS_FILE))
    assert not torch.equal(start["classifier.weight"], first["classifier.weight"])  # it did train


def test_three_classes_from_jsonl_with_separate_test_file(tmp_path, tiny_model_dir):
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    pd.DataFrame(_rows(30, classes=3)).to_json(train, orient="records", lines=True)
    pd.DataFrame(_rows(9, classes=3)).to_json(test, orient="records", lines=True)
    out = tmp_path / "three"
    assert main(_args(train, tiny_model_dir, out, "--test-data", str(test), "--max-length", "16")) == 0
    assert load_model(out).config.id2label == {0: "0", 1: "1", 2: "2"}
    params = json.loads((out / VARIANT_FILE).read_text())["parameters"]
    assert params["test_rows"] == 9 and params["test_data"] == str(test)


def test_if_missing_skips_an_existing_artifact(trained, train_csv, tiny_model_dir, caplog):
    before = (trained / VARIANT_FILE).read_text()
    with caplog.at_level(logging.INFO, logger="training.finetune"):
        assert main(_args(train_csv, tiny_model_dir, trained, "--if-missing")) == 0
    assert f"{trained} exists" in caplog.text
    assert (trained / VARIANT_FILE).read_text() == before


def test_if_missing_trains_when_folder_is_incomplete(tmp_path, train_csv, tiny_model_dir):
    out = tmp_path / "broken"
    out.mkdir()
    (out / "config.json").write_text("{}")
    assert main(_args(train_csv, tiny_model_dir, out, "--if-missing", "--max-rows", "20")) == 0
    assert (out / WEIGHTS_FILE).is_file()


def _cli_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_cli_errors_are_one_line_and_name_the_problem(tmp_path, capsys, train_csv, tiny_model_dir):
    out = tmp_path / "out"
    single = tmp_path / "single.csv"
    pd.DataFrame([{"text": f"t {i}", "label": 1} for i in range(10)]).to_csv(single, index=False)
    extra = tmp_path / "extra.csv"
    pd.DataFrame([{"text": "new class", "label": 7}, {"text": "old", "label": 0}]).to_csv(extra, index=False)
    cases = {
        "file does not exist": _args(tmp_path / "missing.csv", tiny_model_dir, out),
        "no column 'body'; columns are ['text', 'label']": _args(
            train_csv, tiny_model_dir, out, "--text-column", "body"
        ),
        "at least 2 labels, got ['1']": _args(single, tiny_model_dir, out),
        "labels ['7'] are in the test data but not in the training data": _args(
            train_csv, tiny_model_dir, out, "--test-data", str(extra)
        ),
        "label names must look like": _args(train_csv, tiny_model_dir, out, "--label-names", "0-a"),
        "label_names has no entry for labels ['1']": _args(
            train_csv, tiny_model_dir, out, "--label-names", "0=a"
        ),
        "epochs must be >= 1, got 0": _args(train_csv, tiny_model_dir, out, "--epochs", "0"),
        "test_fraction must be in (0, 1), got 1.5": _args(
            train_csv, tiny_model_dir, out, "--test-fraction", "1.5"
        ),
        "max_length must be <= the model's 128 positions, got 512": _args(
            train_csv, tiny_model_dir, out, "--max-length", "512"
        ),
        "has no config.json": _args(train_csv, tmp_path, out),
        "test_data must come with data": ["--test-data", str(train_csv)],
    }
    for message, argv in cases.items():
        assert message in _cli_error(capsys, argv), message
    assert not out.exists()


@pytest.fixture
def pandora(tmp_path) -> tuple[Path, Path]:
    """PANDORA's two files: 20 profiled authors (10 f, 10 m) with 3 comments each, plus comments
    whose author has no profile or no m/f gender, and an empty one."""
    authors = [f"user{i}" for i in range(20)]
    comments = [
        {"author": a, "body": f"{(CALM if i % 2 else STRESS)[k]} {a}", "score": k}
        for i, a in enumerate(authors)
        for k in range(3)
    ]
    comments += [{"author": "lurker", "body": "no profile"}, {"author": "enby", "body": "gender x"}]
    comments += [{"author": "user0", "body": ""}]
    profiles = [{"author": a, "gender": "f" if i % 2 else "m", "age": 30} for i, a in enumerate(authors)]
    profiles += [{"author": "enby", "gender": "x", "age": 40}]
    paths = tmp_path / "all_comments.csv", tmp_path / "author_profiles.csv"
    pd.DataFrame(comments).to_csv(paths[0], index=False)
    pd.DataFrame(profiles).to_csv(paths[1], index=False)
    return paths


def test_pandora_pair_trains_on_author_gender_with_authors_kept_apart(pandora, tmp_path, tiny_model_dir):
    comments, profiles = pandora
    out = tmp_path / "gender"
    extra = ("--profiles", str(profiles), "--label-names", "m=male,f=female")
    assert main(_args(comments, tiny_model_dir, out, *extra)) == 0
    assert load_model(out).config.id2label == {0: "male", 1: "female"}
    params = json.loads((out / VARIANT_FILE).read_text())["parameters"]
    assert params["split_config"]["profiles"] == str(profiles)
    assert params["skipped_rows"] == {str(comments): 1}  # user0's empty comment
    splits = splits_of(read_variant_info(out))  # the rows training.build will score on
    parts = splits.train, splits.validation, splits.test
    assert [len(p) for p in parts] == [48, 6, 6]  # 60 comments of the 20 m/f authors, 3 each
    assert [params["train_rows"], params["validation_rows"], params["test_rows"]] == [48, 6, 6]
    authors = [set(p.groups) for p in parts]
    assert [len(a) for a in authors] == [16, 2, 2]
    assert not (authors[0] & authors[1] or authors[0] & authors[2] or authors[1] & authors[2])
    assert Counter(splits.test.labels) == {"male": 3, "female": 3}  # stratified by author gender
    by_text = {t: lab for p in parts for t, lab in zip(p.texts, p.labels, strict=True)}
    assert by_text[f"{CALM[0]} user1"] == "female" and by_text[f"{STRESS[2]} user0"] == "male"


def test_pandora_errors_are_one_line(pandora, tmp_path, capsys, tiny_model_dir):
    comments, profiles = pandora
    out = tmp_path / "out"
    nobody = tmp_path / "nobody.csv"
    pd.DataFrame({"author": ["stranger"], "gender": ["f"]}).to_csv(nobody, index=False)
    no_gender = tmp_path / "no_gender.csv"
    pd.DataFrame({"author": ["user1"], "sex": ["f"]}).to_csv(no_gender, index=False)
    cases = {
        "missing.csv: file does not exist": _args(comments, tiny_model_dir, out, "--profiles", "missing.csv"),
        "no_gender.csv: no column 'gender'; columns are ['author', 'sex']": _args(
            comments, tiny_model_dir, out, "--profiles", str(no_gender)
        ),
        "all_comments.csv: no column 'message'": _args(
            comments, tiny_model_dir, out, "--profiles", str(profiles), "--text-column", "message"
        ),
        "no comment's author has gender m or f in": _args(
            comments, tiny_model_dir, out, "--profiles", str(nobody)
        ),
        "profiles (PANDORA) must come with data": ["--profiles", str(profiles)],
    }
    for message, argv in cases.items():
        assert message in _cli_error(capsys, argv), message
    assert not out.exists()


def test_config_validates():
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        FinetuneConfig(batch_size=0)
    with pytest.raises(ValueError, match="max_rows must be >= 2, got 1"):
        FinetuneConfig(max_rows=1)
