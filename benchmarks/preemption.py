"""Spot preemption, proven locally: `python -m benchmarks.preemption`.

A head node (on-demand: the model store, the Serve controller and the HTTP proxy; no CPUs, so no
replica) and `--workers` spot nodes (`{"spot": 1}` each; a replica needs one, so there is one per
node) run as separate `ray start` processes on this machine (`benchmarks.local_cluster`). Locust
users (`benchmarks/locust_retry.py`: closed-loop, single real texts, retried per
`benchmarks.retry.RetryPolicy`) keep a steady load on the head's proxy while a spot node is lost:

- abrupt: every process of the node is SIGKILLed at once, as a spot reclaim takes a machine;
- drain: the node is drained for preemption with a deadline (a termination notice; the GCS call of
  `ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION`); Serve starts a replacement replica
  elsewhere, stops the old one once that runs, and the node is then killed.

In both, a replacement spot node is launched `--replace-after-s` after the loss (the autoscaler's
reaction; on a cloud that is minutes, here a local `ray start`). Capacity is back at the first 200
answered by a replica on the new node. Every request is logged (start, end, attempts, first and
final status, replica), so failures are counted twice: on the first attempt (what a client without
retries sees) and after retries (what a user sees), in three windows: before the loss, during it
(to capacity back) and after. The new replica's `/healthz` says where its weights came from and how
long they took; the object store's location table says which nodes hold the weights arena.

The last stdout line is one JSON object. `--quick`: the abrupt scenario only, short windows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.local_cluster import LocalCluster, LocalNode
from benchmarks.harness.locust import locust_command, stop_locust
from benchmarks.records import RecordTail, in_flight, load_records, summarize
from benchmarks.harness.session import ROOT, app_entry, load_serve_config, post_text, replica_health

__all__ = ["ScenarioConfig", "main"]

logger = logging.getLogger(__name__)

SCENARIOS = ("abrupt", "drain")
WARMUP_S = 2.0  # first seconds of load left out of "before": users connecting, first batches


@dataclass(frozen=True)
class ScenarioConfig:
    """One preemption run; the defaults fit a 2-core machine (two 1-thread replicas and the client)."""

    users: int = 4  # closed-loop Locust users
    steady_s: float = 15.0  # load before the node is lost
    after_s: float = 20.0  # load kept after capacity is back
    replace_after_s: float = 5.0  # loss (or notice) to launching a replacement node: the autoscaler
    drain_deadline_s: int = 120  # notice to forced termination: AWS's two-minute spot notice
    retry_attempts: int = 4  # per user request, first try included (1 = no retries)
    recovery_timeout_s: float = 180.0  # give up waiting for the replacement after this long

    def __post_init__(self) -> None:
        if self.users < 1 or self.retry_attempts < 1:
            raise ValueError(
                f"users and retry_attempts must be >= 1, got {self.users}, {self.retry_attempts}"
            )
        if min(self.steady_s, self.after_s, self.replace_after_s) < 0 or self.drain_deadline_s < 1:
            raise ValueError(f"seconds must be >= 0 and drain_deadline_s >= 1, got {self}")


# -- the cluster's contents ------------------------------------------------------------------------


def place_store_on_head(head: LocalNode, variant: str, model_dir: str) -> dict[str, Any]:
    """Create the model store pinned to the head (before any replica asks for it) and store `variant`.

    Same name, namespace and lifetime as `loading.model_store.model_store()`, so every later call there
    gets this actor; `NodeAffinitySchedulingStrategy(soft=False)` keeps it (and its restarts) on the
    head, so the weights' owner never lives on a node that can be reclaimed.
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
        if actor["State"] != "ALIVE":
            continue
        for prefix, label in names.items():
            if actor["Name"].startswith(prefix):
                key = label if label not in found else f"{label}:{actor['Name']}"
                found[key] = {"node_id": actor["Address"]["NodeID"], "restarts": actor["NumRestarts"]}
    return found


