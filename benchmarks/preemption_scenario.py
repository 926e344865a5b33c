"""One spot-node loss under load (`benchmarks.preemption`): the loss, the replacement, the events on
the way to capacity back, and the request windows around them."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness.load import wait_until
from benchmarks.harness.replicas import replica_health, serve_replicas
from benchmarks.local_cluster import LocalCluster, LocalNode
from benchmarks.records import error_kind, in_flight, recorded_load, summarize

__all__ = ["SCENARIOS", "ScenarioConfig", "Setup", "node_name", "object_nodes", "run_scenario"]

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
            raise ValueError(f"users and retry_attempts must be >= 1, got {self}")
        if min(self.steady_s, self.after_s, self.replace_after_s) < 0 or self.drain_deadline_s < 1:
            raise ValueError(f"seconds must be >= 0 and drain_deadline_s >= 1, got {self}")


@dataclass
class Setup:
    """The running cluster a scenario works on."""

    cluster: LocalCluster
    client: Any  # Serve's controller client
    url: str
    variant: str
    arena_ref: Any  # the model store's reference to the variant's weights arena
    folder: Path  # records and logs


def object_nodes(ref: Any) -> list[str]:
    """Node ids whose object store holds a copy of `ref`."""
    from ray.experimental import get_object_locations

    return list(get_object_locations([ref], timeout_ms=10_000).get(ref, {}).get("node_ids", []))


def node_name(cluster: LocalCluster, node_id: str) -> str:
    return next((n.name for n in cluster.nodes if n.node_id == node_id), node_id[:8])


def run_scenario(run: Setup, kind: str, victim: LocalNode, name: str, cfg: ScenarioConfig) -> dict[str, Any]:
    """Load, lose `victim` (`kind`: abrupt | drain), launch a replacement `name`, measure until after_s
    past the replacement's first answer."""
    cluster, client, variant = run.cluster, run.client, run.variant
    budget = 30 + cfg.steady_s + cfg.replace_after_s + cfg.recovery_timeout_s + cfg.after_s
    before = serve_replicas(client, variant)
    before_ids = {r["replica_id"] for r in before}
    victim_replicas = {r["replica_id"] for r in before if r.get("node_id") == victim.node_id}
    records = run.folder / f"{kind}.jsonl"
    with recorded_load(run.url, variant, cfg.users, budget, records, cfg.retry_attempts) as tail:
        wait_until(tail.read, 60, "first request", interval_s=0.2)
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
        current: list[dict[str, Any]] = []  # Serve's replicas: one controller call per poll round
        new_replicas: set[str] = set()

        def launch() -> bool:  # the autoscaler's reaction, replace_after_s after the loss
            if not launched and time.time() >= loss + cfg.replace_after_s:
                launched.extend(cluster.add_nodes([name], {"spot": 1}, wait=False))
            return bool(launched)

        def joined() -> bool:
            return bool(launched) and cluster.joined(launched[0])

        def running_on_new() -> bool:
            if not joined():
                return False
            on_new = [r for r in current if r.get("node_id") == launched[0].node_id]
            new_replicas.update(r["replica_id"] for r in on_new)
            return any(r["state"] == "RUNNING" for r in on_new)

        def new_answers() -> list[dict[str, Any]]:  # requests answered by a replica on the new node
            return [r for r in tail.read() if r["replica"] in new_replicas and r["error"] is None]

        def victim_gone() -> bool:  # drain: Serve moved everything off; the cloud may take the node now
            on_victim = any(r.get("node_id") == victim.node_id for r in current)
            if victim.stopped is None and (not on_victim or time.time() > loss + cfg.drain_deadline_s):
                if on_victim:
                    logger.warning("drain deadline reached with replicas still on %s", victim.name)
                killed.extend(cluster.kill(victim))
            return victim.stopped is not None

        checks = {
            "replacement_launched": launch,
            "victim_dead_in_gcs": lambda: not cluster.is_alive(victim),
            "replacement_joined": joined,
            "replacement_replica_scheduled": lambda: any(r["replica_id"] not in before_ids for r in current),
            "replacement_replica_running": running_on_new,
            "replacement_first_200": new_answers,
        }
        until = ["replacement_first_200", "victim_dead_in_gcs"]
        if kind == "drain":
            checks = {"victim_empty_and_killed": victim_gone, **checks}
            until.append("victim_empty_and_killed")
        times: dict[str, float] = {}  # the epoch time each check first passed

        def poll() -> bool:  # one controller call a round, then each check not passed yet, in order
            current[:] = serve_replicas(client, variant)
            times.update({k: time.time() for k, check in checks.items() if k not in times and check()})
            return all(k in times for k in until)

        try:
            wait_until(poll, cfg.recovery_timeout_s, f"{kind}: recovery", interval_s=0.2)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; reached {sorted(times)}, needed {until}") from None
        events.update(times)
        new = launched[0]
        recovered = min(r["t1"] for r in new_answers())
        events |= {"killed": victim.stopped, "replacement_first_200": recovered}
        events |= {"replacement_launched": new.started, "replacement_joined": new.joined}
        time.sleep(max(0.0, recovered + cfg.after_s - time.time()))
        stop = time.time()
    records = [r for r in tail.read() if r["t1"] <= stop]  # not those cut by the stop
    new_id = next(r["replica_id"] for r in serve_replicas(client, variant) if r["replica_id"] in new_replicas)
    health = replica_health(run.url, variant, new_id) or {}
    arena_nodes = object_nodes(run.arena_ref)
    flying = in_flight(records, loss)
    first_failures = [r for r in records if r["first_error"] is not None]
    after = [r for r in records if r["t1"] >= recovered]
    share = sum(r["replica"] in new_replicas for r in after) / max(1, sum(r["error"] is None for r in after))
    return {
        "victim": victim.name,
        "replacement": new.name,
        "sigkilled": killed,
        "events_s_after_loss": {k: round(v - loss, 2) for k, v in sorted(events.items(), key=lambda e: e[1])},
        "recovery_s": round(recovered - loss, 2),
        "replacement_launch_to_first_200_s": round(recovered - new.started, 2),
        "in_flight_at_loss": len(flying),
        # minus those a surviving replica answered on the first try: at most this many were on the victim
        "in_flight_at_loss_on_victim": sum(
            r["first_error"] is not None or r["replica"] in victim_replicas for r in flying
        ),
        "failed_first_attempt_in_flight_at_loss": sum(r["first_error"] is not None for r in flying),
        "failed_first_attempt_sent_after_loss": sum(r["t0"] > loss for r in first_failures),
        "first_attempt_errors": Counter(error_kind(r["first_error"], detail=True) for r in first_failures),
        "first_attempt_failures_s_after_loss": [  # (sent, answered) of each, to tell when they happened
            (round(r["t0"] - loss, 3), round(r["t1"] - loss, 3)) for r in first_failures[:20]
        ],
        "victim_answers_after_loss": sum(r["replica"] in victim_replicas and r["t0"] > loss for r in records),
        # ~1/workers once the new replica takes its full share of the load
        "new_replica_share_after": round(share, 2),
        "windows": {
            "before": summarize(records, load_start + WARMUP_S, loss),
            "during": summarize(records, loss, recovered),
            "after": summarize(records, recovered, stop),
            "total": summarize(records, load_start, stop),
        },
        "new_replica": {
            "node": new.name,
            **{k: health.get(k) for k in ("weights_loaded_from", "weights_load_ms", "store_wait_ms")},
            "arena_copy_on_new_node": new.node_id in arena_nodes,
        },
        "arena_on_nodes": sorted(node_name(cluster, n) for n in arena_nodes),
    }
