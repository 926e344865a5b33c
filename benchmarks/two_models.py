"""Both models with every variant, the shipped config whole, on one node: `python -m benchmarks.two_models`.

Deploys `serve_config.yaml`'s applications unchanged, as `make serve` does: the dedicated `stress`
variant apps at /stress/<variant> and the warm pool at / serving `stress` and `sentiment`, on a
private local Ray + Serve (127.0.0.1, a free port, HAProxy ingress). Once every route answers, a
light steady load of closed-loop users posts real Dreaddit texts round-robin over every model
variant at the route a client uses (the dedicated app's, else the pool's). Reported: req/s, p50/p99
and failures per route; the node's memory by role (USS, PSS and RSS summed over every process of the
Ray session, as `benchmarks.many_models` counts it), sampled under load; the weights in the object
store; and each replica's USS, the dedicated apps' against the pool's.
"""

from __future__ import annotations

import logging
import os
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from benchmarks.harness import ROOT
from benchmarks.harness.cli import (
    add_load_window,
    check_load_window,
    command_line,
    emit,
    parser,
    record_out,
    setup_logging,
    write_record,
)
from benchmarks.harness.load import measure_round_robin, random_texts, summarize_requests, wait_serving
from benchmarks.harness.machine import lscpu
from benchmarks.harness.node_memory import median_memory, stored_variants_mib, stored_weights_mib
from benchmarks.harness.replicas import pool_held, serve_replicas
from benchmarks.harness.session import ServeSession
from deployments.protocol import POOL_ALIAS
from deployments.run import free_port
from deployments.serve_config import DEFAULT_MODEL, ServeConfig, ServeConfigError, is_pool, load_serve_config
from loading.host import machine_info

__all__ = ["RECORD", "main", "ready_routes", "replica_uss", "variant_routes"]

logger = logging.getLogger(__name__)

RECORD = ROOT / "docs" / "benchmarks" / "two_models.json"  # what docs/COST.md quotes
POOL_PROBE = f"{DEFAULT_MODEL}/quant"  # also asked through /pool/...: the pool serves the default model too


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def variant_routes(config: ServeConfig) -> dict[str, str]:
    """Every `model/variant` the config serves -> the route a client posts to (without /classify):
    its dedicated application's route prefix when it has one, else the warm pool's `<model>/<variant>`."""
    routes: dict[str, str] = {}
    for app in config.applications:
        args = app.get("args") or {}
        if "variant" in args and not is_pool(app):
            routes[f"{args.get('model', DEFAULT_MODEL)}/{args['variant']}"] = _join(app["route_prefix"])
    pool = config.pool_app()
    if pool is not None:
        args = pool.get("args") or {}
        models = dict(args.get("models") or {})
        if args.get("variants"):  # the single-model form: the default model's variants
            models[args.get("default_model", DEFAULT_MODEL)] = args["variants"]
        for model, variants in models.items():
            for variant in variants or {}:
                routes.setdefault(f"{model}/{variant}", _join(pool.get("route_prefix", "/"), model, variant))
    return routes


def ready_routes(config: ServeConfig, pool_probe: str = POOL_PROBE) -> list[str]:
    """`variant_routes`, then `pool_probe` through the pool's own /pool/... route: what must answer
    before the load starts (the pool serves dedicated models' variants too)."""
    pool = config.pool_app()
    if pool is None:
        raise ServeConfigError(f"{config.path} has no warm pool application (import_path deployments.pool)")
    model, _, variant = pool_probe.partition("/")
    served = (pool.get("args") or {}).get("models") or {}
    if variant not in (served.get(model) or {}):
        raise ValueError(f"pool_probe must be a model/variant the pool serves, got {pool_probe!r}")
    return [
        *variant_routes(config).values(),
        _join(pool.get("route_prefix", "/"), POOL_ALIAS, model, variant),
    ]


def replica_uss(samples: list[dict[str, Any]], pids: dict[str, list[int]]) -> dict[str, list[float]]:
    """{app: each replica's median USS (MiB) over `node_memory(per_process=True)` samples}, for the
    replica `pids` of each app; a pid in no sample is left out."""
    out: dict[str, list[float]] = {}
    for app, app_pids in pids.items():
        values = []
        for pid in app_pids:
            seen = [s["per_process"][pid]["uss_mib"] for s in samples if pid in s.get("per_process", {})]
            if seen:
                values.append(round(statistics.median(seen), 1))
        out[app] = values
    return out


def _replica_split(config: ServeConfig, uss: dict[str, list[float]]) -> dict[str, Any]:
    """The replicas' USS, the dedicated apps' against the pool's: count, per replica, sum."""
    pool_name = (config.pool_app() or {}).get("name")
    groups = {
        "dedicated": [v for app, vs in uss.items() if app != pool_name for v in vs],
        "pool": uss.get(pool_name, []),
    }
    return {
        name: {
            "replicas": len(values),
            "uss_mib_each": values,
            "uss_mib_median": round(statistics.median(values), 1) if values else None,
            "uss_mib_sum": round(sum(values), 1),
        }
        for name, values in groups.items()
    }


