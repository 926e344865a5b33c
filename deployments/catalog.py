"""What the warm pool serves, by model and variant: the `/-/models` listing and the 404's hint.

Read once per replica from each artifact's small JSON files (`variant.json`, `config.json`), never
from the weights: listing twenty models costs milliseconds and no memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loading.artifact import read_variant_info

__all__ = ["describe_models", "routes_of"]


def _labels(model_dir: Path) -> list[str]:
    config = json.loads((model_dir / "config.json").read_text())
    id2label = config.get("id2label") or {}
    return [id2label[k] for k in sorted(id2label, key=int)]


def _variant_entry(model: str, variant: str, model_dir: Path) -> dict[str, Any]:
    info = read_variant_info(model_dir)
    accuracy = info.accuracy or {}
    return {
        "route": f"/{model}/{variant}/classify",  # its own app when one is deployed, else the pool
        "pool_route": f"/pool/{model}/{variant}/classify",  # always the warm pool
        "labels": _labels(model_dir),
        "method": info.method,
        "parent": info.parent,
        "size_bytes": info.size_bytes,
        "num_parameters": info.num_parameters,
        # The recorded test accuracy (`python -m training.build`); None when never measured.
        "accuracy": accuracy.get("accuracy"),
        "accuracy_split": accuracy.get("split"),
        "agreement_with_parent": accuracy.get("agreement"),
    }


def describe_models(models: dict[str, dict[str, Path]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{model: {variant: labels, size, recorded accuracy, routes}} for `models` (model -> variant -> dir)."""
    return {
        model: {variant: _variant_entry(model, variant, d) for variant, d in sorted(variants.items())}
        for model, variants in sorted(models.items())
    }


def routes_of(models: dict[str, dict[str, Any]]) -> list[str]:
    """Every classify route, for a 404 that tells a lost caller where to go."""
    return [f"/{m}/{v}/classify" for m in sorted(models) for v in sorted(models[m])]
