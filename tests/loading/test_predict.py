"""Forward passes: grouping by length bounds padding without changing any prediction."""

from __future__ import annotations

import random

import pytest
import torch

from loading.artifact import load_tokenizer
from loading.checkpoint import load_model
from loading.predict import Predictor, plan_passes


def _padded(lengths: list[int], passes: list[list[int]]) -> int:
    return sum(len(p) * max(lengths[i] for i in p) for p in passes)


@pytest.mark.parametrize("seed", range(5))
def test_passes_cover_every_text_once_within_batch_and_padding_bounds(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(3, 300) for _ in range(rng.randint(1, 60))]
    passes = plan_passes(lengths, batch_size=16, max_padding=0.25)
    assert sorted(i for p in passes for i in p) == list(range(len(lengths)))
    for p in passes:
        assert 1 <= len(p) <= 16
        longest = max(lengths[i] for i in p)
        assert len(p) * longest <= 1.25 * sum(lengths[i] for i in p) + 1e-9
    # unbounded padding: plain batches of 16 in length order, the fewest passes
    plain = plan_passes(lengths, batch_size=16, max_padding=float("inf"))
    assert [len(p) for p in plain] == [min(16, len(lengths) - s) for s in range(0, len(lengths), 16)]
    assert _padded(lengths, passes) <= _padded(lengths, plain)


def test_mixed_lengths_split_but_equal_lengths_stay_together():
    assert plan_passes([10, 10, 10, 10], batch_size=8) == [[0, 1, 2, 3]]
    assert plan_passes([300, 10, 12, 290], batch_size=8) == [[1, 2], [3, 0]]
    with pytest.raises(ValueError, match="max_padding"):
        Predictor(torch.nn.Linear(1, 1), None, max_padding=-1)


def test_predictions_do_not_depend_on_how_texts_are_grouped(tiny_artifact):
    model, tokenizer = load_model(tiny_artifact), load_tokenizer(tiny_artifact)
    texts = ["short", "a somewhat longer text about exams", "word " * 90, "two words", "x " * 40]
    one_pass = Predictor(model, tokenizer, max_padding=float("inf")).probabilities(texts, 8)[0]
    grouped = Predictor(model, tokenizer, max_padding=0.1).probabilities(texts, 8)[0]
    torch.testing.assert_close(grouped, one_pass, atol=1e-5, rtol=1e-4)
