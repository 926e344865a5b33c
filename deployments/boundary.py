"""The ingress boundary: access, body limits and every failure as a JSON 4xx/5xx, handled once here.

Lower layers raise; this module maps what a caller got wrong to a 4xx with a message naming the
problem, and anything else to a 500 that is logged with its traceback but never shown. Before a
route sees a request, `_Boundary` checks its API key (`deployments.auth`) and reads its body,
refusing it once it passes `max_body_bytes` (whether or not a content-length was declared) or
takes longer than `body_timeout_s` to arrive. Messages never echo the `Authorization` header, and
echo other input only in short, ASCII-escaped excerpts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deployments.auth import OPEN_ROUTES, ApiKeys

__all__ = [
    "InputError",
    "NotServedError",
    "OverloadedError",
    "TooManyTokensError",
    "install_error_handlers",
    "require_json",
]

logger = logging.getLogger(__name__)

MAX_ERRORS_SHOWN = 5  # a list of a million wrong items gets five lines, not a million
MAX_ECHO_CHARS = 60  # of a caller's field name or value inside an error message
_FASTAPI_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's 400 when json.loads fails


class InputError(ValueError):
    """A request the caller got wrong (answered with 422 and the message)."""


class TooManyTokensError(InputError):
    """A request whose texts together tokenize past `max_request_tokens` (413, before model work)."""

    def __init__(self, message: str, limit: int, tokens: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.tokens = tokens


class OverloadedError(RuntimeError):
    """The replica's queue cannot take the request now: 503 with `Retry-After` (seconds)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotServedError(LookupError):
    """A request named a variant that is not served (answered with 404, the message and what is)."""

    def __init__(self, message: str, available: list[str]) -> None:
        super().__init__(message)
        self.available = available


class _AsciiJSON(JSONResponse):
    """JSON with non-ASCII escaped: lone surrogates or odd keys in an echo cannot fail to encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def _error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return _AsciiJSON(status_code=status, content={"error": message, **extra}, headers=headers)


def _echo(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_ECHO_CHARS else f"{text[:MAX_ECHO_CHARS]}...({len(text)} chars)"


def _loc(err: dict[str, Any]) -> list[str | int]:
    return [p if isinstance(p, int) else _echo(p) for p in err.get("loc", ()) if p != "body"]


def _describe(errors: list[dict[str, Any]]) -> str:
    for err in errors:
        if err.get("type") == "json_invalid":
            return f"request body is not valid JSON: {err.get('ctx', {}).get('error', 'parse error')}"
    parts = [f"{'.'.join(str(p) for p in _loc(e)) or 'body'}: {e.get('msg', 'invalid')}" for e in errors]
    if len(parts) > MAX_ERRORS_SHOWN:
        parts[MAX_ERRORS_SHOWN:] = [f"and {len(parts) - MAX_ERRORS_SHOWN} more"]
    return "; ".join(parts) or "invalid request"


async def require_json(request: Request) -> None:
    """Route dependency: a JSON body must say so (`application/json` or `application/*+json`).

    Async on purpose: FastAPI runs a plain `def` dependency in a thread pool, a thread hop and a GIL
    hand-off per request next to the model.
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise StarletteHTTPException(
            415, f"content-type must be application/json, got {_echo(media) if media else 'none'}"
        )


