"""Autoscaling on work as well as on requests: a replica busy with a few huge requests scales too.

Serve's default policy counts requests: three clients each sending the largest request allowed
(16,384 tokens, ~3 s of work on one core) keep ~5 requests in flight, far below
`target_ongoing_requests: 16`, so the second replica never came (docs/RELIABILITY.md, "Heavy
requests"). Each replica reports its queued tokens (`record_autoscaling_stats`, Ray Serve's custom
autoscaling metrics) and this policy asks for the larger of Serve's own answer and the replicas the
queued tokens need at `target_queued_tokens` each. Serve then applies the deployment's bounds,
scaling factors and up/down-scale delays as for its own policy.
"""

from __future__ import annotations

import math
from typing import Any

from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy

__all__ = ["QUEUED_TOKENS", "WorkAwarePolicy"]

QUEUED_TOKENS = "queued_tokens"  # the custom metric each replica reports


class WorkAwarePolicy:
    """`autoscaling_config.policy.policy_function: deployments.autoscaling:WorkAwarePolicy`."""

    def __init__(self, target_queued_tokens: float = 16384) -> None:
        if target_queued_tokens <= 0:
            raise ValueError(f"target_queued_tokens must be > 0, got {target_queued_tokens}")
        self.target_queued_tokens = target_queued_tokens

    def __call__(self, ctx: Any) -> tuple[float, dict[str, Any]]:
        by_requests, state = replica_queue_length_autoscaling_policy(ctx)
        queued = (ctx.aggregated_metrics or {}).get(QUEUED_TOKENS) or {}
        by_tokens = math.ceil(sum(queued.values()) / self.target_queued_tokens) if queued else 0
        return max(by_requests, by_tokens), state
