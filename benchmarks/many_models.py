"""Many models on one node, dedicated apps vs the warm pool: `python -m benchmarks.many_models`.

The models are clones of the default model (`artifacts/base`), each with its own weights (seeded
noise on every tensor, more on the classifier head), built once under `artifacts/many-models/`. One
private local Ray + Serve (127.0.0.1, HAProxy ingress as `make serve`) serves them two ways, one
after the other, under the same load: closed-loop users posting real Dreaddit texts round-robin over
the models. (a) One dedicated application per model at `/<model>/base`, 1 fixed replica each with
`num_cpus` 0.05 so that all of them fit the node's logical CPUs (Ray gets the machine's cores);
(b) the warm pool at `/pool`: 2 replicas serving every model, `max_models` = the model count; then
(c) the same pool with a smaller `max_models`, so that replicas drop and re-attach models (LRU).

Per setup: requests/s, p50/p99 latency, failures, and the node's memory: USS, PSS and RSS summed over
every process of this Ray session (replicas, Serve controller, HAProxy + its manager + Serve's idle
Python proxy, the model store, idle workers, raylet, GCS and Ray's agents; not this process, which
only generates the load), sampled under load. PSS counts each shared page once across them, so its
sum is the node's memory, the object store's weights included; USS leaves every shared page out.
"""

from __future__ import annotations

import logging
import os
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
    positive_int,
    record_out,
    setup_logging,
    write_record,
)
from benchmarks.harness.clones import CLONE_VARIANT, CLONES_DIR, ensure_clones
from benchmarks.harness.load import (
    measure_round_robin,
    random_texts,
    summarize_requests,
    wait_serving,
    wait_until,
)
from benchmarks.harness.machine import lscpu
from benchmarks.harness.node_memory import median_memory, role_pids, stored_weights_mib
from benchmarks.harness.replicas import pool_held, serve_replicas
from benchmarks.harness.session import ServeSession, app_entry, pool_entry
from deployments.serve_config import load_serve_config
from loading.artifact import VARIANT_FILE
from loading.host import machine_info

__all__ = ["RECORD", "compare", "main", "summary_lines"]

logger = logging.getLogger(__name__)

VARIANT = CLONE_VARIANT  # each clone is served as its model's one variant
RECORD = ROOT / "docs" / "benchmarks" / "many_models.json"  # what docs/BENCHMARKS.md and the cost report read
TARGET_RPS_RATIO = 0.85  # the pool's req/s over the dedicated apps' must reach this
TARGET_MEMORY_RATIO = 0.20  # and its node memory over theirs stay below this


def _attaches(rows: list[tuple], start: float) -> dict[str, int]:
    """Attaches seen in the answers: one per distinct (replica, route, x-weights-load-ms), as a new
    attach reports a new time; `in_window` counts those first seen from `start` on."""
    first: dict[tuple, float] = {}
    for at, route, status, _, replica, attach_ms in rows:
        if status == 200:
            first.setdefault((replica, route, attach_ms), at)
    return {"seen": len(first), "in_window": sum(1 for at in first.values() if at >= start)}


def compare(dedicated: dict[str, Any], pool: dict[str, Any]) -> dict[str, Any]:
    """The pool over the dedicated apps: req/s, node memory (USS and PSS sums) and the replicas' USS
    alone, against the targets (the node's totals)."""

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    rps = ratio(pool["load"]["requests_per_s"], dedicated["load"]["requests_per_s"])
    memory = {
        k: ratio(pool["memory"]["total"][k], dedicated["memory"]["total"][k]) for k in ("pss_mib", "uss_mib")
    }
    replicas = ratio(
        pool["memory"]["by_role"]["replicas"]["uss_mib"],
        dedicated["memory"]["by_role"]["replicas"]["uss_mib"],
    )
    return {
        "requests_per_s": rps,
        "memory_pss": memory["pss_mib"],
        "memory_uss": memory["uss_mib"],
        "replicas_uss": replicas,  # the serving processes alone, without Ray's fixed share
        "p99_ms": ratio(pool["load"]["p99_ms"], dedicated["load"]["p99_ms"]),
        "targets": {"requests_per_s_min": TARGET_RPS_RATIO, "memory_max": TARGET_MEMORY_RATIO},
        "meets_rps_target": rps is not None and rps >= TARGET_RPS_RATIO,
        "meets_memory_target_pss": memory["pss_mib"] is not None and memory["pss_mib"] <= TARGET_MEMORY_RATIO,
        "meets_memory_target_uss": memory["uss_mib"] is not None and memory["uss_mib"] <= TARGET_MEMORY_RATIO,
    }


