"""The pieces every training loop here shares: token batches, optimizer, schedule, predictions, scores.

Batches are padded to their longest text, not to `max_length`, which keeps short texts cheap;
predictions run in length-sorted batches for the same reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from loading.predict import Predictor

__all__ = [
    "collate",
    "cpu_count",
    "encode",
    "optimizer_for",
    "predict_labels",
    "predict_logits",
    "scores",
    "warmup_then_linear",
]


def cpu_count() -> int:
    """CPUs this process may run on (a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def encode(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


def collate(seqs: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence in this batch, not to max_length."""
    longest = max(map(len, seqs))
    input_ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(seqs), longest), dtype=torch.long)  # (B, T)
    for row, seq in enumerate(seqs):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def optimizer_for(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with decay on weight matrices only (not biases or LayerNorm)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=lr,
    )


def warmup_then_linear(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The lr factor at each step: rising over `warmup_steps`, then falling linearly to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def predict_logits(
    model: nn.Module,
    tokenizer: Any,
    texts: list[str],
    max_length: int = 128,
    batch_size: int = 64,
    desc: str = "test",
) -> torch.Tensor:
    """(N, K) logits of `model` for `texts`, in text order."""
    encoded = encode(tokenizer, texts, max_length)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out: list[torch.Tensor | None] = [None] * len(encoded)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
            idx = order[start : start + batch_size]
            logits = model(**collate([encoded[i] for i in idx], tokenizer.pad_token_id)).logits  # (B, K)
            for i, row in zip(idx, logits.float(), strict=True):
                out[i] = row
    model.train(was_training)
    return torch.stack(out)  # type: ignore[arg-type]


def predict_labels(
    model: nn.Module, tokenizer: Any, texts: list[str], max_length: int | None = None, batch_size: int = 64
) -> list[int]:
    """The predicted class id of each text, through the path replicas serve (`loading.predict.Predictor`).

    `max_length` None: texts cut at the model's maximum, as served (training sees `max_length` 128).
    """
    was_training = model.training
    probabilities, _ = Predictor(model, tokenizer, max_length).probabilities(texts, batch_size)
    model.train(was_training)
    return probabilities.argmax(dim=-1).tolist()


def scores(
    label_ids: Sequence[int], predicted: Sequence[int], reference: Sequence[int] | None = None
) -> dict[str, float]:
    """Accuracy and macro F1 against the labels; with `reference` predictions, also the share agreeing."""
    from sklearn.metrics import accuracy_score, f1_score  # imports scipy: seconds `--if-missing` skips

    out = {
        "accuracy": float(accuracy_score(label_ids, predicted)),
        "macro_f1": float(f1_score(label_ids, predicted, average="macro", zero_division=0)),
    }
    if reference is not None:
        out["agreement"] = float(accuracy_score(reference, predicted))
    return out
