"""API keys: every route but /healthz needs `Authorization: Bearer <key>`; keys never reach a log.

Also: the API binds to loopback unless the config says otherwise.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from deployments import auth
from deployments.auth import ApiKeys
from deployments.boundary import install_error_handlers, require_json
from deployments.protocol import ClassifyRequest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KEYS = ["key-one-0123456789abcdef", "key-two-0123456789abcdef", "key-three-0123456789abcd"]
WRONG = "not-a-key-0123456789abcdef"
JSON_CT = {"content-type": "application/json"}


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


# --- where keys come from -------------------------------------------------------------------------


def test_no_keys_configured_means_open_access(tmp_path):
    assert ApiKeys.from_env({}) is None
    assert ApiKeys.from_env({"API_KEYS": " , ", "API_KEYS_FILE": ""}) is None


def test_keys_from_env_and_file_are_merged(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"# rotated monthly\n\n  {KEYS[1]}  \n{KEYS[2]}\n")
    keys = ApiKeys.from_env({"API_KEYS": f" {KEYS[0]} ,", "API_KEYS_FILE": str(path)})
    assert len(keys.digests) == 3
    assert all(keys.allows(f"Bearer {k}".encode()) for k in KEYS)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"API_KEYS_FILE": "/no/such/file"}, "readable UTF-8 file"),
        ({"API_KEYS": "short-secret"}, "API_KEYS entry 1 must be at least 16"),
        ({"API_KEYS": f"{KEYS[0]},has a space 0123456789"}, "API_KEYS entry 2 must be"),
    ],
)
def test_bad_key_configuration_refuses_to_start_without_echoing_keys(env, message):
    with pytest.raises(ValueError, match=message) as info:
        ApiKeys.from_env(env)
    assert "short-secret" not in str(info.value) and "has a space" not in str(info.value)


def test_a_key_file_without_keys_refuses_to_start(tmp_path):
    path = tmp_path / "keys"
    path.write_text("# nothing yet\n\n")
    with pytest.raises(ValueError, match="at least one key"):
        ApiKeys.from_env({"API_KEYS_FILE": str(path)})


# --- checking a presented key ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        (f"Bearer {KEYS[0]}".encode(), True),
        (f"bearer {KEYS[2]}".encode(), True),
        (f"  Bearer   {KEYS[1]}  ".encode(), True),
        (f"Bearer {WRONG}".encode(), False),
        (f"Basic {KEYS[0]}".encode(), False),
        (KEYS[0].encode(), False),
        (f"Bearer {KEYS[0]}x".encode(), False),
        (f"Bearer {KEYS[0][:-1]}".encode(), False),
        (b"Bearer ", False),
        (b"Bearer \xff\xfe", False),
        (b"", False),
        (None, False),
    ],
)
def test_allows_exactly_the_configured_bearer_keys(header, allowed):
    assert ApiKeys.from_keys(KEYS).allows(header) is allowed


@pytest.mark.parametrize("presented", [KEYS[0], KEYS[2], WRONG, "x", "y" * 10_000])
def test_every_key_is_compared_in_constant_time(monkeypatch, presented):
    calls = []

    def compare_digest(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return a == b

    monkeypatch.setattr(auth.hmac, "compare_digest", compare_digest)
    ApiKeys.from_keys(KEYS).allows(f"Bearer {presented}".encode())
    # No short cut on the first match or on length: fixed-size digests, all of them, every time.
    assert calls == [(32, 32)] * len(KEYS)


# --- the boundary, in process ---------------------------------------------------------------------


@pytest.fixture
def client() -> TestClient:
    """A FastAPI app with the replica's boundary and the classifier's request model, keys on."""
    api = FastAPI(redirect_slashes=False)
    install_error_handlers(api)
    api.state.api_keys = ApiKeys.from_keys(KEYS)
    api.state.max_body_bytes = 2048
    api.state.body_timeout_s = 2.0
    api.state.headers = {"x-replica-id": "r1"}

    @api.post("/classify", dependencies=[Depends(require_json)])
    async def classify(request: ClassifyRequest) -> dict:
        return {"texts": request.as_list()}

    @api.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @api.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("a bug")

    return TestClient(api, raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/classify"), ("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/nope"), ("GET", "/boom")],
)
@pytest.mark.parametrize("headers", [{}, _bearer(WRONG), {"authorization": KEYS[0]}, _bearer("")])
def test_missing_or_wrong_key_is_401_on_every_route_but_healthz(client, method, path, headers):
    r = client.request(method, path, json={"text": "hi"}, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert "API key" in r.json()["error"]
    assert r.headers["x-replica-id"] == "r1"


def test_healthz_is_open_and_a_right_key_passes(client):
    assert client.get("/healthz").status_code == 200
    r = client.post("/classify", json={"text": "hi"}, headers=_bearer(KEYS[1]))
    assert r.status_code == 200 and r.json() == {"texts": ["hi"]}
    assert client.get("/openapi.json", headers=_bearer(KEYS[2])).status_code == 200


def test_access_is_checked_before_the_body_is_read(client):
    # An unauthenticated caller cannot make the replica read (or parse) a body.
    r = client.post("/classify", content=b"x" * 10_000, headers={"content-type": "application/json"})
    assert r.status_code == 401
    r = client.post("/classify", content=b"x" * 10_000, headers={**_bearer(KEYS[0]), **JSON_CT})
    assert r.status_code == 413


def test_keys_never_reach_a_log_line_or_an_answer(client, caplog):
    caplog.set_level(logging.DEBUG)
    answers = [
        client.post("/classify", json={"text": "hi"}, headers=_bearer(WRONG)),
        client.post("/classify", json={"text": "hi"}, headers=_bearer(KEYS[0])),
        client.post("/classify", content=b"{", headers={**_bearer(KEYS[0]), **JSON_CT}),
        client.get("/boom", headers=_bearer(KEYS[0])),  # logged with its traceback
        client.get("/nope", headers=_bearer(KEYS[0])),
    ]
    assert [a.status_code for a in answers] == [401, 200, 400, 500, 404]
    assert "unhandled error on GET /boom" in caplog.text  # the log works; it just holds no key
    for secret in (WRONG, KEYS[0]):
        assert secret not in caplog.text
        assert all(secret not in a.text and secret not in str(a.headers) for a in answers)


# --- the boundary, live through Serve --------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_url(serve_root, tiny_artifact, tmp_path_factory):
    """The tiny classifier at /tiny-keys, its keys in a file named by API_KEYS_FILE."""
    from ray import serve

    from deployments.classifier import Classifier, ClassifierArgs

    key_file = tmp_path_factory.mktemp("secrets") / "api_keys"
    key_file.write_text("\n".join(KEYS[:2]) + "\n")
    options = {"num_cpus": 0.5, "runtime_env": {"env_vars": {"API_KEYS_FILE": str(key_file)}}}
    app = Classifier.options(ray_actor_options=options).bind(
        ClassifierArgs(variant="tiny-keys", model_dir=str(tiny_artifact))
    )
    serve.run(app, name="tiny-keys", route_prefix="/tiny-keys")
    yield f"{serve_root}/tiny-keys"
    serve.delete("tiny-keys")


def test_live_keys_guard_every_route_but_healthz(keyed_url, base_url):
    assert httpx.get(f"{keyed_url}/healthz", timeout=30).status_code == 200
    for path in ("/info", "/docs", "/openapi.json", "/nope"):
        r = httpx.get(f"{keyed_url}{path}", headers=_bearer(WRONG), timeout=30)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
    r = httpx.post(f"{keyed_url}/classify", json={"text": "hi"}, timeout=30)
    assert r.status_code == 401
    r = httpx.post(f"{keyed_url}/classify", json={"text": "hi"}, headers=_bearer(KEYS[1]), timeout=30)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1
    assert httpx.get(f"{keyed_url}/info", headers=_bearer(KEYS[0]), timeout=30).status_code == 200
    # Keys belong to the application that was given them: "tiny" stays open.
    assert httpx.post(f"{base_url}/classify", json={"text": "hi"}, timeout=30).status_code == 200


def test_live_keys_are_in_no_ray_or_serve_log(keyed_url):
    import ray

    for key in (WRONG, KEYS[0]):
        httpx.post(f"{keyed_url}/classify", json={"text": "hi"}, headers=_bearer(key), timeout=30)
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    files = [p for p in logs.rglob("*") if p.is_file()]
    assert any("tiny-keys" in p.name for p in files)  # the replica's own log is among them
    for path in files:
        data = path.read_bytes()
        assert WRONG.encode() not in data and KEYS[0].encode() not in data, path


# --- where the API listens ------------------------------------------------------------------------


def test_serve_config_binds_loopback_only():
    config = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
    assert config["http_options"]["host"] == "127.0.0.1"
    for app in config["applications"]:
        env = app.get("runtime_env", {}).get("env_vars", {})
        assert "API_KEYS" not in env  # keys in the config would be in git and in `serve status`
