"""Fixtures for the compression tests: one tiny classifier, a tokenized batch, state helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import tiny_classifier


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """A tiny random classifier shared by a test module; tests assert it is never modified."""
    return tiny_classifier(num_labels=2, seed=0)


@pytest.fixture(scope="session")
def batch(tokenizer) -> dict[str, torch.Tensor]:
    texts = [
        "The engineer finished his report early.",
        "She said the meeting ran long, again.",
        "A short one.",
        "We are hiring a chairperson who can lead the team through a difficult year of change.",
    ]
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


def logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return model(**batch).logits


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, tensor in before.items():
        assert torch.equal(after[key], tensor), key
