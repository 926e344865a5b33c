"""HTTP error handling for the ingress: every failure becomes a JSON 4xx/5xx, handled once here.

Lower layers raise; this module maps what a caller got wrong to 4xx with a message naming the
problem, and anything else to a 500 that is logged with its traceback but never shown.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["InputError", "install_error_handlers"]

logger = logging.getLogger(__name__)


class InputError(ValueError):
    """A request the caller got wrong (answered with 422 and the message)."""


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, **extra})


def _describe(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors:
        if err.get("type") == "json_invalid":
            return f"request body is not valid JSON: {err.get('ctx', {}).get('error', 'parse error')}"
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(api: FastAPI) -> None:
    """Register the JSON error handlers and the response-header / body-size middleware."""

    @api.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        status = 400 if any(e.get("type") == "json_invalid" for e in errors) else 422
        detail = json.loads(json.dumps(errors, default=str))  # ctx may hold exceptions
        return _error(status, _describe(errors), detail=detail)

    @api.exception_handler(InputError)
    async def _input(_: Request, exc: InputError) -> JSONResponse:
        return _error(422, str(exc))

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}"
        return _error(exc.status_code, message)

    @api.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal error; the replica logged the details")

    @api.middleware("http")
    async def _headers_and_limits(request: Request, call_next):
        limit = getattr(api.state, "max_body_bytes", None)
        declared = request.headers.get("content-length")
        if limit is not None and declared is not None:
            if not declared.isdigit():
                response = _error(400, f"content-length must be a whole number, got {declared!r}")
            elif int(declared) > limit:
                response = _error(413, f"request body must be at most {limit} bytes, got {declared}")
            else:
                response = await call_next(request)
        else:
            response = await call_next(request)
        for name, value in getattr(api.state, "headers", {}).items():
            response.headers[name] = value
        return response
