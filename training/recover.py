"""Compressed variants that keep their accuracy: prune while fine-tuning, distilled from the base model.

One-shot L1 pruning of the default model collapses from ~70% (docs/EVALUATION.md). Here the student
starts as a copy of the base model and keeps training on the base's training rows while it is
pruned a little at a time along a cubic schedule (Zhu & Gupta's gradual magnitude pruning); its
loss mixes the labels with the base model's soft predictions (knowledge distillation, Hinton et
al.), which carry more than the label per text. `training.build` runs this for these variant names:

- `pruned-kd-<N>`: N% of every encoder Linear layer's weights zeroed (unstructured, L1).
- `pruned-kd-structured-<N>`: N% of every layer's attention heads and feed-forward neurons removed;
  the matrices are rebuilt smaller, which is what makes a CPU faster. Heads and neurons go by
  first-order importance (compression/structured.py).
- `...-<K>layers` (structured only): the student keeps the base's bottom K encoder layers.
- `-quant` after `kd` / `kd-structured`: dynamic int8 on top, as `quant` (e.g. `pruned-kd-quant-80`).

The base's own validation rows (carved from its training file) pick hyperparameters; the test rows
only gate and report (training/build.py).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from compression import Int8DynamicQuantConfig, compress
from compression.gradual import MagnitudePruner, cubic_sparsity
from compression.structured import StructuredPruner, keep_layers_
from loading.artifact import VariantInfo, load_tokenizer, read_variant_info
from loading.build import save_variant
from loading.checkpoint import load_model
from training.loop import (
    collate,
    encode,
    optimizer_for,
    predict_labels,
    predict_logits,
    scores,
    warmup_then_linear,
)
from training.splits import Splits

__all__ = ["RecoveryConfig", "RecoverySpec", "recover", "save_recovered"]

logger = logging.getLogger(__name__)

_PATTERN = re.compile(
    r"pruned-kd(?P<structured>-structured)?(?P<quant>-quant)?-(?P<pct>[1-9]?\d)(?:-(?P<layers>[1-9]\d?)layers)?"
)


@dataclass(frozen=True)
class RecoverySpec:
    """What a recovery variant name asks for."""

    name: str
    amount: float  # share of weights (unstructured) or of heads and neurons per layer (structured)
    structured: bool
    quant: bool
    layers: int | None = None  # encoder layers kept (structured only); None = all

    @property
    def student(self) -> tuple[float, bool, int | None]:
        """What the trained float model depends on: names that differ only in `-quant` share one."""
        return (self.amount, self.structured, self.layers)

    @classmethod
    def from_name(cls, name: str) -> RecoverySpec | None:
        """The spec of a `pruned-kd...` name; None for other names; ValueError for a malformed one."""
        if not name.startswith("pruned-kd"):
            return None
        match = _PATTERN.fullmatch(name)
        if not match or (match["layers"] and not match["structured"]):
            raise ValueError(
                f"unknown variant {name!r}: expected pruned-kd[-structured][-quant]-<N> (N a percent 0-99), "
                "structured ones optionally ending in -<K>layers"
            )
        layers = int(match["layers"]) if match["layers"] else None
        return cls(name, int(match["pct"]) / 100, bool(match["structured"]), bool(match["quant"]), layers)


@dataclass(frozen=True)
class RecoveryConfig:
    """How the student trains; recorded in `variant.json`. Defaults chosen on the validation rows
    (docs/COMPRESSION.md, "Pruning with recovery")."""

    epochs: int = 3  # one to prune, the rest to recover at the target
    batch_size: int = 16
    lr: float = 5e-5
    max_length: int = 128  # tokens per text, as the base was trained
    temperature: float = 2.0  # softens the teacher's probabilities so the runner-up class carries signal
    kd_weight: float = 0.5  # share of the loss from the teacher's soft targets; the rest from labels
    prune_start: float = 0.05  # share of steps before the first cut (structured: importance gathers)
    prune_end: float = 0.6  # the target is reached here; the remaining steps recover at it
    prune_every: int = 10  # steps between cuts
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "prune_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.prune_start < self.prune_end <= 1:
            raise ValueError(f"prune_start and prune_end must satisfy 0 <= start < end <= 1, got {self}")
        if not 0 <= self.kd_weight <= 1 or self.temperature <= 0 or self.lr <= 0:
            raise ValueError("kd_weight must be in [0, 1], temperature and lr > 0")


def _distillation_loss(
    logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor, cfg: RecoveryConfig
) -> torch.Tensor:
    """(1 - w) x cross-entropy with the labels + w x T^2 x KL(teacher || student) at temperature T."""
    hard = F.cross_entropy(logits, labels)
    t = cfg.temperature
    soft = F.kl_div(
        F.log_softmax(logits / t, -1), F.log_softmax(teacher / t, -1), reduction="batchmean", log_target=True
    )
    return (1 - cfg.kd_weight) * hard + cfg.kd_weight * t * t * soft


def _student(student: nn.Module, spec: RecoverySpec) -> tuple[nn.Module, MagnitudePruner | StructuredPruner]:
    for p in student.parameters():
        p.requires_grad_(True)
    if spec.structured:
        if spec.layers:
            keep_layers_(student, spec.layers)
        head_size = student.config.hidden_size // student.config.num_attention_heads
        return student, StructuredPruner(student, head_size)
    return student, MagnitudePruner(student)


def recover(
    base_dir: str | Path, spec: RecoverySpec, splits: Splits, cfg: RecoveryConfig = RecoveryConfig()
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the pruned float student `spec` asks for; returns it with what to record about it.

    `-quant` in the name is not applied here: one student serves both names (`save_recovered`).
    """
    base_dir = Path(base_dir)
    tokenizer = load_tokenizer(base_dir)
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    teacher = load_model(base_dir)
    texts = splits.train.texts
    teacher_logits = predict_logits(teacher, tokenizer, texts, cfg.max_length, desc="teacher")  # (N, K)
    student, pruner = _student(teacher, spec)  # the base itself becomes the student: its logits are kept
    del teacher
    encoded = encode(tokenizer, texts, cfg.max_length)
    labels = torch.tensor(splits.ids(splits.train), dtype=torch.long)
    total = cfg.epochs * math.ceil(len(encoded) / cfg.batch_size)
    start, end = (
        int(cfg.prune_start * total),
        max(int(cfg.prune_end * total), int(cfg.prune_start * total) + 1),
    )
    optimizer = optimizer_for(student, cfg.lr, cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_then_linear(total, int(cfg.warmup_fraction * total))
    )
    order_rng = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    step = 0
    student.train()
    with tqdm(total=total, desc=spec.name, unit="step") as bar:
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(encoded), generator=order_rng).tolist()
            for first in range(0, len(order), cfg.batch_size):
                if start <= step <= end and (step - start) % cfg.prune_every == 0:
                    pruner.prune_to_(cubic_sparsity(step, spec.amount, start, end))
                idx = order[first : first + cfg.batch_size]
                logits = student(**collate([encoded[i] for i in idx], tokenizer.pad_token_id)).logits
                loss = _distillation_loss(logits, labels[idx], teacher_logits[idx], cfg)
                loss.backward()
                pruner.accumulate_()
                torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.max_grad_norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                pruner.apply_masks_()
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
            pruner.prune_to_(cubic_sparsity(step, spec.amount, start, end))
            history.append({"epoch": epoch + 1, **_validate(student, tokenizer, splits, cfg)})
            logger.info("%s epoch %d: %s", spec.name, epoch + 1, history[-1])
    pruner.prune_to_(spec.amount)
    student = _finish(student, pruner, spec)
    parameters = {
        "recovery": {
            "amount": spec.amount,
            "structured": spec.structured,
            "layers": spec.layers,
            **asdict(cfg),
        },
        "validation": history,
        "train_rows": len(texts),
        "train_seconds": round(time.perf_counter() - started, 1),
        "steps": total,
    }
    return student, parameters


