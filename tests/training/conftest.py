"""Tiny training data and a tiny random encoder checkpoint for the training tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import tiny_classifier

CALM = ["a quiet walk in the park", "tea with an old friend", "sunny morning by the lake", "nice long nap"]
STRESS = ["the deadline is tomorrow", "i cannot sleep at all", "rent is due and no money", "exam panic again"]


def _rows(n: int, classes: int = 2) -> list[dict]:
    pools = [CALM, STRESS, ["the cat sat", "a dog ran", "birds sing"]][:classes]
    return [{"text": f"{pools[i % classes][i % 3]} {i}", "label": i % classes} for i in range(n)]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A plain HF checkpoint (no variant.json), as a user would pass with --model."""
    out = tmp_path_factory.mktemp("tiny_encoder")
    tiny_classifier().save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def train_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.csv"
    pd.DataFrame(_rows(40)).to_csv(path, index=False)
    return path
