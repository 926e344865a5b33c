"""Spot preemption, proven locally: `python -m benchmarks.preemption --json` (docs/PREEMPTION.md).

A head node (on-demand: the model store, the Serve controller and the HTTP proxy; no CPUs, so no
replica) and `--workers` spot nodes (one replica each) run as separate `ray start` processes on this
machine (`benchmarks.local_cluster`). Retrying Locust users (`benchmarks.records.recorded_load`) keep
a steady load on the head's proxy while a spot node is lost, abruptly (every process SIGKILLed, as
a spot reclaim) or by a drain for preemption (a termination notice: Serve moves the replica, then
the node is killed). A replacement node is launched `--replace-after-s` later (the autoscaler);
capacity is back at the first 200 from a replica on it. Failures are counted on the first attempt
(a client without retries) and after retries (a user), before, during and after the loss; the new
replica's `/healthz` says where its weights came from. The summary is a table per scenario and the
targets. `--quick`: the abrupt scenario only, short windows.
"""

from __future__ import annotations

import signal
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.harness.cli import emit, listed, parser, setup_logging
from benchmarks.harness.load import wait_serving, wait_until
from benchmarks.harness.replicas import replica_health, serve_replicas
from benchmarks.harness.session import app_entry
from benchmarks.local_cluster import LocalCluster, LocalNode
from benchmarks.preemption_scenario import (
    SCENARIOS,
    ScenarioConfig,
    Setup,
    node_name,
    object_nodes,
    run_scenario,
)
from deployments.serve_config import load_serve_config

__all__ = ["main"]


