"""Which variants each sweep phase holds, and building them into the sweep's cache.

One-shot names (`pruned-75`, `pruned-quant-75`, ...) come from `loading.build.build_variants`, the
study's protocol; recovery names (`pruned-kd-80`, `pruned-kd-structured-quant-50`, ...) are trained
from the base by `training.build.build`, which also records each one's accuracy in `variant.json`.
A cached variant is reused when it was built from the same base weights (and, for a recovery one,
with the same recovery settings); otherwise it is rebuilt.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from compression import parse_variant
from loading.artifact import ArtifactError, read_variant_info, resolve_model_dir, verify_artifact
from loading.build import build_variants
from training.build import build
from training.finetune import splits_of
from training.recover import RecoveryConfig, RecoverySpec

__all__ = [
    "METHODS",
    "RECOVERY_METHODS",
    "coarse_amounts",
    "prepare_cache",
    "recovery_variants",
    "sweep_variants",
]

logger = logging.getLogger(__name__)

METHODS = {"l1": "", "random": "random-", "structured": "structured-"}  # one-shot method -> name infix
# Recovery method -> name prefix (training/recover.py): gradual L1 pruning or whole heads and
# FFN neurons removed, each distilled from the base while it is pruned.
RECOVERY_METHODS = {"l1-kd": "pruned-kd-", "structured-kd": "pruned-kd-structured-"}


def coarse_amounts(low: int = 10, high: int = 99, steps: int = 20) -> list[int]:
    """`steps` linearly spaced percents from `low` to `high`, rounded to whole percents (names need them)."""
    if not 0 <= low < high <= 99 or steps < 2:
        raise ValueError(
            f"amounts must satisfy 0 <= low < high <= 99 and steps >= 2, got {low}, {high}, {steps}"
        )
    return sorted({int(round(a)) for a in np.linspace(low, high, steps)})


def sweep_variants(methods: tuple[str, ...], amounts: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """Variant name -> (method, quant, amount) for every method, with and without int8, at each amount."""
    points = {}
    for method in methods:
        for quant in (False, True):
            for amount in amounts:
                name = f"pruned-{METHODS[method]}{'quant-' if quant else ''}{amount}"
                parse_variant(name)  # the builder's grammar: fails here, before any work
                points[name] = {"method": method, "quant": quant, "amount_pct": amount}
    return points


def recovery_variants(methods: tuple[str, ...], amounts: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """As `sweep_variants`, for the recovery methods: `pruned-kd-[structured-][quant-]<N>`."""
    points = {}
    for method in methods:
        for quant in (False, True):
            for amount in amounts:
                name = f"{RECOVERY_METHODS[method]}{'quant-' if quant else ''}{amount}"
                RecoverySpec.from_name(name)  # the trainer's grammar: fails here, before any work
                points[name] = {"method": method, "quant": quant, "amount_pct": amount}
    return points


def _same_recipe(recorded: Any, spec: RecoverySpec, cfg: RecoveryConfig) -> bool:
    """Whether `variant.json`'s recovery settings are the ones asked for (the name gives the rest)."""
    wanted = {"amount": spec.amount, "structured": spec.structured, "layers": spec.layers, **asdict(cfg)}
    wanted = json.loads(json.dumps(wanted))  # as read back from variant.json
    return isinstance(recorded, dict) and all(recorded.get(k) == v for k, v in wanted.items())


def _is_stale(folder: Path, base_hash: str, recovery: RecoveryConfig) -> bool:
    """True when the cached variant was built from other base weights or settings, or is damaged."""
    try:
        parameters = read_variant_info(folder).parameters
    except ArtifactError:
        return True
    if parameters.get("parent_hash") != base_hash:
        return True
    spec = RecoverySpec.from_name(folder.name)
    return spec is not None and not _same_recipe(parameters.get("recovery"), spec, recovery)


def prepare_cache(model: str, cache: str, names: list[str], recovery: RecoveryConfig) -> Path:
    """Build the missing variants into `cache` (rebuilding stale ones); returns the cache folder.

    `cache/base` links to the base artifact: the evaluation job reads every variant from one root.
    Recovery variants train on the base's own training rows (`training.finetune.splits_of`).
    """
    root = Path(cache)
    root.mkdir(parents=True, exist_ok=True)
    model_dir = resolve_model_dir(model)
    base_hash = verify_artifact(model_dir).content_hash
    link = root / "base"
    if link.is_symlink() and link.resolve() != model_dir:
        link.unlink()
    if not link.exists():
        link.symlink_to(model_dir, target_is_directory=True)
    for name in names:
        folder = root / name
        if folder.exists() and _is_stale(folder, base_hash, recovery):
            logger.warning(
                "%s was built from other weights or settings (or is damaged); rebuilding it", folder
            )
            shutil.rmtree(folder)
    trained = [n for n in names if RecoverySpec.from_name(n) is not None]
    build_variants(model_dir, [n for n in names if n not in trained], root, if_missing=True)
    if trained:
        splits = splits_of(read_variant_info(model_dir))
        build(model_dir, trained, root, splits, if_missing=True, cfg=recovery)
    return root
