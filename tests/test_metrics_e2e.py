"""End to end: a replica's `ServingMetrics` and Serve's request metrics on the node's /metrics (slow).

A minimal deployment makes the serving code's calls (attach at start, one batch call per request)
next to the session's tiny app; then Ray's metrics export port is scraped until both show.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from deployments.metrics import ServingMetrics
from tests.deployments.test_metrics import DASHBOARD, dashboard_exprs, metrics_port, value, wait_for_samples

pytestmark = pytest.mark.slow

APP = "metrics-probe"
MODEL, VARIANT = "probe", "v1"
TEXTS = ["short", "also short", "a text longer than twenty characters"]  # > 20 chars counts as truncated
REQUESTS = 5


@pytest.fixture(scope="module")
def probe_url(base_url):
    from ray import serve
    from starlette.requests import Request

    # Defined here, not at module level: Serve then ships the class by value, and the replica need
    # not import this test module.
    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class MetricsProbe:
        def __init__(self) -> None:
            self.metrics = ServingMetrics()
            self.metrics.attached(MODEL, VARIANT, ms=1.5)
            self.metrics.held(1)

        async def __call__(self, request: Request) -> dict:
            texts = (await request.json())["texts"]  # a body without "texts": KeyError, Serve's 500
            self.metrics.batch(MODEL, VARIANT, len(texts), truncated=sum(len(t) > 20 for t in texts))
            return {"texts": len(texts)}

    serve.run(MetricsProbe.bind(), name=APP, route_prefix=f"/{APP}")
    yield f"{base_url.rsplit('/', 1)[0]}/{APP}"
    serve.delete(APP)


def test_replica_metrics_and_serves_request_metrics_are_exported(probe_url):
    for _ in range(REQUESTS):
        response = httpx.post(probe_url, json={"texts": TEXTS}, timeout=30)
        assert response.status_code == 200, response.text
    assert httpx.post(probe_url, json={"no": "texts"}, timeout=30).status_code == 500
    assert httpx.get(f"{probe_url.rsplit('/', 1)[0]}/no-such-app", timeout=30).status_code == 404
    tags = {"model": MODEL, "variant": VARIANT, "application": APP}

    def ready(samples) -> bool:
        texts = value(samples, "ray_bertserve_texts_classified_total", **tags) or 0
        served = value(samples, "ray_serve_num_http_requests_total", application=APP, status_code="200") or 0
        errors = value(samples, "ray_serve_num_http_error_requests_total", application=APP, error_code="500")
        return texts >= REQUESTS * len(TEXTS) and served >= REQUESTS and errors is not None

    samples = wait_for_samples(metrics_port(), ready, timeout_s=60)

    assert value(samples, "ray_bertserve_texts_classified_total", **tags) == REQUESTS * len(TEXTS)
    assert value(samples, "ray_bertserve_texts_truncated_total", **tags) == REQUESTS
    assert value(samples, "ray_bertserve_batch_size_count", **tags) == REQUESTS
    assert value(samples, "ray_bertserve_attach_ms_count", **tags) == 1
    assert value(samples, "ray_bertserve_models_held", application=APP) == 1
    # Serve adds its own tags to a replica's metrics: the dashboard can split by application.
    assert value(samples, "ray_bertserve_texts_classified_total", deployment="MetricsProbe", **tags)
    assert (value(samples, "ray_serve_deployment_request_counter_total", application=APP) or 0) >= REQUESTS
    # Every Serve metric the dashboard queries is one this Ray exports under that name.
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {n for e in dashboard_exprs(dashboard) for n in re.findall(r"\bray_serve_\w+", e)}
    assert queried and queried <= {s.name for s in samples}, queried - {s.name for s in samples}


def test_the_real_classifier_reports_its_texts_and_attach(base_url):
    """The served tiny app (deployments.classifier) calls ServingMetrics: model `stress`, variant `tiny`."""
    texts = ["one text", "and another"]
    for _ in range(3):
        assert httpx.post(f"{base_url}/classify", json={"texts": texts}, timeout=30).status_code == 200
    tags = {"model": "stress", "variant": "tiny", "application": "tiny"}
    samples = wait_for_samples(
        metrics_port(),
        lambda s: (value(s, "ray_bertserve_texts_classified_total", **tags) or 0) >= 3 * len(texts),
        timeout_s=60,
    )
    assert value(samples, "ray_bertserve_attach_ms_count", **tags) >= 1
    assert value(samples, "ray_bertserve_batch_size_count", **tags) >= 1
