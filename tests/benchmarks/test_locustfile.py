"""The Locust file: shapes do what they say, and a short headless run against the real app succeeds."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from benchmarks.harness import ROOT
from benchmarks.shapes import ShapeConfig, answer_problem, users_at


@pytest.mark.parametrize(
    "at, shape, expected",
    [
        (0, "constant", (20, 5.0)),
        (500, "constant", (20, 5.0)),
        (0, "step", (5, 5.0)),
        (31, "step", (10, 5.0)),
        (1000, "step", (20, 5.0)),
        (5, "spike", (4, 5.0)),
        (25, "spike", (20, 20.0)),
        (45, "spike", (4, 5.0)),
    ],
)
def test_shapes(at, shape, expected):
    assert users_at(ShapeConfig(shape, users=20, spawn_rate=5.0), at) == expected


def test_bad_shape_is_refused():
    with pytest.raises(ValueError, match="shape must be one of"):
        ShapeConfig("ramp")


def test_malformed_answers_are_failures():
    good = {"variant": "v", "predictions": [{"label": "a", "probabilities": {"a": 0.9, "b": 0.1}}]}
    assert answer_problem(good, 1, "v") is None
    assert "expected 2 predictions" in answer_problem(good, 2, "v")
    assert "not an answer from w" in answer_problem(good, 1, "w")
    assert "malformed" in answer_problem(
        {"variant": "v", "predictions": [{"label": "c", "probabilities": {}}]}, 1, "v"
    )


def test_a_model_route_needs_that_models_answer():
    answer = {
        "model": "sentiment",
        "variant": "base",
        "predictions": [{"label": "a", "probabilities": {"a": 1}}],
    }
    for route in ("base", "sentiment/base", "pool/sentiment/base", "pool/base"):
        assert answer_problem(answer, 1, route) is None, route
    assert "not an answer from stress/base" in answer_problem(answer, 1, "stress/base")


def test_headless_run_against_the_app(base_url, tmp_path):
    host, variant = base_url.rsplit("/", 1)
    texts = tmp_path / "texts.csv"
    texts.write_text('text\nhello there\n"a second, longer text to classify"\nthird one\n')
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        "benchmarks/locustfile.py",
        "--headless",
        "-u",
        "2",
        "-r",
        "2",
    ]
    cmd += ["-t", "6s", "--host", host, "--variants", variant, "--texts-file", str(texts), "--batch-max", "3"]
    cmd += ["--csv", str(tmp_path / "run"), "--only-summary"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["Name"]: r for r in csv.DictReader(open(tmp_path / "run_stats.csv"))}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 5 and int(total["Failure Count"]) == 0
    assert {f"/{variant}/classify [single]", f"/{variant}/classify [batch]"} <= set(rows)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--texts-file", "{bad}"], "text column must be one of ['body']"),
        (["--batch-share", "1.5"], "--batch-share must be within 0..1, got 1.5"),
    ],
)
def test_bad_options_stop_locust_with_a_message(tmp_path, options, message):
    bad = tmp_path / "bad.csv"
    bad.write_text("body\nonly a body column\n")
    cmd = [sys.executable, "-m", "locust", "-f", "benchmarks/locustfile.py", "--headless", "-u", "1"]
    cmd += ["-t", "5s", "--host", "http://127.0.0.1:9", *(o.format(bad=bad) for o in options)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