def save_recovered(
    base_dir: str | Path, student: nn.Module, parameters: dict[str, Any], name: str, out: str | Path
) -> VariantInfo:
    """Write the trained `student` as variant `name` (int8 on top if the name says `-quant`)."""
    base_dir = Path(base_dir)
    spec = RecoverySpec.from_name(name)
    if spec is None:
        raise ValueError(f"name must be a recovery variant name, got {name!r}")
    return save_variant(
        compress(student, Int8DynamicQuantConfig()) if spec.quant else student,
        load_tokenizer(base_dir),
        out,
        name=name,
        parent=read_variant_info(base_dir),
        parameters=parameters,
        quantized=spec.quant,
    )


def _validate(student: nn.Module, tokenizer: Any, splits: Splits, cfg: RecoveryConfig) -> dict[str, float]:
    if not len(splits.validation):
        return {}
    predicted = predict_labels(student, tokenizer, splits.validation.texts, cfg.max_length)
    return scores(splits.ids(splits.validation), predicted)


def _finish(student: nn.Module, pruner: MagnitudePruner | StructuredPruner, spec: RecoverySpec) -> nn.Module:
    """The trained student in serving form: pruned structures cut out, its config saying so, frozen."""
    if isinstance(pruner, StructuredPruner):
        heads, widths = pruner.shrink_(student)
        student.config = dataclasses.replace(
            student.config, num_hidden_layers=len(heads), layer_heads=heads, layer_intermediate_sizes=widths
        )
    for p in student.parameters():
        p.requires_grad_(False)
    return student.eval()
