"""Serve's replicas as a measurement sees them: ids, pids, counts, one replica's /healthz, memory."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import psutil

__all__ = [
    "MIB",
    "MemorySampler",
    "ingress_pid",
    "memory_mib",
    "pool_held",
    "replica_counts",
    "replica_health",
    "serve_replicas",
]

MIB = 2**20


def serve_replicas(client: Any, app: str, state: str | None = None) -> list[dict[str, Any]]:
    """The app's replicas as Serve's controller sees them (replica_id, state, pid, node_id, actor_name...)."""
    details = client.get_serve_details().get("applications", {}).get(app) or {}
    found = [r for d in (details.get("deployments") or {}).values() for r in d["replicas"]]
    return [r for r in found if state is None or r["state"] == state]


def replica_counts(app: str) -> tuple[int, int]:
    """(running replicas, autoscaler's target) of the app's deployments, from `serve.status()`."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        return 0, 0
    running = sum(d.replica_states.get("RUNNING", 0) for d in status.deployments.values())
    target = 0
    for d in status.deployments.values():
        detail = getattr(d, "autoscaling_detail", None)
        target += getattr(detail, "target_replicas", None) or sum(d.replica_states.values())
    return running, target


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


def pool_held(url: str, asks: int = 20) -> dict[str, int]:
    """{replica id: variants it holds}, from the warm pool's /pool/healthz asked `asks` times (the
    router spreads them, so every replica answers some)."""
    held: dict[str, int] = {}
    with httpx.Client(timeout=10) as client:
        for _ in range(asks):
            try:
                body = client.get(f"{url}/pool/healthz").json()
            except (httpx.HTTPError, ValueError):
                continue
            held[body.get("replica_id", "?")] = len(body.get("held", {}))
    return held


def memory_mib(pid: int) -> dict[str, float] | None:
    """USS, PSS and RSS of `pid` in MiB; None once the process is gone."""
    try:
        info = psutil.Process(pid).memory_full_info()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return {"uss_mib": info.uss / MIB, "pss_mib": info.pss / MIB, "rss_mib": info.rss / MIB}


def ingress_pid() -> int | None:
    """This session's HTTP ingress actor (a child of the Ray this process started).

    Under HAProxy that is Serve's HAProxyManager (the haproxy binary gets a new pid on every config
    reload); Serve's Python proxy then only idles as a fallback, so it counts only as the ingress.
    """
    found: dict[str, int] = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for name in ("ray::HAProxyManager", "ray::ProxyActor"):  # titles may go on: ".method"
            if cmd.startswith(name):
                found.setdefault(name, proc.pid)
    return found.get("ray::HAProxyManager", found.get("ray::ProxyActor"))


class MemorySampler(threading.Thread):
    """Every `every_s`: (seconds since start, USS, RSS in MiB) of each named process, in `samples`."""

    def __init__(self, pids: dict[str, int], every_s: float) -> None:
        super().__init__(daemon=True)
        self.pids, self.every_s = pids, every_s
        self.samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in pids}
        self.started = time.monotonic()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            t = time.monotonic() - self.started
            for name, pid in self.pids.items():
                if (m := memory_mib(pid)) is not None:  # a process that died: the caller's checks say so
                    self.samples[name].append((t, m["uss_mib"], m["rss_mib"]))
            if self._stop_event.wait(self.every_s):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