def object_nodes(ref: Any) -> list[str]:
    """Node ids whose object store holds a copy of `ref`."""
    from ray.experimental import get_object_locations

    return list(get_object_locations([ref], timeout_ms=10_000).get(ref, {}).get("node_ids", []))


def start_serve(port: int) -> Any:
    """Serve with one HTTP proxy, on the head: proxies on every node would all want 127.0.0.1:`port`."""
    from ray.serve._private.api import serve_start

    return serve_start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")


def deploy(client: Any, app: dict[str, Any]) -> None:
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate({"proxy_location": "HeadOnly", "applications": [app]})
    client.deploy_apps(schema, _blocking=False)


def replicas(client: Any, app_name: str) -> list[dict[str, Any]]:
    """The app's replicas as the Serve controller sees them: replica_id, state, node_id, pid..."""
    details = client.get_serve_details()
    app = details.get("applications", {}).get(app_name)
    if app is None:
        return []
    return [r for d in app["deployments"].values() for r in d["replicas"]]


class _Cached:
    """A function's value, reused for `ttl_s`: the checks of one poll round share one call."""

    def __init__(self, fetch: Callable[[], Any], ttl_s: float = 0.15) -> None:
        self.fetch, self.ttl_s, self.at, self.value = fetch, ttl_s, -1e9, None

    def __call__(self) -> Any:
        if time.monotonic() - self.at > self.ttl_s:
            self.value, self.at = self.fetch(), time.monotonic()
        return self.value


def _watch(
    checks: dict[str, Callable[[], bool]], until: list[str], timeout_s: float, what: str
) -> dict[str, float]:
    """Poll every check until each in `until` has passed; the epoch time at which each first passed."""
    times: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while not all(name in times for name in until):
        for name, check in checks.items():
            if name not in times and check():
                times[name] = time.time()
        if time.monotonic() > deadline:
            missing = [name for name in until if name not in times]
            raise TimeoutError(f"{what}: {missing} not within {timeout_s:.0f} s (reached {sorted(times)})")
        time.sleep(0.2)
    return times


# -- the load --------------------------------------------------------------------------------------


