"""The client-side retry policy for the classifier API, and its retry loop.

Retrying is safe because classification is idempotent (same texts, same predictions, nothing
stored). Retried is what a lost or restarting replica or node produces: no answer (refused, reset,
timed out), 500 (the replica died mid-request), 502/504 (a proxy lost its upstream) and 503 (no
replica, or load shed; its `Retry-After` honoured up to `max_backoff_s`). Other statuses are final.
The defaults wait about 0.2 + 0.4 + 0.8 s over 4 attempts: long enough for Serve to route around a
dead replica, short enough that a real outage is reported quickly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RETRY_STATUSES", "Attempt", "RetryPolicy"]

RETRY_STATUSES = frozenset({500, 502, 503, 504})
# One attempt's outcome: (status, None when nothing answered; what is wrong, None on success; the response)
Attempt = tuple[int | None, str | None, Any]


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often to send an idempotent request again."""

    max_attempts: int = 4  # the first try included; 1 turns retrying off
    backoff_s: float = 0.2  # wait before the first retry; doubles per retry
    max_backoff_s: float = 2.0  # cap on any one wait, a server's Retry-After included
    jitter: float = 0.5  # each wait times a random [1 - jitter, 1 + jitter]: failed together, retry apart
    timeout_s: float = 10.0  # per attempt: a request stuck on a vanished node counts as no answer
    retry_statuses: frozenset[int] = field(default=RETRY_STATUSES)  # statuses worth another try

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.backoff_s < 0 or self.max_backoff_s < self.backoff_s:
            raise ValueError(f"backoff_s must be >= 0 and <= max_backoff_s, got {self}")
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

    def run(
        self,
        attempt: Callable[[], Attempt],
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> tuple[int, Attempt, Attempt]:
        """Call `attempt` until it succeeds, fails for good or runs out of attempts, waiting `delay_s`
        between; (attempts made, the first attempt's outcome, the last one's)."""
        first = None
        for n in range(1, self.max_attempts + 1):
            status, problem, response = last = attempt()
            first = first or last
            if problem is None or n == self.max_attempts or not self.retryable(status):
                break
            sleep(self.delay_s(n, rng, response.headers.get("retry-after") if status else None))
        return n, first, last
