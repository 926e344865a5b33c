"""A private Ray + Serve for measurements, deployed from `serve_config.yaml` as `serve run` does.

The load-test scripts start their own local Ray (never someone else's cluster), start Serve on
127.0.0.1 with the config's HTTP options, and deploy edited copies of the config's applications
(one variant, N fixed replicas, weights from the store or from disk) through the same controller
call `serve run serve_config.yaml` makes, so what is measured is the shipped configuration.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

__all__ = [
    "ClosedLoopUsers",
    "replica_health",
    "ServeSession",
    "app_entry",
    "load_serve_config",
    "pool_entry",
    "post_text",
    "variant_apps",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[1]
SHORT_TEXT = "I cannot sleep before my exam and everything feels like too much."


def load_serve_config(path: str | os.PathLike = ROOT / "serve_config.yaml") -> dict[str, Any]:
    """The parsed config; a missing or unreadable file stops with its path."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"cannot read the Serve config {path}: {exc}") from exc
    if not isinstance(config, dict) or not config.get("applications"):
        raise SystemExit(f"{path} has no applications")
    return config


def variant_apps(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The config's classifier applications by variant (the catch-all 404 app has none)."""
    return {a["args"]["variant"]: a for a in config["applications"] if "variant" in (a.get("args") or {})}


def app_entry(
    config: dict[str, Any],
    variant: str,
    *,
    replicas: int | None = None,
    **args: Any,
) -> dict[str, Any]:
    """A copy of `variant`'s application; `replicas` fixes the count (no autoscaling), `args` override."""
    apps = variant_apps(config)
    if variant not in apps:
        raise SystemExit(f"variant {variant!r} is not in the Serve config; it has {sorted(apps)}")
    return _edited(apps[variant], replicas, args)


def pool_entry(config: dict[str, Any], *, replicas: int | None = None, **args: Any) -> dict[str, Any]:
    """A copy of the config's warm pool application; `replicas` fixes the count, `args` override."""
    pools = [a for a in config["applications"] if a.get("import_path", "").startswith("deployments.pool:")]
    if not pools:
        raise SystemExit("the Serve config has no warm pool application (import_path deployments.pool)")
    return _edited(pools[0], replicas, args)


def _edited(app: dict[str, Any], replicas: int | None, args: dict[str, Any]) -> dict[str, Any]:
    app = copy.deepcopy(app)
    app["args"].update(args)
    if replicas is not None:
        for deployment in app.get("deployments", []):
            deployment.pop("autoscaling_config", None)
            deployment["num_replicas"] = replicas
    return app


class ServeSession:
    """Own local Ray and Serve on 127.0.0.1:`port` through `ingress` (`deployments.ingress`; default as
    `make serve`); `deploy` replaces the running applications."""

    def __init__(self, config: dict[str, Any], port: int = 8000, ingress: str | None = None) -> None:
        from deployments.ingress import use_ingress
        from loading.machine import set_bench_env

        self.config = config
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        set_bench_env()  # workers inherit it: no hub, one tokenizer thread
        # Before Serve's modules are imported: they read the ingress switches once, at import.
        self.ingress = use_ingress(ingress)
        import ray
        from ray.serve._private.api import serve_start

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        started = time.perf_counter()
        ray.init(
            address="local",
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            namespace="serve",
        )
        http = {**config.get("http_options", {}), "host": "127.0.0.1", "port": port}
        self.client = serve_start(http_options=http, proxy_location=config.get("proxy_location"))
        self.start_s = time.perf_counter() - started

    def deploy(self, apps: list[dict[str, Any]]) -> float:
        """Submit `apps` as the whole Serve config (as `serve deploy` does); returns the epoch time."""
        from ray.serve.schema import ServeDeploySchema

        body = {k: v for k, v in self.config.items() if k not in ("applications", "http_options")}
        schema = ServeDeploySchema.model_validate({**body, "applications": apps})
        submitted = time.time()
        self.client.deploy_apps(schema, _blocking=False)
        return submitted

    def close(self) -> None:
        import ray
        from ray import serve

        try:
            serve.shutdown()
        finally:
            ray.shutdown()

    def __enter__(self) -> ServeSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def replica_health(
    url: str, variant: str, replica_id: str, *, tries: int = 200, timeout_s: float = 10
) -> dict[str, Any] | None:
    """`/healthz` of one replica: asked until the router sends the request to that one."""
    with httpx.Client() as client:
        for _ in range(tries):
            try:
                body = client.get(f"{url}/{variant}/healthz", timeout=timeout_s).json()
            except (httpx.HTTPError, ValueError):
                continue
            if body.get("replica_id") == replica_id:
                return body
    return None


def post_text(client: httpx.Client, url: str, variant: str, text: str = SHORT_TEXT) -> httpx.Response | None:
    """POST one text to `variant`; None when nothing answers yet (connection refused or timed out)."""
    try:
        return client.post(f"{url}/{variant}/classify", json={"text": text}, timeout=30)
    except httpx.HTTPError:
        return None


def wait_until(
    check: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.005
) -> tuple[float, Any]:
    """Call `check` until it returns something truthy; returns (epoch time, that value)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return time.time(), value
        time.sleep(interval_s)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")


class ClosedLoopUsers:
    """Users on threads: each posts one text to `variant`, waits for the answer, posts again.

    Every answer is appended to `requests` as (epoch time, x-replica-id, status; 0 = no answer).
    """

    def __init__(self, url: str, variant: str, requests: list[tuple[float, str, int]]) -> None:
        self.url, self.variant, self.requests = url, variant, requests
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self._ready: list[httpx.Client] = []

    def add(self, count: int) -> None:
        self.prepare(count)
        self.start()

    def prepare(self, count: int) -> None:
        """Make `count` users' clients now: an httpx client costs ~30 ms (its SSL context), which
        would otherwise stagger a step of many users over a second."""
        self._ready += [httpx.Client() for _ in range(count)]

    def start(self) -> None:
        """Start the prepared users."""
        for client in self._ready:
            thread = threading.Thread(target=self._run, args=(client,), daemon=True)
            thread.start()
            self.threads.append(thread)
        self._ready = []

    def _run(self, client: httpx.Client) -> None:
        with client:
            while not self.stop.is_set():
                r = post_text(client, self.url, self.variant)
                row = (time.time(), r.headers.get("x-replica-id", "") if r else "", r.status_code if r else 0)
                with self.lock:
                    self.requests.append(row)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)
