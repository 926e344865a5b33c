"""benchmarks.recovery_rate on a tiny model: a measured rate per step and a projection from it."""

from __future__ import annotations

import math

from tests.benchmarks import run_record


def test_recovery_rate_projects_the_build_from_measured_steps(tiny_artifact):
    record = run_record(
        "benchmarks.recovery_rate",
        "--model",
        str(tiny_artifact),
        "--bert-base",
        str(tiny_artifact),
        "--steps",
        "2",
    )
    assert record["build_steps"] == 3 * math.ceil(record["train_rows"] / 16)
    for model in ("default", "bert-base"):
        m = record["models"][model]
        assert m["s_per_step"] > 0
        assert math.isclose(m["projected_build_min"], m["s_per_step"] * record["build_steps"] / 60)
    assert record["machine"]["cpu"]
