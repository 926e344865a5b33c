"""Texts to padded token-id tensors with a bare Rust tokenizer: what a replica keeps to tokenize.

A transformers fast tokenizer wraps a `tokenizers.Tokenizer` in Python objects of its own; for the
MiniLM/BERT vocabulary the wrapper and its copies cost ~10 MB per process against ~6.5 MB for the
bare tokenizer (measured with USS, see docs/COMPRESSION.md). Every replica holds one, and for the
smallest variants that difference decides whether an added replica stays under a quarter of the
variant's weight bytes. `TextEncoder` keeps only the bare tokenizer and the few facts the model
needs (pad id, which inputs it takes).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import tokenizers
import torch

__all__ = ["TextEncoder"]

_INPUTS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


@dataclass(frozen=True)
class TextEncoder:
    """A bare `tokenizers.Tokenizer` plus its pad id and the model inputs it feeds."""

    tokenizer: tokenizers.Tokenizer  # special tokens added by its post-processor; no padding set
    pad_id: int
    input_names: tuple[str, ...]  # e.g. ("input_ids", "token_type_ids", "attention_mask")

    @classmethod
    def from_pretrained_tokenizer(cls, tokenizer: Any) -> TextEncoder:
        """Take the Rust tokenizer out of a transformers fast tokenizer (a copy: it is left alone)."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if not isinstance(backend, tokenizers.Tokenizer):
            raise TypeError(
                f"tokenizer must be a transformers fast tokenizer, got {type(tokenizer).__name__}"
            )
        unknown = [n for n in tokenizer.model_input_names if n not in _INPUTS]
        if unknown:
            raise ValueError(f"tokenizer inputs must be among {sorted(_INPUTS)}, got {unknown}")
        bare = copy.deepcopy(backend)
        bare.no_padding()
        bare.no_truncation()
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(bare, int(pad_id), tuple(tokenizer.model_input_names))

    def encode(self, texts: Sequence[str], max_tokens: int) -> tuple[list[tokenizers.Encoding], list[bool]]:
        """Each text's encoding cut to `max_tokens` (special tokens included), and which were cut."""
        # The tokenizer object is shared by every user in the process, so its truncation is set per
        # call rather than once; all callers of a process run on one thread.
        self.tokenizer.enable_truncation(max_tokens)
        encodings = self.tokenizer.encode_batch(list(texts))
        return encodings, [bool(e.overflowing) for e in encodings]

    def pad(self, encodings: Sequence[tokenizers.Encoding]) -> dict[str, torch.Tensor]:
        """The model inputs of `encodings`, right-padded to the longest: each (B, T)."""
        width = max(len(e.ids) for e in encodings)
        batch = {}
        for name in self.input_names:
            fill = self.pad_id if name == "input_ids" else 0
            rows = [getattr(e, _INPUTS[name]) for e in encodings]
            batch[name] = torch.tensor([row + [fill] * (width - len(row)) for row in rows])
        return batch

    def __call__(self, texts: Sequence[str], max_tokens: int = 512) -> dict[str, torch.Tensor]:
        """Model inputs for `texts`, cut to `max_tokens` and padded to the longest."""
        return self.pad(self.encode(texts, max_tokens)[0])
