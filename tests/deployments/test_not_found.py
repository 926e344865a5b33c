"""The catch-all app at `/`: paths under no variant get a JSON 404 naming the served variants."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def with_not_found(serve_root):
    from ray import serve

    from deployments.not_found import app_builder

    serve.run(app_builder({"variants": ["tiny"]}), name="not-found", route_prefix="/")
    yield serve_root
    serve.delete("not-found")


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/no-such-variant/classify"), ("GET", "/"), ("GET", "/%ff%00/..%2f"), ("DELETE", "/x")],
)
def test_a_path_under_no_variant_is_a_json_404(with_not_found, method, path):
    r = httpx.request(method, f"{with_not_found}{path}", json={"text": "a"}, timeout=30)
    assert r.status_code == 404
    body = r.json()
    assert body["routes"] == ["/tiny/classify"] and "no variant is served" in body["error"]


def test_variants_still_win_over_the_catch_all(with_not_found):
    r = httpx.post(f"{with_not_found}/tiny/classify", json={"text": "still served"}, timeout=30)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1


def test_serve_configs_catch_all_is_the_pool_serving_every_dedicated_variant():
    """The shipped config mounts the warm pool at `/`: its JSON 404 replaces this app's, and every
    variant with a dedicated app at /<model>/<variant> is in the pool too (its old route answers)."""
    apps = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())["applications"]
    (catch_all,) = [a for a in apps if a["route_prefix"] == "/"]
    assert catch_all["import_path"].startswith("deployments.pool:")
    pooled = catch_all["args"]["models"]
    for app in apps:
        if "variant" in app["args"]:
            model, variant = app["args"]["model"], app["args"]["variant"]
            assert app["route_prefix"] == f"/{model}/{variant}"
            assert variant in pooled[model], f"{model}/{variant} has its own app but is not in the pool"
