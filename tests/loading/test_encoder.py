"""TextEncoder gives the model exactly what the transformers tokenizer would, from the bare tokenizer."""

from __future__ import annotations

import pickle

import pytest
import torch

from loading.encoder import TextEncoder

TEXTS = ["short", "a somewhat longer text, with punctuation!", "word " * 300, "émoji 🙂 and ünïcode"]


@pytest.mark.parametrize("max_tokens", [16, 128, 512])
def test_batch_equals_the_transformers_tokenizer(tokenizer, max_tokens):
    encoder = TextEncoder.from_pretrained_tokenizer(tokenizer)
    expected = tokenizer(TEXTS, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    actual = encoder(TEXTS, max_tokens)
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name


def test_truncation_is_reported_per_text(tokenizer):
    encoder = TextEncoder.from_pretrained_tokenizer(tokenizer)
    lengths = [len(ids) for ids in tokenizer(TEXTS)["input_ids"]]
    _, truncated = encoder.encode(TEXTS, 16)
    assert truncated == [n > 16 for n in lengths] and any(truncated) and not all(truncated)


def test_source_tokenizer_is_left_alone_and_encoder_pickles(tokenizer):
    encoder = TextEncoder.from_pretrained_tokenizer(tokenizer)
    encoder.encode(TEXTS, 8)
    assert tokenizer.backend_tokenizer.truncation is None  # the encoder holds a copy
    again = pickle.loads(pickle.dumps(encoder))  # how the model store ships it
    assert torch.equal(again(TEXTS, 32)["input_ids"], encoder(TEXTS, 32)["input_ids"])


def test_a_slow_tokenizer_is_refused():
    with pytest.raises(TypeError, match="fast tokenizer"):
        TextEncoder.from_pretrained_tokenizer(object())
