"""Turn texts into label probabilities with a loaded classifier: the one inference path.

Serving and evaluation both call `Predictor`, so a served prediction and an evaluated one are the
same computation. Batches are padded to their longest text, not to the model maximum, and texts are
sorted by length first so that padding stays small when lengths vary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from loading.encoder import TextEncoder

__all__ = ["Prediction", "Predictor"]


@dataclass(frozen=True)
class Prediction:
    """One text's result: the top label, its probability, and every label's probability."""

    label: str
    score: float
    probabilities: dict[str, float]
    truncated: bool  # the text had more tokens than the model takes; the tail was ignored

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": self.score,
            "probabilities": self.probabilities,
            "truncated": self.truncated,
        }


class Predictor:
    """Batched, inference-mode text classification with dynamic padding."""

    def __init__(self, model: nn.Module, tokenizer: Any, max_tokens: int | None = None) -> None:
        """`tokenizer`: a `TextEncoder` (what `attach` gives) or a transformers fast tokenizer."""
        self.model = model.eval()
        self.encoder = (
            tokenizer
            if isinstance(tokenizer, TextEncoder)
            else TextEncoder.from_pretrained_tokenizer(tokenizer)
        )
        config = model.config
        model_max = int(getattr(config, "max_position_embeddings", 512))
        if max_tokens is not None and max_tokens < 8:
            raise ValueError(f"max_tokens must be >= 8, got {max_tokens}")
        self.max_tokens = min(model_max, max_tokens or model_max)
        self.labels = [str(config.id2label[i]) for i in range(config.num_labels)]

    def probabilities(self, texts: list[str], batch_size: int = 32) -> tuple[torch.Tensor, list[bool]]:
        """Class probabilities `(N, num_labels)` in input order, and which texts were truncated."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        encoded, truncated = self.encoder.encode(texts, self.max_tokens)
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i].ids))
        probs = torch.empty(len(texts), len(self.labels))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = self.encoder.pad([encoded[i] for i in idx])  # (B, T), T = longest in the batch
                logits = self.model(**batch).logits  # (B, num_labels)
                probs[idx] = torch.softmax(logits.float(), dim=-1)
        return probs, truncated

    def predict(self, texts: list[str], batch_size: int = 32) -> list[Prediction]:
        """Top label and probabilities for each text, in input order."""
        if not texts:
            return []
        probs, truncated = self.probabilities(texts, batch_size)
        results = []
        for row, cut in zip(probs.tolist(), truncated, strict=True):
            best = max(range(len(row)), key=row.__getitem__)
            results.append(
                Prediction(
                    label=self.labels[best],
                    score=row[best],
                    probabilities=dict(zip(self.labels, row, strict=True)),
                    truncated=cut,
                )
            )
        return results
