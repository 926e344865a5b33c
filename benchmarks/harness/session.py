"""A private local Ray, or Ray + Serve deployed from `serve_config.yaml` as `serve run` does.

Measurements start their own local Ray (never someone else's cluster), start Serve on 127.0.0.1
with the config's HTTP options, and deploy edited copies of the config's applications (one variant,
N fixed replicas, other args) through the same controller call `serve run` makes, so what is
measured is the shipped configuration.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from deployments.serve_config import ServeConfig, ServeConfigError

__all__ = ["ServeSession", "app_entry", "local_ray", "pool_entry"]


@contextmanager
def local_ray(num_cpus: int | None = None, namespace: str = "serve", **kwargs: Any) -> Iterator[None]:
    """A fresh local Ray for the `with` block, its workers under `loading.host.WORKER_ENV`.

    In a process that already runs Ray (a test session), the block uses that one and leaves it up.
    """
    import ray

    from loading.host import set_worker_env

    if ray.is_initialized():
        yield
        return
    set_worker_env()  # workers inherit this process's environment: no hub, one tokenizer thread
    ray.init(
        address="local",
        num_cpus=num_cpus or os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        namespace=namespace,
        **kwargs,
    )
    try:
        yield
    finally:
        ray.shutdown()


def app_entry(
    config: ServeConfig, variant: str, /, *, replicas: int | None = None, **args: Any
) -> dict[str, Any]:
    """A copy of `variant`'s application, mounted at `/<variant>` (where a measurement addresses it:
    `/base`, `/sentiment/base`); `replicas` fixes the count (no autoscaling), `args` override (the
    app's own `variant` and `model` too: `variant` is positional-only so that they can)."""
    apps = config.classifier_apps()
    if variant not in apps:
        raise ServeConfigError(f"variant {variant!r} is not in {config.path}; it has {sorted(apps)}")
    return {**_edited(apps[variant], replicas, args), "route_prefix": f"/{variant}"}


def pool_entry(config: ServeConfig, *, replicas: int | None = None, **args: Any) -> dict[str, Any]:
    """A copy of the config's warm pool application, mounted at `/pool` (so that measurements of it
    do not also catch every other path); `replicas` fixes the count, `args` override."""
    pool = config.pool_app()
    if pool is None:
        raise ServeConfigError(f"{config.path} has no warm pool application (import_path deployments.pool)")
    return {**_edited(pool, replicas, args), "route_prefix": "/pool"}


def _edited(app: dict[str, Any], replicas: int | None, args: dict[str, Any]) -> dict[str, Any]:
    app = copy.deepcopy(app)
    app["args"].update(args)
    if replicas is not None:
        for deployment in app.get("deployments", []):
            deployment.pop("autoscaling_config", None)
            deployment["num_replicas"] = replicas
    return app


class ServeSession:
    """Own local Ray and Serve on 127.0.0.1:`port` through `ingress` (`deployments.run`; default as
    `make serve`); `deploy` replaces the running applications."""

    def __init__(self, config: ServeConfig, port: int = 8000, ingress: str | None = None) -> None:
        from deployments.run import use_ingress

        self.config = config
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        # Before Serve's modules are imported: they read the ingress switches once, at import.
        self.ingress = use_ingress(ingress)
        from ray.serve._private.api import serve_start

        started = time.perf_counter()
        self._stack = ExitStack()
        self._stack.enter_context(local_ray())
        http = {**config.raw.get("http_options", {}), "host": "127.0.0.1", "port": port}
        try:
            self.client = serve_start(http_options=http, proxy_location=config.raw.get("proxy_location"))
        except BaseException:
            self._stack.close()  # no Ray left behind when Serve cannot start
            raise
        self.start_s = time.perf_counter() - started

    def deploy(self, apps: list[dict[str, Any]]) -> float:
        """Submit `apps` as the whole Serve config (as `serve deploy` does); returns the epoch time."""
        from ray.serve.schema import ServeDeploySchema

        body = {k: v for k, v in self.config.raw.items() if k not in ("applications", "http_options")}
        schema = ServeDeploySchema.model_validate({**body, "applications": apps})
        submitted = time.time()
        self.client.deploy_apps(schema, _blocking=False)
        return submitted

    def close(self) -> None:
        from ray import serve

        with self._stack:
            serve.shutdown()

    def __enter__(self) -> ServeSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
