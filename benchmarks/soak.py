"""A soak: a steady load for 10 minutes, watching failures, latency and replica memory:
`python -m benchmarks.soak --json`.

A private Ray + Serve (127.0.0.1:8301) serves one variant of `serve_config.yaml` at fixed replicas.
The user count is one the app carries without queueing: unless `--users` is given, short Locust probes
pick the largest count whose p99 stays within 2x p50 with no failures (a queue shows first as a long
p99), else the steadiest. After `--warmup-s` at that count (heaps and per-shape caches grow to their
working size), Locust runs for `--minutes` while this process samples, every `--sample-every-s`, the
USS of every replica (pages only it maps: a leak shows there, the shared weights do not) and of the
HTTP proxy.

Reported: Locust's whole-run and per-minute requests, failures and percentiles (drift); each
replica's USS under load (start, end, least-squares slope after a warm-up) and idle before and after
(a replica returns freed heap 0.5 s after its last batch, so idle USS is what it keeps); and the
verdicts: 0 failures, p99 <= 3x p50, no leak (idle USS within max(2%, 4 MiB) of before; the trend
under load within max(3 residual SDs, 2% of its start), judged on runs of 5 minutes or more), the
same replicas at the end. `--quick`: 1 minute, shorter probes and warm-up.
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness.cli import emit, parser, setup_logging
from benchmarks.harness.load import wait_serving, wait_until
from benchmarks.harness.locust import read_stats, run_locust, start_locust, stop_locust
from benchmarks.harness.replicas import MemorySampler, ingress_pid, memory_mib, serve_replicas
from benchmarks.harness.session import ServeSession, app_entry
from deployments.serve_config import ServeConfig, load_serve_config
from loading.host import machine_info

__all__ = ["choose_users", "idle_change", "main", "memory_trend", "minute_series", "verdicts"]

logger = logging.getLogger(__name__)

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

    growth_mib, the fitted change over the span, is noise within GROWTH_SDS residual SDs or
    GROWTH_SHARE of the fitted start."""
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
    """Idle USS before and after the soak (what a leak keeps); growth counts past GROWTH_SHARE of
    before or IDLE_NOISE_MIB."""
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
    """Per minute of a Locust `_stats_history.csv` (Aggregated rows): requests, failures, p50/p99
    (the median of the rows' percentiles, each over Locust's last 10 s)."""
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
        counts = {"requests": total[0] - previous[0], "failures": total[1] - previous[1]}
        p50, p99 = (statistics.median(p) if p else None for p in (p50s, p99s))
        out.append({"minute": minute, **counts, "p50_ms": p50, "p99_ms": p99})
        previous = total
    return out


def verdicts(
    stats: dict[str, Any], memory: dict[str, dict[str, Any]], replicas_unchanged: bool, minutes: float
) -> dict[str, bool | None]:
    """The issue's soak targets, each True when met (None: not judged by a run this short).

    A leak is judged twice: by idle USS before and after (what remains once freed heap is returned
    was kept), and by the trend under load, only after TREND_MIN_MINUTES (heaps still grow to their
    working size over the first minutes of a load)."""
    flat = all(not m["uss"]["growing"] for m in memory.values())
    return {
        "zero_failures": stats["failures"] == 0 and stats["requests"] > 0,
        "p99_within_3x_p50": stats["p99_ms"] <= TARGET_RATIO * stats["p50_ms"],
        "no_replica_leak_idle": all(not m["idle"]["growing"] for m in memory.values()),
        "no_replica_growth_under_load": flat if minutes >= TREND_MIN_MINUTES else None,
        "replicas_unchanged": replicas_unchanged,
    }


def _idle_uss_mib(pids: dict[str, int]) -> dict[str, float]:
    """USS of each process once the load has paused: replicas return freed heap after idling."""
    time.sleep(IDLE_S)
    return {name: m["uss_mib"] for name, pid in pids.items() if (m := memory_mib(pid)) is not None}


def _replicas(session: ServeSession, app: str) -> dict[str, int]:
    """replica id -> pid of the app's RUNNING replicas."""
    return {r["replica_id"]: r["pid"] for r in serve_replicas(session.client, app, "RUNNING")}


