"""The catalogue of bad input from issue 7, each case sent to the live app over HTTP.

Every answer must be a 4xx with a JSON `{"error": ...}` naming the problem, or a 200 whose
predictions equal the in-process model's; never a 5xx, a hang or a replica restart.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest

JSON = {"content-type": "application/json"}
TEN_MB = 10 * 1024 * 1024
SCRIPTS = [
    "😀🔥💀 so tired of this",
    "👩‍👩‍👧‍👦 family day",  # one grapheme, seven code points
    "日本語のテキストです",
    "مرحبا بالعالم",
    "Ωμέγα και άλφα",
    "हिन्दी पाठ",
    "e\u0301te\u0301",  # combining accents
    "\u202eevil right-to-left override",
    "tab\tnew\nline\r\nand a NUL\x00 and ESC\x1b[31m red",
    "\ufeffleading byte-order mark",
]


def _body(obj) -> bytes:
    return json.dumps(obj).encode()


def _case(name, body, status, message, method="POST", path="/classify", headers=JSON):
    return pytest.param(method, path, body, headers, status, message, id=name)


def _ct(media_type: str) -> dict[str, str]:
    return {"content-type": media_type}


# Each: case, body, status, a substring of the error message.
CASES = [
    # invalid JSON
    _case("json: syntax", b"{not json", 400, "not valid JSON"),
    _case("json: truncated", b'{"text": "a', 400, "not valid JSON"),
    _case("json: trailing comma", b'{"texts": ["a",]}', 400, "not valid JSON"),
    _case("json: empty body", b"", 422, "Field required"),
    _case("json: 5000-digit number", b'{"text": ' + b"9" * 5000 + b"}", 400, "digits"),
    _case("json: NaN", b'{"text": NaN}', 422, "valid string"),
    # wrong types
    _case("type: text number", _body({"text": 3}), 422, "text: Input should be"),
    _case("type: text list", _body({"text": ["a"]}), 422, "text: Input should be"),
    _case("type: texts string", _body({"texts": "a"}), 422, "valid list"),
    _case("type: texts object", _body({"texts": {"a": "b"}}), 422, "valid list"),
    _case("type: texts null item", _body({"texts": ["a", None]}), 422, "texts[1]"),
    _case("type: body a list", _body(["a"]), 422, "body"),
    _case("type: body null", b"null", 422, "body"),
    # missing and extra fields
    _case("fields: none", b"{}", 422, "exactly one of"),
    _case("fields: both", _body({"text": "a", "texts": ["a"]}), 422, "exactly one of"),
    _case("fields: extra", _body({"text": "a", "lang": "en"}), 422, "lang: Extra inputs"),
    _case("fields: huge extra key", _body({"text": "a", "k" * 50_000: 1}), 422, "chars)"),
    # empty and huge lists
    _case("list: empty", _body({"texts": []}), 422, "texts"),
    _case("list: 9 items", _body({"texts": ["a"] * 9}), 422, "at most 8 items"),
    _case("list: 20k empty strings", _body({"texts": [""] * 20_000}), 422, "at most 8"),
    _case("list: 30k numbers", _body({"texts": [1] * 30_000}), 422, "texts[0] must"),
    _case("list: 100k items", _body({"texts": ["a"] * 100_000}), 413, "at most 100000"),
    # empty, whitespace and huge texts
    _case("text: empty", _body({"text": ""}), 422, "non-empty"),
    _case("text: whitespace", _body({"text": " \t\n\u00a0\u3000"}), 422, "visible"),
    _case("text: 5001 chars", _body({"text": "x" * 5001}), 422, "at most 5000 char"),
    _case("text: 10 MB", _body({"text": "x" * TEN_MB}), 413, "at most 100000 bytes"),
    # invalid UTF-8 and unencodable text
    _case("utf-8: bad byte", b'{"text": "caf\xe9"}', 400, "UTF-8"),
    _case("utf-8: overlong", b'{"text": "\xc0\xaf"}', 400, "UTF-8"),
    _case("utf-8: lone surrogate", b'{"text": "a \\ud800 b"}', 422, "lone surrogate"),
    _case("utf-8: surrogate key", b'{"text": "a", "\\udc00": 1}', 422, "body"),
    # control characters
    _case("control: NUL only", _body({"text": "\x00"}), 422, "visible"),
    _case("control: format only", _body({"text": "\u200b\ufeff\u200d"}), 422, "visible"),
    _case("control: ESC and BEL", _body({"texts": ["\x1b\x07\x7f"]}), 422, "visible"),
    # deeply nested JSON
    _case("nested: 100k [", b"[" * 100_000, 400, "nested"),
    _case("nested: 5000 objects", b'{"a":' * 5000 + b"1" + b"}" * 5000, 400, "nested"),
    _case("nested: 500 lists", _body({"texts": json.loads("[" * 500 + "]" * 500)}), 422, "texts"),
    # wrong content type
    _case("content-type: text/plain", _body({"text": "a"}), 415, "text/plain", headers=_ct("text/plain")),
    _case("content-type: none", _body({"text": "a"}), 415, "got none", headers={}),
    _case(
        "content-type: form", b"text=a", 415, "urlencoded", headers=_ct("application/x-www-form-urlencoded")
    ),
    _case(
        "content-type: multipart", b"--x--", 415, "multipart", headers=_ct("multipart/form-data; boundary=x")
    ),
    # wrong method
    _case("method: GET /classify", None, 405, "not allowed", method="GET", headers={}),
    _case("method: PUT /classify", b"{}", 405, "not allowed", method="PUT"),
    _case("method: DELETE /classify", None, 405, "not allowed", method="DELETE", headers={}),
    _case("method: POST /healthz", b"{}", 405, "not allowed", path="/healthz"),
    # unknown routes
    _case("route: unknown", None, 404, "no route", method="GET", path="/nope", headers={}),
    _case("route: below classify", _body({"text": "a"}), 404, "no route", path="/classify/x"),
    _case("route: encoded junk", None, 404, "no route", method="GET", path="/%ff%00/..%2f", headers={}),
]


@pytest.fixture(scope="module")
def replica_before(base_url) -> dict:
    return httpx.get(f"{base_url}/healthz", timeout=30).json()


@pytest.mark.parametrize(("method", "path", "body", "headers", "status", "message"), CASES)
def test_bad_input_is_a_4xx_with_a_json_message(
    base_url, replica_before, method, path, body, headers, status, message
):
    r = httpx.request(method, f"{base_url}{path}", content=body, headers=headers, timeout=30)
    assert r.status_code == status, r.text[:300]
    assert r.headers["content-type"] == "application/json"
    assert message in r.json()["error"]
    assert r.headers["x-replica-id"] == replica_before["replica_id"]


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (_body({"texts": SCRIPTS[:8]}), JSON),
        (_body({"texts": SCRIPTS[8:]}), {"content-type": "application/json; charset=utf-8"}),
        (_body({"text": SCRIPTS[0]}), {"content-type": "application/vnd.api+json"}),
    ],
    ids=["scripts", "control-chars-inside-text", "json-suffix-content-type"],
)
def test_other_scripts_emoji_and_inner_control_chars_are_classified(base_url, local_predictor, body, headers):
    r = httpx.post(f"{base_url}/classify", content=body, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    payload = json.loads(body)
    texts = payload.get("texts") or [payload["text"]]
    got = r.json()["predictions"]
    for g, want in zip(got, local_predictor.predict(texts), strict=True):
        assert g["label"] == want.label
        assert g["probabilities"] == pytest.approx(want.probabilities, abs=1e-5)


def _raw(url: str, head: bytes, body_chunks, pause_s: float = 0.0) -> tuple[bytes, float, int]:
    """Send a hand-made request; return the status line, seconds to it, and body bytes sent by then."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sent, stop = [0], threading.Event()

    def send() -> None:
        try:
            sock.sendall(head)
            for chunk in body_chunks:
                if stop.is_set():
                    return
                sock.sendall(chunk)
                sent[0] += len(chunk)
                time.sleep(pause_s)
        except OSError:
            pass  # the server answered and closed: what we are testing for

    start = time.perf_counter()
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        reply = sock.recv(65536)
    finally:
        stop.set()
        sock.close()
    return reply.split(b"\r\n", 1)[0], time.perf_counter() - start, sent[0]


