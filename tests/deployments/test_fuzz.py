"""Hypothesis fuzzing of the live app: random methods, routes, headers and bodies over real HTTP.

Every answer must be a 4xx JSON `{"error": ...}`, or a 200 that a plain reading of the API says is
due, with the in-process model's predictions; never a 5xx or a hang. Failures are collected rather
than raised, so a run reports how many cases it tried and how many failed; the replica must be the
same process afterwards. `make test` runs 200 cases; the slow variant (docs/RELIABILITY.md) 5000.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tests.conftest import TINY_ARGS

MAX_TEXTS = TINY_ARGS["max_texts"]
MAX_CHARS = TINY_ARGS["max_text_chars"]
MAX_BYTES = TINY_ARGS["max_body_bytes"]
MAX_REQUEST_TOKENS = TINY_ARGS["max_request_tokens"]
TIMEOUT_S = 30.0  # per request: no answer within it counts as a hang


@st.composite
def _mostly(draw, common: st.SearchStrategy, others: st.SearchStrategy, tenths: int) -> Any:
    """`common` in `tenths` of ten cases, else `others`: keeps valid requests frequent enough."""
    return draw(common if draw(st.integers(0, 9)) < tenths else others)


SPECIAL_CHARS = "\x00\x1b\x7f\u200b\u200d\u202e\ufeff\u3000\ud800\udfff😀👩"
chars = st.one_of(
    st.characters(),
    st.characters(categories=["Cc", "Cf", "Cs", "Zs", "Zl", "Mn"]),
    st.sampled_from(SPECIAL_CHARS),
)
texts = st.one_of(
    st.text(chars, max_size=40),
    st.text(st.sampled_from(" \t\n\u00a0"), max_size=5),
    st.integers(MAX_CHARS - 3, MAX_CHARS + 3).map(lambda n: ("word " * n)[:n]),
)
# Any script, emoji and punctuation; never a surrogate or a control code.
good_texts = st.text(st.characters(categories=["L", "M", "N", "P", "S", "Zs"]), min_size=1, max_size=300)
valid_requests = st.one_of(
    st.fixed_dictionaries({"text": good_texts}),
    st.fixed_dictionaries({"texts": st.lists(good_texts, min_size=1, max_size=MAX_TEXTS)}),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), texts
)
json_values = st.recursive(
    scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(texts, kids, max_size=4), max_leaves=12
)
# Near-valid requests, so that the checks past parsing are reached too.
request_objects = st.fixed_dictionaries(
    {},
    optional={
        "text": st.one_of(texts, texts, json_values),
        "texts": st.one_of(st.lists(texts, max_size=MAX_TEXTS + 2), st.lists(texts, max_size=3), json_values),
        "extra": json_values,
    },
)


def _encode(obj: Any, ascii_only: bool) -> bytes:
    # surrogatepass: a lone surrogate written raw makes invalid UTF-8, one more kind of bad byte
    return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def _mutated(draw) -> bytes:
    body = bytearray(_encode(draw(request_objects), True))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(body)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = draw(st.integers(0, 255))
        if op == "insert":
            body[at:at] = bytes([byte])
        elif at < len(body):
            body[at : at + 1] = b"" if op == "delete" else bytes([byte])
    return bytes(body)


bodies = _mostly(
    st.builds(_encode, valid_requests, st.booleans()),
    st.one_of(
        st.builds(_encode, request_objects, st.booleans()),
        st.builds(_encode, json_values, st.booleans()),
        _mutated(),
        st.binary(max_size=64),
        st.builds(
            lambda n, c: c * n, st.integers(1, 200_000), st.sampled_from([b"[", b'{"a":', b'{"texts":['])
        ),
        st.sampled_from([0, 1, MAX_BYTES - 12, MAX_BYTES - 11, 1_000_000, 10 * 1024 * 1024]).map(
            lambda n: b'{"text": "' + b"x" * n + b'"}'
        ),
    ),
    tenths=4,
)
content_types = _mostly(
    st.just("application/json"),
    st.sampled_from(
        [
            "application/json; charset=utf-8",
            "application/merge-patch+json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "",
            None,
        ]
    ),
    tenths=8,
)


@st.composite
def _targets(draw) -> tuple[str, str]:
    """Most cases classify; the rest try every method on every route."""
    if draw(st.integers(0, 9)) < 7:
        return "POST", "/classify"
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    route = draw(
        st.sampled_from(["/classify", "/healthz", "/info", "/openapi.json", "/docs", "/", "/classify/", "/x"])
    )
    return method, route


targets = _targets()


def _visible(ch: str) -> bool:
    return not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf", "Zs", "Zl", "Zp")


def _texts_if_valid(body: bytes, content_type: str | None) -> list[str] | None:
    """The texts a correct server classifies for this POST /classify, or None if it must refuse it.

    Written from the API's description (README, docs/RELIABILITY.md), not from the server's code.
    """
    media = (content_type or "").split(";")[0].strip().lower()
    if not (media == "application/json" or (media.startswith("application/") and media.endswith("+json"))):
        return None
    if len(body) > MAX_BYTES:
        return None
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or set(obj) - {"text", "texts"}:
        return None
    text, items = obj.get("text"), obj.get("texts")
    if (text is None) == (items is None):
        return None
    items = [text] if items is None else items
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_TEXTS:
        return None
    for t in items:
        if not isinstance(t, str) or len(t) > MAX_CHARS or not any(_visible(c) for c in t):
            return None
        if any(0xD800 <= ord(c) <= 0xDFFF for c in t):
            return None
    return items


def _same(got: dict[str, Any], want) -> bool:
    close = all(abs(got["probabilities"][k] - p) <= 1e-4 for k, p in want.probabilities.items())
    return got["label"] == want.label and close


def _check(base_url: str, predictor, method: str, route: str, body: bytes, content_type, chunked) -> tuple:
    """The answer's status (0: none) and what is wrong with the answer ('' if nothing)."""
    headers = {} if content_type is None else {"content-type": content_type}
    send = None if method in ("GET", "HEAD", "DELETE", "OPTIONS") and not body else body
    if send is not None and chunked:  # no content-length: the body limit must hold while streaming
        send = iter([send[i : i + 8192] for i in range(0, len(send), 8192)] or [b""])
    try:
        r = httpx.request(method, f"{base_url}{route}", content=send, headers=headers, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        return 0, f"no answer: {exc!r}"
    if r.status_code >= 500:
        return r.status_code, r.text[:200]
    if r.status_code >= 400 and method != "HEAD":
        try:
            if not isinstance(r.json()["error"], str):
                return r.status_code, f"no error message: {r.text[:200]}"
        except (ValueError, KeyError, TypeError):
            return r.status_code, f"not a JSON error: {r.text[:200]}"
    if method != "POST" or route != "/classify":
        return r.status_code, ""
    expected = _texts_if_valid(body, content_type)
    if expected is None:
        return r.status_code, "" if 400 <= r.status_code < 500 else "must be refused"
    tokens = sum(len(e.ids) for e in predictor.encode(expected)[0])
    if tokens > MAX_REQUEST_TOKENS:  # valid texts, too much work for one request
        ok = r.status_code == 413 and r.json().get("tokens") == tokens
        return r.status_code, "" if ok else f"{tokens} tokens must be refused with 413: {r.text[:200]}"
    if r.status_code != 200:
        return r.status_code, f"a valid request refused: {r.text[:200]}"
    got, want = r.json()["predictions"], predictor.predict(expected)
    if len(got) != len(want) or not all(_same(g, w) for g, w in zip(got, want, strict=False)):
        return r.status_code, f"predictions {got} differ from the in-process model's {want}"
    return r.status_code, ""


def _fuzz(base_url: str, predictor, examples: int) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    failures: list[str] = []

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(target=targets, body=bodies, content_type=content_types, chunked=st.booleans())
    def one(target, body, content_type, chunked):
        method, route = target
        status, problem = _check(base_url, predictor, method, route, body, content_type, chunked)
        statuses[status] += 1
        if problem:
            failures.append(f"{method} {route} {content_type!r} {body[:80]!r} -> {status}: {problem}")

    one()
    return {
        "cases": sum(statuses.values()),
        "failures": len(failures),
        "statuses": dict(sorted(statuses.items())),
        "first_failures": failures[:5],
    }


def _replica(base_url: str) -> tuple[str, int]:
    health = httpx.get(f"{base_url}/healthz", timeout=TIMEOUT_S).json()
    return health["replica_id"], health["pid"]


def _run(base_url: str, predictor, examples: int) -> None:
    from ray import serve

    before = _replica(base_url)
    summary = _fuzz(base_url, predictor, examples)
    print("FUZZ", json.dumps(summary))  # shown with `pytest -s`: the figures in docs/RELIABILITY.md
    assert summary["failures"] == 0, summary
    assert summary["cases"] >= examples * 0.9  # hypothesis may stop early on a small search space
    assert _replica(base_url) == before  # same replica, same process: nothing crashed or restarted
    assert serve.status().applications["tiny"].status == "RUNNING"


def test_fuzz_200_cases(base_url, local_predictor):
    _run(base_url, local_predictor, 200)


@pytest.mark.slow
def test_fuzz_5000_cases(base_url, local_predictor):
    _run(base_url, local_predictor, 5000)


# Model ids for the warm pool (`/<model>/<variant>/classify`, or the multiplexing header): random,
# malformed and path-like. Each is a JSON 404 naming what is served unless it names a served
# variant; never a 5xx, and the pool never attaches anything it was not configured with.
model_ids = st.one_of(
    st.text(chars, min_size=1, max_size=30),
    st.sampled_from(["..", ".", "../etc/passwd", "a/b", "pool", "-", "~root", "SENTIMENT", "sentiment\x00"]),
    st.sampled_from(["stress", "sentiment", "tiny", "base", "quant"]),
)


def _model_id_case(url: str, model: str, variant: str, by_header: bool) -> tuple[int, str]:
    from urllib.parse import quote

    served = {"stress/tiny", "sentiment/base", "sentiment/quant"}
    if by_header:  # header values travel as bytes: percent-encode what HTTP cannot carry
        # Lone surrogates go as the bytes a careless client would send (not valid UTF-8).
        header = quote(f"{model}/{variant}".encode("utf-8", "surrogatepass"), safe="/")
        r = httpx.post(
            f"{url}/classify", json={"text": "x"}, headers={"serve_multiplexed_model_id": header}, timeout=30
        )
        named = header.replace("pool/", "stress/", 1) if header.startswith("pool/") else header
    else:
        model_part, variant_part = (
            quote(x.encode("utf-8", "surrogatepass"), safe="") for x in (model, variant)
        )
        r = httpx.post(f"{url}/{model_part}/{variant_part}/classify", json={"text": "x"}, timeout=30)
        named = f"{'stress' if model == 'pool' else model}/{variant}"  # /pool/<variant>: the default model
    if r.status_code == 200:
        body = r.json()
        ok = f"{body['model']}/{body['variant']}" in served and named in served
        return r.status_code, "" if ok else f"answered for {named!r}, which is not served"
    if r.status_code >= 500 or not r.headers.get("content-type", "").startswith("application/json"):
        return r.status_code, f"not a JSON 4xx: {r.text[:200]}"
    if named in served and r.status_code != 200:
        return r.status_code, f"served variant refused: {r.text[:200]}"
    return r.status_code, "" if "error" in r.json() else f"no error message: {r.text[:200]}"


def test_fuzz_model_ids_on_the_pool(models_url):
    before = httpx.get(f"{models_url}/healthz", timeout=TIMEOUT_S).json()["pid"]
    statuses: Counter[int] = Counter()
    failures: list[str] = []

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(model=model_ids, variant=model_ids, by_header=st.booleans())
    @example(model="0", variant="\ud800", by_header=False)  # once a client-side crash: unsendable
    @example(model="\ud800", variant="base", by_header=True)
    def one(model, variant, by_header):
        # The ingress resolves "." and ".." segments (even percent-encoded) before routing: the request
        # leaves /mm for a path this test session serves nothing at. The shipped pool, mounted at /,
        # answers those paths itself (tests/deployments/test_pool_models.py, the catch-all 404).
        assume(by_header or not {".", ".."} & {model, variant})
        status, problem = _model_id_case(models_url, model, variant, by_header)
        statuses[status] += 1
        if problem:
            failures.append(f"{model!r}/{variant!r} header={by_header} -> {status}: {problem}")

    one()
    print("FUZZ model ids", json.dumps({"statuses": dict(statuses), "failures": failures[:5]}))
    assert not failures, failures[:5]
    assert sum(statuses.values()) >= 100 and statuses[404] > 0
    health = httpx.get(f"{models_url}/healthz", timeout=TIMEOUT_S).json()
    assert health["pid"] == before  # the same process: nothing crashed or restarted
    assert set(health["held"]) <= {"stress/tiny", "sentiment/base", "sentiment/quant"}
