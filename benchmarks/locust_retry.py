"""`benchmarks/locustfile.py`'s users, retrying per `benchmarks.retry.RetryPolicy` and logging every
request (`benchmarks.records`), to measure what users see while replicas or nodes are lost.

    locust -f benchmarks/locust_retry.py --headless -u 8 -r 8 -t 60s --host http://127.0.0.1:8200 \\
        --batch-share 0 --retry-attempts 4 --records reports/requests.jsonl

Options beyond the locustfile's (`_add_retry_options`): the retry policy (a 429 or 503 with
`Retry-After` waits what it asks, up to `--retry-max-after-s`; 413 and 422 are never retried) and the
`--records` log. Locust's stats count every attempt under `<name> attempt` and what the user saw
under `<name>`.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import IO, Any

from locust import events

import benchmarks.locustfile as base  # a module, not its classes: Locust would run those users too
from benchmarks.retry import RetryPolicy

__all__ = ["RetryingClassifierUser"]

_records: list[IO[str]] = []  # the open --records file, if any (one per Locust process)


@events.init_command_line_parser.add_listener
def _add_retry_options(parser: Any) -> None:
    env, add = os.environ.get, parser.add_argument
    add("--retry-attempts", type=int, default=int(env("LOADTEST_RETRY_ATTEMPTS", "4")), help="1 = none")
    add("--retry-backoff-s", type=float, default=RetryPolicy.backoff_s)
    add("--retry-timeout-s", type=float, default=RetryPolicy.timeout_s)
    add("--retry-max-after-s", type=float, default=RetryPolicy.max_retry_after_s, help="Retry-After cap")
    add("--records", default=env("LOADTEST_RECORDS", ""), help="JSON-lines request log")


@events.init.add_listener
def _open_records(environment: Any, **_: Any) -> None:
    if (opts := environment.parsed_options) is not None and opts.records:
        _records.append(open(opts.records, "a", buffering=1))  # line-buffered: survives a SIGKILL


@events.quitting.add_listener
def _close_records(**_: Any) -> None:
    while _records:
        _records.pop().close()


class RetryingClassifierUser(base.ClassifierUser):
    """`ClassifierUser` whose requests are retried on no answer, 429, 500, 502, 503 and 504."""

    def __init__(self, environment: Any) -> None:
        self.policy = RetryPolicy()
        if (opts := environment.parsed_options) is not None:
            self.policy = RetryPolicy(
                max_attempts=opts.retry_attempts,
                backoff_s=opts.retry_backoff_s,
                max_backoff_s=max(RetryPolicy.max_backoff_s, opts.retry_backoff_s),
                max_retry_after_s=opts.retry_max_after_s,
                timeout_s=opts.retry_timeout_s,
            )
        # Per attempt, instead of Locust's 60 s: read by FastHttpUser.__init__ to build the client.
        self.network_timeout = self.connection_timeout = self.policy.timeout_s
        super().__init__(environment)

    def _classify(self, texts: list[str], kind: str) -> None:
        variant = random.choice(self.variants)
        body = {"text": texts[0]} if kind == "single" else {"texts": texts}
        name = f"/{variant}/classify [{kind}]"
        started, clock = time.time(), time.perf_counter()
        attempts, first, (status, problem, response) = self.policy.run(
            lambda: self._post(variant, body, len(texts), f"{name} attempt"),
            time.sleep,  # gevent-patched
        )
        elapsed_ms = (time.perf_counter() - clock) * 1e3
        events.request.fire(
            request_type="POST",
            name=name,
            response_time=elapsed_ms,
            response_length=len(response.content or b"") if status else 0,
            exception=RuntimeError(problem) if problem else None,
            context={},
        )
        if _records:
            record = {"variant": variant, "t0": started, "t1": started + elapsed_ms / 1e3}
            record |= {"attempts": attempts, "first_status": first[0], "first_error": first[1]}
            record |= {"status": status, "error": problem}
            record["replica"] = response.headers.get("x-replica-id") if status else None
            record["retry_after"] = response.headers.get("retry-after") if status else None
            _records[0].write(json.dumps(record) + "\n")
