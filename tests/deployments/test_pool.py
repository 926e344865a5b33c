"""The warm pool over real HTTP: any listed variant by path or header, LRU by count and bytes, 404s."""

from __future__ import annotations

import httpx
import pytest

from loading.artifact import load_tokenizer, save_artifact
from loading.checkpoint import load_model
from loading.predict import Predictor
from tests.conftest import tiny_classifier

TEXTS = ["The deadline is tomorrow and nothing works.", "Lovely walk in the park today."]


@pytest.fixture(scope="module")
def pool_variants(tiny_artifact, tmp_path_factory, tokenizer) -> dict[str, str]:
    """Three variants: the tiny model, its int8 version, and a second tiny model (other weights)."""
    from loading.build import build_variants

    out = tmp_path_factory.mktemp("pool")
    build_variants(tiny_artifact, ["quant"], out)
    save_artifact(tiny_classifier(seed=7), tokenizer, out / "other", name="other", method="random-init")
    return {"tiny": str(tiny_artifact), "tiny-quant": str(out / "quant"), "other": str(out / "other")}


def _deploy(name: str, args: dict) -> None:
    from ray import serve

    from deployments.pool import Pool, PoolArgs
    from deployments.serve_config import load_serve_config

    options = {"num_cpus": 0.5, "runtime_env": {"env_vars": load_serve_config().env_vars()}}
    serve.run(
        Pool.options(ray_actor_options=options).bind(PoolArgs(**args)), name=name, route_prefix=f"/{name}"
    )


@pytest.fixture(scope="module")
def pool_url(serve_root, pool_variants) -> str:
    from ray import serve

    _deploy("pool", {"variants": pool_variants, "max_models": 2, "int8_kernel": "shared"})
    yield f"{serve_root}/pool"
    serve.delete("pool")


def _health(url: str) -> dict:
    r = httpx.get(f"{url}/healthz", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("variant", ["tiny", "tiny-quant", "other"])
def test_each_variant_by_path_answers_as_its_own_model(pool_url, pool_variants, variant):
    r = httpx.post(f"{pool_url}/{variant}/classify", json={"texts": TEXTS}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["variant"] == variant and r.headers["x-variant"] == variant
    # The replica attached every variant at start and kept its module tree: a request's attach,
    # even the first, is a clone of that template (no skeleton unpickled on the request's path).
    assert r.headers["x-weights-loaded-from"] == "object-store-zero-copy+process-mapping"
    model_dir = pool_variants[variant]
    expected = Predictor(load_model(model_dir), load_tokenizer(model_dir)).predict(TEXTS)
    for got, want in zip(r.json()["predictions"], expected, strict=True):
        assert got["label"] == want.label
        for label, p in want.probabilities.items():
            assert got["probabilities"][label] == pytest.approx(p, abs=1e-4)


def test_the_variants_are_different_models(pool_url):
    answers = [
        httpx.post(f"{pool_url}/{v}/classify", json={"text": TEXTS[0]}, timeout=60) for v in ("tiny", "other")
    ]
    assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
    tiny, other = (r.json()["predictions"][0]["probabilities"] for r in answers)
    assert tiny != other


@pytest.mark.parametrize("header", ["serve_multiplexed_model_id", "serve-multiplexed-model-id"])
def test_the_variant_by_header(pool_url, header):
    by_header = httpx.post(
        f"{pool_url}/classify", json={"text": TEXTS[1]}, headers={header: "other"}, timeout=60
    )
    by_path = httpx.post(f"{pool_url}/other/classify", json={"text": TEXTS[1]}, timeout=60)
    assert by_header.status_code == 200, by_header.text
    assert by_header.json() == by_path.json()


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/no-such/classify", {}),
        ("/classify", {"serve_multiplexed_model_id": "no-such"}),
        ("/classify", {"serve_multiplexed_model_id": "../../etc/passwd"}),
        ("/classify", {}),
        ("/..%2F..%2Fetc%2Fpasswd/classify", {}),
    ],
)
def test_unknown_or_path_like_variants_are_json_404s_naming_the_served_ones(pool_url, path, headers):
    r = httpx.post(f"{pool_url}{path}", json={"text": "x"}, headers=headers, timeout=30)
    assert r.status_code == 404, r.text
    body = r.json()
    assert body["error"]
    if "%2F" not in path:  # an encoded slash matches no route at all: a plain JSON 404
        assert body["available"] == ["stress/other", "stress/tiny", "stress/tiny-quant"]
    assert "passwd" not in str(_health(pool_url)["held"])
    # the pool keeps serving
    assert httpx.post(f"{pool_url}/tiny/classify", json={"text": "x"}, timeout=30).status_code == 200


