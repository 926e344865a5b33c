"""The work-aware autoscaling policy: Serve's request count, or the queued tokens, whichever asks more."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from deployments.autoscaling import QUEUED_TOKENS, WorkAwarePolicy


def _ctx(requests: float, queued: dict[str, float] | None, replicas: int = 1):
    from ray.serve.config import AutoscalingConfig

    config = AutoscalingConfig(min_replicas=1, max_replicas=4, target_ongoing_requests=16)
    return SimpleNamespace(
        config=config,
        current_num_replicas=replicas,
        target_num_replicas=replicas,
        running_replicas=[f"r{i}" for i in range(replicas)],
        total_num_requests=requests,
        aggregated_metrics=None if queued is None else {QUEUED_TOKENS: queued},
        policy_state={},
        capacity_adjusted_min_replicas=1,
        capacity_adjusted_max_replicas=4,
    )


def test_three_huge_requests_ask_for_a_second_replica_that_the_request_count_would_not():
    policy = WorkAwarePolicy(target_queued_tokens=16384)
    desired, _ = policy(_ctx(requests=5, queued={"r0": 3 * 16384.0}))
    assert desired == 3
    by_requests, _ = policy(_ctx(requests=5, queued=None))
    assert by_requests < 1  # Serve's own answer: 5 in flight of a target of 16


def test_many_small_requests_still_scale_on_the_request_count():
    desired, _ = WorkAwarePolicy()(_ctx(requests=48, queued={"r0": 2000.0}))
    assert desired == pytest.approx(3)


def test_target_must_be_positive():
    with pytest.raises(ValueError, match="target_queued_tokens must be > 0"):
        WorkAwarePolicy(0)
