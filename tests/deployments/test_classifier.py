"""The classifier application over real HTTP: predictions, headers, batching and bad input."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

TEXTS = [
    "I can't sleep, the deadline is tomorrow and nothing works.",
    "Lovely walk in the park today.",
    "ok",
    "A much longer text " * 40,
]


def test_classify_matches_in_process_model(base_url, local_predictor):
    r = httpx.post(f"{base_url}/classify", json={"texts": TEXTS}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["variant"] == "tiny"
    expected = local_predictor.predict(TEXTS)
    assert len(body["predictions"]) == len(TEXTS)
    for got, want in zip(body["predictions"], expected, strict=True):
        assert got["label"] == want.label
        assert set(got["probabilities"]) == {"label_0", "label_1"}
        for label, p in want.probabilities.items():
            assert got["probabilities"][label] == pytest.approx(p, abs=1e-5)
        assert got["score"] == pytest.approx(max(got["probabilities"].values()))
    assert [p["truncated"] for p in body["predictions"]] == [False, False, False, True]


def test_single_text_and_headers(base_url, local_predictor):
    r = httpx.post(f"{base_url}/classify", json={"text": TEXTS[1]}, timeout=60)
    assert r.status_code == 200
    [pred] = r.json()["predictions"]
    assert pred["label"] == local_predictor.predict([TEXTS[1]])[0].label
    assert r.headers["x-replica-id"]
    assert float(r.headers["x-weights-load-ms"]) > 0
    assert r.headers["x-variant"] == "tiny"
    assert r.headers["x-weights-loaded-from"] == "object-store-zero-copy"


def test_healthz_and_openapi(base_url):
    r = httpx.get(f"{base_url}/healthz", timeout=30)
    assert r.status_code == 200
    health = r.json()
    assert health["status"] == "ok" and health["variant"] == "tiny"
    assert health["torch_threads"] >= 1 and health["labels"] == ["label_0", "label_1"]
    spec = httpx.get(f"{base_url}/openapi.json", timeout=30).json()
    assert "/classify" in spec["paths"]
    # /docs shows what each route answers, not an untyped object
    schemas = {
        path: spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        for path, method in (("/classify", "post"), ("/healthz", "get"), ("/info", "get"))
    }
    assert schemas == {
        "/classify": {"$ref": "#/components/schemas/ClassifyResponse"},
        "/healthz": {"$ref": "#/components/schemas/HealthResponse"},
        "/info": {"$ref": "#/components/schemas/InfoResponse"},
    }
    assert "probabilities" in spec["components"]["schemas"]["PredictionOut"]["properties"]


def test_healthz_reports_the_replica_startup_clock(base_url):
    assert httpx.post(f"{base_url}/classify", json={"text": "warm"}, timeout=30).status_code == 200
    startup = httpx.get(f"{base_url}/healthz", timeout=30).json()["startup"]
    clock = [
        startup[k]
        for k in (
            "process_started",
            "init_started",
            "weights_started",
            "weights_done",
            "ready",
        )
    ]
    assert clock == sorted(clock), startup
    assert clock[-1] - clock[0] < 600  # one replica's start, in seconds of wall clock
    assert startup["first_inference_ms"] > 0


def test_weights_from_disk_switch_serves_the_same_predictions(base_url, local_predictor, tiny_artifact):
    from ray import serve

    from deployments.classifier import app_builder

    root = base_url.rsplit("/", 1)[0]
    args = {"variant": "tiny", "model_dir": str(tiny_artifact), "weights": "disk"}
    serve.run(app_builder(args), name="tiny-disk", route_prefix="/tiny-disk")
    try:
        r = httpx.post(f"{root}/tiny-disk/classify", json={"texts": TEXTS}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.headers["x-weights-loaded-from"] == "disk"
        labels = [p["label"] for p in r.json()["predictions"]]
        assert labels == [p.label for p in local_predictor.predict(TEXTS)]
    finally:
        serve.delete("tiny-disk")
    with pytest.raises(ValueError, match="weights"):
        app_builder({**args, "weights": "ftp"})


def test_concurrent_callers_each_get_their_own_answers(base_url, local_predictor):
    texts = [f"caller {i} writes text number {i} " * (1 + i % 5) for i in range(24)]
    expected = [p.label for p in local_predictor.predict(texts)]

    def call(i):
        r = httpx.post(f"{base_url}/classify", json={"texts": [texts[i]]}, timeout=60)
        r.raise_for_status()
        return r.json()["predictions"][0]["label"]

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(call, range(len(texts)))) == expected


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ("{not json", 400, "not valid JSON"),
        ({}, 422, "exactly one of"),
        ({"texts": "one string"}, 422, "texts"),
        ({"texts": [1, 2]}, 422, "texts[0] must be a string"),
        ({"texts": []}, 422, "texts"),
        ({"text": ""}, 422, "non-empty"),
        ({"texts": ["   "]}, 422, "non-empty"),
        ({"texts": ["a"] * 9}, 422, "at most 8 items"),
        ({"text": "x" * 5001}, 422, "at most 5000 characters"),
        ({"text": "hi", "extra": 1}, 422, "extra"),
        ({"text": "hi", "texts": ["hi"]}, 422, "exactly one of"),
        ([1, 2, 3], 422, "body"),
        ({"text": "y" * 200_000}, 413, "at most 100000 bytes"),
    ],
)
def test_bad_input_gets_4xx_with_message(base_url, body, status, message):
    content = body if isinstance(body, str) else json.dumps(body)
    r = httpx.post(
        f"{base_url}/classify", content=content, headers={"content-type": "application/json"}, timeout=30
    )
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert r.headers["x-replica-id"]


def test_wrong_method_and_route(base_url):
    r = httpx.get(f"{base_url}/classify", timeout=30)
    assert r.status_code == 405 and "not allowed" in r.json()["error"]
    r = httpx.post(f"{base_url}/nope", json={}, timeout=30)
    assert r.status_code == 404 and "no route" in r.json()["error"]


def test_request_path_runs_no_sync_dependency():
    """FastAPI runs a plain `def` dependency in a thread pool: a thread hop per request next to the
    model on the replica's one core. Every dependency of every route must be a coroutine."""
    import inspect

    from fastapi.routing import APIRoute

    from deployments.classifier import api

    def calls(dependant):
        for dep in dependant.dependencies:
            yield dep.call
            yield from calls(dep)

    def walk(routes):  # Serve includes the class's routes as a router of their own
        for r in routes:
            yield r
            inner = getattr(r, "original_router", None) or getattr(r, "router", None)
            yield from walk(getattr(inner, "routes", []))

    routes = [r for r in walk(api.routes) if isinstance(r, APIRoute)]
    assert {r.path for r in routes} >= {"/classify", "/healthz", "/info"}
    for route in routes:
        assert inspect.iscoroutinefunction(route.endpoint), route.path
        for call in calls(route.dependant):
            assert inspect.iscoroutinefunction(call), f"{route.path}: {call.__name__} is not async"