def test_bad_input_is_refused_as_on_the_variant_apps(pool_url):
    r = httpx.post(f"{pool_url}/tiny/classify", json={"texts": []}, timeout=30)
    assert r.status_code == 422 and "texts" in r.json()["error"]
    r = httpx.post(f"{pool_url}/tiny/classify", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_least_recently_used_variant_is_dropped_past_max_models(pool_url):
    for variant in ("tiny", "other", "tiny-quant"):  # max_models is 2
        assert httpx.post(f"{pool_url}/{variant}/classify", json={"text": "x"}, timeout=60).status_code == 200
    held = _health(pool_url)["held"]
    assert sorted(held) == ["stress/other", "stress/tiny-quant"]
    assert all(h["loaded_from"].startswith("object-store-zero-copy") for h in held.values())
    # attaching it again works, and drops the next least recent
    assert httpx.post(f"{pool_url}/tiny/classify", json={"text": "x"}, timeout=60).status_code == 200
    assert sorted(_health(pool_url)["held"]) == ["stress/tiny", "stress/tiny-quant"]


def test_variants_past_the_private_memory_budget_are_dropped(serve_root, pool_variants):
    """FBGEMM's packed int8 copy is private memory: with a budget below it, attaching another
    variant drops the int8 one even though the count would allow both."""
    from ray import serve

    _deploy("pool-budget", {"variants": pool_variants, "int8_kernel": "fbgemm", "max_private_mb": 0.001})
    url = f"{serve_root}/pool-budget"
    try:
        assert httpx.post(f"{url}/tiny-quant/classify", json={"text": "x"}, timeout=60).status_code == 200
        held = _health(url)["held"]
        quant = held["stress/tiny-quant"]
        # Private copies keep no template: this variant's attach was a full one.
        assert quant["private_bytes"] > 0 and quant["loaded_from"].endswith("fbgemm-prepack")
        assert httpx.post(f"{url}/tiny/classify", json={"text": "x"}, timeout=60).status_code == 200
        assert sorted(_health(url)["held"]) == ["stress/tiny"]
    finally:
        serve.delete("pool-budget")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"variants": {}}, "at least 1"),
        ({"models": {"sentiment": {}}}, "at least 1"),
        ({"models": {"pool": {"base": "artifacts/base"}}}, "not be 'pool'"),
        ({"models": {"a/b": {"base": "artifacts/base"}}}, "model names must match"),
        ({"models": {"x": {"../x": "artifacts/base"}}}, "variant names must match"),
        ({"variants": {"base": "a"}, "models": {"stress": {"base": "a"}}}, "not both"),
        ({"variants": {"quant": "a"}, "models": {"quant": {"base": "a"}}}, "name of a variant"),
        ({"variants": {"../x": "artifacts/base"}}, "variant names must match"),
        ({"max_models": 0}, "greater than or equal to 1"),
    ],
)
def test_pool_args_are_validated(args, match):
    from pydantic import ValidationError

    from deployments.pool import PoolArgs

    with pytest.raises(ValidationError, match=match):
        PoolArgs(**args)
