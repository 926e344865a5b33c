"""Application metrics of the serving replicas, per model and variant, exported by Ray.

`ray.serve.metrics` objects export through the node's Prometheus endpoint (`ray start
--metrics-export-port`), next to Serve's own request metrics, with Ray's `ray_` prefix: counters as
`ray_<name>_total`, histograms as `_bucket` / `_sum` / `_count`. Inside a replica Serve adds the
`deployment`, `replica` and `application` tags itself. docs/OBSERVABILITY.md lists them all.
"""

import functools
from typing import Any, NamedTuple

from ray.serve.metrics import Counter, Gauge, Histogram

from deployments.protocol import split_key

__all__ = ["ATTACH_MS_BOUNDARIES", "BATCH_SIZE_BOUNDARIES", "TAG_KEYS", "ServingMetrics", "exported_names"]

TAG_KEYS = ("model", "variant")
# `max_batch_size` is 16 in the YAML and may be tuned up to 64: a bucket at each likely setting,
# so that "batches are full" and "batches are mostly single texts" read apart.
BATCH_SIZE_BOUNDARIES = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64]
# A warm pool attach is ~1-6 ms and a clone from a kept template <1 ms; a first attach that waits
# for the store to read the disk takes hundreds of ms.
ATTACH_MS_BOUNDARIES = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000]


class _Metrics(NamedTuple):
    texts: Counter
    truncated: Counter
    batch_size: Histogram
    attach_ms: Histogram
    pool_loads: Counter
    pool_evictions: Counter
    models_held: Gauge


@functools.cache
def _metrics() -> _Metrics:
    """This process's metric objects, made on first use and then shared.

    Once per process, so `ServingMetrics()` is free and each name has one registration with
    Ray's recorder (two objects of one name did add into one series in Ray 2.60, but nothing
    promises it). Made lazily, in the replica's `__init__`, because Serve fixes a metric's tags
    (deployment, replica, application) when it is made, from the replica context of that moment.
    """
    return _Metrics(
        texts=Counter("bertserve_texts_classified", "Texts classified.", TAG_KEYS),
        truncated=Counter(
            "bertserve_texts_truncated", "Texts longer than the model's max tokens; tail ignored.", TAG_KEYS
        ),
        batch_size=Histogram(
            "bertserve_batch_size",
            "Texts per forward pass of one variant (deployments/scheduler.py).",
            BATCH_SIZE_BOUNDARIES,
            TAG_KEYS,
        ),
        attach_ms=Histogram(
            "bertserve_attach_ms", "Time to attach a variant's weights, ms.", ATTACH_MS_BOUNDARIES, TAG_KEYS
        ),
        pool_loads=Counter(
            "bertserve_pool_loads", "Pool replica attached a variant it did not hold.", TAG_KEYS
        ),
        pool_evictions=Counter(
            "bertserve_pool_evictions",
            "Pool replica dropped its least recently used variant (count or memory budget).",
            TAG_KEYS,
        ),
        models_held=Gauge("bertserve_models_held", "Variants attached in this replica now."),
    )


def exported_names() -> set[str]:
    """The series names Ray's Prometheus endpoint shows for these metrics (the dashboard's test)."""
    names = set()
    for metric in _metrics():
        name = f"ray_{metric.info['name']}"
        if isinstance(metric, Counter):
            names.add(f"{name}_total")
        elif isinstance(metric, Histogram):
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names


class ServingMetrics:
    """The serving code's one handle on its metrics: make one per replica, in `__init__`.

    One call per batch, not per text: each costs a few microseconds of Ray's recording.
    """

    def __init__(self) -> None:
        self._m = _metrics()

    def batch(self, model: str, variant: str, texts: int, truncated: int = 0) -> None:
        """One predict call of `texts` texts, of which `truncated` were cut to the model's max tokens."""
        if texts < 1:
            raise ValueError(f"texts must be >= 1, got {texts}")
        if not 0 <= truncated <= texts:
            raise ValueError(f"truncated must be in [0, texts={texts}], got {truncated}")
        tags = {"model": model, "variant": variant}
        self._m.texts.inc(texts, tags)
        self._m.batch_size.observe(texts, tags)
        if truncated:  # Ray's counters refuse an increment of 0
            self._m.truncated.inc(truncated, tags)

    def forward_pass(self, key: str, encodings: list[Any]) -> None:
        """One forward pass of `key` (`model/variant`) over `encodings` (the scheduler's `on_pass`):
        its texts, and those the tokenizer cut (`overflowing`)."""
        self.batch(*split_key(key), len(encodings), sum(bool(e.overflowing) for e in encodings))

    def attached(self, model: str, variant: str, ms: float) -> None:
        """A variant's weights were attached in `ms` (`AttachedModel.attach_ms`)."""
        if ms < 0:
            raise ValueError(f"ms must be >= 0, got {ms}")
        self._m.attach_ms.observe(ms, {"model": model, "variant": variant})

    def pool_load(self, model: str, variant: str) -> None:
        """A pool replica attached a variant it did not hold (Serve's multiplexed loader ran)."""
        self._m.pool_loads.inc(1, {"model": model, "variant": variant})

    def pool_eviction(self, model: str, variant: str) -> None:
        """A pool replica dropped a variant, least recently used, by count or memory budget."""
        self._m.pool_evictions.inc(1, {"model": model, "variant": variant})

    def held(self, count: int) -> None:
        """How many variants this replica holds attached now (after each load or eviction)."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self._m.models_held.set(count)