def _head(base_url: str, *lines: bytes) -> bytes:
    path = urlsplit(base_url).path.encode()
    start = [b"POST " + path + b"/classify HTTP/1.1", b"Host: x", b"Content-Type: application/json"]
    return b"\r\n".join([*start, *lines, b"", b""])


def _chunked(total: int, size: int = 16_384):
    yield b"b\r\n" + b'{"text": "a' + b"\r\n"
    for _ in range(total // size):
        yield b"%x\r\n" % size + b"a" * size + b"\r\n"
    yield b"0\r\n\r\n"


def test_chunked_body_without_length_is_cut_off_while_streaming(base_url):
    head = _head(base_url, b"Transfer-Encoding: chunked")
    status, seconds, sent = _raw(base_url, head, _chunked(TEN_MB), pause_s=0.001)
    assert status.startswith(b"HTTP/1.1 413"), status
    assert sent < TEN_MB // 4  # answered long before the 10 MB were sent
    assert seconds < 10


def test_a_body_that_stops_arriving_gets_408_after_body_timeout(base_url):
    head = _head(base_url, b"Content-Length: 500") + b'{"text": "hello'  # then nothing more
    status, seconds, _ = _raw(base_url, head, [])
    assert status.startswith(b"HTTP/1.1 408"), status
    assert 1.5 < seconds < 10  # body_timeout_s is 2 in TINY_ARGS


def test_replica_survived_every_case(base_url, replica_before):
    from ray import serve

    after = httpx.get(f"{base_url}/healthz", timeout=30).json()
    assert (after["replica_id"], after["pid"]) == (replica_before["replica_id"], replica_before["pid"])
    assert serve.status().applications["tiny"].status == "RUNNING"