def place_store_on_head(head: LocalNode, variant: str, model_dir: str) -> dict[str, Any]:
    """Create the model store on the head (before any replica asks for it) and store `variant`.

    Named as `loading.model_store.model_store()` names it, so every replica gets this actor; a hard
    node affinity keeps it and its restarts off the nodes that can be reclaimed.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from loading.model_store import STORE_NAME, STORE_NAMESPACE, ModelStore

    store = ModelStore.options(
        name=STORE_NAME,
        namespace=STORE_NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(head.node_id, soft=False),
    ).remote()
    started = time.perf_counter()
    entry = ray.get(store.ensure.remote(variant, model_dir))
    return {"store": store, "entry": entry, "store_ms": (time.perf_counter() - started) * 1e3}


def actor_nodes(names: dict[str, str]) -> dict[str, dict[str, Any]]:
    """For alive actors whose name starts with a key of `names` (a prefix -> a label): node and restarts."""
    from ray._private.state import actors  # GCS's actor table: the state API needs the dashboard

    found: dict[str, dict[str, Any]] = {}
    for actor in actors().values():
        for prefix, label in names.items():
            if actor["State"] == "ALIVE" and actor["Name"].startswith(prefix):
                key = label if label not in found else f"{label}:{actor['Name']}"
                found[key] = {"node_id": actor["Address"]["NodeID"], "restarts": actor["NumRestarts"]}
    return found


def serve_on_head(port: int, app: dict[str, Any]) -> tuple[Any, float]:
    """Serve with one HTTP proxy, on the head (proxies on every node would all want 127.0.0.1:`port`),
    running `app`; (the controller's client, the epoch time the app was submitted)."""
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    client = serve_start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    submitted = time.time()
    schema = ServeDeploySchema.model_validate({"proxy_location": "HeadOnly", "applications": [app]})
    client.deploy_apps(schema, _blocking=False)
    return client, submitted


def _disk_load_ms(model_dir: str) -> float:
    """The same weights read from disk into this process (1 torch thread): what the store spares."""
    import torch
    from transformers.utils import logging as hf_logging

    from loading.store import load_from_disk

    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    return load_from_disk(model_dir).attach_ms


def run(args: Any, cfg: ScenarioConfig, scenarios: list[str]) -> dict[str, Any]:
    """Start the cluster, deploy, run each scenario on it in turn; everything is stopped on the way out."""
    import ray

    from loading.artifact import resolve_model_dir

    app = app_entry(load_serve_config(args.config), args.variant, replicas=args.workers)
    for deployment in app["deployments"]:  # one replica per spot node (each has one "spot"), none on the head
        deployment["ray_actor_options"] = {"num_cpus": 0.5, "resources": {"spot": 1}}
    model_dir = str(resolve_model_dir(app["args"]["model_dir"]))
    url = f"http://127.0.0.1:{args.port}"
    out: dict[str, Any] = {"config": asdict(cfg), "variant": args.variant, "workers": args.workers}
    with (
        tempfile.TemporaryDirectory(prefix="preempt-records-") as folder,
        LocalCluster(gcs_port=args.gcs_port, base_port=args.base_port) as cluster,
    ):
        started = time.time()
        head = cluster.start_head()
        _raise_on_signals()  # again: ray.init installed its own SIGTERM handler (exits without unwinding)
        spots = cluster.add_nodes([f"spot-{i + 1}" for i in range(args.workers)], {"spot": 1})
        out["cluster_start_s"] = round(time.time() - started, 2)
        stored = place_store_on_head(head, args.variant, model_dir)
        client, deployed = serve_on_head(args.port, app)
        wait_until(
            lambda: len(serve_replicas(client, args.variant, "RUNNING")) == args.workers, 300, "deploy", 0.2
        )
        wait_serving(url, args.variant, 300)
        out["deploy_s"] = round(time.time() - deployed, 2)
        prefixes = {"SERVE_CONTROLLER_ACTOR": "serve_controller", "SERVE_PROXY_ACTOR": "serve_proxy"}
        placement = actor_nodes({**prefixes, "model_store": "model_store"})
        out["placement"] = {k: node_name(cluster, v["node_id"]) for k, v in placement.items()}
        on_head = {k: v["node_id"] == head.node_id for k, v in placement.items()}
        out["on_head"] = {k: on_head.get(k, False) for k in ("model_store", "serve_controller")}
        replicas = serve_replicas(client, args.variant)
        out["replica_nodes"] = sorted(node_name(cluster, r["node_id"]) for r in replicas)
        health = replica_health(url, args.variant, replicas[0]["replica_id"]) or {}
        arena = stored["entry"]["arena"]
        out["weights"] = {  # the first replica's, and what the same weights cost from disk
            "arena_bytes": stored["entry"]["arena_bytes"],
            "store_read_from_disk_ms": round(stored["store_ms"], 1),
            "first_replica_weights_load_ms": health.get("weights_load_ms"),
            "first_replica_loaded_from": health.get("weights_loaded_from"),
            "disk_load_ms_in_driver": round(_disk_load_ms(model_dir), 1),
            "arena_on_nodes": sorted(node_name(cluster, n) for n in object_nodes(arena)),
        }
        setup = Setup(cluster, client, url, args.variant, arena, Path(folder))
        out["scenarios"] = {}
        live = list(spots)
        for kind in scenarios:
            victim = live[-1] if kind == "abrupt" else live[0]
            out["scenarios"][kind] = run_scenario(setup, kind, victim, f"spot-{len(cluster.nodes)}", cfg)
            live = [n for n in live if n is not victim] + [cluster.nodes[-1]]
        store_after = actor_nodes({"model_store": "model_store"}).get("model_store", {})
        out["model_store_after"] = {
            "node": node_name(cluster, store_after.get("node_id", "")),
            "restarts": store_after.get("restarts"),
            "variants": ray.get(stored["store"].variants.remote()),
        }
        out["nodes"] = cluster.describe()
    return out


def targets(out: dict[str, Any]) -> dict[str, bool]:
    """The issue's targets, checked on this run's figures."""
    met = {
        "model_store_on_head": out["on_head"]["model_store"] and out["model_store_after"]["node"] == "head",
        "serve_controller_on_head": out["on_head"]["serve_controller"],
    }
    for kind, r in out["scenarios"].items():
        total = r["windows"]["total"]
        if kind == "drain":
            met["drain_loses_no_request_without_retries"] = total["failed_first_attempt"] == 0
        else:
            # every request that failed even once was in flight at the loss, not sent to a dead replica later
            met["abrupt_loses_only_requests_in_flight"] = (
                total["failed_first_attempt"] == r["failed_first_attempt_in_flight_at_loss"]
            )
            met["abrupt_no_user_visible_failure_with_retries"] = total["failed"] == 0
        met[f"{kind}_new_node_weights_from_object_store"] = bool(
            r["new_replica"]["arena_copy_on_new_node"]
            and str(r["new_replica"]["weights_loaded_from"]).startswith("object-store")
        )
    return met


COLUMNS = {"seconds": "s", "requests": "requests", "failed_first_attempt": "failed 1st", "failed": "failed"}
COLUMNS |= {"ok_per_s": "ok/s", "p50_ms": "p50 ms", "p95_ms": "p95 ms", "p99_ms": "p99 ms"}


def summary(out: dict[str, Any]) -> list[str]:
    """A table of request windows per scenario, then the targets."""
    lines = [f"placement {out['placement']}; replicas on {out['replica_nodes']}; weights {out['weights']}"]
    for kind, r in out["scenarios"].items():
        new = r["new_replica"]
        lines += [
            f"{kind}: lost {r['victim']}, replacement {r['replacement']}",
            f"{'window':>8} " + " ".join(f"{label:>10}" for label in COLUMNS.values()),
            *(
                f"{window:>8} " + " ".join(f"{'-' if s[c] is None else f'{s[c]:g}':>10}" for c in COLUMNS)
                for window, s in r["windows"].items()
            ),
            f"capacity back after {r['recovery_s']:.1f} s ({r['replacement_launch_to_first_200_s']:.1f} s "
            f"from launching {r['replacement']}); in flight at the loss: {r['in_flight_at_loss']}; new "
            f"replica's weights: {new['weights_loaded_from']} in {new['weights_load_ms']} ms; "
            f"events (s after the loss): {r['events_s_after_loss']}",
        ]
    return lines + [f"{name:<50} {'met' if ok else 'NOT MET'}" for name, ok in out["targets"].items()]


def _raise_on_signals() -> None:
    """SIGTERM and SIGINT (ignored in background jobs) raise, so the finally blocks stop the nodes."""

    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def main(argv: list[str] | None = None) -> int:
    p = parser("benchmarks.preemption", __doc__, serve_port=8200)
    p.add_argument("--variant", default="base")
    p.add_argument("--scenarios", type=listed(), default=SCENARIOS, help="abrupt,drain (run in this order)")
    p.add_argument("--workers", type=int, default=2, help="spot nodes, one replica each (>= 2)")
    for field in ("users", "steady_s", "after_s", "replace_after_s", "drain_deadline_s", "retry_attempts"):
        default, hint = getattr(ScenarioConfig, field), "1 = none" if field == "retry_attempts" else None
        p.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default, help=hint)
    p.add_argument("--gcs-port", type=int, default=6390)
    p.add_argument("--base-port", type=int, default=16400, help="node i uses base + 100 i .. + 99")
    p.add_argument("--quick", action="store_true", help="abrupt only, short windows (< ~90 s)")
    args = p.parse_args(argv)
    if args.workers < 2:
        p.error(f"--workers must be >= 2, got {args.workers}")
    scenarios = list(args.scenarios)
    if args.quick:
        scenarios, args.steady_s, args.after_s, args.replace_after_s = ["abrupt"], 6.0, 6.0, 0.0
    if not scenarios or set(scenarios) - set(SCENARIOS):
        p.error(f"--scenarios must be from {SCENARIOS}, got {','.join(args.scenarios)!r}")
    cfg = ScenarioConfig(**{k: getattr(args, k) for k in asdict(ScenarioConfig()) if k in vars(args)})
    setup_logging()
    from deployments.run import use_ingress
    from loading.host import machine_info, set_worker_env

    # Serve's Python proxy on the head, as the cluster configs run it (cluster/README.md), whatever
    # this process inherited (the test suite sets up HAProxy for its own Serve).
    use_ingress("proxy", own_admin_ports=False)
    set_worker_env()  # no hub, one tokenizer thread, no Ray auth: Locust inherits it
    _raise_on_signals()
    started = time.time()
    out = {"machine": machine_info(), "quick": args.quick, **run(args, cfg, scenarios)}
    out["elapsed_s"] = round(time.time() - started, 1)
    out["machine_after"] = machine_info()
    out["targets"] = targets(out)
    emit(out, args.json, summary(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
