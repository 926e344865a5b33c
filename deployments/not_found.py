"""The catch-all application at `/`: a JSON 404 for every path under no variant.

Serve's proxy answers a path that matches no application with a plain-text 404, which a client
parsing JSON errors cannot read. With this app at route prefix `/`, the proxy sends every such path
here instead (longer prefixes such as `/base` still win), and the answer names the variants served.
It holds no model: a fraction of a CPU and a few MB.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application

__all__ = ["NotFound", "NotFoundArgs", "app_builder"]

api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class NotFoundArgs(BaseModel):
    """Application arguments, given under `args:` in `serve_config.yaml`."""

    model_config = {"extra": "forbid"}
    variants: list[str] = Field(default_factory=list)  # the routes to point lost callers at
    pool: str | None = None  # the warm pool's route prefix, if one is served (e.g. "/pool")


@serve.deployment(ray_actor_options={"num_cpus": 0})  # no model: takes no CPU share from them
@serve.ingress(api)
class NotFound:
    """Answers 404 with a JSON message naming the served variants."""

    def __init__(self, args: NotFoundArgs) -> None:
        self.routes = [f"/{v}/classify" for v in sorted(args.variants)]
        if args.pool:
            self.routes.append(f"{args.pool}/<variant>/classify")

    @api.api_route("/{path:path}", methods=_METHODS)
    async def not_found(self, path: str) -> JSONResponse:
        return JSONResponse(
            status_code=404,
            content={
                # The path is not echoed: it is the caller's input (any bytes, percent-decoded).
                "error": f"no variant is served at this path; POST to one of {self.routes}",
                "routes": self.routes,
            },
        )


def app_builder(args: dict[str, Any]) -> Application:
    """Build the catch-all application from the YAML `args:`."""
    return NotFound.bind(NotFoundArgs(**args))


app = NotFound.bind(NotFoundArgs())
