"""Spot preemption: the retry policy, the retrying Locust users, the request arithmetic, and (slow) a
quick run that kills a node of a real local cluster under load."""

from __future__ import annotations

import csv
import json

import pytest

from benchmarks.local_cluster import PORTS_PER_NODE, node_ports
from benchmarks.preemption_scenario import ScenarioConfig
from benchmarks.records import RecordTail, in_flight, percentile, summarize
from tests.benchmarks import run_record
from tests.benchmarks.fake_api import FakeAPI, run_retry_users

# The retry policy: tests/benchmarks/test_retry.py.


# -- the request records ----------------------------------------------------------------------------


def _record(t0: float, t1: float, first_error: str | None = None, error: str | None = None) -> dict:
    attempts = 1 + (first_error is not None and error is None)
    return {"t0": t0, "t1": t1, "attempts": attempts, "first_error": first_error, "error": error}


def test_percentile_interpolates_between_ranks():
    assert percentile([], 50) is None
    assert percentile([5.0], 99) == 5.0
    assert percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert percentile(list(range(1, 101)), 95) == pytest.approx(95.05)


def test_summarize_counts_by_end_time_and_splits_first_attempt_from_user_visible():
    records = [
        _record(0.0, 0.1),
        _record(0.5, 1.5, first_error="HTTP 500"),  # in flight at the loss (t=1), retried: ok
        _record(0.9, 1.2, first_error="HTTP 500", error="HTTP 500"),  # failed for good
        _record(1.1, 1.4),
        _record(1.8, 2.5),  # ends after the window
    ]
    s = summarize(records, 1.0, 2.0)
    assert (s["requests"], s["failed_first_attempt"], s["failed"], s["retried"]) == (3, 2, 1, 1)
    assert s["ok_per_s"] == pytest.approx(2.0) and s["seconds"] == 1.0
    assert s["p50_ms"] == pytest.approx(300.0) and s["max_ms"] == pytest.approx(1000.0)
    assert summarize(records, 0.0, 1.0)["requests"] == 1
    assert summarize([], 0.0, 1.0)["p99_ms"] is None
    assert [r["t0"] for r in in_flight(records, 1.0)] == [0.5, 0.9]


def test_records_skip_a_torn_last_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(_record(0, 1)) + "\n" + json.dumps(_record(1, 2)) + "\n" + '{"t0": 3, "t')
    assert [r["t0"] for r in RecordTail(path).read()] == [0, 1]


def test_nodes_get_disjoint_port_blocks():
    blocks = [set(node_ports(i, 16400).values()) for i in range(6)]
    assert all(len(b) == len(node_ports(0, 16400)) for b in blocks)
    assert len(set().union(*blocks)) == sum(len(b) for b in blocks)
    assert all(max(b) - min(b) < PORTS_PER_NODE for b in blocks)


def test_scenario_config_is_checked():
    with pytest.raises(ValueError, match="users and retry_attempts must be >= 1"):
        ScenarioConfig(users=0)
    with pytest.raises(ValueError, match="seconds must be >= 0"):
        ScenarioConfig(steady_s=-1)


# -- the retrying Locust users, against a flaky fake API ---------------------------------------------


class _FlakyAPI(FakeAPI):
    """/v/classify: every other request (the 1st, 3rd...) gets 503, the others a valid answer; any
    other route 404. With one user, each 503 is followed by that user's retry, which succeeds."""

    count = 0

    def answer(self, path: str, body: dict) -> tuple[int, dict, dict[str, str]]:
        if not path.startswith("/v/"):
            return 404, {"error": "no such route"}, {}
        return (503, {"error": "no replica"}, {}) if self.next() % 2 == 1 else self.ok(body)


def test_retrying_users_hide_503s_but_not_4xx(tmp_path):
    proc, logged = run_retry_users(_FlakyAPI, tmp_path, "v,w", seconds=4)
    rows = {r["Name"]: r for r in csv.DictReader(open(tmp_path / "run_stats.csv"))}
    to_v = [r for r in logged if r["variant"] == "v"]
    to_w = [r for r in logged if r["variant"] == "w"]
    assert proc.returncode == 1  # Locust's exit code when any request failed: the 404s
    assert len(to_v) >= 2 and len(to_w) >= 1  # a few even on a busy machine; hundreds when idle
    assert all(r["first_status"] == 503 and r["attempts"] == 2 and r["error"] is None for r in to_v)
    assert all(r["attempts"] == 1 and r["error"].startswith("HTTP 404") for r in to_w)  # not retried
    assert int(rows["/v/classify [single]"]["Failure Count"]) == 0  # what users saw
    assert int(rows["/v/classify [single] attempt"]["Failure Count"]) > 0  # what the wire saw


# -- the real thing -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_preemption_run_loses_nothing_user_visible():
    out = run_record("benchmarks.preemption", "--quick", timeout=400)
    abrupt = out["scenarios"]["abrupt"]
    print(json.dumps(out))  # shown by pytest if an assertion fails
    assert all(out["targets"].values()), out["targets"]
    assert out["placement"] == {"serve_controller": "head", "serve_proxy": "head", "model_store": "head"}
    assert abrupt["windows"]["total"]["requests"] > 50 and abrupt["windows"]["after"]["requests"] > 0
    assert "raylet" in abrupt["sigkilled"] and abrupt["victim_answers_after_loss"] == 0
    assert abrupt["new_replica"]["weights_loaded_from"].startswith("object-store")
    assert abrupt["new_replica"]["arena_copy_on_new_node"] and abrupt["recovery_s"] > 0
