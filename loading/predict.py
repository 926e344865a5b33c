"""Turn texts into label probabilities with a loaded classifier: the one inference path.

Serving and evaluation both call `Predictor`, so a served prediction and an evaluated one are the
same computation. Texts are sorted by length and cut into forward passes of at most `batch_size`
texts, each padded to its longest text (not to the model maximum); a pass also ends where padding
would exceed `max_padding` of its real tokens, so a short text never pays for a long one's length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from loading.encoder import TextEncoder

__all__ = ["Prediction", "Predictor", "plan_passes"]

MAX_PADDING = 0.1  # padded tokens allowed per real token in one forward pass (docs/BENCHMARKS.md)


def plan_passes(
    lengths: list[int],
    batch_size: int,
    max_padding: float = MAX_PADDING,
    max_batch_tokens: int | None = None,
) -> list[list[int]]:
    """Indices of `lengths` grouped into forward passes: sorted by length, at most `batch_size` each,
    padding (to the pass's longest) at most `max_padding` x the pass's real tokens, and at most
    `max_batch_tokens` padded tokens per pass (a text longer than that alone in its pass).

    Attention costs grow with the padded length, so a batch of mixed lengths padded to its longest
    wastes compute on padding; several shorter passes cost a little per-pass overhead instead. The
    token bound caps how long one pass holds the replica (docs/RELIABILITY.md, "Heavy requests").
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    passes: list[list[int]] = []
    tokens = 0
    budget = max_batch_tokens if max_batch_tokens is not None else float("inf")
    for i in order:
        current = passes[-1] if passes else None
        if (
            current is not None
            and len(current) < batch_size
            and (len(current) + 1) * lengths[i] <= (1 + max_padding) * (tokens + lengths[i])
            and (len(current) + 1) * lengths[i] <= budget  # sorted: lengths[i] is the pass's longest
        ):
            current.append(i)
            tokens += lengths[i]
        else:
            passes.append([i])
            tokens = lengths[i]
    return passes


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

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        max_tokens: int | None = None,
        max_padding: float = MAX_PADDING,
    ) -> None:
        """`tokenizer`: a `TextEncoder` (what `attach` gives) or a transformers fast tokenizer.
        `max_padding`: see `plan_passes`; `float("inf")` pads each batch of `batch_size` as one pass."""
        if max_padding < 0:
            raise ValueError(f"max_padding must be >= 0, got {max_padding}")
        self.max_padding = max_padding
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

    def encode(self, texts: list[str]) -> tuple[list[Any], list[bool]]:
        """Each text's token encoding (cut to `max_tokens`) and which were cut: tokenize once, then
        count a request's tokens and run it in passes from the same encodings."""
        return self.encoder.encode(texts, self.max_tokens)

    def forward(self, encodings: list[Any]) -> torch.Tensor:
        """Class probabilities `(B, num_labels)` of one forward pass over `encodings`."""
        batch = self.encoder.pad(encodings)  # (B, T), T = longest in the pass
        with torch.inference_mode():
            out = self.model(**batch)  # our BERT's ClassifierOutput, or a transformers output
        logits = out if isinstance(out, torch.Tensor) else out.logits  # (B, num_labels)
        return torch.softmax(logits.float(), dim=-1)

    def probabilities(
        self, texts: list[str], batch_size: int = 32, max_batch_tokens: int | None = None
    ) -> tuple[torch.Tensor, list[bool]]:
        """Class probabilities `(N, num_labels)` in input order, and which texts were truncated."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        encoded, truncated = self.encode(texts)
        lengths = [len(e.ids) for e in encoded]
        probs = torch.empty(len(texts), len(self.labels))
        for idx in plan_passes(lengths, batch_size, self.max_padding, max_batch_tokens):
            probs[idx] = self.forward([encoded[i] for i in idx])
        return probs, truncated

    def predictions(self, probs: torch.Tensor, truncated: list[bool]) -> list[Prediction]:
        """`Prediction`s from rows of class probabilities and the texts' truncation flags."""
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

    def predict(self, texts: list[str], batch_size: int = 32) -> list[Prediction]:
        """Top label and probabilities for each text, in input order."""
        if not texts:
            return []
        return self.predictions(*self.probabilities(texts, batch_size))
