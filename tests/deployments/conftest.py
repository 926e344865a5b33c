"""One Ray Serve instance for the package: the tiny classifier at /tiny, shared by every test file here."""

from __future__ import annotations

import pytest

from deployments.run import free_port
from loading.artifact import load_tokenizer
from loading.checkpoint import load_model
from loading.predict import Predictor

# Small limits so that tests reach them with small bodies.
TINY_ARGS = {
    "variant": "tiny",
    "max_texts": 8,
    "max_text_chars": 5000,
    "max_body_bytes": 100_000,
    "body_timeout_s": 2.0,
}


@pytest.fixture(scope="package")
def base_url(ray_session, tiny_artifact) -> str:
    """Serve on a free loopback port with the tiny classifier as application "tiny" (open access).

    Self-contained (only root-conftest fixtures), so that other packages can import it.
    """
    from ray import serve

    from deployments.classifier import Classifier, ClassifierArgs
    from deployments.serve_config import load_serve_config

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # The replica runs with the environment serve_config.yaml gives every app (Serve's event-loop
    # switch, the oneDNN cache setting), so these tests exercise the served configuration.
    options = {"num_cpus": 1, "runtime_env": {"env_vars": load_serve_config().env_vars()}}
    app = Classifier.options(ray_actor_options=options).bind(
        ClassifierArgs(**TINY_ARGS, model_dir=str(tiny_artifact))
    )
    serve.run(app, name="tiny", route_prefix="/tiny")
    yield f"http://127.0.0.1:{port}/tiny"
    serve.delete("tiny")
    serve.shutdown()


@pytest.fixture(scope="package")
def serve_root(base_url) -> str:
    """Serve's proxy, for more applications next to "tiny"."""
    return base_url.rsplit("/", 1)[0]


@pytest.fixture(scope="package")
def local_predictor(tiny_artifact) -> Predictor:
    """The same model in this process: what a 200 from the app must agree with."""
    return Predictor(load_model(tiny_artifact), load_tokenizer(tiny_artifact))
