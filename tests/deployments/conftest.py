"""Fixtures around the one served tiny app (`base_url`, in the root conftest) for the deployment tests."""

from __future__ import annotations

import pytest

from loading.artifact import load_tokenizer
from loading.checkpoint import load_model
from loading.predict import Predictor


@pytest.fixture(scope="package")
def serve_root(base_url) -> str:
    """Serve's proxy, for more applications next to "tiny"."""
    return base_url.rsplit("/", 1)[0]


@pytest.fixture(scope="package")
def local_predictor(tiny_artifact) -> Predictor:
    """The same model in this process: what a 200 from the app must agree with."""
    return Predictor(load_model(tiny_artifact), load_tokenizer(tiny_artifact))
