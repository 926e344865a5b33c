"""Locust users for the classifier API: real texts, single and small batches, any variants.

    locust -f benchmarks/locustfile.py --headless -u 20 -r 5 -t 60s --host http://127.0.0.1:8000 \\
        --variants stress/base,stress/quant --load-shape step --csv reports/locust   # +5 users / 30 s

Options (also environment variables LOADTEST_*, for `locust --config` or CI): `--variants` (one
picked at random per request), `--texts-file`/`--text-column` (CSV/Parquet/JSONL; default the
Dreaddit test split), `--batch-max`, `--batch-share` (share of requests that are batches of
2..batch-max; 0: single texts only, so requests/s is texts/s), `--load-shape` constant | step |
spike (`benchmarks.shapes`). A request fails on no answer, a non-2xx status or a body that is not
the API's answer for the texts sent.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import sys
from typing import Any

from locust import FastHttpUser, LoadTestShape, constant, events, task

from benchmarks.shapes import SHAPES, ShapeConfig, answer_problem, users_at

__all__ = ["ClassifierUser", "ConfiguredShape", "response_problem"]


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    env, add = os.environ.get, parser.add_argument
    add(
        "--variants",
        default=env("LOADTEST_VARIANTS", "stress/base"),
        help="routes to call, a,b,... (<model>/<variant>, e.g. stress/quant,sentiment/base)",
    )
    add("--texts-file", default=env("LOADTEST_TEXTS", ""), help="texts to send (default Dreaddit)")
    add("--text-column", default=env("LOADTEST_TEXT_COLUMN", "text"))
    add("--batch-max", type=int, default=int(env("LOADTEST_BATCH_MAX", "4")))
    add("--batch-share", type=float, default=float(env("LOADTEST_BATCH_SHARE", "0.25")), help="0..1")
    add("--load-shape", choices=SHAPES, default=env("LOADTEST_SHAPE", "constant"))
    add("--step-users", type=int, default=5, help="step shape: users added per step")
    add("--step-seconds", type=float, default=30.0, help="step shape: seconds per step")
    add("--spike-at", type=float, default=20.0, help="spike shape: seconds before the spike")
    add("--spike-seconds", type=float, default=20.0, help="spike shape: spike length")


@functools.cache
def _texts(path: str, column: str) -> tuple[str, ...]:
    """The texts to send, read once per process."""
    from training.data import read_frame
    from training.sources import dreaddit_paths

    frame = read_frame(path or dreaddit_paths()[1])
    if column not in frame.columns:
        raise ValueError(f"{path}: text column must be one of {list(frame.columns)}, got {column!r}")
    texts = tuple(t for t in frame[column].tolist() if isinstance(t, str) and t.strip())
    if not texts:
        raise ValueError(f"{path}: no non-empty texts in column {column!r}")
    return texts


@events.init.add_listener
def _check_options(environment: Any, **_: Any) -> None:
    """Read the texts before any user starts: a bad file stops the run with a message, not a hang."""
    opts = environment.parsed_options
    if opts is None:  # not started from the command line (e.g. imported by a tool)
        return
    log = logging.getLogger(__name__)
    try:
        _texts(opts.texts_file, opts.text_column)
    except (OSError, ValueError) as exc:  # DataError is a ValueError
        log.error("cannot load texts: %s", exc)
        sys.exit(2)
    if not 0.0 <= opts.batch_share <= 1.0:
        log.error("--batch-share must be within 0..1, got %s", opts.batch_share)
        sys.exit(2)


def response_problem(response: Any, sent: int, variant: str) -> str | None:
    """What is wrong with a response to `sent` texts from `variant`, or None if it is the API's answer."""
    status = response.status_code  # geventhttpclient: 0 when nothing answered
    if not status:
        return f"no answer: {response.error}"
    if not 200 <= status < 300:
        return f"HTTP {status}: {(response.text or '')[:200]}"
    try:
        return answer_problem(response.json(), sent, variant)
    except ValueError:
        return f"body is not JSON: {response.text[:200]}"


class ClassifierUser(FastHttpUser):
    """A closed-loop caller: sends the next request as soon as the previous one is answered.

    FastHttpUser (geventhttpclient) costs the client a fraction of `requests`' CPU per call; on a
    machine that also runs the server, that CPU would otherwise be taken from the replicas.
    """

    wait_time = constant(0)

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.variants = [v.strip() for v in opts.variants.split(",") if v.strip()]
        self.texts = _texts(opts.texts_file, opts.text_column)
        self.batch_max = max(2, opts.batch_max)
        self.batch_share = opts.batch_share

    def _post(
        self, variant: str, body: dict[str, Any], sent: int, name: str
    ) -> tuple[int | None, str | None, Any]:
        """One POST, marked failed unless it is the API's answer: a `benchmarks.retry.Attempt`."""
        with self.client.post(f"/{variant}/classify", json=body, name=name, catch_response=True) as response:
            if problem := response_problem(response, sent, variant):
                response.failure(problem)
            return response.status_code or None, problem, response  # geventhttpclient: 0 = no answer

    def _classify(self, texts: list[str], kind: str) -> None:
        variant = random.choice(self.variants)
        body = {"text": texts[0]} if kind == "single" else {"texts": texts}
        self._post(variant, body, len(texts), f"/{variant}/classify [{kind}]")

    @task
    def classify(self) -> None:
        if random.random() < self.batch_share:
            self._classify(random.sample(self.texts, random.randint(2, self.batch_max)), "batch")
        else:
            self._classify([random.choice(self.texts)], "single")


class ConfiguredShape(LoadTestShape):
    """The shape `--load-shape` names (see `benchmarks.shapes.users_at`); `-t` ends the run."""

    def tick(self) -> tuple[int, float] | None:
        opts = self.runner.environment.parsed_options
        shape = (opts.step_users, opts.step_seconds, opts.spike_at, opts.spike_seconds)
        cfg = ShapeConfig(opts.load_shape, int(opts.num_users or 1), float(opts.spawn_rate or 1), *shape)
        run_time = self.get_run_time()
        # Locust leaves -t to the shape when there is one: stop here, or the run never ends.
        limit = opts.run_time if isinstance(opts.run_time, int | float) else None
        if limit and run_time >= limit:
            return None
        return users_at(cfg, run_time)
