"""Requests for measurements: texts to send, one request, waiting for a condition, closed-loop users."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

__all__ = ["SHORT_TEXT", "ClosedLoopUsers", "post_text", "random_texts", "wait_serving", "wait_until"]

SHORT_TEXT = "I cannot sleep before my exam and everything feels like too much."


def random_texts(count: int, seed: int) -> list[str]:
    """`count` Dreaddit test texts in a seeded random order (the order a load test sends them in)."""
    from training.data import read_frame
    from training.sources import dreaddit_paths

    texts = [t for t in read_frame(dreaddit_paths()[1])["text"].tolist() if isinstance(t, str) and t.strip()]
    rng = random.Random(seed)
    return [rng.choice(texts) for _ in range(count)]


def post_text(client: httpx.Client, url: str, variant: str, text: str = SHORT_TEXT) -> httpx.Response | None:
    """POST one text to `variant`; None when nothing answers yet (connection refused or timed out)."""
    try:
        return client.post(f"{url}/{variant}/classify", json={"text": text}, timeout=30)
    except httpx.HTTPError:
        return None


def wait_until(
    check: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.005
) -> tuple[float, Any]:
    """Call `check` until it returns something truthy; returns (epoch time, that value)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return time.time(), value
        time.sleep(interval_s)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")


def wait_serving(url: str, variant: str, timeout_s: float = 180) -> float:
    """Wait until `variant` answers a text with 200; returns the epoch time it did."""
    with httpx.Client() as client:
        return wait_until(
            lambda: (r := post_text(client, url, variant)) is not None and r.status_code == 200,
            timeout_s,
            f"{variant} serving",
        )[0]


class ClosedLoopUsers:
    """Users on threads: each posts one text to `variant`, waits for the answer, posts again.

    Every answer is appended to `requests` as (epoch time, x-replica-id, status; 0 = no answer).
    """

    def __init__(self, url: str, variant: str, requests: list[tuple[float, str, int]]) -> None:
        self.url, self.variant, self.requests = url, variant, requests
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self._ready: list[httpx.Client] = []

    def add(self, count: int) -> None:
        self.prepare(count)
        self.start()

    def prepare(self, count: int) -> None:
        """Make `count` users' clients now: an httpx client costs ~30 ms (its SSL context), which
        would otherwise stagger a step of many users over a second."""
        self._ready += [httpx.Client() for _ in range(count)]

    def start(self) -> None:
        """Start the prepared users."""
        for client in self._ready:
            thread = threading.Thread(target=self._run, args=(client,), daemon=True)
            thread.start()
            self.threads.append(thread)
        self._ready = []

    def _run(self, client: httpx.Client) -> None:
        with client:
            while not self.stop.is_set():
                r = post_text(client, self.url, self.variant)
                row = (time.time(), r.headers.get("x-replica-id", "") if r else "", r.status_code if r else 0)
                with self.lock:
                    self.requests.append(row)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
