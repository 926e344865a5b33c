"""A soak: a steady load for 10 minutes, watching failures, latency and replica memory:
`python -m benchmarks.soak --json`.

A private Ray + Serve (`benchmarks.harness.session`, 127.0.0.1:8301) serves one variant from
`serve_config.yaml` at fixed replicas (its batching and resources as configured). The user count is
one the app carries without queueing: unless `--users` is given, short Locust probes at a few counts
pick the largest whose p99 stays within 2x its p50 with no failures (a margin under the 3x target;
a queue that grows shows first as a long p99), else the steadiest. After `--warmup-s` at that count
(heaps and per-shape caches grow to their working size), Locust (`benchmarks/locustfile.py`,
closed-loop users, single real texts) runs for `--minutes`, while this process samples the USS of
every replica (the pages only it maps, so a leak shows there; the weights are shared pages and not
in it) and of the HTTP proxy every `--sample-every-s`.

Reported: requests, failures, p50/p95/p99 (Locust's whole-run stats), per-minute requests and
p50/p99 (drift), each replica's USS under load (start, end, and the slope of a least-squares line
after a warm-up) and idle before and after the soak (a replica returns freed heap 0.5 s after its
last batch, so idle USS is what it keeps), and the verdicts: 0 failures, p99 <= 3x p50, no leak
(idle USS after within max(2%, 4 MiB) of before; the trend under load within max(3 residual SDs, 2%
of its start), judged on runs of 5 minutes or more), the same replicas at the end.

The last stdout line is one JSON object. `--quick`: 1 minute, shorter probes and warm-up.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from loading.host import machine_info
from benchmarks.harness.locust import locust_command, stop_locust
from benchmarks.harness.session import ROOT, ServeSession, app_entry, load_serve_config, post_text, wait_until

__all__ = ["choose_users", "idle_change", "main", "memory_trend", "minute_series", "verdicts"]

logger = logging.getLogger(__name__)

MIB = 2**20
PROBE_MAX_RATIO = 2.0  # p99 / p50 a probed user count may reach: a margin under the 3x target
TARGET_RATIO = 3.0  # the target: p99 within 3x p50
GROWTH_SDS = 3.0  # growth within this many residual SDs of the fit is noise
GROWTH_SHARE = 0.02  # ... or within this share of the start value (allocator and batch-shape jitter)
IDLE_S = 2.0  # a replica trims its heap 0.5 s after its last batch (deployments/classifier.py)
IDLE_NOISE_MIB = 4.0  # allowance for allocator jitter between two idle readings of one replica
TREND_MIN_MINUTES = 5.0  # shorter runs are mostly the heap's warm-up (~3 min in the 10-minute soak)


def choose_users(probes: list[dict[str, Any]], max_ratio: float = PROBE_MAX_RATIO) -> int:
    """The largest probed user count with no failures and p99 <= `max_ratio` x p50; if none qualifies
    (a shared machine's hiccups can stretch any short probe's p99), the one with the lowest p99/p50."""
    ok = [p for p in probes if p["failures"] == 0 and p["p50_ms"] > 0]
    if not ok:
        raise ValueError(f"probes must hold a run without failures, got {probes}")
    fine = [p["users"] for p in ok if p["p99_ms"] <= max_ratio * p["p50_ms"]]
    return max(fine) if fine else min(ok, key=lambda p: (p["p99_ms"] / p["p50_ms"], p["users"]))["users"]


def memory_trend(samples: list[tuple[float, float]], warmup_s: float = 0.0) -> dict[str, Any]:
    """Least-squares line through (seconds, MiB) samples after `warmup_s`: is the value growing?

    growth_mib is the fitted change over the fitted span; it counts as noise when within
    GROWTH_SDS residual SDs or GROWTH_SHARE of the fitted start.
    """
    kept = [(t, v) for t, v in samples if t >= warmup_s]
    if len(kept) < 3:
        raise ValueError(f"samples after the warm-up must number >= 3 to fit a trend, got {len(kept)}")
    ts, vs = [t for t, _ in kept], [v for _, v in kept]
    slope, intercept = statistics.linear_regression(ts, vs)  # MiB per s
    residuals = [v - (intercept + slope * t) for t, v in kept]
    sd = statistics.pstdev(residuals)
    start = intercept + slope * ts[0]
    growth = slope * (ts[-1] - ts[0])
    tolerance = max(GROWTH_SDS * sd, GROWTH_SHARE * start)
    return {
        "samples": len(kept),
        "start_mib": round(vs[0], 1),
        "end_mib": round(vs[-1], 1),
        "min_mib": round(min(vs), 1),
        "max_mib": round(max(vs), 1),
        "slope_mib_per_min": round(slope * 60, 3),
        "growth_mib": round(growth, 2),
        "noise_mib": round(tolerance, 2),
        "growing": growth > tolerance,
    }


def idle_change(before_mib: float | None, after_mib: float | None) -> dict[str, Any]:
    """Idle USS before and after the soak: what stays once freed heap is returned is what a leak keeps.

    Growth counts when it exceeds GROWTH_SHARE of the before value or IDLE_NOISE_MIB.
    """
    if before_mib is None or after_mib is None:
        return {"before_mib": before_mib, "after_mib": after_mib, "growth_mib": None, "growing": True}
    growth = after_mib - before_mib
    return {
        "before_mib": round(before_mib, 1),
        "after_mib": round(after_mib, 1),
        "growth_mib": round(growth, 1),
        "growing": growth > max(GROWTH_SHARE * before_mib, IDLE_NOISE_MIB),
    }


def minute_series(history_rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Per minute of a Locust `_stats_history.csv` (Aggregated rows): requests, failures, p50/p99.

    Locust's per-row percentiles cover its last 10 s; a minute's p50/p99 is their median.
    """
    rows = [r for r in history_rows if r.get("Name") == "Aggregated" and r.get("Total Request Count")]
    if not rows:
        return []
    t0 = int(rows[0]["Timestamp"])
    minutes: dict[int, list[dict[str, str]]] = {}
    for r in rows:
        minutes.setdefault((int(r["Timestamp"]) - t0) // 60, []).append(r)
    out = []
    previous = (0, 0)
    for minute, group in sorted(minutes.items()):
        total = (int(group[-1]["Total Request Count"]), int(group[-1]["Total Failure Count"]))
        p50s = [float(r["50%"]) for r in group if r["50%"] not in ("N/A", "0", "")]
        p99s = [float(r["99%"]) for r in group if r["99%"] not in ("N/A", "0", "")]
        out.append(
            {
                "minute": minute,
                "requests": total[0] - previous[0],
                "failures": total[1] - previous[1],
                "p50_ms": statistics.median(p50s) if p50s else None,
                "p99_ms": statistics.median(p99s) if p99s else None,
            }
        )
        previous = total
    return out


def verdicts(
    stats: dict[str, Any], memory: dict[str, dict[str, Any]], replicas_unchanged: bool, minutes: float
) -> dict[str, bool | None]:
    """The issue's soak targets, each True when met (None: not judged by a run this short).

    A leak is judged twice: by the idle USS before and after (freed heap is returned when idle, so
    what remains was kept) and by the trend under load, which needs TREND_MIN_MINUTES: replicas'
    heaps still grow to their working size over the first minutes of a new load.
    """
    return {
        "zero_failures": stats["failures"] == 0 and stats["requests"] > 0,
        "p99_within_3x_p50": stats["p99_ms"] <= TARGET_RATIO * stats["p50_ms"],
        "no_replica_leak_idle": all(not m["idle"]["growing"] for m in memory.values()),
        "no_replica_growth_under_load": all(not m["uss"]["growing"] for m in memory.values())
        if minutes >= TREND_MIN_MINUTES
        else None,
        "replicas_unchanged": replicas_unchanged,
    }


# -- measuring -------------------------------------------------------------------------------------


class _MemorySampler(threading.Thread):
    """Every `every_s`: USS and RSS (MiB) of each watched process, with seconds since the start."""

    def __init__(self, pids: dict[str, int], every_s: float) -> None:
        super().__init__(daemon=True)
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.every_s = every_s
        self.samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in pids}
        self.started = time.monotonic()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            t = time.monotonic() - self.started
            for name, proc in self.procs.items():
                try:
                    info = proc.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue  # a replica that died: the end check reports it
                self.samples[name].append((t, info.uss / MIB, info.rss / MIB))
            if self._stop_event.wait(self.every_s):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _idle_uss_mib(pids: dict[str, int]) -> dict[str, float]:
    """USS of each process once the load has paused: replicas return freed heap after idling."""
    time.sleep(IDLE_S)
    found = {}
    for name, pid in pids.items():
        try:
            found[name] = psutil.Process(pid).memory_full_info().uss / MIB
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _replicas(session: ServeSession, app: str) -> dict[str, int]:
    """replica id -> pid of the app's RUNNING replicas."""
    details = session.client.get_serve_details().get("applications", {}).get(app) or {}
    return {
        r["replica_id"]: r["pid"]
        for d in (details.get("deployments") or {}).values()
        for r in d["replicas"]
        if r["state"] == "RUNNING"
    }