def _measure(url: str, routes: list[str], texts: list[str], args: Any) -> dict[str, Any]:
    """`args.users` round-robin users: `args.warmup_s` unmeasured, then `args.seconds` measured, the
    node's memory sampled every `args.memory_every_s` meanwhile (and once at the end)."""
    window = measure_round_robin(
        url,
        routes,
        texts,
        users=args.users,
        warmup_s=args.warmup_s,
        seconds=args.seconds,
        memory_every_s=args.memory_every_s,
    )
    return {
        "load": summarize_requests(window.rows, window.start, window.end)
        | {"attaches": _attaches(window.rows, window.start)},
        "memory": median_memory(window.memory_samples),
        "load_avg_1_5_15m": [round(x, 2) for x in os.getloadavg()],
    }


def _settle(
    session: ServeSession, apps: list[str], replicas: int, old_pids: set[int], timeout_s: float
) -> None:
    """Wait until `apps` run `replicas` replicas in all, none of them in `old_pids`, and no other
    replica process (a previous setup's, shutting down) is left in the session."""

    def settled() -> bool:
        running = [r for app in apps for r in serve_replicas(session.client, app, "RUNNING")]
        pids = {r.get("pid") for r in running}
        if len(running) != replicas or pids & old_pids:
            return False
        return role_pids("replicas") <= pids

    wait_until(settled, timeout_s, f"{replicas} replicas of {apps} alone", interval_s=1.0)


def _replica_pids(session: ServeSession, apps: list[str]) -> set[int]:
    return {r.get("pid") for app in apps for r in serve_replicas(session.client, app)}


def _dedicated_apps(session: ServeSession, clones: dict[str, Path], num_cpus: float) -> list[dict[str, Any]]:
    apps = []
    for name, folder in clones.items():
        # A copy of the default model's base app, made this clone's: its own name, route and folder.
        app = app_entry(session.config, VARIANT, replicas=1, model=name, model_dir=str(folder))
        app["args"]["variant"] = VARIANT
        app["name"], app["route_prefix"] = name, f"/{name}/{VARIANT}"
        for deployment in app["deployments"]:
            deployment["ray_actor_options"] = {
                **deployment.get("ray_actor_options", {}),
                "num_cpus": num_cpus,
            }
        apps.append(app)
    return apps


def _pool_app(
    session: ServeSession, clones: dict[str, Path], replicas: int, max_models: int
) -> dict[str, Any]:
    models = {name: {VARIANT: str(folder)} for name, folder in clones.items()}
    return pool_entry(
        session.config,
        replicas=replicas,
        models=models,
        default_model=next(iter(clones)),
        max_models=max_models,
    )


def _pool_num_cpus(config: str) -> float:
    pool = load_serve_config(config).pool_app() or {}
    return max(
        float((d.get("ray_actor_options") or {}).get("num_cpus", 1)) for d in pool.get("deployments", [{}])
    )


