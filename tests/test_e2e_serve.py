"""End to end: `make serve` (`serve run` through HAProxy) serves both fine-tuned models (slow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from deployments.serve_config import load_serve_config

ROOT = Path(__file__).resolve().parents[1]
HOST = "http://127.0.0.1:8000"
URL = f"{HOST}/stress/base"
VARIANTS = list(load_serve_config().classifier_apps())  # the default model's, each with its own app
SENTIMENT = {
    "A moving, beautifully acted film; the best thing I have seen this year.": "positive",
    "A tedious, clumsy mess with a script that makes no sense at all.": "negative",
}
OBVIOUS = {
    "I have three deadlines tomorrow, I cannot sleep and I am panicking about rent.": "stress",
    "My boss yelled at me again and I feel anxious and overwhelmed all the time.": "stress",
    "We had a lovely relaxed picnic in the park and laughed all afternoon.": "not_stress",
    "Thanks everyone for the kind advice, the new puppy is settling in nicely.": "not_stress",
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served():
    for model_dir in ("base", "sentiment/quant"):
        if not (ROOT / "artifacts" / model_dir / "variant.json").exists():
            pytest.fail(f"artifacts/{model_dir} is missing: run `make artifacts` (make test-slow does)")
    # What `make serve` runs: `serve run` with the HAProxy ingress, on its default admin ports (the
    # session's own Serve settings are left out).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
    env.update({"HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployments.run", "serve_config.yaml"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    started = time.monotonic()
    try:
        while time.monotonic() - started < 180:
            try:
                routes = [*(f"stress/{v}" for v in VARIANTS), "pool"]
                if all(httpx.get(f"{HOST}/{r}/healthz", timeout=2).status_code == 200 for r in routes):
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "serve run exited before /base was healthy"
            time.sleep(1)
        else:
            pytest.fail("not every variant's /healthz answered within 180 s")
        yield time.monotonic() - started
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_fine_tuned_model_predicts_dreaddit_test_texts(served):
    from training.data import load_table
    from training.sources import dreaddit_paths

    table = load_table(dreaddit_paths()[1], label_names={"0": "not_stress", "1": "stress"})
    texts, labels = table.texts[:128], table.labels[:128]
    predicted = []
    for start in range(0, len(texts), 32):
        r = httpx.post(f"{URL}/classify", json={"texts": texts[start : start + 32]}, timeout=120)
        assert r.status_code == 200, r.text
        predicted += [p["label"] for p in r.json()["predictions"]]
        assert r.headers["x-variant"] == "base"
    accuracy = sum(p == t for p, t in zip(predicted, labels, strict=True)) / len(labels)
    assert accuracy > 0.65, f"accuracy {accuracy:.3f} on 128 test texts (majority class ~0.52)"
    health = httpx.get(f"{URL}/healthz", timeout=10).json()
    assert health["labels"] == ["not_stress", "stress"]
    assert health["weights_loaded_from"] == "object-store-zero-copy"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_answers_from_its_own_app_and_says_how_it_was_loaded(served, variant):
    r = httpx.post(
        f"{HOST}/stress/{variant}/classify", json={"text": "I cannot sleep before my exam."}, timeout=60
    )
    assert r.status_code == 200, r.text
    assert r.json()["variant"] == variant == r.headers["x-variant"] and r.headers["x-model"] == "stress"
    assert r.headers["x-weights-loaded-from"].startswith("object-store-zero-copy")
    health = httpx.get(f"{HOST}/stress/{variant}/healthz", timeout=10).json()
    assert health["variant"] == variant and health["arena_bytes"] > 0 and "labels" in health  # its own app


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_served_variant_is_collapsed_onto_one_class(served, variant):
    """The study's pruned-75 answered not_stress for everything; obvious texts must get both labels."""
    r = httpx.post(f"{HOST}/stress/{variant}/classify", json={"texts": list(OBVIOUS)}, timeout=60)
    assert r.status_code == 200, r.text
    assert [p["label"] for p in r.json()["predictions"]] == list(OBVIOUS.values())