def _proxy_pid() -> int | None:
    """This session's HTTP ingress actor (a child of the Ray started by this process).

    Under HAProxy that is Serve's HAProxyManager (the haproxy binary gets a new pid on every
    config reload); Serve's Python proxy then only idles as a fallback, so it is watched only
    when it is the ingress.
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


def _soak_locust(url: str, variant: str, users: int, seconds: float, prefix: Path) -> subprocess.Popen:
    """Headless Locust at `users` for `seconds`, its stats and per-second history as CSV at `prefix`."""
    options = ["--csv", str(prefix), "--csv-full-history", "--reset-stats"]
    log = Path(f"{prefix}.log").open("wb")
    proc = subprocess.Popen(
        locust_command(url, variant, users, seconds, options=options),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc


def _read_stats(prefix: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    stats_path = Path(f"{prefix}_stats.csv")
    if not stats_path.exists():
        raise RuntimeError(
            f"locust wrote no stats; see {prefix}.log: {Path(f'{prefix}.log').read_text()[-2000:]}"
        )
    with stats_path.open() as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    with Path(f"{prefix}_stats_history.csv").open() as f:
        history = list(csv.DictReader(f))
    stats = {
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "requests_per_s": round(float(row["Requests/s"]), 2),
        **{f"p{q}_ms": float(row[f"{q}%"]) for q in (50, 95, 99)},
        "max_ms": float(row["Max Response Time"]),
    }
    return stats, history


def soak(args: argparse.Namespace, config: dict[str, Any]) -> dict[str, Any]:
    """Deploy, probe (unless --users), soak with memory sampling; the JSON-ready result."""
    from benchmarks.throughput import run_locust

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, ServeSession(config, args.port) as session:
        session.deploy([app_entry(config, args.variant, replicas=args.replicas)])
        with httpx.Client() as client:
            wait_until(
                lambda: (
                    (r := post_text(client, session.url, args.variant)) is not None and r.status_code == 200
                ),
                300,
                f"{args.variant} serving",
            )
        wait_until(
            lambda: len(_replicas(session, args.variant)) == args.replicas, 300, "every replica running"
        )
        candidates = [args.users] if args.users else [int(u) for u in args.probe_users.split(",")]
        probes = [run_locust(session.url, args.variant, u, args.probe_seconds, Path(tmp)) for u in candidates]
        users = args.users or choose_users(probes)
        logger.info("probes %s -> %d users", [(p["users"], p["p50_ms"], p["p99_ms"]) for p in probes], users)
        replicas = _replicas(session, args.variant)
        watched = {f"replica:{rid}": pid for rid, pid in replicas.items()}
        proxy = _proxy_pid()
        if proxy is not None:
            watched["proxy"] = proxy
        seconds = args.minutes * 60
        out["load_avg_before_soak"] = machine_info()["load_avg_1_5_15m"]
        # Heaps and per-shape caches grow to their working size in the first minute of a load
        # (docs: reliability); measured from there, idle growth over the soak is what it kept.
        run_locust(session.url, args.variant, users, args.warmup_s, Path(tmp))
        idle_before = _idle_uss_mib(watched)
        sampler = _MemorySampler(watched, args.sample_every_s)
        sampler.start()
        locust = _soak_locust(session.url, args.variant, users, seconds, Path(tmp) / "soak")
        try:
            locust.wait(timeout=seconds + 180)
        finally:
            sampler.stop()
            stop_locust(locust)
        stats, history = _read_stats(Path(tmp) / "soak")
        out["load_avg_after_soak"] = machine_info()["load_avg_1_5_15m"]
        idle_after = _idle_uss_mib(watched)
        replicas_after = _replicas(session, args.variant)
    warmup_s = min(60.0, 0.1 * seconds)
    memory = {}
    for name, samples in sampler.samples.items():
        memory[name] = {
            "pid": watched[name],
            "uss": memory_trend([(t, uss) for t, uss, _ in samples], warmup_s),
            "rss": memory_trend([(t, rss) for t, _, rss in samples], warmup_s),
            "idle": idle_change(idle_before.get(name), idle_after.get(name)),
            "series_uss_mib": [[round(t), round(uss, 1)] for t, uss, _ in samples],
        }
    replica_memory = {k: v for k, v in memory.items() if k.startswith("replica:")}
    out |= {
        "variant": args.variant,
        "replicas": args.replicas,
        "users": users,
        "users_chosen_by": "--users" if args.users else f"probe (largest with p99 <= {PROBE_MAX_RATIO}x p50)",
        "probes": probes,
        "minutes": args.minutes,
        "locust": stats,
        "p99_over_p50": round(stats["p99_ms"] / stats["p50_ms"], 2) if stats["p50_ms"] else None,
        "per_minute": minute_series(history),
        "warmup_s": args.warmup_s,
        "memory_warmup_s": warmup_s,
        "memory": memory,
        "replicas_before": sorted(replicas),
        "replicas_after": sorted(replicas_after),
    }
    out["targets"] = verdicts(stats, replica_memory, replicas_after == replicas, args.minutes)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="serve_config.yaml")
    parser.add_argument("--port", type=int, default=8301, help="their own Serve (8000 may be `make serve`)")
    parser.add_argument("--variant", default="base")
    parser.add_argument("--replicas", type=int, default=2, help="fixed (no autoscaling during the soak)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=None, help="default: chosen by the probe")
    parser.add_argument("--probe-users", default="2,4,8", help="user counts the probe tries")
    parser.add_argument("--probe-seconds", type=float, default=20.0, help="per probed user count")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="load at the soak's users, not counted")
    parser.add_argument("--sample-every-s", type=float, default=10.0, help="memory sampling period")
    parser.add_argument("--quick", action="store_true", help="1 minute, shorter probe: ~2-3 minutes in all")
    parser.add_argument("--json", action="store_true", help="(the last line is always the JSON object)")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.probe_seconds, args.sample_every_s, args.warmup_s = 1.0, 8.0, 5.0, 20.0
    if args.minutes <= 0 or args.replicas < 1 or args.sample_every_s <= 0:
        parser.error("--minutes and --sample-every-s must be > 0 and --replicas >= 1")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness probe otherwise
    config = load_serve_config(args.config)
    out: dict[str, Any] = {"machine": machine_info(), "quick": args.quick}
    out |= soak(args, config)
    out["machine_after"] = machine_info()
    stats = out["locust"]
    logger.info(
        "%s x%d, %d users, %.0f min: %d requests, %d failures, p50/p95/p99 %.0f/%.0f/%.0f ms",
        args.variant,
        args.replicas,
        out["users"],
        args.minutes,
        stats["requests"],
        stats["failures"],
        stats["p50_ms"],
        stats["p95_ms"],
        stats["p99_ms"],
    )
    for name, m in out["memory"].items():
        logger.info(
            "%s USS under load %.0f -> %.0f MiB, %.3f MiB/min (growth %.1f, noise %.1f); idle %s -> %s MiB",
            name,
            m["uss"]["start_mib"],
            m["uss"]["end_mib"],
            m["uss"]["slope_mib_per_min"],
            m["uss"]["growth_mib"],
            m["uss"]["noise_mib"],
            m["idle"]["before_mib"],
            m["idle"]["after_mib"],
        )
    for name, met in out["targets"].items():
        logger.info("%-30s %s", name, "not judged" if met is None else "met" if met else "NOT MET")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