def run(args: Any, command: str) -> dict[str, Any]:
    clones = ensure_clones(Path(args.source), args.models, Path(args.clones_dir), args.seed)
    texts = random_texts(2000, seed=args.seed)
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "quick": args.quick,
        "cpu": lscpu(),
        "machine": machine_info() | {"memory_gib": round(psutil.virtual_memory().total / 2**30, 1)},
        "models": len(clones),
        "source": str(args.source),
        "users": args.users,
        "warmup_s": args.warmup_s,
        "seconds": args.seconds,
        "method": (
            f"{len(clones)} clones of {args.source} (seeded noise, own weights each); closed-loop users "
            "posting one real Dreaddit text per request round-robin over the models; (a) one app per "
            f"model, 1 fixed replica, num_cpus {args.dedicated_num_cpus}; (b) the warm pool, "
            f"{args.pool_replicas} replicas (serve_config.yaml's num_cpus), max_models = {len(clones)}; "
            f"(c) the pool with max_models {args.churn_max_models}. Ray with {os.cpu_count()} logical "
            "CPUs (the machine's cores), HAProxy ingress"
        ),
        "node_memory": (
            "USS/PSS/RSS summed over every process of this Ray session: Serve replicas, Serve "
            "controller, ingress (HAProxy, its manager actor, Serve's idle Python proxy), model store, "
            "idle workers (incl. the spare warm worker), Ray system (raylet, GCS, agents, log monitor); "
            "not the load generator. PSS counts each shared page once (the object store's weights "
            "included); USS leaves shared pages out. Median of samples under load"
        ),
    }
    setups: dict[str, dict[str, Any]] = {}
    with ServeSession(load_serve_config(args.config), port=args.port) as session:
        url = session.url
        # (a) one dedicated single-replica app per model
        dedicated = _dedicated_apps(session, clones, args.dedicated_num_cpus)
        session.deploy(dedicated)
        names = list(clones)
        for name in names:
            wait_serving(url, f"{name}/{VARIANT}", args.deploy_timeout_s)
        _settle(session, names, len(names), set(), args.deploy_timeout_s)
        logger.info("dedicated: %d apps serving; measuring", len(names))
        setups["dedicated"] = _measure(url, [f"{n}/{VARIANT}" for n in names], texts, args)
        setups["dedicated"]["stored_weights_mib"] = stored_weights_mib()
        # (b) the warm pool, every model held; (c) the pool with fewer held than served
        pools = [("pool", len(names))]
        if args.churn_max_models:
            pools.append((f"pool_max_models_{args.churn_max_models}", args.churn_max_models))
        old = _replica_pids(session, names)
        for label, max_models in pools:
            session.deploy([_pool_app(session, clones, args.pool_replicas, max_models)])
            _settle(session, ["pool"], args.pool_replicas, old, args.deploy_timeout_s)
            for name in names:
                wait_serving(url, f"pool/{name}/{VARIANT}", args.deploy_timeout_s)
            logger.info("%s: serving; measuring", label)
            setups[label] = _measure(url, [f"pool/{n}/{VARIANT}" for n in names], texts, args)
            setups[label] |= {"max_models": max_models, "held_per_replica": pool_held(url)}
            setups[label]["stored_weights_mib"] = stored_weights_mib()
            old = _replica_pids(session, ["pool"])
    result["setups"] = setups
    result["pool_vs_dedicated"] = compare(setups["dedicated"], setups["pool"])
    result["machine_after"] = {"load_avg_1_5_15m": [round(x, 2) for x in os.getloadavg()]}
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = [
        f"{result['models']} models, {result['users']} users, {result['seconds']:g} s measured; "
        f"{result['cpu']['model_name']} (avx512_vnni: {result['cpu']['avx512_vnni']}), load average "
        f"{result['machine']['load_avg_1_5_15m']} -> {result['machine_after']['load_avg_1_5_15m']}",
        "| setup | req/s | p50 ms | p99 ms | failed | attaches in window | node PSS MiB | node USS MiB "
        "| replicas' USS MiB | weights in store MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, s in result["setups"].items():
        load, mem = s["load"], s["memory"]
        lines.append(
            f"| {label} | {load['requests_per_s']:.1f} | {load['p50_ms']} | {load['p99_ms']} "
            f"| {load['failed']} | {load['attaches']['in_window']} | {mem['total']['pss_mib']:,.0f} "
            f"| {mem['total']['uss_mib']:,.0f} | {mem['by_role']['replicas']['uss_mib']:,.0f} "
            f"| {s['stored_weights_mib']:,.0f} |"
        )
    c = result["pool_vs_dedicated"]
    lines.append(
        f"pool / dedicated: req/s {c['requests_per_s']} (target >= {TARGET_RPS_RATIO}), node memory PSS "
        f"{c['memory_pss']} / USS {c['memory_uss']} (target <= {TARGET_MEMORY_RATIO}); replicas' USS alone "
        f"{c['replicas_uss']}"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = parser(__name__, __doc__, serve_port=8430)
    p.add_argument("--models", type=positive_int, default=20, help="clones of --source served")
    add_load_window(
        p,
        users=32,
        seconds=60.0,
        warmup_s=15.0,
        memory_every_s=15.0,
        record=RECORD,
        quick="3 models, 6 users, seconds-long phases",
    )
    p.add_argument("--pool-replicas", type=positive_int, default=2)
    p.add_argument("--churn-max-models", type=int, default=8, help="the LRU pool's max_models (0: skip it)")
    p.add_argument(
        "--dedicated-num-cpus", type=float, default=0.05, help="logical CPUs per dedicated replica"
    )
    p.add_argument("--source", default=str(ROOT / "artifacts" / "base"), help="the artifact to clone")
    p.add_argument("--clones-dir", default=str(CLONES_DIR), help="where the clones are built and kept")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.users, args.seconds, args.warmup_s, args.memory_every_s = 3, 6, 8.0, 4.0, 4.0
        args.churn_max_models = 2
    check_load_window(p, args)
    if args.dedicated_num_cpus <= 0:
        p.error("--dedicated-num-cpus must be > 0")
    if not 0 <= args.churn_max_models < args.models:
        p.error(f"--churn-max-models must be in [0, --models), got {args.churn_max_models}")
    pool_cpus = args.pool_replicas * _pool_num_cpus(args.config)
    if args.models * args.dedicated_num_cpus + pool_cpus > (os.cpu_count() or 1):
        p.error(
            f"--models x --dedicated-num-cpus plus the pool's {pool_cpus:g} CPUs must fit the "
            f"{os.cpu_count()} logical CPUs (both run while one replaces the other)"
        )
    if not (Path(args.source) / VARIANT_FILE).is_file():
        p.error(f"--source {args.source}: no artifact there (make artifacts builds artifacts/base)")
    out = record_out(args.out, args.quick, RECORD)
    setup_logging()
    result = run(args, command_line("benchmarks.many_models", argv))
    write_record(result, out)
    emit(result, args.json, summary_lines(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
