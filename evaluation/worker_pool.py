"""The evaluation job's Ray side: worker actors that predict whole shards, and the pool that feeds them.

Each worker attaches a variant's weights zero-copy from the model store, predicts a shard with
`loading.predict.Predictor` (the serving path) and writes the shard file atomically. The pool keeps
`workers` actors busy, replaces a lost one and requeues its shard, and stops after too many losses
(re-running the job resumes from the shards already written).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from tqdm import tqdm

from evaluation.shards import Shard, write_shard
from loading.model_store import model_store
from training.data import LabelledTable

__all__ = ["ShardDone", "ShardTask", "WorkerLostError", "run_shard_tasks"]

logger = logging.getLogger(__name__)


class WorkerLostError(RuntimeError):
    """More workers died than the job may replace; re-running it resumes from the written shards."""


@dataclass(frozen=True)
class ShardDone:
    """Reported after each finished shard (the progress hook's argument)."""

    variant: str
    shard: Shard
    seconds: float  # the worker's time on this shard (prediction and write)
    worker: Any = field(repr=False)  # the actor handle that did it


@dataclass(frozen=True)
class ShardTask:
    """One shard of one variant, as queued by the driver."""

    variant: str
    key: str  # the model store's name for the variant's weights
    model_dir: str
    shard: Shard
    path: str  # the shard file to write


@ray.remote
class _ShardWorker:
    """One worker process: predicts whole shards of whichever variant it is asked for.

    It keeps one variant attached at a time (zero-copy, read-only views of the object store);
    a task of another variant attaches that one instead.
    """

    def __init__(self, threads: float, options: dict[str, Any], model_dirs: list[str]) -> None:
        from loading.store import import_model_code, set_threads

        set_threads(threads)
        for model_dir in model_dirs:  # model code imports are start-up, not the first shard's time
            import_model_code(model_dir)
        self.options = options
        self.key: str | None = None
        self.predictor: Any = None

    def ready(self) -> int:
        """Returns once the process is up (imports done): the job's clock starts after this."""
        return os.getpid()

    def _use(self, key: str, model_dir: str) -> None:
        from loading.predict import Predictor
        from loading.store import attach, forget_attached

        if key == self.key:
            return
        self.predictor = None
        forget_attached()  # the previous variant's template: its pages go once nothing maps them
        attached = attach(
            key,
            model_dir,
            int8_kernel=self.options["int8_kernel"],
            sparse_kernel=self.options["sparse_kernel"],
        )
        self.predictor = Predictor(attached.model, attached.tokenizer, self.options["max_tokens"])
        self.key = key

    def predict_shard(self, task: ShardTask, texts: list[str], labels: list[str], rows: list[int]) -> float:
        """Predict `texts` with the task's variant and write the shard file; returns its seconds."""
        start = time.perf_counter()
        self._use(task.key, task.model_dir)
        probs, truncated = self.predictor.probabilities(texts, self.options["batch_size"])  # (B, labels)
        names = self.predictor.labels
        predicted = [names[i] for i in probs.argmax(dim=1).tolist()]
        write_shard(
            Path(task.path), task.shard.start, rows, labels, predicted, probs.tolist(), names, truncated
        )
        return time.perf_counter() - start


def run_shard_tasks(
    tasks: list[ShardTask],
    table: LabelledTable,
    *,
    workers: int,
    cpus_per_worker: float,
    options: dict[str, Any],
    max_worker_losses: int,
    out: str,
    progress: tqdm,
    on_shard: Callable[[ShardDone], None] | None = None,
) -> tuple[dict[str, dict[str, float]], float]:
    """Predict `tasks` on a pool of `workers` actors, replacing lost ones.

    `options` are the workers' prediction settings (int8_kernel, sparse_kernel, max_tokens,
    batch_size); `out` is named when too many workers are lost. Returns timings per variant (wall time
    from its first shard sent to its last one done) and the seconds the pool took to start (process
    start and imports, before any clock per variant).
    """
    timings: dict[str, dict[str, float]] = {}
    left = {t.variant: 0 for t in tasks}
    for t in tasks:
        left[t.variant] += 1
    if not tasks:
        return timings, 0.0

    def new_worker() -> Any:
        return _ShardWorker.options(num_cpus=cpus_per_worker).remote(cpus_per_worker, options, model_dirs)

    model_dirs = sorted({t.model_dir for t in tasks})
    pending = deque(tasks)
    pool = [new_worker() for _ in range(min(workers, len(pending)))]
    in_flight: dict[ray.ObjectRef, tuple[Any, ShardTask]] = {}

    def submit(worker: Any) -> None:
        if pending:
            task = pending.popleft()
            s = task.shard
            ref = worker.predict_shard.remote(
                task,
                table.texts[s.start : s.stop],
                table.labels[s.start : s.stop],
                table.rows[s.start : s.stop],
            )
            in_flight[ref] = (worker, task)
            timing = timings.setdefault(task.variant, {"rows": 0, "shards": 0, "worker_s": 0.0})
            timing.setdefault("start", time.perf_counter())

    losses = 0
    try:
        started = time.perf_counter()
        ray.get([w.ready.remote() for w in pool])
        startup_s = time.perf_counter() - started
        for worker in pool:
            submit(worker)
        while in_flight:
            [ref], _ = ray.wait(list(in_flight), num_returns=1)
            worker, task = in_flight.pop(ref)
            try:
                seconds = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                losses += 1
                if losses > max_worker_losses:
                    raise WorkerLostError(
                        f"lost {losses} workers (at most {max_worker_losses} are replaced); re-run the "
                        f"same command to resume from the shards already written to {out}"
                    ) from exc
                logger.warning(
                    "a worker died on %s shard %d; replacing it: %s", task.variant, task.shard.index, exc
                )
                pending.appendleft(task)
                pool.append(new_worker())
                submit(pool[-1])
                continue
            timing = timings[task.variant]
            timing["rows"] += task.shard.rows
            timing["shards"] += 1
            timing["worker_s"] += seconds
            progress.update(task.shard.rows)
            left[task.variant] -= 1
            if not left[task.variant]:
                timing["wall_s"] = time.perf_counter() - timing.pop("start")
                if task.key != task.variant:  # a private copy (e.g. a sweep's cache): nobody else wants it
                    model_store().drop.remote(task.key)
            if on_shard is not None:
                on_shard(ShardDone(task.variant, task.shard, seconds, worker))
            submit(worker)
    finally:
        for worker in pool:
            ray.kill(worker)  # its process exits, and with it its mapping of the variants
        # ray.kill is asynchronous: wait until the shards in flight have settled (their workers are
        # gone), so that no shard file lands after this returns and a resume sees a still folder.
        if in_flight:
            ray.wait(list(in_flight), num_returns=len(in_flight), timeout=60)
    return timings, startup_s
