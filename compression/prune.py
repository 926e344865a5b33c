"""Unstructured and structured pruning of the encoder's Linear layers with `torch.nn.utils.prune`.

Only `nn.Linear` layers inside the encoder are pruned (the study's "dense layers"): embeddings,
LayerNorm, the pooler and the `classifier` head keep every weight unless `include_classifier=True`,
which adds the head. Pruning is made permanent (`prune.remove`), so the result has plain `weight`
parameters with zeros in them and no `weight_orig` / `weight_mask` or hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np
import torch
import torch.ao.nn.quantized.dynamic as nnqd
from torch import nn
from torch.nn.utils import prune

from compression.quantize import Int8Embedding, Int8Linear, _quiet_quantization_warnings
from compression.registry import _find_modules, register

__all__ = [
    "L1UnstructuredPruneConfig",
    "PruneScope",
    "RandomStructuredPruneConfig",
    "RandomUnstructuredPruneConfig",
    "sparsity_report",
]

_MAX_AMOUNT = 0.99  # at 1.0 a layer outputs only its bias; the study's sweep stopped at 99%


class PruneScope(StrEnum):  # StrEnum is a (str, Enum) that also prints as its value
    """Where the pruning threshold is computed."""

    LAYER = "layer"  # every layer loses `amount` of its own weights
    GLOBAL = "global"  # one magnitude threshold across all pruned layers; per-layer shares differ


@dataclass(frozen=True)
class _PruneConfig:
    amount: float = 0.5  # share of weights zeroed: per layer, or over all pruned layers if global
    scope: PruneScope = PruneScope.LAYER  # per-layer shares are what the study measured
    seed: int = 0  # seeds random choices so a variant name always means the same weights
    include_classifier: bool = False  # the 2-way head is tiny and sensitive: leave it dense by default

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int | float):
            raise TypeError(f"amount must be a float, got {type(self.amount).__name__}")
        if not 0.0 <= self.amount <= _MAX_AMOUNT:
            raise ValueError(f"amount must be in [0, {_MAX_AMOUNT}], got {self.amount}")
        try:
            scope = PruneScope(self.scope)
        except ValueError:
            choices = ", ".join(repr(s.value) for s in PruneScope)
            raise ValueError(f"scope must be one of {choices}, got {self.scope!r}") from None
        object.__setattr__(self, "scope", scope)  # accept "global" from YAML / CLI
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__}")
        if not isinstance(self.include_classifier, bool):
            raise TypeError(
                f"include_classifier must be a bool, got {type(self.include_classifier).__name__}"
            )


@dataclass(frozen=True)
class L1UnstructuredPruneConfig(_PruneConfig):
    """Zero the smallest-magnitude weights (held accuracy best in the study: 70% -> 87.35%)."""

    NAME: ClassVar[str] = "l1"


@dataclass(frozen=True)
class RandomUnstructuredPruneConfig(_PruneConfig):
    """Zero weights chosen uniformly at random (a baseline for L1)."""

    NAME: ClassVar[str] = "random"


@dataclass(frozen=True)
class RandomStructuredPruneConfig(_PruneConfig):
    """Zero whole output rows (neurons) chosen at random; the weight shape stays the same."""

    NAME: ClassVar[str] = "structured"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scope is not PruneScope.LAYER:
            raise ValueError(f"scope must be 'layer' for structured pruning, got {self.scope.value!r}")


def _is_target(module: nn.Module, fqn: str, include_classifier: bool) -> bool:
    """Linear-like layers inside an encoder, plus the `classifier` head when asked for."""
    if not isinstance(module, nn.Linear | Int8Linear | nnqd.Linear):
        return False
    parts = fqn.split(".")
    return "encoder" in parts or (include_classifier and "classifier" in parts)


def _targets(model: nn.Module, cfg: _PruneConfig) -> list[tuple[str, nn.Linear]]:
    found = _find_modules(model, lambda m, fqn: _is_target(m, fqn, cfg.include_classifier))
    not_float = [fqn for fqn, m in found if not isinstance(m, nn.Linear)]
    if not_float:
        raise TypeError(
            f"model must be pruned before it is quantized, got int8 layers such as {not_float[0]!r}"
        )
    if not found:
        raise ValueError("model must contain nn.Linear layers inside an 'encoder' module, got none")
    return found


def _make_permanent_(targets: list[tuple[str, nn.Linear]]) -> None:
    for _, module in targets:
        prune.remove(module, "weight")
        with torch.no_grad():
            # weight_orig * mask leaves -0.0 where a negative weight was cut; make every zero +0.0 so
            # the same zeros come back bit for bit after sparse storage.
            module.weight.masked_fill_(module.weight == 0, 0.0)


def _mask_seed(seed: int) -> int:
    """A seed for random pruning masks, derived from `seed` but not equal to it.

    A model initialised with `torch.manual_seed(seed)` and pruned with the same seed would get masks
    drawn from the very numbers that drew its initial weights: measured on the MNIST network, the
    "random" mask then cut exactly the weights that started largest (correlation 1.0).
    """
    return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0] >> 1)  # < 2**31


def _prune_unstructured(
    model: nn.Module, cfg: _PruneConfig, method: type[prune.BasePruningMethod]
) -> nn.Module:
    targets = _targets(model, cfg)
    amount = float(cfg.amount)  # an int 0 would mean "0 weights" to torch; keep it a share
    # fork_rng: seed the random methods without disturbing the caller's global generator.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_mask_seed(cfg.seed))
        if cfg.scope is PruneScope.GLOBAL:
            params = [(module, "weight") for _, module in targets]
            prune.global_unstructured(params, pruning_method=method, amount=amount)
        else:
            for _, module in targets:
                method.apply(module, "weight", amount=amount)
    _make_permanent_(targets)
    return model


@register(L1UnstructuredPruneConfig)
def _l1_unstructured(model: nn.Module, cfg: L1UnstructuredPruneConfig) -> nn.Module:
    return _prune_unstructured(model, cfg, prune.L1Unstructured)


@register(RandomUnstructuredPruneConfig)
def _random_unstructured(model: nn.Module, cfg: RandomUnstructuredPruneConfig) -> nn.Module:
    return _prune_unstructured(model, cfg, prune.RandomUnstructured)


@register(RandomStructuredPruneConfig)
def _random_structured(model: nn.Module, cfg: RandomStructuredPruneConfig) -> nn.Module:
    targets = _targets(model, cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_mask_seed(cfg.seed))
        for _, module in targets:
            prune.random_structured(module, "weight", amount=float(cfg.amount), dim=0)
    _make_permanent_(targets)
    return model


def _weight_of(module: nn.Module) -> torch.Tensor:
    """The weight of a float, Int8Linear or dynamic-quantized Linear (int8 values for the latter two)."""
    if isinstance(module, Int8Linear):
        return module.weight_int8
    if isinstance(module, nnqd.Linear):
        with _quiet_quantization_warnings():
            return module.weight().int_repr()
    return module.weight.detach()


def _count(tensor: torch.Tensor) -> dict[str, Any]:
    numel, nonzero = tensor.numel(), int(torch.count_nonzero(tensor))
    return {"numel": numel, "nonzero": nonzero, "sparsity": 1.0 - nonzero / numel if numel else 0.0}


def sparsity_report(model: nn.Module, include_classifier: bool = False) -> dict[str, Any]:
    """Nonzero counts and sparsity of the prunable Linear layers, and of every weight in the model.

    Works on float, Int8Linear and dynamic-quantized models. "dense" covers the layers pruning
    targets (encoder Linear layers, plus the head if `include_classifier`); "total" covers every
    parameter, the weights and biases of int8 Linear layers and 8-bit embedding tables (not scales
    or buffers such as position ids).

    Returns:
        {"layers": {fqn: {"numel", "nonzero", "sparsity"}}, "dense": {...}, "total": {...}}
    """
    layers = {
        fqn: _count(_weight_of(module))
        for fqn, module in _find_modules(model, lambda m, fqn: _is_target(m, fqn, include_classifier))
    }
    tensors = [p.detach() for p in model.parameters()]
    for _, module in _find_modules(model, lambda m, _: isinstance(m, Int8Linear | nnqd.Linear)):
        tensors.append(_weight_of(module))
        bias = module.bias if isinstance(module, Int8Linear) else module.bias()
        if bias is not None:
            tensors.append(bias.detach())
    tensors += [
        m.dequantized_weight() for _, m in _find_modules(model, lambda m, _: isinstance(m, Int8Embedding))
    ]
    dense_numel = sum(v["numel"] for v in layers.values())
    dense_nonzero = sum(v["nonzero"] for v in layers.values())
    total_numel = sum(t.numel() for t in tensors)
    total_nonzero = sum(int(torch.count_nonzero(t)) for t in tensors)
    return {
        "layers": layers,
        "dense": {
            "numel": dense_numel,
            "nonzero": dense_nonzero,
            "sparsity": 1.0 - dense_nonzero / dense_numel if dense_numel else 0.0,
        },
        "total": {
            "numel": total_numel,
            "nonzero": total_nonzero,
            "sparsity": 1.0 - total_nonzero / total_numel if total_numel else 0.0,
        },
    }
