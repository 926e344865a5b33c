"""Fair, token-budgeted batching inside a replica: no request waits behind the whole of another.

`@serve.batch` forms batches in arrival order, so one request of 64 long texts put four full
batches ahead of a short request that came just after it, and a replica running its model on the
event loop answered nothing else (not even health checks) until they were done: short requests
waited ~50 s behind three big ones (issue 20). Here each request is tokenized once and queued as a
job. The scheduler's loop takes a *round* of texts, one per waiting job in turn, at most
`max_batch_tokens` real tokens and `max_batch_size` texts, the jobs that have had the fewest texts
run going first (least attained service: a new request rides in the next round, and long requests
advance in step, round-robin). It cuts the round into
forward passes of at most `max_batch_tokens` padded tokens (`loading.predict.plan_passes`:
length-sorted, bounded padding, as before) and yields to the event loop after every pass. A job
that would take the replica's queued tokens past `max_queued_tokens` is refused at once
(`OverloadedError`, a 503 with Retry-After), never queued for minutes.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from deployments.autoscaling import QUEUED_TOKENS
from deployments.boundary import OverloadedError
from loading.predict import MAX_PADDING, plan_passes

__all__ = ["FairScheduler", "take_round"]

logger = logging.getLogger(__name__)

_FIRST_TOKENS_PER_S = (
    5000.0  # the default model on one core (docs/benchmarks/pass_tokens.json), until measured
)


def take_round(
    pending: Sequence[Sequence[int]], keys: Sequence[str], start: int, max_texts: int, max_tokens: int
) -> list[tuple[int, int]]:
    """The next round: `(job, position)` pairs, one text per job in turn from job `start` on.

    `pending[j]` holds job j's waiting texts' token counts in the order they are taken; a round holds
    jobs of one key only (one model per forward pass): the key of the first job with work from
    `start`. It ends at `max_texts` texts, or before the text that would take it past `max_tokens`
    real tokens (a round's first text is always taken, whatever its length).
    """
    n = len(pending)
    order = [(start + k) % n for k in range(n)]
    first = next((j for j in order if pending[j]), None)
    if first is None:
        return []
    key = keys[first]
    taken: list[tuple[int, int]] = []
    taken_of = [0] * n
    tokens = 0
    while True:
        progressed = False
        for j in order:
            if keys[j] != key or taken_of[j] >= len(pending[j]):
                continue
            length = pending[j][taken_of[j]]
            if len(taken) >= max_texts or (taken and tokens + length > max_tokens):
                return taken
            taken.append((j, taken_of[j]))
            taken_of[j] += 1
            tokens += length
            progressed = True
        if not progressed:
            return taken


@dataclass(eq=False)
class _Job:
    """One request's texts: encodings, what is still waiting, and where its answers go."""

    key: str
    forward: Callable[[list[Any]], torch.Tensor]  # one pass's encodings -> probabilities (B, labels)
    encodings: list[Any]
    lengths: list[int]
    done: asyncio.Future
    waiting: list[int] = field(default_factory=list)  # text indices not yet in a pass, shortest first
    rows: dict[int, torch.Tensor] = field(default_factory=dict)
    tokens_left: int = 0
    served: int = 0  # texts taken into rounds so far: the fewest go first

    def answer(self) -> torch.Tensor:
        return torch.stack([self.rows[i] for i in range(len(self.encodings))])


class FairScheduler:
    """One per replica: `await run(...)` queues a request's texts and returns their probabilities."""

    def __init__(
        self,
        *,
        max_batch_size: int = 16,
        max_batch_tokens: int = 2048,
        max_queued_tokens: int = 65536,
        batch_wait_s: float = 0.01,
        max_padding: float = MAX_PADDING,
        on_pass: Callable[[str, list[Any]], None] | None = None,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_queued_tokens = max_queued_tokens
        self.batch_wait_s = batch_wait_s
        self.max_padding = max_padding
        self.on_pass = on_pass  # (key, the pass's encodings), once per pass: metrics
        self.tokens_per_s = _FIRST_TOKENS_PER_S  # measured as passes run: sets Retry-After
        self._jobs: list[_Job] = []
        self._queued_tokens = 0
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.Task | None = None

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    def configure(self, user_config: dict[str, Any]) -> None:
        """Batching from a deployment's `user_config` (`max_batch_size`, `batch_wait_timeout_s`): what
        a replica's `reconfigure` does, so the YAML retunes it without a restart."""
        self.max_batch_size = int(user_config.get("max_batch_size", 16))
        self.batch_wait_s = float(user_config.get("batch_wait_timeout_s", 0.01))

    def autoscaling_stats(self) -> dict[str, float]:
        """What a replica's `record_autoscaling_stats` reports: its queued tokens, for the work-aware
        policy (`deployments.autoscaling`)."""
        return {QUEUED_TOKENS: float(self._queued_tokens)}

    def retry_after_s(self) -> int:
        """Seconds until the queued work has run at the measured rate (at least 1)."""
        return max(1, math.ceil(self._queued_tokens / self.tokens_per_s))

    async def run(
        self, key: str, forward: Callable[[list[Any]], torch.Tensor], encodings: list[Any]
    ) -> torch.Tensor:
        """Probabilities `(N, labels)` of `encodings` through `forward`, fairly among other requests.

        Raises `OverloadedError` at once when the replica's queue cannot take `encodings`' tokens; an
        empty queue takes any request (its size is bounded before, by `max_request_tokens`).
        """
        lengths = [len(e.ids) for e in encodings]
        tokens = sum(lengths)
        if self._queued_tokens and self._queued_tokens + tokens > self.max_queued_tokens:
            raise OverloadedError(
                f"this replica is busy: {self._queued_tokens} tokens queued, {tokens} more would pass its "
                f"max_queued_tokens of {self.max_queued_tokens}; retry after the Retry-After seconds",
                self.retry_after_s(),
            )
        loop = asyncio.get_running_loop()
        job = _Job(key, forward, encodings, lengths, loop.create_future(), tokens_left=tokens)
        job.waiting = sorted(range(len(encodings)), key=lengths.__getitem__)
        self._jobs.append(job)
        self._queued_tokens += tokens
        self._start()
        try:
            return await job.done
        finally:
            if job.done.cancelled() or not job.done.done():  # the caller went away: its texts leave
                job.done.cancel()
                self._drop(job)

    def _start(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._loop is None or self._loop.done():
            self._loop = asyncio.get_running_loop().create_task(self._work())

    def _drop(self, job: _Job) -> None:
        if job in self._jobs:
            self._jobs.remove(job)
            self._queued_tokens -= job.tokens_left

    async def _work(self) -> None:
        """The replica's one worker: rounds until the queue is empty, then sleeps until a job comes."""
        assert self._wake is not None
        while True:
            if not self._jobs:
                self._wake.clear()
                await self._wake.wait()
                if self.batch_wait_s:  # a moment for other callers to join the first pass
                    await asyncio.sleep(self.batch_wait_s)
            await self._round()

    async def _round(self) -> None:
        jobs = sorted(self._jobs, key=lambda job: job.served)  # stable: arrival order among equals
        pending = [[job.lengths[i] for i in job.waiting] for job in jobs]
        taken = take_round(pending, [j.key for j in jobs], 0, self.max_batch_size, self.max_batch_tokens)
        if not taken:  # no job has a text left to run (cannot happen): never spin without yielding
            await asyncio.sleep(self.batch_wait_s or 0.001)
            return
        texts = [(jobs[j], jobs[j].waiting[p]) for j, p in taken]
        for job in dict.fromkeys(job for job, _ in texts):
            chosen = {i for j, i in texts if j is job}
            job.waiting = [i for i in job.waiting if i not in chosen]
            job.served += len(chosen)
        lengths = [job.lengths[i] for job, i in texts]
        for idx in plan_passes(lengths, self.max_batch_size, self.max_padding, self.max_batch_tokens):
            batch = [texts[k] for k in idx]
            self._run_pass(batch)
            await asyncio.sleep(0)  # health checks, new arrivals and finished answers go out now

    def _run_pass(self, batch: list[tuple[_Job, int]]) -> None:
        live = [(job, i) for job, i in batch if not job.done.done()]
        if not live:
            return
        started = asyncio.get_running_loop().time()
        try:
            probs = live[0][0].forward([job.encodings[i] for job, i in live])
        except Exception as exc:  # noqa: BLE001 - the pass's callers get the error; the worker goes on
            logger.exception("a forward pass of %d texts failed", len(live))
            for job in {job for job, _ in live}:
                self._drop(job)
                if not job.done.done():
                    job.done.set_exception(exc)
            return
        tokens = sum(job.lengths[i] for job, i in live)
        elapsed = asyncio.get_running_loop().time() - started
        if elapsed > 0:  # a running average: Retry-After follows the replica's real speed
            self.tokens_per_s = 0.8 * self.tokens_per_s + 0.2 * (tokens / elapsed)
        for (job, i), row in zip(live, probs, strict=True):
            job.rows[i] = row
            job.tokens_left -= job.lengths[i]
            self._queued_tokens -= job.lengths[i]
        if self.on_pass is not None:  # a pass holds one key: `take_round`
            self.on_pass(live[0][0].key, [job.encodings[i] for job, i in live])
        for job in {job for job, _ in live}:
            if len(job.rows) == len(job.encodings):
                self._jobs.remove(job)
                job.done.set_result(job.answer())
