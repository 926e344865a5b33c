"""What a variant scored on held-out rows, and the gate that keeps a collapsed model off every route.

`training.build` measures each variant on a split that trained and pruned nothing (Dreaddit's test
file by default) and records an `AccuracyRecord` in its `variant.json`. `accuracy_problem` is the
gate: a variant is served only if it has a record and its accuracy is at most `budget_points`
below its base model's on the same rows. Preflight and `make serve` apply it (deployments/preflight.py).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from loading.artifact import VariantInfo, update_variant_info

__all__ = ["ACCURACY_BUDGET_POINTS", "AccuracyRecord", "accuracy_problem", "read_accuracy", "record_accuracy"]

ACCURACY_BUDGET_POINTS = 1.5  # a served variant may be at most this many accuracy points below base


@dataclass(frozen=True)
class AccuracyRecord:
    """One variant's scores on a held-out split; every share is in [0, 1]."""

    split: str  # which rows, e.g. "dreaddit_testing.csv"; never rows used to train or prune the variant
    rows: int  # how many rows were scored
    accuracy: float
    macro_f1: float
    base: str  # the model the budget is measured against (the root of the variant's parents)
    base_accuracy: float  # the base's accuracy on the same rows, measured in the same run
    parent: str | None = None  # the variant it was derived from; None for a base model
    agreement: float | None = None  # share of rows where it predicts what its parent predicts
    int8_kernel: str | None = None  # the int8 matmul that ran ("int_mm" / "dequant"); None: no int8
    evaluated: str = ""  # ISO 8601 UTC time of the measurement
    validation: dict[str, Any] | None = None  # scores on the validation split hyperparameters were chosen on

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise ValueError(f"rows must be >= 1, got {self.rows}")
        for name in ("accuracy", "macro_f1", "base_accuracy", "agreement"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a share in [0, 1], got {value}")

    @classmethod
    def of_base(
        cls,
        name: str,
        split: str,
        rows: int,
        scores: dict[str, float],
        validation: dict[str, Any] | None = None,
    ) -> AccuracyRecord:
        """A base model's record: it is its own base, with no parent to agree with."""
        accuracy = scores["accuracy"]
        return cls(
            split=split,
            rows=rows,
            accuracy=accuracy,
            macro_f1=scores["macro_f1"],
            base=name,
            base_accuracy=accuracy,
            evaluated=datetime.now(UTC).isoformat(timespec="seconds"),
            validation=validation,
        )

    @property
    def points_below_base(self) -> float:
        return 100 * (self.base_accuracy - self.accuracy)


def read_accuracy(info: VariantInfo) -> AccuracyRecord | None:
    """The record in a variant's info, or None when none was measured (or it is unreadable)."""
    if not isinstance(info.accuracy, dict):
        return None
    try:
        return AccuracyRecord(**info.accuracy)
    except (TypeError, ValueError):
        return None


def record_accuracy(model_dir: str | os.PathLike, record: AccuracyRecord) -> VariantInfo:
    """Write `record` into the artifact's `variant.json` (the weights and their hash are unchanged)."""
    return update_variant_info(model_dir, accuracy=asdict(record))


def accuracy_problem(info: VariantInfo, budget_points: float = ACCURACY_BUDGET_POINTS) -> str | None:
    """Why the gate refuses this variant, or None when it may be served.

    Refused: no recorded accuracy, or accuracy more than `budget_points` below its base's.
    """
    record = read_accuracy(info)
    if record is None:
        return (
            f"variant {info.name!r} has no recorded accuracy; measure it with "
            "`python -m training.build --model <base> --variants <name>`, or serve it anyway with "
            "`python -m deployments.preflight --no-accuracy-gate` (`make serve ACCURACY_GATE=off`)"
        )
    if record.points_below_base > budget_points + 1e-9:
        return (
            f"variant {info.name!r} scores {100 * record.accuracy:.2f}% "
            f"on {record.split} ({record.rows} rows), "
            f"{record.points_below_base:.2f} points below {record.base}'s {100 * record.base_accuracy:.2f}%; "
            f"the budget is {budget_points:g} points"
        )
    return None
