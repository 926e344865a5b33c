"""Fixtures around the one served tiny app (`base_url`, in the root conftest) for the deployment tests."""

from __future__ import annotations

import pytest

from loading.artifact import load_tokenizer, save_artifact
from loading.checkpoint import load_model
from loading.predict import Predictor
from tests.conftest import tiny_classifier


@pytest.fixture(scope="package")
def serve_root(base_url) -> str:
    """Serve's proxy, for more applications next to "tiny"."""
    return base_url.rsplit("/", 1)[0]


@pytest.fixture(scope="package")
def local_predictor(tiny_artifact) -> Predictor:
    """The same model in this process: what a 200 from the app must agree with."""
    return Predictor(load_model(tiny_artifact), load_tokenizer(tiny_artifact))


@pytest.fixture(scope="package")
def pool_models(tiny_artifact, tmp_path_factory, tokenizer) -> dict[str, dict[str, str]]:
    """`stress` (the tiny model, default) and `sentiment` (other weights and labels, plus its int8)."""
    from loading.build import build_variants

    out = tmp_path_factory.mktemp("models")
    sentiment = tiny_classifier(seed=11)
    sentiment.config.id2label = {0: "rotten", 1: "fresh"}
    sentiment.config.label2id = {"rotten": 0, "fresh": 1}
    save_artifact(sentiment, tokenizer, out / "sentiment", name="base", method="random-init")
    build_variants(out / "sentiment", ["quant"], out / "sentiment-variants")
    return {
        "stress": {"tiny": str(tiny_artifact)},
        "sentiment": {"base": str(out / "sentiment"), "quant": str(out / "sentiment-variants" / "quant")},
    }


@pytest.fixture(scope="package")
def models_url(serve_root, pool_models) -> str:
    """The pool mounted at /mm (the shipped config mounts it at /; the test session's / is taken)."""
    from ray import serve

    from deployments.pool import Pool, PoolArgs
    from deployments.serve_config import load_serve_config

    options = {"num_cpus": 0.5, "runtime_env": {"env_vars": load_serve_config().env_vars()}}
    args = PoolArgs(models=pool_models, max_models=2, int8_kernel="shared")
    serve.run(Pool.options(ray_actor_options=options).bind(args), name="mm", route_prefix="/mm")
    yield f"{serve_root}/mm"
    serve.delete("mm")
