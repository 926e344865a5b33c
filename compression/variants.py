"""Variant names (the routes and artifact names) and the compression chains they stand for.

Grammar: `base`, `quant`, or `pruned[-random|-structured][-quant]-<N>[-global]`, where N is the
integer percent of encoder Linear weights zeroed (0-99, no leading zeros), the method defaults to L1
unstructured, `-quant` means dynamic int8 after pruning, and `-global` uses one threshold across
layers (not for structured). Examples: `pruned-75`, `pruned-quant-70`, `pruned-random-quant-50-global`.
`parse_variant` and `variant_name` are inverses on these names.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from compression.prune import (
    L1UnstructuredPruneConfig,
    PruneScope,
    RandomStructuredPruneConfig,
    RandomUnstructuredPruneConfig,
    _PruneConfig,
)
from compression.quantize import Int8DynamicQuantConfig
from compression.registry import compress_chain

__all__ = ["build_variant", "parse_variant", "variant_name"]

_PATTERN = re.compile(
    r"pruned(?:-(?P<method>random|structured))?(?P<quant>-quant)?-(?P<pct>\d+)(?P<scope>-global)?"
)
_METHODS: dict[str | None, type[_PruneConfig]] = {
    None: L1UnstructuredPruneConfig,
    "random": RandomUnstructuredPruneConfig,
    "structured": RandomStructuredPruneConfig,
}
_EXPECTED = (
    "expected base, quant, pruned-<N>, pruned-quant-<N>, pruned-random-<N>, pruned-random-quant-<N>, "
    "pruned-structured-<N> or pruned-structured-quant-<N> (N an integer percent 0-99), "
    "optionally ending in -global (not for structured)"
)


def parse_variant(name: str) -> list[Any]:
    """The ordered config chain (prune, then quantize) a variant name stands for; [] for `base`."""
    if not isinstance(name, str):
        raise TypeError(f"variant name must be a str, got {type(name).__name__}")
    if name == "base":
        return []
    if name == "quant":
        return [Int8DynamicQuantConfig()]
    match = _PATTERN.fullmatch(name)
    pct = match["pct"] if match else ""
    if not match or len(pct) > 2 or (len(pct) == 2 and pct[0] == "0"):
        raise ValueError(f"unknown variant {name!r}: {_EXPECTED}")
    scope = PruneScope.GLOBAL if match["scope"] else PruneScope.LAYER
    try:
        prune_cfg = _METHODS[match["method"]](amount=int(pct) / 100, scope=scope)
    except ValueError as err:
        raise ValueError(f"unknown variant {name!r}: {err}") from err
    return [prune_cfg, Int8DynamicQuantConfig()] if match["quant"] else [prune_cfg]


def variant_name(configs: list[Any]) -> str:
    """The variant name of a config chain built with default seeds and options (inverse of parse_variant)."""
    configs = list(configs)
    candidate = _candidate_name(configs)
    if candidate is None or parse_variant(candidate) != configs:
        raise ValueError(
            f"configs must be a chain that a variant name describes ({_EXPECTED}), got {configs!r}"
        )
    return candidate


def _candidate_name(configs: list[Any]) -> str | None:
    if not configs:
        return "base"
    if len(configs) == 1 and isinstance(configs[0], Int8DynamicQuantConfig):
        return "quant"
    methods = {cls: method for method, cls in _METHODS.items()}
    first = configs[0]
    if type(first) not in methods or len(configs) > 2:
        return None
    method = methods[type(first)]
    parts = ["pruned", *([method] if method else []), *(["quant"] if len(configs) == 2 else [])]
    parts.append(str(round(first.amount * 100)))
    if first.scope is PruneScope.GLOBAL:
        parts.append("global")
    return "-".join(parts)


def build_variant(model: nn.Module, name: str) -> nn.Module:
    """A compressed copy of `model` for the variant `name`; `model` is left unchanged."""
    return compress_chain(model, parse_variant(name))
