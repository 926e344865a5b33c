"""Measure one replica of each variant for the cost report: `python -m benchmarks.cost --measure`.

Each variant is deployed alone at one fixed replica on a private Ray + Serve, warmed up, then loaded by
Locust's closed-loop users sending single real texts. Meanwhile this process samples via psutil the CPU
time of the replica (its pid from `/healthz`), of Serve's HTTP proxy and of the rest of Ray, and the
replica's memory:

- USS (unique set size): pages only the replica maps; what each added replica costs, since its
  weights are the object store's pages, mapped by every replica on the node and the raylet.
- PSS: USS plus a share of every shared page; recorded, not used (it falls as more processes map them).
- the weights' own size (`/info`: the arena in the object store), counted once per node.

The replica's CPU over the busy part of the run says how many cores one replica keeps busy
(cpus_per_replica); the proxy's CPU per request is the serving cost outside the replica.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.harness import ROOT
from benchmarks.harness.load import wait_serving
from benchmarks.harness.locust import run_locust
from benchmarks.harness.replicas import MIB, memory_mib
from benchmarks.harness.session import ServeSession, app_entry
from deployments.serve_config import ServeConfig, load_serve_config
from loading.host import machine_info

__all__ = ["DEFAULT_MEASUREMENTS", "busy_window", "measure", "measure_to_file", "measure_variant"]

logger = logging.getLogger(__name__)

DEFAULT_MEASUREMENTS = ROOT / "docs" / "benchmarks" / "cost_measurements.json"  # what the report reads
SAMPLE_EVERY_S = 0.5  # CPU times: cheap to read
MEMORY_EVERY = 2  # samples between reads of the replica's smaps (a few ms each)
IDLE_AFTER_S = 1.5  # the replica trims its heap 0.5 s after its last batch


def _group(proc: psutil.Process, replica_pid: int) -> str | None:
    """Which bill a process of this session goes on; None for the load generator."""
    if proc.pid == replica_pid:
        return "replica"
    cmd = " ".join(proc.cmdline())
    if "locust" in cmd:
        return None
    program = Path(cmd.split()[0]).name if cmd else ""  # empty for a process that is exiting
    if cmd.startswith(("ray::ProxyActor", "ray::HAProxyManager")) or program == "haproxy":
        return "proxy"  # the HTTP ingress: Serve's Python proxy, or HAProxy and its manager actor
    if cmd.startswith("ray::ServeReplica"):
        return "old_replicas"  # the previous variant's, shutting down
    return "ray"  # raylet, GCS, Serve controller, model store, idle workers


def _session_processes(replica_pid: int) -> Iterator[tuple[psutil.Process, str]]:
    for proc in psutil.Process().children(recursive=True):
        try:
            group = _group(proc, replica_pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if group is not None:
            yield proc, group


class _Sampler(threading.Thread):
    """Every SAMPLE_EVERY_S: cumulative CPU seconds per group; every few samples, the replica's memory."""

    def __init__(self, replica_pid: int) -> None:
        super().__init__(daemon=True)
        self.replica_pid = replica_pid
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.memory: list[dict[str, float]] = []
        self.error: str | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        n, last, total = 0, {}, {}  # last CPU seconds per pid; CPU seconds per group since the start
        while not self._stop_event.is_set():
            for proc, group in _session_processes(self.replica_pid):
                try:
                    t = proc.cpu_times()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                cpu = t.user + t.system
                total[group] = total.get(group, 0.0) + max(0.0, cpu - last.get(proc.pid, cpu))
                last[proc.pid] = cpu
            self.samples.append((time.monotonic(), dict(total)))
            if n % MEMORY_EVERY == 0:
                if (m := memory_mib(self.replica_pid)) is None:
                    self.error = "cannot read the replica's memory (gone?)"
                    return
                self.memory.append(m)
            n += 1
            self._stop_event.wait(SAMPLE_EVERY_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _rss_high_water_mib(pid: int) -> float | None:
    """The kernel's peak RSS of `pid` (VmHWM): catches peaks between two samples."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith("VmHWM:")), None)


def busy_window(
    samples: list[tuple[float, dict[str, float]]], key: str = "replica", busy_share: float = 0.25
) -> tuple[float, dict[str, float]]:
    """(seconds, cores per group) over the intervals where `key` used >= `busy_share` of its peak.

    Relative, not absolute: on a machine shared with other jobs a saturated replica may get well
    under one core. The first and last busy intervals (ramp-up, the end of the run) are dropped when
    there are more than three, so the figures are the steady state the Locust stats describe.
    """
    intervals = list(zip(samples, samples[1:], strict=False))
    rates = [(b.get(key, 0.0) - a.get(key, 0.0)) / (t1 - t0) for (t0, a), (t1, b) in intervals]
    if not rates or max(rates) <= 0.02:
        raise RuntimeError(f"the {key} was never busy while the load ran")
    busy = [i for i, rate in enumerate(rates) if rate >= busy_share * max(rates)]
    first, last = (busy[0] + 1, busy[-1] - 1) if len(busy) > 3 else (busy[0], busy[-1])
    (t0, a), (t1, b) = intervals[first][0], intervals[last][1]
    return t1 - t0, {g: (b.get(g, 0.0) - a.get(g, 0.0)) / (t1 - t0) for g in sorted(set(a) | set(b))}


def _pss_mib(group: str, replica_pid: int) -> float:
    found = [memory_mib(p.pid) for p, g in _session_processes(replica_pid) if g == group]
    return sum(m["pss_mib"] for m in found if m is not None)


def measure_variant(
    session: ServeSession, variant: str, users: int, seconds: float, warmup_s: float
) -> dict[str, Any]:
    """One replica of `variant`, alone, under `users` closed-loop users: req/s, CPU and memory."""
    session.deploy([app_entry(session.config, variant, replicas=1)])
    wait_serving(session.url, variant)
    with httpx.Client() as client:
        health = client.get(f"{session.url}/{variant}/healthz", timeout=30).json()
        info = client.get(f"{session.url}/{variant}/info", timeout=30).json()
    pid = int(health["pid"])
    with tempfile.TemporaryDirectory(prefix="cost-") as tmp:
        run_locust(session.url, variant, users, warmup_s, Path(tmp))
        sampler = _Sampler(pid)
        sampler.start()
        try:
            stats = run_locust(session.url, variant, users, seconds, Path(tmp))
        finally:
            sampler.stop()
    if sampler.error or not sampler.memory:
        raise RuntimeError(f"{variant}: {sampler.error or 'no memory sample'} (replica pid {pid})")
    window_s, cores = busy_window(sampler.samples)
    time.sleep(IDLE_AFTER_S)
    idle = memory_mib(pid)
    if idle is None:
        raise RuntimeError(f"{variant}: the replica (pid {pid}) is gone after the run")
    shared_idle = idle["rss_mib"] - idle["uss_mib"]  # shared pages it maps (the weights, libraries)
    hwm = _rss_high_water_mib(pid)
    peak = {k: max(m[f"{k}_mib"] for m in sampler.memory) for k in ("uss", "pss", "rss")}
    rps = stats["requests_per_s"]
    result = {
        "requests_per_s_per_replica": rps,
        # what the cost model charges per replica: its private memory at the sampled peak under load
        "replica_memory_mib": peak["uss"],
        "shared_weights_mib": info["arena_bytes"] / MIB,
        "proxy_cpu_ms_per_request": cores.get("proxy", 0.0) / rps * 1e3 if rps else 0.0,
        "replica_cpu_cores": cores.get("replica", 0.0),
        "ray_other_cpu_cores": cores.get("ray", 0.0),
        "cpu_window_s": window_s,
        "locust": stats,
        "memory_mib": {
            **{f"{k}_peak": v for k, v in peak.items()},
            **{f"{k}_idle": idle[f"{k}_mib"] for k in ("uss", "pss", "rss")},
            "shared_idle": shared_idle,
            # kernel peak RSS (start-up included) minus the shared pages: a private peak no sample missed
            "uss_high_water_est": None if hwm is None else hwm - shared_idle,
            "samples": len(sampler.memory),
        },
        "ray_processes_pss_mib": _pss_mib("ray", pid),
        "proxy_pss_mib": _pss_mib("proxy", pid),
        "weights_bytes": info.get("info", {}).get("weights_bytes"),
        "weights_loaded_from": health.get("weights_loaded_from"),
        "torch_threads": health.get("torch_threads"),
    }
    used, proxy_ms = result["replica_cpu_cores"], result["proxy_cpu_ms_per_request"]
    logger.info("%s: %.1f req/s, %.2f cores, proxy %.1f ms CPU/request", variant, rps, used, proxy_ms)
    return result


def measure(config: ServeConfig, variants: list[str], *, port: int, users: int, seconds: float) -> dict:
    """Every variant in turn on one private Ray + Serve; the measurements file's contents."""
    before = machine_info() | {"memory_gib": psutil.virtual_memory().total / 2**30}
    with ServeSession(config, port) as session:
        results = {
            v: measure_variant(session, v, users, seconds, warmup_s=min(5.0, seconds)) for v in variants
        }
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": before,
        "machine_after": machine_info(),
        "users": users,
        "seconds": seconds,
        "method": (
            "one replica per variant (serve_config.yaml's deployment at 1 fixed replica: num_cpus 0.5, "
            "1 torch thread), Locust closed-loop users sending one real Dreaddit text per request; "
            "req/s from Locust after its stats reset; CPU over the busy part of the run; memory: the "
            "replica's USS sampled every 1 s under load (replica_memory_mib = its peak)"
        ),
        "note": (
            f"{os.cpu_count()}-core machine shared with other jobs (see load averages); Locust, the "
            "proxy and Ray share the cores with the replica: figures are noisy to ~10%"
        ),
        "variants": results,
    }


def measure_to_file(args: argparse.Namespace, command: str) -> Path:
    """Measure per `args` (of `benchmarks.cost`) and write `args.measurements`; returns the path written.

    A `--quick` run never overwrites the recorded default file: it writes under reports/ instead.
    """
    config = load_serve_config(args.config)
    every = list(config.classifier_apps())
    variants = [v.strip() for v in args.variants.split(",")] if args.variants else every
    if args.quick:
        variants, args.seconds = variants[:1] if args.variants else ["base"], min(args.seconds, 8.0)
    if unknown := sorted(set(variants) - set(every)):
        raise ValueError(f"variants {unknown} are not in {config.path}; it has {every}")
    path = Path(args.measurements)
    if args.quick and path.resolve() == DEFAULT_MEASUREMENTS.resolve():
        path = ROOT / "reports" / "cost_measurements_quick.json"
        args.measurements = str(path)
        logger.info("--quick: writing %s, not the recorded %s", path, DEFAULT_MEASUREMENTS)
    out = measure(config, variants, port=args.port, users=args.users, seconds=args.seconds)
    out = {"date": out.pop("date"), "command": command, "quick": args.quick, **out}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    logger.info("wrote %s", path)
    return path
