"""Heavy requests over real HTTP (issue 20): token caps refused up front, overload shed with
Retry-After. The ordering under heavy load (short requests not starved) needs the real model's pass
times: tests/test_e2e_serve.py; the planner's: tests/deployments/test_scheduler.py."""

from __future__ import annotations

import threading

import httpx

from tests.conftest import TINY_ARGS

LONG = "word " * 400  # cut to the tiny model's 128 tokens
SHORT = "calm and fine"


def _post(url: str, texts: list[str]) -> httpx.Response:
    return httpx.post(f"{url}/classify", json={"texts": texts}, timeout=60)


def test_a_request_over_the_token_cap_is_refused_naming_the_limit(base_url):
    r = _post(base_url, [LONG] * 5)  # 5 x 128 tokens > 512
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["limit"] == TINY_ARGS["max_request_tokens"] == 512 and body["tokens"] == 640
    assert "max_request_tokens" in body["error"]
    assert _post(base_url, [LONG] * 4).status_code == 200  # 512 tokens: at the cap, served


def test_overload_is_shed_at_once_with_retry_after_and_nothing_else_fails(base_url):
    """max_queued_tokens is 2048: 24 concurrent requests of 512 tokens cannot all queue."""
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        r = _post(base_url, [LONG] * 4)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=send) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in results)
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    for r in results:
        if r.status_code == 503:
            assert r.json()["retry_after_s"] == int(r.headers["retry-after"]) >= 1
            assert "max_queued_tokens" in r.json()["error"]
    assert 503 in statuses, f"24 x 512 tokens never passed max_queued_tokens=2048: {statuses}"
    assert _post(base_url, [SHORT]).status_code == 200  # and then it serves as before