def run(args: Any, command: str) -> dict[str, Any]:
    config = load_serve_config(args.config)
    routes = variant_routes(config)
    ready = ready_routes(config)
    texts = random_texts(2000, seed=args.seed)
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "quick": args.quick,
        "cpu": lscpu(),
        "machine": machine_info() | {"memory_gib": round(psutil.virtual_memory().total / 2**30, 1)},
        "config": os.path.relpath(Path(args.config).resolve(), ROOT),
        "applications": [a["name"] for a in config.applications],
        "routes": routes,
        "users": args.users,
        "warmup_s": args.warmup_s,
        "seconds": args.seconds,
        "method": (
            f"{Path(args.config).name}'s applications unchanged (autoscaling as configured) on a private "
            f"local Ray ({os.cpu_count()} logical CPUs, the machine's cores) + Serve, HAProxy ingress; "
            f"{args.users} closed-loop users posting one real Dreaddit text per request round-robin over "
            f"the {len(routes)} model variants at their client routes; {args.warmup_s:g} s warm-up, "
            f"{args.seconds:g} s measured"
        ),
        "node_memory": (
            "USS/PSS/RSS summed over every process of this Ray session by role (as benchmarks.many_models): "
            "Serve replicas, Serve controller, ingress (HAProxy, its manager actor, Serve's idle Python "
            "proxy), model store, idle workers (incl. the spare warm worker), Ray system (raylet, GCS, "
            "agents, log monitor); not the load generator. PSS counts each shared page once (the "
            "object store's weights included); USS leaves shared pages out. Median of samples under load"
        ),
    }
    with ServeSession(config, port=args.port) as session:
        session.deploy(config.applications)
        for route in ready:
            wait_serving(session.url, route, args.deploy_timeout_s)
        logger.info("every route answers (%s); measuring", ", ".join(ready))
        window = measure_round_robin(
            session.url,
            list(routes.values()),
            texts,
            users=args.users,
            warmup_s=args.warmup_s,
            seconds=args.seconds,
            memory_every_s=args.memory_every_s,
            per_process=True,
        )
        running = {
            app["name"]: [r["pid"] for r in serve_replicas(session.client, app["name"], "RUNNING")]
            for app in config.served_apps()
        }
        uss = replica_uss(window.memory_samples, running)
        result["load"] = summarize_requests(window.rows, window.start, window.end)
        result["per_route"] = {
            route: summarize_requests([r for r in window.rows if r[1] == route], window.start, window.end)
            for route in routes.values()
        }
        result["memory"] = median_memory(window.memory_samples)
        result["stored_weights_mib"] = stored_weights_mib()
        result["stored_variants_mib"] = stored_variants_mib()
        result["replicas_running"] = {app: len(pids) for app, pids in running.items()}
        result["replica_uss_mib"] = uss
        result["replicas"] = _replica_split(config, uss)
        result["pool_held_per_replica"] = pool_held(session.url)
    result["machine_after"] = {"load_avg_1_5_15m": [round(x, 2) for x in os.getloadavg()]}
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    load, mem, reps = result["load"], result["memory"], result["replicas"]
    lines = [
        f"{len(result['routes'])} model variants, {result['users']} users, {result['seconds']:g} s measured; "
        f"{result['cpu']['model_name']} (avx512_vnni: {result['cpu']['avx512_vnni']}), load average "
        f"{result['machine']['load_avg_1_5_15m']} -> {result['machine_after']['load_avg_1_5_15m']}",
        f"all routes: {load['requests_per_s']:.1f} req/s, p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms, "
        f"{load['failed']} failed of {load['requests']}",
        "| route | req/s | p50 ms | p99 ms | failed |",
        "|---|---:|---:|---:|---:|",
    ]
    for route, s in result["per_route"].items():
        lines.append(
            f"| /{route} | {s['requests_per_s']:.1f} | {s['p50_ms']} | {s['p99_ms']} | {s['failed']} |"
        )
    lines += ["| role | processes | PSS MiB | USS MiB |", "|---|---:|---:|---:|"]
    for role, m in [*mem["by_role"].items(), ("total", mem["total"])]:
        lines.append(f"| {role} | {m['processes']:g} | {m['pss_mib']:,.0f} | {m['uss_mib']:,.0f} |")
    lines.append(
        f"weights in the object store: {result['stored_weights_mib']:,.1f} MiB; replicas' USS: dedicated "
        f"{reps['dedicated']['replicas']} x {reps['dedicated']['uss_mib_median']} MiB (median), pool "
        f"{reps['pool']['replicas']} x {reps['pool']['uss_mib_median']} MiB"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = parser(__name__, __doc__, serve_port=0)
    add_load_window(
        p,
        users=8,
        seconds=30.0,
        warmup_s=10.0,
        memory_every_s=5.0,
        record=RECORD,
        quick="4 users, seconds-long phases",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.users, args.seconds, args.warmup_s, args.memory_every_s = 4, 8.0, 3.0, 4.0
    check_load_window(p, args)
    try:
        ready_routes(load_serve_config(args.config))
    except ValueError as exc:  # ServeConfigError too: no pool, or an unreadable config
        p.error(f"--config {args.config}: {exc}")
    if args.port == 0:
        args.port = free_port()
    out = record_out(args.out, args.quick, RECORD)
    setup_logging()
    result = run(args, command_line("benchmarks.two_models", argv))
    write_record(result, out)
    emit(result, args.json, summary_lines(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
