"""Requests for measurements: texts to send, one request, waiting for a condition, closed-loop users
(on one route, or round-robin over several), a measured window of them with the node's memory
sampled, and the window's request statistics."""

from __future__ import annotations

import itertools
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchmarks.harness.node_memory import NodeMemorySampler

__all__ = [
    "SHORT_TEXT",
    "ClosedLoopUsers",
    "LoadWindow",
    "RoundRobinUsers",
    "measure_round_robin",
    "percentile",
    "post_text",
    "random_texts",
    "summarize_requests",
    "wait_serving",
    "wait_until",
]

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


class RoundRobinUsers(ClosedLoopUsers):
    """The closed-loop users, each cycling over `routes` (user i starts at route i) and sending real
    `texts`; rows: (epoch, route, status, latency ms, x-replica-id, x-weights-load-ms)."""

    def __init__(self, url: str, routes: list[str], texts: list[str], requests: list[tuple]) -> None:
        super().__init__(url, routes[0], requests)
        self.routes, self.texts = routes, texts
        self._users = itertools.count()

    def _run(self, client: httpx.Client) -> None:
        user = next(self._users)
        with client:
            for k in itertools.count(user):
                if self.stop.is_set():
                    return
                route = self.routes[k % len(self.routes)]
                text = self.texts[(user * 7919 + k) % len(self.texts)]
                started = time.perf_counter()
                r = post_text(client, self.url, route, text)
                latency_ms = (time.perf_counter() - started) * 1e3
                row = (
                    time.time(),
                    route,
                    r.status_code if r is not None else 0,
                    latency_ms,
                    r.headers.get("x-replica-id", "") if r is not None else "",
                    r.headers.get("x-weights-load-ms", "") if r is not None else "",
                )
                with self.lock:
                    self.requests.append(row)


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation between the closest ranks; None if empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize_requests(rows: list[tuple], start: float, end: float) -> dict[str, Any]:
    """Requests answered within [start, end]: count, failures, req/s (answered 200), p50/p99 ms, and
    the spread of answers over routes. Rows: `RoundRobinUsers`' (epoch, route, status, latency ms,
    replica, attach ms)."""
    window = [r for r in rows if start <= r[0] <= end]
    ok = [r for r in window if r[2] == 200]
    per_route: dict[str, int] = {}
    for r in ok:
        per_route[r[1]] = per_route.get(r[1], 0) + 1
    latencies = [r[3] for r in ok]
    seconds = end - start
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return {
        "seconds": round(seconds, 2),
        "requests": len(window),
        "failed": len(window) - len(ok),
        "requests_per_s": round(len(ok) / seconds, 2) if seconds > 0 else 0.0,
        "p50_ms": None if p50 is None else round(p50, 1),
        "p99_ms": None if p99 is None else round(p99, 1),
        "routes_answered": len(per_route),
        "answers_per_route_min_max": [min(per_route.values()), max(per_route.values())] if per_route else [],
        "replicas_answering": len({r[4] for r in ok}),
    }


@dataclass
class LoadWindow:
    """What `measure_round_robin` saw: every request's row (warm-up included), the measured window's
    bounds (epoch s), and the node's memory sampled in it."""

    rows: list[tuple] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0
    memory_samples: list[dict[str, Any]] = field(default_factory=list)


def measure_round_robin(
    url: str,
    routes: list[str],
    texts: list[str],
    *,
    users: int,
    warmup_s: float,
    seconds: float,
    memory_every_s: float,
    per_process: bool = False,
) -> LoadWindow:
    """`users` round-robin users on `routes`: `warmup_s` unmeasured, then `seconds` measured, the
    node's memory (`node_memory`) sampled every `memory_every_s` meanwhile and once at the end,
    still under the load."""
    out = LoadWindow()
    load = RoundRobinUsers(url, routes, texts, out.rows)
    sampler = NodeMemorySampler(memory_every_s, per_process=per_process)
    try:
        load.add(users)
        time.sleep(warmup_s)
        out.start = time.time()
        sampler.start()
        time.sleep(seconds)
        out.end = time.time()
        sampler.stop()  # its last sample while the users still run: they stop below
    finally:
        sampler.stop(final_sample=False)
        load.close()
    out.memory_samples = sampler.samples
    return out
