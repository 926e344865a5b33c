"""The client-side retry policy for the classifier API, and its retry loop.

Retrying is safe because classification is idempotent (same texts, same predictions, nothing
stored). Retried is what a lost, restarting or busy replica or node produces: no answer (refused,
reset, timed out), 500 (the replica died mid-request), 502/504 (a proxy lost its upstream), 503 (no
replica, or a replica's queue full) and 429 (too many requests). A 429 or 503 that carries
`Retry-After` is retried after the seconds the server asks for (capped at `max_retry_after_s`, plus
up to `jitter` of it so refused clients come back apart, never earlier), instead of the backoff.
413 and 422 (the request itself is too big or malformed: the same bytes get the same answer) are
never retried; other statuses are final. The defaults back off about 0.2 + 0.4 + 0.8 s over 4
attempts: long enough for Serve to route around a dead replica, short enough that a real outage is
reported quickly.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = [
    "NEVER_RETRIED",
    "RETRY_AFTER_STATUSES",
    "RETRY_STATUSES",
    "Attempt",
    "RetryPolicy",
    "retry_after_s",
]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_STATUSES = frozenset({429, 503})  # whose Retry-After replaces the backoff
NEVER_RETRIED = frozenset({413, 422})  # the request itself is refused: retrying cannot help
# One attempt's outcome: (status, None when nothing answered; what is wrong, None on success; the response)
Attempt = tuple[int | None, str | None, Any]


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """The seconds a `Retry-After` header value asks for (delay-seconds or an HTTP date, from `now`,
    epoch s); None when absent or unreadable. A date already past asks for 0."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one is read as such
            return None
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often to send an idempotent request again."""

    max_attempts: int = 4  # the first try included; 1 turns retrying off
    backoff_s: float = 0.2  # wait before the first retry; doubles per retry
    max_backoff_s: float = 2.0  # cap on our own backoff
    # Cap on a server's Retry-After: a replica computes it from its queued work (seconds), a client
    # still wants to hear back within a bounded time.
    max_retry_after_s: float = 30.0
    jitter: float = 0.5  # backoff times a random [1 - jitter, 1 + jitter]; Retry-After times [1, 1 + jitter]
    timeout_s: float = 10.0  # per attempt: a request stuck on a vanished node counts as no answer
    retry_statuses: frozenset[int] = field(default=RETRY_STATUSES)  # statuses worth another try

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.backoff_s < 0 or self.max_backoff_s < self.backoff_s:
            raise ValueError(f"backoff_s must be >= 0 and <= max_backoff_s, got {self}")
        if self.max_retry_after_s < 0:
            raise ValueError(f"max_retry_after_s must be >= 0, got {self.max_retry_after_s}")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if bad := self.retry_statuses & NEVER_RETRIED:
            raise ValueError(f"retry_statuses must not hold {sorted(NEVER_RETRIED)}, got {sorted(bad)}")

    def retryable(self, status: int | None) -> bool:
        """Whether an attempt that ended with `status` (None: no answer at all) is worth repeating."""
        return status is None or status in self.retry_statuses

    def delay_s(self, retry: int, rng: random.Random | None = None, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number `retry` (1 = the first retry): the server's
        `retry_after` (a header value) if it holds one, else the doubling backoff."""
        if retry < 1:
            raise ValueError(f"retry must be >= 1, got {retry}")
        draw = (rng or random).random()
        if (asked := retry_after_s(retry_after)) is not None:
            # Never before the server's time (it computed when its queue has room), a little after.
            return min(self.max_retry_after_s, asked) * (1 + self.jitter * draw)
        wait = min(self.max_backoff_s, self.backoff_s * 2 ** (retry - 1))
        return wait * (1 + self.jitter * (2 * draw - 1))

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
            asked = response.headers.get("retry-after") if status in RETRY_AFTER_STATUSES else None
            sleep(self.delay_s(n, rng, asked))
        return n, first, last
