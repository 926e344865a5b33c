"""The warm pool with several models: /<model>/<variant> routes, old routes, /-/models, bad ids."""

from __future__ import annotations

import httpx
import pytest

from loading.artifact import load_tokenizer
from loading.checkpoint import load_model
from loading.predict import Predictor

TEXT = "The deadline is tomorrow and nothing works."


def _post(url: str, path: str, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}{path}", json={"text": TEXT}, timeout=60, **kwargs)


@pytest.mark.parametrize("path", ["/sentiment/base/classify", "/pool/sentiment/base/classify"])
def test_a_second_model_answers_with_its_own_labels_and_weights(models_url, pool_models, path):
    r = _post(models_url, path)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["variant"]) == ("sentiment", "base")
    assert r.headers["x-model"] == "sentiment"
    model_dir = pool_models["sentiment"]["base"]
    (want,) = Predictor(load_model(model_dir), load_tokenizer(model_dir)).predict([TEXT])
    got = body["predictions"][0]
    assert set(got["probabilities"]) == {"rotten", "fresh"} and got["label"] == want.label
    assert got["probabilities"]["fresh"] == pytest.approx(want.probabilities["fresh"], abs=1e-4)


def test_the_default_models_old_route_and_the_header_reach_the_same_variants(models_url):
    old, new = _post(models_url, "/tiny/classify"), _post(models_url, "/stress/tiny/classify")
    assert old.status_code == new.status_code == 200, (old.text, new.text)
    assert old.json() == new.json() and old.json()["model"] == "stress"
    by_header = _post(models_url, "/classify", headers={"serve_multiplexed_model_id": "sentiment/quant"})
    assert by_header.status_code == 200, by_header.text
    assert (by_header.json()["model"], by_header.json()["variant"]) == ("sentiment", "quant")


def test_models_route_lists_every_model_with_labels_sizes_and_routes(models_url, pool_models):
    r = httpx.get(f"{models_url}/-/models", timeout=30)
    assert r.status_code == 200, r.text
    listed = r.json()
    assert listed["default_model"] == "stress"
    assert {m: sorted(v) for m, v in listed["models"].items()} == {
        m: sorted(v) for m, v in pool_models.items()
    }
    quant = listed["models"]["sentiment"]["quant"]
    assert quant["labels"] == ["rotten", "fresh"] and quant["parent"] == "base" and quant["size_bytes"] > 0
    assert quant["route"] == "/sentiment/quant/classify"
    assert quant["accuracy"] is None  # never measured: listed as such, not invented
    # what it lists is what answers
    for variants in listed["models"].values():
        for entry in variants.values():
            assert _post(models_url, entry["route"]).status_code == 200


def test_more_variants_than_a_replica_keeps_are_attached_and_evicted_lru(models_url):
    for path in ("/stress/tiny/classify", "/sentiment/base/classify", "/sentiment/quant/classify"):
        assert _post(models_url, path).status_code == 200  # max_models is 2
    held = httpx.get(f"{models_url}/healthz", timeout=30).json()["held"]
    assert sorted(held) == ["sentiment/base", "sentiment/quant"]


@pytest.mark.parametrize(
    ("path", "headers", "says"),
    [
        ("/nosuch/base/classify", {}, "no model 'nosuch'"),
        ("/sentiment/nosuch/classify", {}, "model 'sentiment' has no variant 'nosuch'"),
        ("/classify", {"serve_multiplexed_model_id": "nosuch/base"}, "no model 'nosuch'"),
        ("/classify", {"serve_multiplexed_model_id": "../../etc/passwd"}, "no model '../../etc'"),
        ("/classify", {"serve_multiplexed_model_id": "sentiment/../base"}, "no model 'sentiment/..'"),
        ("/" + "m" * 500 + "/base/classify", {}, "..."),  # cut short, not echoed whole
    ],
)
def test_unknown_and_path_like_model_ids_are_json_404s_naming_what_is_served(models_url, path, headers, says):
    r = _post(models_url, path, headers=headers)
    assert r.status_code == 404, r.text
    assert says in r.json()["error"] and len(r.json()["error"]) < 600
    assert "sentiment/base" in r.json()["available"]
    assert not any(
        "etc" in k or ".." in k for k in httpx.get(f"{models_url}/healthz", timeout=30).json()["held"]
    )
    assert _post(models_url, "/sentiment/base/classify").status_code == 200  # the pool keeps serving


@pytest.mark.parametrize(
    "path", ["/a/b/c/classify", "/sentiment", "/..%2Fetc/base/classify", "/sentiment/base"]
)
def test_any_other_path_is_a_json_404_listing_the_routes(models_url, path):
    r = _post(models_url, path)
    assert r.status_code == 404, r.text
    assert "/sentiment/quant/classify" in r.json()["routes"]


@pytest.mark.slow
def test_pool_loads_and_evictions_reach_the_metrics_endpoint(models_url):
    from tests.deployments.test_metrics import metrics_port, value, wait_for_samples

    def evictions(samples) -> float:  # every model and variant of the pool
        return sum(
            x.value
            for x in samples
            if x.name == "ray_bertserve_pool_evictions_total" and x.labels.get("application") == "mm"
        )

    for _ in range(2):  # max_models is 2: the third variant evicts the least recent each round
        for path in ("/stress/tiny/classify", "/sentiment/base/classify", "/sentiment/quant/classify"):
            assert _post(models_url, path).status_code == 200
    tags = {"model": "sentiment", "variant": "quant", "application": "mm"}
    samples = wait_for_samples(
        metrics_port(),
        lambda s: evictions(s) >= 2 and (value(s, "ray_bertserve_pool_loads_total", **tags) or 0) >= 2,
        timeout_s=60,
    )
    assert value(samples, "ray_bertserve_texts_classified_total", **tags) >= 2
    assert 1 <= value(samples, "ray_bertserve_models_held", application="mm") <= 2


def test_a_variant_served_by_its_own_app_and_the_pool_is_stored_once(models_url, base_url, tiny_artifact):
    """The tiny app (model `stress`, variant `tiny`) and the pool attach one store entry, one arena."""
    import ray

    from loading.model_store import model_store

    assert httpx.post(f"{base_url}/classify", json={"text": TEXT}, timeout=60).status_code == 200
    assert _post(models_url, "/stress/tiny/classify").status_code == 200
    stored = ray.get(model_store().variants.remote())
    from_tiny = [key for key, entry in stored.items() if entry["model_dir"] == str(tiny_artifact)]
    assert "stress/tiny" in from_tiny and "tiny" not in stored
    assert all("/" in key for key in stored if key in ("stress/tiny", "sentiment/base", "sentiment/quant"))
