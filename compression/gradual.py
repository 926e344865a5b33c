"""Gradual magnitude pruning (Zhu & Gupta, 2017): sparsity raised along a cubic schedule while training.

One-shot L1 pruning of the default model collapses from ~70% (docs/EVALUATION.md); pruning a little
at a time while the model keeps training lets the remaining weights take over. The training loop
(training/recover.py) calls `prune_to_` at the scheduled steps and `apply_masks_` after every
optimizer step, so pruned weights stay zero however the optimizer moves them.
"""

from __future__ import annotations

import torch
from torch import nn

from compression.prune import _is_target
from compression.registry import _find_modules

__all__ = ["MagnitudePruner", "cubic_sparsity"]


def cubic_sparsity(step: int, final: float, start: int, end: int) -> float:
    """Sparsity at `step`: 0 before `start`, `final` from `end`, rising as 1 - (1 - progress)^3 between.

    Fast at first, while there are many small weights to spare, slow near the target (Zhu & Gupta).
    """
    if not 0 <= start < end:
        raise ValueError(f"start and end must satisfy 0 <= start < end, got {start}, {end}")
    progress = min(1.0, max(0.0, (step - start) / (end - start)))
    return final * (1.0 - (1.0 - progress) ** 3)


class MagnitudePruner:
    """Per-layer L1 masks over the encoder's Linear weights (the study's layer scope)."""

    def __init__(self, model: nn.Module) -> None:
        found = _find_modules(model, lambda m, fqn: _is_target(m, fqn, include_classifier=False))
        self.layers = [m for _, m in found if isinstance(m, nn.Linear)]
        if not self.layers:
            raise ValueError("model must contain nn.Linear layers inside an 'encoder' module, got none")
        self.masks = [torch.ones_like(m.weight, dtype=torch.bool) for m in self.layers]
        self.sparsity = 0.0

    def accumulate_(self) -> None:
        """Nothing to gather between steps: magnitude is read from the weights themselves."""

    @torch.no_grad()
    def prune_to_(self, sparsity: float) -> None:
        """Zero the smallest-magnitude weights of each layer until `sparsity` of it is zero.

        Weights already pruned are zero, so they stay among the smallest: masks only grow.
        """
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        for i, layer in enumerate(self.layers):
            k = int(round(sparsity * layer.weight.numel()))
            if k == 0:
                continue
            magnitude = layer.weight.abs().masked_fill(~self.masks[i], -1.0).flatten()
            mask = torch.ones_like(magnitude, dtype=torch.bool)
            mask[torch.topk(magnitude, k, largest=False).indices] = False
            self.masks[i] = mask.view_as(layer.weight)
        self.sparsity = sparsity
        self.apply_masks_()

    @torch.no_grad()
    def apply_masks_(self) -> None:
        for layer, mask in zip(self.layers, self.masks, strict=True):
            layer.weight.masked_fill_(~mask, 0.0)