def start_locust(
    url: str, variant: str, cfg: ScenarioConfig, records: Path, seconds: float
) -> subprocess.Popen:
    """Headless Locust with the retrying users, logging every request to `records`."""
    options = ["--retry-attempts", str(cfg.retry_attempts), "--records", str(records)]
    cmd = locust_command(url, variant, cfg.users, seconds, locustfile="locust_retry.py", options=options)
    log = records.with_suffix(".log").open("wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc


# -- one scenario ----------------------------------------------------------------------------------


@dataclass
class _Run:
    """What a scenario needs from the set-up."""

    cluster: LocalCluster
    client: Any  # Serve's controller client
    url: str
    variant: str
    arena_ref: Any  # the model store's reference to the variant's weights arena
    folder: Path  # records and logs


def run_scenario(run: _Run, kind: str, victim: LocalNode, name: str, cfg: ScenarioConfig) -> dict[str, Any]:
    """Load, lose `victim` (`kind`: abrupt | drain), launch a replacement `name`, measure until after_s
    past the replacement's first answer."""
    cluster, client, variant = run.cluster, run.client, run.variant
    records_path = run.folder / f"{kind}.jsonl"
    tail = RecordTail(records_path)
    budget = 30 + cfg.steady_s + cfg.replace_after_s + cfg.recovery_timeout_s + cfg.after_s
    before_ids = {r["replica_id"] for r in replicas(client, variant)}
    victim_replicas = {
        r["replica_id"] for r in replicas(client, variant) if r.get("node_id") == victim.node_id
    }
    locust = start_locust(run.url, variant, cfg, records_path, budget)
    try:
        _watch({"load": lambda: bool(tail.read())}, ["load"], 60, "first request")
        load_start = min(r["t0"] for r in tail.records)
        time.sleep(max(0.0, load_start + WARMUP_S + cfg.steady_s - time.time()))

        killed: list[str] = []  # names of the victim's processes, SIGKILLed
        if kind == "abrupt":
            killed.extend(cluster.kill(victim))
            loss = victim.stopped  # when the signals went out
            events = {"killed": loss}
        else:
            loss = time.time()  # the notice
            events = {"drain_accepted": cluster.drain(victim, cfg.drain_deadline_s)}
        launched: list[LocalNode] = []  # the replacement, once launched
        current = _Cached(lambda: replicas(client, variant))  # one controller call per poll round
        new_replicas: set[str] = set()

        def launch() -> bool:  # the autoscaler's reaction, replace_after_s after the loss
            if not launched and time.time() >= loss + cfg.replace_after_s:
                launched.extend(cluster.add_nodes([name], {"spot": 1}, wait=False))
            return bool(launched)

        def joined() -> bool:
            return bool(launched) and cluster.joined(launched[0])

        def scheduled() -> bool:  # the controller has asked for a replica to replace the lost one
            return any(r["replica_id"] not in before_ids for r in current())

        def running_on_new() -> bool:
            if not joined():
                return False
            on_new = [r for r in current() if r.get("node_id") == launched[0].node_id]
            new_replicas.update(r["replica_id"] for r in on_new)
            return any(r["state"] == "RUNNING" for r in on_new)

        def first_200() -> bool:
            return any(r["replica"] in new_replicas and r["error"] is None for r in tail.read())

        def victim_gone() -> bool:  # drain: Serve moved everything off; the cloud may take the node now
            on_victim = any(r.get("node_id") == victim.node_id for r in current())
            if victim.stopped is None and (not on_victim or time.time() > loss + cfg.drain_deadline_s):
                if on_victim:
                    logger.warning("drain deadline reached with replicas still on %s", victim.name)
                killed.extend(cluster.kill(victim))
            return victim.stopped is not None

        checks = {
            "replacement_launched": launch,
            "victim_dead_in_gcs": lambda: not cluster.is_alive(victim),
            "replacement_joined": joined,
            "replacement_replica_scheduled": scheduled,
            "replacement_replica_running": running_on_new,
            "replacement_first_200": first_200,
        }
        until = ["replacement_first_200", "victim_dead_in_gcs"]
        if kind == "drain":
            checks = {"victim_empty_and_killed": victim_gone, **checks}
            until.append("victim_empty_and_killed")
        events.update(_watch(checks, until, cfg.recovery_timeout_s, f"{kind}: recovery"))
        new = launched[0]
        events["replacement_launched"], events["replacement_joined"] = new.started, new.joined
        if kind == "drain":
            events["killed"] = victim.stopped
        recovered = min(r["t1"] for r in tail.read() if r["replica"] in new_replicas and r["error"] is None)
        events["replacement_first_200"] = recovered
        time.sleep(max(0.0, recovered + cfg.after_s - time.time()))
        stop = time.time()
    finally:
        stop_locust(locust)
    records = [r for r in load_records(records_path) if r["t1"] <= stop]  # not those cut by the stop
    new_id = next(r for r in replicas(client, variant) if r["replica_id"] in new_replicas)["replica_id"]
    health = replica_health(run.url, variant, new_id) or {}
    arena_nodes = object_nodes(run.arena_ref)
    flying = in_flight(records, loss)
    first_failures = [r for r in records if r["first_error"] is not None]
    after = [r for r in records if r["t1"] >= recovered]
    result = {
        "victim": victim.name,
        "replacement": new.name,
        "sigkilled": killed,
        "events_s_after_loss": {
            k: round(v - loss, 2) for k, v in sorted(events.items(), key=lambda kv: kv[1])
        },
        "recovery_s": round(recovered - loss, 2),
        "replacement_launch_to_first_200_s": round(recovered - new.started, 2),
        "in_flight_at_loss": len(flying),
        # minus those a surviving replica answered on the first try: at most this many were on the victim
        "in_flight_at_loss_on_victim": sum(
            r["first_error"] is not None or r["replica"] in victim_replicas for r in flying
        ),
        "failed_first_attempt_in_flight_at_loss": sum(r["first_error"] is not None for r in flying),
        "failed_first_attempt_sent_after_loss": sum(r["t0"] > loss for r in first_failures),
        "first_attempt_errors": dict(Counter(_reason(r["first_error"]) for r in first_failures)),
        "first_attempt_failures_s_after_loss": [  # (sent, answered) of each, to tell when they happened
            (round(r["t0"] - loss, 3), round(r["t1"] - loss, 3)) for r in first_failures[:20]
        ],
        "victim_answers_after_loss": sum(r["replica"] in victim_replicas and r["t0"] > loss for r in records),
        # ~1/workers once the new replica takes its full share of the load
        "new_replica_share_after": round(
            sum(r["replica"] in new_replicas for r in after) / max(1, sum(r["error"] is None for r in after)),
            2,
        ),
        "windows": {
            "before": summarize(records, load_start + WARMUP_S, loss),
            "during": summarize(records, loss, recovered),
            "after": summarize(records, recovered, stop),
            "total": summarize(records, load_start, stop),
        },
        "new_replica": {
            "node": new.name,
            "weights_loaded_from": health.get("weights_loaded_from"),
            "weights_load_ms": health.get("weights_load_ms"),
            "store_wait_ms": health.get("store_wait_ms"),
            "arena_copy_on_new_node": new.node_id in arena_nodes,
        },
        "arena_on_nodes": sorted(_node_name(cluster, n) for n in arena_nodes),
    }
    return result


def _reason(error: str) -> str:
    """An error's kind for counting: 'HTTP 500', 'no answer: ConnectionRefusedError'..."""
    head = error.split(":", 2)
    return ":".join(head[:2]).strip() if error.startswith("no answer") else head[0]


def _node_name(cluster: LocalCluster, node_id: str) -> str:
    return next((n.name for n in cluster.nodes if n.node_id == node_id), node_id[:8])


# -- the whole run ---------------------------------------------------------------------------------


def _disk_load_ms(model_dir: str) -> float:
    """The same weights read from disk into this process (1 torch thread): what the store spares."""
    import torch
    from transformers.utils import logging as hf_logging

    from loading.store import load_from_disk

    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    return load_from_disk(model_dir).attach_ms


def run(args: argparse.Namespace, cfg: ScenarioConfig, scenarios: list[str]) -> dict[str, Any]:
    """Start the cluster, deploy, run each scenario on it in turn; everything is stopped on the way out."""
    import ray

    from loading.artifact import resolve_model_dir

    config = load_serve_config(args.config)
    app = app_entry(config, args.variant, replicas=args.workers)
    for deployment in app["deployments"]:
        # One replica per spot node (each has {"spot": 1}); none on the head (no CPUs).
        deployment["ray_actor_options"] = {"num_cpus": 0.5, "resources": {"spot": 1}}
    model_dir = str(resolve_model_dir(app["args"]["model_dir"]))
    url = f"http://127.0.0.1:{args.port}"
    out: dict[str, Any] = {"config": asdict(cfg), "variant": args.variant, "workers": args.workers}
    root = Path(f"/tmp/bertserve-preempt-{os.getpid()}")
    with (
        tempfile.TemporaryDirectory(prefix="preempt-records-") as folder,
        LocalCluster(root, gcs_port=args.gcs_port, base_port=args.base_port) as cluster,
    ):
        started = time.time()
        head = cluster.start_head()
        # After ray.init, which installs its own SIGTERM handler (it exits without unwinding): make
        # SIGTERM and SIGINT (ignored in background jobs) raise, so the finally blocks stop the nodes.
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        spots = cluster.add_nodes([f"spot-{i + 1}" for i in range(args.workers)], {"spot": 1})
        out["cluster_start_s"] = round(time.time() - started, 2)
        stored = place_store_on_head(head, args.variant, model_dir)
        client = start_serve(args.port)
        deployed = time.time()
        deploy(client, app)
        with httpx.Client() as http:
            _watch(
                {
                    "running": lambda: (
                        sum(r["state"] == "RUNNING" for r in replicas(client, args.variant)) == args.workers
                    ),
                    "answers": lambda: (
                        (r := post_text(http, url, args.variant)) is not None and r.status_code == 200
                    ),
                },
                ["running", "answers"],
                300,
                "deploy",
            )
        out["deploy_s"] = round(time.time() - deployed, 2)
        placement = actor_nodes(
            {
                "SERVE_CONTROLLER_ACTOR": "serve_controller",
                "SERVE_PROXY_ACTOR": "serve_proxy",
                "model_store": "model_store",
            }
        )
        out["placement"] = {k: _node_name(cluster, v["node_id"]) for k, v in placement.items()}
        out["on_head"] = {
            k: placement.get(k, {}).get("node_id") == head.node_id
            for k in ("model_store", "serve_controller")
        }
        replica_nodes = sorted(_node_name(cluster, r["node_id"]) for r in replicas(client, args.variant))
        out["replica_nodes"] = replica_nodes
        first = replicas(client, args.variant)[0]
        health = replica_health(url, args.variant, first["replica_id"]) or {}
        out["weights"] = {
            "arena_bytes": stored["entry"]["arena_bytes"],
            "store_read_from_disk_ms": round(stored["store_ms"], 1),
            "first_replica_weights_load_ms": health.get("weights_load_ms"),
            "first_replica_loaded_from": health.get("weights_loaded_from"),
            "disk_load_ms_in_driver": round(_disk_load_ms(model_dir), 1),
            "arena_on_nodes": sorted(_node_name(cluster, n) for n in object_nodes(stored["entry"]["arena"])),
        }
        logger.info(
            "placement %s; replicas on %s; weights %s", out["placement"], replica_nodes, out["weights"]
        )
        work = _Run(cluster, client, url, args.variant, stored["entry"]["arena"], Path(folder))
        out["scenarios"] = {}
        live = list(spots)
        for kind in scenarios:
            victim = live[-1] if kind == "abrupt" else live[0]
            name = f"spot-{len(cluster.nodes)}"
            out["scenarios"][kind] = result = run_scenario(work, kind, victim, name, cfg)
            live = [n for n in live if n is not victim] + [cluster.nodes[-1]]
            _log_table(kind, result)
        store_after = actor_nodes({"model_store": "model_store"}).get("model_store", {})
        out["model_store_after"] = {
            "node": _node_name(cluster, store_after.get("node_id", "")),
            "restarts": store_after.get("restarts"),
            "variants": ray.get(stored["store"].variants.remote()),
        }
        out["nodes"] = cluster.describe()
    return out


def _log_table(kind: str, result: dict[str, Any]) -> None:
    columns = {
        "seconds": "s",
        "requests": "requests",
        "failed_first_attempt": "failed 1st",
        "failed": "failed",
        "ok_per_s": "ok/s",
        "p50_ms": "p50 ms",
        "p95_ms": "p95 ms",
        "p99_ms": "p99 ms",
    }
    lines = [
        f"{kind}: lost {result['victim']}, replacement {result['replacement']}",
        f"{'window':>8} " + " ".join(f"{label:>10}" for label in columns.values()),
    ]
    for window, s in result["windows"].items():
        lines.append(f"{window:>8} " + " ".join(f"{_fmt(s[c]):>10}" for c in columns))
    r, new = result, result["new_replica"]
    lines.append(
        f"capacity back after {r['recovery_s']:.1f} s ({r['replacement_launch_to_first_200_s']:.1f} s "
        f"from launching {r['replacement']}); in flight at the loss: {r['in_flight_at_loss']}; new "
        f"replica's weights: {new['weights_loaded_from']} in {new['weights_load_ms']} ms; "
        f"events (s after the loss): {r['events_s_after_loss']}"
    )
    logger.info("\n".join(lines))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the finally blocks that stop nodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.preemption", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", default=str(ROOT / "serve_config.yaml"))
    parser.add_argument("--variant", default="base")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="abrupt,drain (run in this order)")
    parser.add_argument("--workers", type=int, default=2, help="spot nodes, one replica each (>= 2)")
    parser.add_argument("--users", type=int, default=ScenarioConfig.users)
    parser.add_argument("--steady-s", type=float, default=ScenarioConfig.steady_s)
    parser.add_argument("--after-s", type=float, default=ScenarioConfig.after_s)
    parser.add_argument("--replace-after-s", type=float, default=ScenarioConfig.replace_after_s)
    parser.add_argument("--drain-deadline-s", type=int, default=ScenarioConfig.drain_deadline_s)
    parser.add_argument("--retry-attempts", type=int, default=ScenarioConfig.retry_attempts, help="1 = none")
    parser.add_argument("--port", type=int, default=8200, help="Serve HTTP on 127.0.0.1")
    parser.add_argument("--gcs-port", type=int, default=6390)
    parser.add_argument("--base-port", type=int, default=16400, help="node i uses base + 100 i .. + 99")
    parser.add_argument("--quick", action="store_true", help="abrupt only, short windows (< ~90 s)")
    parser.add_argument("--json", action="store_true", help="(the last line is always the JSON object)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per probe otherwise
    if args.workers < 2:
        parser.error(f"--workers must be >= 2, got {args.workers}")
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if args.quick:
        scenarios, args.steady_s, args.after_s, args.replace_after_s = ["abrupt"], 6.0, 6.0, 0.0
    if not scenarios or set(scenarios) - set(SCENARIOS):
        parser.error(f"--scenarios must be from {SCENARIOS}, got {args.scenarios!r}")
    cfg = ScenarioConfig(
        users=args.users,
        steady_s=args.steady_s,
        after_s=args.after_s,
        replace_after_s=args.replace_after_s,
        drain_deadline_s=args.drain_deadline_s,
        retry_attempts=args.retry_attempts,
    )
    from deployments.run import use_ingress
    from loading.host import machine_info, set_worker_env

    # Serve's Python proxy on the head, as the cluster configs run it (cluster/README.md), whatever
    # this process inherited (the test suite sets up HAProxy for its own Serve).
    use_ingress("proxy", own_admin_ports=False)

    set_worker_env()  # no hub, one tokenizer thread, no Ray auth: the nodes and Locust inherit it
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)

    started = time.time()
    out = {"machine": machine_info(), "quick": args.quick, **run(args, cfg, scenarios)}
    out["elapsed_s"] = round(time.time() - started, 1)
    out["machine_after"] = machine_info()
    out["targets"] = _targets(out)
    print(json.dumps(out))
    return 0


def _targets(out: dict[str, Any]) -> dict[str, bool]:
    """The issue's targets, checked on this run's figures."""
    targets = {
        "model_store_on_head": out["on_head"]["model_store"] and out["model_store_after"]["node"] == "head",
        "serve_controller_on_head": out["on_head"]["serve_controller"],
    }
    for kind, r in out["scenarios"].items():
        visible = r["windows"]["total"]["failed"]
        first = r["windows"]["total"]["failed_first_attempt"]
        if kind == "drain":
            targets["drain_loses_no_request_without_retries"] = first == 0
        else:
            # every request that failed even once was in flight at the loss, not sent to a dead replica later
            targets["abrupt_loses_only_requests_in_flight"] = (
                first == r["failed_first_attempt_in_flight_at_loss"]
            )
            targets["abrupt_no_user_visible_failure_with_retries"] = visible == 0
        targets[f"{kind}_new_node_weights_from_object_store"] = bool(
            r["new_replica"]["arena_copy_on_new_node"]
            and str(r["new_replica"]["weights_loaded_from"]).startswith("object-store")
        )
    return targets


if __name__ == "__main__":
    raise SystemExit(main())
