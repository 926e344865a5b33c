"""`loading.accuracy`: a variant's recorded accuracy in `variant.json`, and the gate built on it."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from loading.accuracy import (
    ACCURACY_BUDGET_POINTS,
    AccuracyRecord,
    accuracy_problem,
    read_accuracy,
    record_accuracy,
)
from loading.artifact import (
    VARIANT_FILE,
    WEIGHTS_FILE,
    VariantInfo,
    folder_bytes,
    read_variant_info,
    verify_artifact,
)

BASE_ACCURACY = 0.80


def _record(accuracy: float, base_accuracy: float = BASE_ACCURACY, **changes) -> AccuracyRecord:
    fields = dict(split="dreaddit_testing.csv", rows=715, accuracy=accuracy, macro_f1=accuracy - 0.01)
    fields |= dict(base="base", base_accuracy=base_accuracy, parent="base", agreement=0.97)
    return AccuracyRecord(**(fields | changes))


def _info(record: AccuracyRecord | dict | None) -> VariantInfo:
    accuracy = dataclasses.asdict(record) if isinstance(record, AccuracyRecord) else record
    return VariantInfo(name="quant", parent="base", method="quantize", accuracy=accuracy)


def test_a_record_round_trips_through_variant_json_and_keeps_the_hash(tiny_artifact, tmp_path):
    model_dir = tmp_path / "tiny"
    shutil.copytree(tiny_artifact, model_dir)
    before = read_variant_info(model_dir)
    weights = (model_dir / WEIGHTS_FILE).read_bytes()
    record = _record(0.79, validation={"split": "train[-10%:]", "accuracy": 0.81}, int8_kernel="int_mm")

    written = record_accuracy(model_dir, record)

    assert read_accuracy(written) == record
    assert read_accuracy(read_variant_info(model_dir)) == record
    assert verify_artifact(model_dir) == written  # the hash covers the weights, which did not change
    assert (model_dir / WEIGHTS_FILE).read_bytes() == weights
    # nothing else in variant.json moved but its own size in the folder's bytes
    assert dataclasses.replace(written, accuracy=None, size_bytes=before.size_bytes) == before
    assert written.size_bytes == folder_bytes(model_dir)
    assert json.loads((model_dir / VARIANT_FILE).read_text())["accuracy"]["split"] == "dreaddit_testing.csv"
    assert not [p.name for p in model_dir.iterdir() if p.name.startswith(".")]  # no temp file left

    again = _record(0.795)
    assert read_accuracy(record_accuracy(model_dir, again)) == again  # a new measurement replaces the old


@pytest.mark.parametrize(
    ("accuracy", "budget_points", "refused"),
    [
        (BASE_ACCURACY, ACCURACY_BUDGET_POINTS, False),  # as good as base
        (0.83, ACCURACY_BUDGET_POINTS, False),  # better than base
        (0.79, ACCURACY_BUDGET_POINTS, False),  # 1 point below
        (0.785, ACCURACY_BUDGET_POINTS, False),  # exactly the budget (0.80 - 0.785 is not exact in binary)
        (0.7849, ACCURACY_BUDGET_POINTS, True),  # 1.51 points below
        (0.78, ACCURACY_BUDGET_POINTS, True),  # 2 points below
        (0.484, ACCURACY_BUDGET_POINTS, True),  # the collapsed pruned-75: the majority share
        (BASE_ACCURACY, 0.0, False),  # a zero budget still serves a variant that ties base
        (0.799, 0.0, True),
        (0.78, 2.0, False),  # the budget is the app's to state
    ],
)
def test_the_gate_refuses_only_what_is_outside_the_budget(accuracy, budget_points, refused):
    problem = accuracy_problem(_info(_record(accuracy)), budget_points)
    assert (problem is not None) == refused
    if refused:
        below = 100 * (BASE_ACCURACY - accuracy)
        assert f"variant 'quant' scores {100 * accuracy:.2f}%" in problem
        assert f"{below:.2f} points below base's 80.00%" in problem
        assert f"the budget is {budget_points:g} points" in problem


def test_the_default_budget_is_one_and_a_half_points():
    assert ACCURACY_BUDGET_POINTS == 1.5
    assert accuracy_problem(_info(_record(0.786))) is None
    assert "the budget is 1.5 points" in accuracy_problem(_info(_record(0.78)))


@pytest.mark.parametrize(
    "stored",
    [
        None,  # never measured
        {},  # measured nothing
        {"split": "test", "rows": 10, "accuracy": 0.9},  # fields missing
        dataclasses.asdict(_record(0.79)) | {"accuracy": 79.0},  # a percentage, not a share
        dataclasses.asdict(_record(0.79)) | {"rows": 0},
        dataclasses.asdict(_record(0.79)) | {"surprise": 1},  # a field this code does not know
        [0.79],  # not a mapping
        "0.79",
    ],
    ids=["none", "empty", "missing-fields", "percent", "no-rows", "unknown-field", "list", "string"],
)
def test_an_unreadable_record_counts_as_none(stored):
    info = _info(stored)
    assert read_accuracy(info) is None
    problem = accuracy_problem(info)
    assert "variant 'quant' has no recorded accuracy" in problem and "training.build" in problem


def test_an_unreadable_record_on_disk_is_refused_not_raised(tiny_artifact, tmp_path):
    model_dir = tmp_path / "tiny"
    shutil.copytree(tiny_artifact, model_dir)
    meta = json.loads((model_dir / VARIANT_FILE).read_text())
    (model_dir / VARIANT_FILE).write_text(json.dumps(meta | {"accuracy": {"accuracy": "high"}}))
    info = verify_artifact(model_dir)  # the artifact itself is fine
    assert read_accuracy(info) is None
    assert "has no recorded accuracy" in accuracy_problem(info)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rows": 0}, r"rows must be >= 1, got 0"),
        ({"accuracy": 1.2}, r"accuracy must be a share in \[0, 1\], got 1.2"),
        ({"macro_f1": -0.1}, r"macro_f1 must be a share in \[0, 1\], got -0.1"),
        ({"base_accuracy": 80.0}, r"base_accuracy must be a share in \[0, 1\], got 80.0"),
        ({"agreement": 1.5}, r"agreement must be a share in \[0, 1\], got 1.5"),
    ],
)
def test_a_record_out_of_range_is_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        _record(**({"accuracy": 0.79} | changes))


def test_points_below_base_are_accuracy_points():
    assert _record(0.78).points_below_base == pytest.approx(2.0)
    assert _record(0.83).points_below_base == pytest.approx(-3.0)
    assert _record(0.79, agreement=None, parent=None).agreement is None  # a base model has no parent
