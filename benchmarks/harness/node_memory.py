"""The node's memory by process role: every process of this local Ray session, summed by what it is.

USS, PSS and RSS are summed over the Serve replicas, the Serve controller, the ingress (HAProxy, its
manager actor, Serve's idle Python proxy), the model store, idle workers (the spare warm worker
among them) and Ray's own processes (raylet, GCS, agents, log monitor); not over the process that
measures. PSS counts each shared page once across them, so its sum is the node's memory, the object
store's weights included; USS leaves every shared page out.
"""

from __future__ import annotations

import statistics
import threading
from pathlib import Path
from typing import Any

import psutil

from benchmarks.harness.replicas import MIB

__all__ = [
    "ROLES",
    "NodeMemorySampler",
    "median_memory",
    "node_memory",
    "role_of",
    "role_pids",
    "session_processes",
    "stored_variants_mib",
    "stored_weights_mib",
]

ROLES = ("replicas", "serve_controller", "ingress", "model_store", "idle_workers", "ray_system")
_KEYS = ("processes", "uss_mib", "pss_mib", "rss_mib")
_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)


def role_of(cmdline: list[str]) -> str:
    """Which part of the node a process of this Ray session is, from its command line."""
    cmd = " ".join(cmdline)
    program = Path(cmdline[0]).name if cmdline else ""
    if cmd.startswith("ray::ServeReplica"):
        return "replicas"
    if cmd.startswith("ray::ServeController"):
        return "serve_controller"
    if cmd.startswith(("ray::ProxyActor", "ray::HAProxyManager")) or program == "haproxy":
        return "ingress"  # HAProxy, its manager actor, and Serve's Python proxy (idle under HAProxy)
    if cmd.startswith("ray::ModelStore"):
        return "model_store"
    if cmd.startswith("ray::IDLE"):
        return "idle_workers"  # pre-started workers, the spare warm worker (deployments/warm_worker.py)
    return "ray_system"  # raylet, GCS, Ray's agents and log monitor, any other worker


def session_processes() -> list[psutil.Process]:
    """Every process this one started, at any depth: the whole local Ray session."""
    return psutil.Process().children(recursive=True)


def role_pids(role: str) -> set[int]:
    """The pids of this session's processes that are `role` now."""
    pids = set()
    for proc in session_processes():
        try:
            if role_of(proc.cmdline()) == role:
                pids.add(proc.pid)
        except _GONE:
            continue
    return pids


def node_memory(
    processes: list[psutil.Process] | None = None, *, per_process: bool = False
) -> dict[str, Any]:
    """USS, PSS and RSS (MiB) summed by role and in total over `processes` (default: this session's).

    `per_process`: also each process's figures and role, under "per_process" ({pid: {...}}).
    """
    by_role = {role: {"processes": 0, "uss_mib": 0.0, "pss_mib": 0.0, "rss_mib": 0.0} for role in ROLES}
    each: dict[int, dict[str, Any]] = {}
    for proc in session_processes() if processes is None else processes:
        try:
            role = role_of(proc.cmdline())
            info = proc.memory_full_info()
        except _GONE:
            continue  # gone meanwhile
        entry = by_role[role]
        entry["processes"] += 1
        figures = {"uss_mib": info.uss / MIB, "pss_mib": info.pss / MIB, "rss_mib": info.rss / MIB}
        for key, value in figures.items():
            entry[key] += value
        if per_process:
            each[proc.pid] = {"role": role, **figures}
    total = {k: sum(r[k] for r in by_role.values()) for k in _KEYS}
    return {"total": total, "by_role": by_role} | ({"per_process": each} if per_process else {})


def median_memory(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over `node_memory` samples (and the peak of the totals)."""

    def med(values: list[float]) -> float:
        return round(statistics.median(values), 1)

    return {
        "samples": len(samples),
        "total": {k: med([s["total"][k] for s in samples]) for k in _KEYS},
        "peak_total": {k: round(max(s["total"][k] for s in samples), 1) for k in _KEYS[1:]},
        "by_role": {
            role: {k: med([s["by_role"][role][k] for s in samples]) for k in _KEYS} for role in ROLES
        },
    }


class NodeMemorySampler:
    """`node_memory()` every `every_s` on a thread, into `samples`, from `start` to `stop`."""

    def __init__(self, every_s: float, *, per_process: bool = False) -> None:
        self.every_s, self.per_process = every_s, per_process
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(node_memory(per_process=self.per_process))

    def start(self) -> None:
        self._thread.start()

    def stop(self, final_sample: bool = True) -> None:
        """End the sampling; `final_sample`: take one more now (still under the load, if any)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if final_sample:
            self.samples.append(node_memory(per_process=self.per_process))


def _stored_bytes() -> dict[str, int]:
    import ray

    from loading.model_store import model_store

    stored = ray.get(model_store().variants.remote())
    return {key: int(v.get("arena_bytes", 0)) for key, v in sorted(stored.items())}


def stored_variants_mib() -> dict[str, float]:
    """{store key: MiB} of every arena the model store holds in the object store (once per node)."""
    return {key: round(n / MIB, 1) for key, n in _stored_bytes().items()}


def stored_weights_mib() -> float:
    """The weights the model store holds in the object store (every arena, once), in MiB."""
    return round(sum(_stored_bytes().values()) / MIB, 1)
