"""The serving metrics: recorded with the right values and tags, exported by Ray, and on the dashboard."""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from deployments.metrics import TAG_KEYS, ServingMetrics, _metrics, exported_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "cluster" / "grafana" / "bertserve-dashboard.json"


def metrics_port() -> int:
    """The Prometheus endpoint of this node's metrics agent (`ray start --metrics-export-port`)."""
    import ray

    return ray._private.worker.global_worker.node.metrics_export_port


def scrape(port: int) -> list[Sample]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def wait_for_samples(port: int, ready: Callable[[list[Sample]], bool], timeout_s: float = 60) -> list[Sample]:
    """Scrape until `ready(samples)`: Ray exports every few seconds (~9 s seen here)."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(port)
        if ready(samples):
            return samples
        if time.monotonic() > deadline:
            names = sorted({s.name for s in samples if "bertserve" in s.name})
            raise AssertionError(f"not exported within {timeout_s} s; bertserve series seen: {names}")
        time.sleep(1)


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The one sample named `name` whose labels include `labels`, or None."""
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) <= 1, f"{len(found)} series {name}{labels}"
    return found[0] if found else None


def test_metrics_are_made_once_per_process():
    assert ServingMetrics()._m is ServingMetrics()._m is _metrics()


@pytest.mark.parametrize("field", [f for f in _metrics()._fields if f != "models_held"])
def test_every_per_variant_metric_requires_model_and_variant(field):
    metric = getattr(_metrics(), field)
    assert metric.info["tag_keys"][-2:] == TAG_KEYS
    record = metric.inc if hasattr(metric, "inc") else metric.observe
    with pytest.raises(ValueError, match="Missing value for tag key"):
        record(1, tags={"model": "m"})


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.batch("m", "v", 0), "texts must be >= 1, got 0"),
        (lambda m: m.batch("m", "v", 3, truncated=4), r"truncated must be in \[0, texts=3\], got 4"),
        (lambda m: m.batch("m", "v", 3, truncated=-1), r"truncated must be in \[0, texts=3\], got -1"),
        (lambda m: m.attached("m", "v", -1.0), "ms must be >= 0, got -1.0"),
        (lambda m: m.held(-1), "count must be >= 0, got -1"),
    ],
)
def test_bad_values_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call(ServingMetrics())


def test_recorded_values_reach_rays_prometheus_endpoint(ray_session):
    """Recorded in this (driver) process, scraped from the node: the numbers the dashboard reads."""
    model, variant = "unit", f"v-{uuid.uuid4().hex[:8]}"  # apart from any other run's series
    metrics = ServingMetrics()
    metrics.batch(model, variant, texts=16, truncated=2)
    metrics.batch(model, variant, texts=3)  # nothing truncated: no increment of 0 (Ray refuses one)
    metrics.attached(model, variant, ms=1.5)
    metrics.pool_load(model, variant)
    metrics.pool_load(model, variant)
    metrics.pool_eviction(model, variant)
    metrics.held(2)
    tags = {"model": model, "variant": variant}

    samples = wait_for_samples(
        metrics_port(),
        lambda s: value(s, "ray_bertserve_pool_evictions_total", **tags) is not None,
    )

    worker = ray_session.get_runtime_context().get_worker_id()
    assert value(samples, "ray_bertserve_texts_classified_total", **tags) == 19
    assert value(samples, "ray_bertserve_texts_truncated_total", **tags) == 2
    assert value(samples, "ray_bertserve_batch_size_count", **tags) == 2
    assert value(samples, "ray_bertserve_batch_size_bucket", le="4.0", **tags) == 1  # the 3
    assert value(samples, "ray_bertserve_batch_size_bucket", le="16.0", **tags) == 2  # and the 16
    assert value(samples, "ray_bertserve_attach_ms_bucket", le="1.0", **tags) == 0
    assert value(samples, "ray_bertserve_attach_ms_bucket", le="2.5", **tags) == 1
    assert value(samples, "ray_bertserve_pool_loads_total", **tags) == 2
    assert value(samples, "ray_bertserve_pool_evictions_total", **tags) == 1
    assert value(samples, "ray_bertserve_models_held", WorkerId=worker) == 2
    exported = {s.name for s in samples if s.labels.get("variant") == variant or s.name.endswith("held")}
    assert exported == exported_names()


def dashboard_exprs(dashboard: dict) -> list[str]:
    """Every PromQL the dashboard runs: its panels' targets and its variables' queries."""
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return exprs + [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]


def test_the_dashboard_queries_only_metrics_we_define_and_shows_them_all():
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {name for e in dashboard_exprs(dashboard) for name in re.findall(r"\bray_bertserve_\w+", e)}
    assert queried <= exported_names(), f"not defined in deployments/metrics.py: {queried - exported_names()}"
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in queried}
    defined = {f"ray_{m.info['name']}" for m in _metrics()}
    assert shown == defined, f"defined but not on the dashboard: {defined - shown}"


def test_the_dashboard_is_importable_and_filters_by_model_and_variant():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39 and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    assert {"model", "variant"} <= set(variables)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            per_variant = re.search(r"ray_bertserve_(?!models_held)", target["expr"])
            if per_variant:
                assert 'model=~"$model"' in target["expr"] and 'variant=~"$variant"' in target["expr"]