def _soak_locust(url: str, variant: str, users: int, seconds: float, prefix: Path) -> tuple[dict, list]:
    """Headless Locust at `users` for `seconds`: its whole-run stats and per-second history rows."""
    log = Path(f"{prefix}.log")
    options = ["--csv", str(prefix), "--csv-full-history", "--reset-stats"]
    proc = start_locust(url, variant, users, seconds, log, options=options)
    try:
        proc.wait(timeout=seconds + 180)
    finally:
        stop_locust(proc)
    with Path(f"{prefix}_stats_history.csv").open() as f:
        history = list(csv.DictReader(f))
    # the whole run's slowest request: the running maximum in the last Aggregated history row
    maxima = [float(r["Total Max Response Time"]) for r in history if r["Name"] == "Aggregated"]
    return {**read_stats(prefix, log), "max_ms": max(maxima, default=None)}, history


def soak(args: argparse.Namespace, config: ServeConfig) -> dict[str, Any]:
    """Deploy, probe (unless --users), soak with memory sampling; the JSON-ready result."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, ServeSession(config, args.port) as session:
        session.deploy([app_entry(config, args.variant, replicas=args.replicas)])
        wait_serving(session.url, args.variant, 300)
        wait_until(lambda: len(_replicas(session, args.variant)) == args.replicas, 300, "all replicas up")
        candidates = [args.users] if args.users else [int(u) for u in args.probe_users.split(",")]
        probes = [run_locust(session.url, args.variant, u, args.probe_seconds, Path(tmp)) for u in candidates]
        users = args.users or choose_users(probes)
        logger.info("probes %s -> %d users", [(p["users"], p["p50_ms"], p["p99_ms"]) for p in probes], users)
        replicas = _replicas(session, args.variant)
        watched = {f"replica:{rid}": pid for rid, pid in replicas.items()}
        if (proxy := ingress_pid()) is not None:
            watched["proxy"] = proxy
        seconds = args.minutes * 60
        out["load_avg_before_soak"] = machine_info()["load_avg_1_5_15m"]
        # Heaps and per-shape caches grow to their working size in the first minute of a load
        # (docs: reliability); measured from there, idle growth over the soak is what it kept.
        run_locust(session.url, args.variant, users, args.warmup_s, Path(tmp))
        idle_before = _idle_uss_mib(watched)
        sampler = MemorySampler(watched, args.sample_every_s)
        sampler.start()
        try:
            stats, history = _soak_locust(session.url, args.variant, users, seconds, Path(tmp) / "soak")
        finally:
            sampler.stop()
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
    p = parser("benchmarks.soak", __doc__, serve_port=8301)
    p.add_argument("--variant", default="base")
    p.add_argument("--replicas", type=int, default=2, help="fixed (no autoscaling during the soak)")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--users", type=int, default=None, help="default: chosen by the probe")
    p.add_argument("--probe-users", default="2,4,8", help="user counts the probe tries")
    p.add_argument("--probe-seconds", type=float, default=20.0, help="per probed user count")
    p.add_argument("--warmup-s", type=float, default=60.0, help="load at the soak's users, not counted")
    p.add_argument("--sample-every-s", type=float, default=10.0, help="memory sampling period")
    p.add_argument("--quick", action="store_true", help="1 minute, shorter probe: ~2-3 minutes in all")
    args = p.parse_args(argv)
    if args.quick:
        args.minutes, args.probe_seconds, args.sample_every_s, args.warmup_s = 1.0, 8.0, 5.0, 20.0
    if args.minutes <= 0 or args.replicas < 1 or args.sample_every_s <= 0:
        p.error("--minutes and --sample-every-s must be > 0 and --replicas >= 1")
    setup_logging()
    out: dict[str, Any] = {"machine": machine_info(), "quick": args.quick}
    out |= soak(args, load_serve_config(args.config))
    out["machine_after"] = machine_info()
    st = out["locust"]
    summary = [
        f"{args.variant} x{args.replicas}, {out['users']} users, {args.minutes:.0f} min: "
        f"{st['requests']} requests, {st['failures']} failures, "
        f"p50/p95/p99 {st['p50_ms']:.0f}/{st['p95_ms']:.0f}/{st['p99_ms']:.0f} ms"
    ]
    for name, m in out["memory"].items():
        u, idle = m["uss"], m["idle"]
        summary.append(
            f"{name} USS under load {u['start_mib']:.0f} -> {u['end_mib']:.0f} MiB, "
            f"{u['slope_mib_per_min']:.3f} MiB/min (growth {u['growth_mib']:.1f}, "
            f"noise {u['noise_mib']:.1f}); "
            f"idle {idle['before_mib']} -> {idle['after_mib']} MiB"
        )
    for name, met in out["targets"].items():
        summary.append(f"{name:<30} {'not judged' if met is None else 'met' if met else 'NOT MET'}")
    emit(out, args.json, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
