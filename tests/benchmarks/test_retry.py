"""The client retry policy honours Retry-After on 429/503, never retries 413/422, and the retrying
Locust users do the same against a fake API."""

from __future__ import annotations

import random
from email.utils import formatdate

import httpx
import pytest

from benchmarks.retry import RetryPolicy, retry_after_s
from tests.benchmarks.fake_api import FakeAPI, run_retry_users


@pytest.mark.parametrize(
    "status, retried",
    [(None, True), (429, True), (500, True), (502, True), (503, True), (504, True)]
    + [(200, False), (400, False), (404, False), (408, False), (413, False), (422, False)],
)
def test_retryable_statuses(status, retried):
    assert RetryPolicy().retryable(status) is retried


def test_413_and_422_cannot_be_made_retryable():
    with pytest.raises(ValueError, match=r"retry_statuses must not hold \[413, 422\], got \[413\]"):
        RetryPolicy(retry_statuses=frozenset({413, 503}))
    with pytest.raises(ValueError, match="max_retry_after_s must be >= 0"):
        RetryPolicy(max_retry_after_s=-1)


@pytest.mark.parametrize(
    "value, seconds",
    [("3", 3.0), ("0", 0.0), ("1.5", 1.5), (" 7 ", 7.0), (None, None), ("", None), ("-1", None)]
    + [("soon", None), ("inf", None), ("nan", None)],
)
def test_retry_after_values(value, seconds):
    assert retry_after_s(value) == seconds


def test_retry_after_as_an_http_date():
    now = 1_800_000_000.0
    assert retry_after_s(formatdate(now + 12, usegmt=True), now=now) == pytest.approx(12.0)
    assert retry_after_s(formatdate(now - 60, usegmt=True), now=now) == 0.0  # already past: now


def test_retry_after_replaces_the_backoff_capped_and_never_shortened():
    policy = RetryPolicy(backoff_s=0.2, max_backoff_s=1.0, max_retry_after_s=10.0, jitter=0.5)
    rng = random.Random(0)
    for retry, asked, base in [(1, "3", 3.0), (3, "1", 1.0), (3, "0.1", 0.1), (1, "60", 10.0)]:
        waits = [policy.delay_s(retry, rng, retry_after=asked) for _ in range(200)]
        assert base <= min(waits) and max(waits) <= base * 1.5  # jitter only adds
        assert sum(waits) / len(waits) == pytest.approx(base * 1.25, rel=0.05)
    exact = RetryPolicy(jitter=0.0)
    assert exact.delay_s(2, retry_after="4") == 4.0  # longer than max_backoff_s: still honoured
    assert exact.delay_s(3, retry_after="0") == 0.0  # "now" is now, not the 0.8 s backoff
    assert exact.delay_s(2, retry_after="soon") == pytest.approx(0.4)  # unreadable: the backoff


def _fake_attempts(answers: list[tuple[int | None, dict[str, str]]]):
    calls: list[int | None] = []

    def attempt():
        status, headers = answers[min(len(calls), len(answers) - 1)]
        calls.append(status)
        response = None if status is None else httpx.Response(status, headers=headers)
        return status, None if status == 200 else f"HTTP {status}", response

    return attempt, calls


@pytest.mark.parametrize(
    "answers, waits, final",
    [
        ([(429, {"retry-after": "2"}), (200, {})], [2.0], 200),
        ([(503, {"Retry-After": "3"}), (503, {"retry-after": "1"}), (200, {})], [3.0, 1.0], 200),
        ([(429, {}), (503, {}), (200, {})], [0.2, 0.4], 200),  # no Retry-After: the backoff
        ([(500, {"retry-after": "5"}), (200, {})], [0.2], 200),  # only a 429's or 503's is read
        ([(None, {}), (503, {"retry-after": "2"}), (413, {})], [0.2, 2.0], 413),  # 413 is final
        ([(422, {})], [], 422),
        ([(503, {"retry-after": "99"})], [30.0, 30.0, 30.0], 503),  # capped; refused in the end
    ],
)
def test_retry_loop_waits_what_the_server_asks(answers, waits, final):
    attempt, calls = _fake_attempts(answers)
    slept: list[float] = []
    made, first, last = RetryPolicy(jitter=0.0).run(attempt, sleep=slept.append)
    assert slept == pytest.approx(waits)
    assert made == len(calls) == len(waits) + 1 and last[0] == final and first[0] == answers[0][0]


# -- the retrying Locust users ----------------------------------------------------------------------


class _BusyAPI(FakeAPI):
    """/v/classify: each request's first attempt (odd count) 429 with Retry-After: 1, the retry a
    valid answer; /big/classify: always 413."""

    count = 0

    def answer(self, path: str, body: dict) -> tuple[int, dict, dict[str, str]]:
        if path.startswith("/big/"):
            return 413, {"error": "too many tokens"}, {}
        if self.next() % 2 == 1:
            return 429, {"error": "busy", "retry_after_s": 1}, {"Retry-After": "1"}
        return self.ok(body)


def test_retrying_users_wait_for_retry_after_and_never_retry_413(tmp_path):
    _, logged = run_retry_users(_BusyAPI, tmp_path, "v,big", seconds=6)
    to_v = [r for r in logged if r["variant"] == "v"]
    to_big = [r for r in logged if r["variant"] == "big"]
    assert to_v and to_big, logged
    for r in to_v:  # waited the server's second (and at most 1.5 s: the jitter), then answered
        assert (r["first_status"], r["attempts"], r["error"]) == (429, 2, None)
        assert 1.0 <= r["t1"] - r["t0"] < 2.5
    assert all(r["attempts"] == 1 and r["status"] == 413 for r in to_big)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_attempts": 0}, "max_attempts must be >= 1"),
        ({"backoff_s": 3.0, "max_backoff_s": 2.0}, "backoff_s must be >= 0 and <= max_backoff_s"),
        ({"jitter": 1.0}, "jitter must be in"),
        ({"timeout_s": 0}, "timeout_s must be > 0"),
    ],
)
def test_bad_policies_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)
