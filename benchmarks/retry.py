"""The client-side retry policy for the classifier API, and an httpx call that follows it.

Retrying is safe because classification is idempotent: the same texts give the same predictions and
nothing is stored, so a request that may or may not have run can simply be sent again. What is
retried is what a lost or restarting replica or node produces: no answer at all (connection refused
or reset, timeout), 500 (the replica died mid-request), 502/504 (a proxy lost its upstream) and 503
(Serve is out of replicas or shedding load; its `Retry-After` is honoured up to `max_backoff_s`).
Other 4xx/5xx answers are final: the same request would fail the same way again.

Waits double from `backoff_s` up to `max_backoff_s`, each scaled by a random factor in
[1 - jitter, 1 + jitter] so that many clients that failed together do not retry together.
`max_attempts=4` with the defaults waits about 0.2 + 0.4 + 0.8 s, so a caller gives up after
~1.4 s plus its attempts' own time: long enough for Serve to route around a dead replica, short
enough that a real outage is reported quickly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["RETRY_STATUSES", "RetryPolicy", "RetryResult", "post_with_retry"]

RETRY_STATUSES = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often to send an idempotent request again."""

    max_attempts: int = 4  # the first try included; 1 turns retrying off
    backoff_s: float = 0.2  # wait before the first retry; doubles per retry
    max_backoff_s: float = 2.0  # cap on any one wait, a server's Retry-After included
    jitter: float = 0.5  # each wait is scaled by a random factor in [1 - jitter, 1 + jitter]
    timeout_s: float = 10.0  # per attempt: a request stuck on a vanished node counts as no answer
    retry_statuses: frozenset[int] = field(default=RETRY_STATUSES)  # statuses worth another try

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.backoff_s < 0 or self.max_backoff_s < self.backoff_s:
            raise ValueError(
                f"backoff_s must be >= 0 and <= max_backoff_s, got {self.backoff_s}, {self.max_backoff_s}"
            )
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")

    def retryable(self, status: int | None) -> bool:
        """Whether an attempt that ended with `status` (None: no answer at all) is worth repeating."""
        return status is None or status in self.retry_statuses

    def delay_s(self, retry: int, rng: random.Random | None = None, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number `retry` (1 = the first retry)."""
        if retry < 1:
            raise ValueError(f"retry must be >= 1, got {retry}")
        wait = min(self.max_backoff_s, self.backoff_s * 2 ** (retry - 1))
        if retry_after is not None:
            try:
                wait = min(self.max_backoff_s, max(wait, float(retry_after)))
            except ValueError:
                pass  # an HTTP date or garbage: keep our own backoff
        return wait * (1 + self.jitter * (2 * (rng or random).random() - 1))


@dataclass
class RetryResult:
    """The outcome a caller sees, and what happened on the way."""

    response: httpx.Response | None  # the last answer; None if no attempt got one
    attempts: int
    first_status: int | None  # of the first attempt; None if it got no answer
    errors: list[str]  # one entry per failed attempt

    @property
    def ok(self) -> bool:
        return self.response is not None and 200 <= self.response.status_code < 300


def post_with_retry(
    client: httpx.Client,
    url: str,
    json: Any,
    policy: RetryPolicy | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> RetryResult:
    """POST `json` to `url`, retrying per `policy` (default `RetryPolicy()`); never raises for HTTP
    or connection errors."""
    policy = policy or RetryPolicy()
    errors: list[str] = []
    first_status: int | None = None
    response: httpx.Response | None = None
    for attempt in range(1, policy.max_attempts + 1):
        try:
            response = client.post(url, json=json, timeout=policy.timeout_s)
            status: int | None = response.status_code
        except httpx.TransportError as exc:  # refused, reset, timed out: no answer
            response, status = None, None
            errors.append(f"{type(exc).__name__}: {exc}")
        if attempt == 1:
            first_status = status
        if status is not None and 200 <= status < 300:
            break
        if status is not None:
            errors.append(f"HTTP {status}")
        if attempt == policy.max_attempts or not policy.retryable(status):
            break
        retry_after = response.headers.get("retry-after") if response is not None else None
        sleep(policy.delay_s(attempt, rng, retry_after))
    return RetryResult(response, attempt, first_status, errors)