def install_error_handlers(api: FastAPI) -> None:
    """Register the JSON error handlers and the access / body-limit / response-header middleware.

    The middleware reads its settings from `api.state` when a request comes, so a replica sets them
    in `__init__`: `api_keys` (an `ApiKeys` or None), `max_body_bytes`, `body_timeout_s`, `headers`.
    """

    @api.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        status = 400 if any(e.get("type") == "json_invalid" for e in errors) else 422
        # Type, place and message only: the offending input can be huge, deep, NaN or unencodable.
        detail = [
            {"type": str(e.get("type")), "loc": _loc(e), "msg": str(e.get("msg"))}
            for e in errors[:MAX_ERRORS_SHOWN]
        ]
        return _error(status, _describe(errors), detail=detail)

    @api.exception_handler(InputError)
    async def _input(_: Request, exc: InputError) -> JSONResponse:
        return _error(422, str(exc))

    @api.exception_handler(TooManyTokensError)
    async def _too_many_tokens(_: Request, exc: TooManyTokensError) -> JSONResponse:
        return _error(413, str(exc), limit=exc.limit, tokens=exc.tokens)

    @api.exception_handler(OverloadedError)
    async def _overloaded(_: Request, exc: OverloadedError) -> JSONResponse:
        # 503, not 429: the replica is busy, whoever asks; the client backs off for Retry-After.
        headers = {"retry-after": str(exc.retry_after_s)}
        return _error(503, str(exc), headers=headers, retry_after_s=exc.retry_after_s)

    @api.exception_handler(NotServedError)
    async def _not_served(_: Request, exc: NotServedError) -> JSONResponse:
        return _error(404, str(exc), available=exc.available)

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = f"no route {request.method} {_echo(request.url.path)}"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {_echo(request.url.path)}"
        elif exc.status_code == 400 and message == _FASTAPI_PARSE_ERROR:
            # json.loads raised something other than a syntax error: bad bytes, a RecursionError, or
            # an integer past Python's 4300-digit limit.
            message = (
                "request body is not valid JSON: it must be UTF-8, nested less than ~1000 levels deep, "
                "with numbers under 4300 digits"
            )
        return _error(exc.status_code, message, headers=exc.headers)

    @api.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, _echo(request.url.path))
        return _error(500, "internal error; the replica logged the details")

    api.add_middleware(_Boundary, api=api)


def _route(scope: Scope) -> str:
    """The path inside the application: Serve mounts each one under its `route_prefix`."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class _Boundary:
    """Pure ASGI middleware in front of every route: access, then the whole body, bounded."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.state = api.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [(k.encode(), v.encode()) for k, v in getattr(self.state, "headers", {}).items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        refusal = self._refuse_access(scope) or self._refuse_declared_size(scope)
        headers = Headers(scope=scope)
        if refusal is None and "content-length" not in headers and "transfer-encoding" not in headers:
            await self.app(scope, receive, send_with_headers)  # no body (RFC 9112 6.3): nothing to read
            return
        if refusal is None:
            body, refusal = await self._read_body(receive)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the disconnect, as the app expects
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send_with_headers)

    def _refuse_access(self, scope: Scope) -> JSONResponse | None:
        keys: ApiKeys | None = getattr(self.state, "api_keys", None)
        if keys is None or _route(scope) in OPEN_ROUTES:
            return None
        authorization = Headers(scope=scope).getlist("authorization")
        if len(authorization) == 1 and keys.allows(authorization[0].encode("latin-1")):
            return None
        # Neither the presented key nor the header makes it into the answer or a log line.
        return _error(
            401,
            "a valid API key is required: send the header 'Authorization: Bearer <key>'",
            headers={"www-authenticate": "Bearer"},
        )

    def _refuse_declared_size(self, scope: Scope) -> JSONResponse | None:
        limit = getattr(self.state, "max_body_bytes", None)
        declared = Headers(scope=scope).get("content-length")
        if limit is None or declared is None:
            return None
        if not declared.isdigit():
            return _error(400, f"content-length must be a whole number, got {_echo(declared)!r}")
        if int(declared) > limit:
            return _error(413, f"request body must be at most {limit} bytes, got {_echo(declared)}")
        return None

    async def _read_body(self, receive: Receive) -> tuple[bytes, JSONResponse | None]:
        """The whole body, or the refusal once it outgrows the limit or stalls (chunked bodies too)."""
        limit = getattr(self.state, "max_body_bytes", None)
        timeout_s = getattr(self.state, "body_timeout_s", None)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # the caller hung up: nobody to answer
                        return b"", _error(400, "client disconnected before the body arrived")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if limit is not None and size > limit:
                        return b"", _error(413, f"request body must be at most {limit} bytes, got more")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks), None
        except TimeoutError:
            return b"", _error(408, f"request body did not arrive within {timeout_s} s")