@pytest.mark.parametrize("variant", ["base", "quant"])
def test_the_second_model_is_served_by_the_pool_with_its_own_labels(served, variant):
    r = httpx.post(f"{HOST}/sentiment/{variant}/classify", json={"texts": list(SENTIMENT)}, timeout=60)
    assert r.status_code == 200, r.text
    assert (r.json()["model"], r.json()["variant"]) == ("sentiment", variant)
    assert [p["label"] for p in r.json()["predictions"]] == list(SENTIMENT.values())


def test_the_warm_pool_and_the_old_routes_answer_as_the_own_apps_do(served):
    text = {"text": "I cannot sleep before my exam."}
    for variant in VARIANTS:
        own = httpx.post(f"{HOST}/stress/{variant}/classify", json=text, timeout=60)
        for route in (f"pool/stress/{variant}", f"pool/{variant}", variant):  # the last: the old route
            pooled = httpx.post(f"{HOST}/{route}/classify", json=text, timeout=60)
            assert pooled.status_code == 200, pooled.text
            assert pooled.headers["x-variant"] == variant and "x-model" in pooled.headers
            for a, b in zip(own.json()["predictions"], pooled.json()["predictions"], strict=True):
                assert a["label"] == b["label"]
                for label, p in a["probabilities"].items():
                    assert abs(b["probabilities"][label] - p) < 1e-4, (route, label)
    served_ids = sorted([*(f"stress/{v}" for v in VARIANTS), "sentiment/base", "sentiment/quant"])
    for path in ("pool/nope/classify", "nope/base/classify", "sentiment/nope/classify"):
        unknown = httpx.post(f"{HOST}/{path}", json=text, timeout=30)
        assert unknown.status_code == 404 and unknown.json()["available"] == served_ids, unknown.text
    lost = httpx.get(f"{HOST}/no/such/path/at/all", timeout=30)
    assert lost.status_code == 404 and "/sentiment/base/classify" in lost.json()["routes"]


def test_models_route_lists_both_models_with_recorded_accuracy(served):
    listed = httpx.get(f"{HOST}/-/models", timeout=30).json()["models"]
    assert sorted(listed) == ["sentiment", "stress"] and sorted(listed["stress"]) == sorted(VARIANTS)
    assert listed["sentiment"]["base"]["labels"] == ["negative", "positive"]
    for model in listed.values():
        for entry in model.values():
            assert 0.5 < entry["accuracy"] <= 1 and entry["size_bytes"] > 0


def test_short_requests_are_not_starved_by_the_largest_requests(served):
    """Issue 20, by ordering: three clients send the largest request allowed (32 texts of 512
    tokens) back to back while a fourth sends one short text at a time; counted: how many big
    requests finish on the short one's replica while it waits."""
    import threading

    long_text = "I cannot sleep, the rent is due and my exams start tomorrow. " * 60  # > 512 tokens
    stop, lock = threading.Event(), threading.Lock()
    finished: list[tuple[float, str]] = []  # (when, replica): the app may scale to 2 replicas meanwhile
    statuses: list[int] = []

    def big_client() -> None:
        with httpx.Client(timeout=120) as client:
            while not stop.is_set():
                r = client.post(f"{URL}/classify", json={"texts": [long_text] * 32})
                with lock:
                    statuses.append(r.status_code)
                    finished.append((time.monotonic(), r.headers.get("x-replica-id", "")))

    clients = [threading.Thread(target=big_client) for _ in range(3)]
    for t in clients:
        t.start()
    overtaken, health = [], []
    try:
        time.sleep(2)  # all three have a request in the replica
        with httpx.Client(timeout=120) as client:
            for _ in range(25):
                sent = time.monotonic()
                short = client.post(f"{URL}/classify", json={"text": "Lovely walk."})
                assert short.status_code == 200
                answered, replica = time.monotonic(), short.headers["x-replica-id"]
                health.append(client.get(f"{URL}/healthz").status_code)
                with lock:
                    overtaken.append(sum(sent < f < answered and r == replica for f, r in finished))
                time.sleep(0.2)
    finally:
        stop.set()
        for t in clients:
            t.join()
    assert set(statuses) == {200} and len(statuses) >= 3, statuses
    assert set(health) == {200}
    # In arrival order a short request waits for the rest of every big one queued ahead: the median
    # short request would see at least one finish. Interleaved, most see none.
    assert sorted(overtaken)[len(overtaken) // 2] == 0 and max(overtaken) <= 3, overtaken
