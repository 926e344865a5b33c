"""Faults under load: `python -m benchmarks.faults --json` (docs/RELIABILITY.md).

A private Ray + Serve (127.0.0.1:8300) serves base from `serve_config.yaml` at 2 fixed replicas
under a steady load of retrying Locust users (`benchmarks.records.recorded_load`), each request
counted on its first attempt (a client without retries) and after retries (a user):

1. replica: one replica actor is `ray.kill`ed; failures, the time until 2 run and a new one answers.
2. store: the model store is killed and restarts empty (`max_restarts=-1`): running replicas keep
   answering with the same predictions (their weights stay mapped); a third replica gets its weights
   through the restarted store (re-read from disk); killed for good, a fourth still starts
   (`loading.store` creates a new store).
3. artifacts (`benchmarks.corrupt_artifacts`): damaged copies of base are refused offline, by the
   build and by a redeploy, while the previous replicas keep answering.

The summary is the targets, met or not. `--quick`: short windows, one corruption deployed, no
same-name redeploy (~3-5 minutes instead of ~11).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.corrupt_artifacts import CORRUPTIONS, artifact_faults
from benchmarks.harness.cli import emit, parser, setup_logging
from benchmarks.harness.load import post_text, wait_until
from benchmarks.harness.replicas import replica_health
from benchmarks.harness.session import ServeSession, app_entry
from benchmarks.records import RecordTail, recorded_load, summarize
from deployments.serve_config import load_serve_config
from loading.host import machine_info

__all__ = ["FaultsConfig", "Run", "main"]

logger = logging.getLogger(__name__)

APP = "base"  # the application (and route) under test
DEPLOYMENT = "Classifier"


@dataclass(frozen=True)
class FaultsConfig:
    """Windows and load of one run; the defaults fit a 2-core machine shared with other jobs."""

    users: int = 4  # closed-loop Locust users: a steady load two 1-thread replicas carry
    retry_attempts: int = 4  # the documented client policy (`RetryPolicy.max_attempts`)
    steady_s: float = 15.0  # load before each fault
    after_s: float = 15.0  # load after recovery, counted as its own window
    corruptions: tuple[str, ...] = CORRUPTIONS  # deployed over the running app, one after the other
    same_name_case: bool = True  # also redeploy "base" from a new (intact) folder: the store's answer
    timeout_s: float = 300.0  # for any wait on Serve (replicas start in ~10 s; failing ones 6 times)

    def __post_init__(self) -> None:
        if self.users < 1 or self.retry_attempts < 1:
            raise ValueError(f"users, retry_attempts must be >= 1, got {self.users}, {self.retry_attempts}")
        if unknown := set(self.corruptions) - set(CORRUPTIONS):
            raise ValueError(f"corruptions must be among {CORRUPTIONS}, got {sorted(unknown)}")


class Run:
    """The session, the load's records and the Serve views every scenario uses."""

    variant = APP
    tail: RecordTail  # the load's records, once it runs

    def __init__(self, session: ServeSession, cfg: FaultsConfig) -> None:
        self.session, self.cfg, self.url = session, cfg, session.url

    def deploy(self, replicas: int, **args: Any) -> None:
        """Deploy the app at `replicas`; `args` override its arguments (`variant` included)."""
        app = app_entry(self.session.config, APP, replicas=replicas)
        app["args"].update(args)  # not through app_entry: `variant` names the app there
        self.session.deploy([app])

    def app(self) -> dict[str, Any]:
        """The app's status and message, its deployment's message and replicas, from the controller."""
        app = self.session.client.get_serve_details().get("applications", {}).get(APP) or {}
        deployment = (app.get("deployments") or {}).get(DEPLOYMENT) or {}
        return {
            "status": app.get("status"),
            "message": app.get("message") or "",
            "deployment_message": deployment.get("message") or "",
            "replicas": deployment.get("replicas") or [],
        }

    def running(self, app: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """replica_id -> details of the app's RUNNING replicas."""
        return {r["replica_id"]: r for r in (app or self.app())["replicas"] if r["state"] == "RUNNING"}

    def wait(self, check: Callable[[], Any], what: str, timeout_s: float | None = None) -> tuple[float, Any]:
        """`wait_until` every 0.25 s; a timeout says what the app looked like then."""
        try:
            return wait_until(check, timeout_s or self.cfg.timeout_s, what, interval_s=0.25)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; app {self.app()}") from None

    def scale(self, replicas: int, what: str) -> dict[str, dict[str, Any]]:
        """Deploy the app at `replicas`; wait until it runs exactly that many, all RUNNING; returns them."""
        self.deploy(replicas)

        def ready() -> dict[str, dict[str, Any]] | None:
            app = self.app()
            running = self.running(app)
            ok = app["status"] == "RUNNING" and len(running) == replicas == len(app["replicas"])
            return running if ok else None

        return self.wait(ready, what)[1]

    def window(self, start: float, end: float) -> dict[str, Any]:
        self.wait(lambda: any(r["t1"] >= end for r in self.tail.read()), "records past the window", 60)
        return summarize(self.tail.records, start, end)

    def health(self, replica_id: str) -> dict[str, Any]:
        return replica_health(self.url, APP, replica_id, tries=400, timeout_s=30) or {}

    def probabilities(self, replica_ids: set[str], tries: int = 400) -> dict[str, dict[str, float]]:
        """Each listed replica's answer for one fixed text: replica id -> label probabilities."""
        found: dict[str, dict[str, float]] = {}
        with httpx.Client() as client:
            for _ in range(tries):
                r = post_text(client, self.url, APP)
                rid = r.headers.get("x-replica-id") if r is not None and r.status_code == 200 else None
                if rid in replica_ids and rid not in found:
                    found[rid] = r.json()["predictions"][0]["probabilities"]
                if set(found) == replica_ids:
                    break
        return found


def _since(at: float | None, start: float) -> float | None:
    return None if at is None else round(at - start, 2)


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-6 for k in a)


def replica_kill(run: Run) -> dict[str, Any]:
    """`ray.kill` one of the 2 replicas mid-load; failures and the time until 2 serve again."""
    import ray

    start = time.time()
    time.sleep(run.cfg.steady_s)
    before = run.running()
    busy = [r["replica"] for r in run.tail.read()[-50:] if r["replica"] in before]
    victim = before[max(set(busy), key=busy.count) if busy else next(iter(before))]
    killed = time.time()
    ray.kill(ray.get_actor(victim["actor_name"], namespace="serve"), no_restart=True)
    logger.info("replica: killed %s (pid %s)", victim["replica_id"], victim["pid"])
    back_at, _ = run.wait(
        lambda: len(running := run.running()) == 2 and victim["replica_id"] not in running,
        "2 replicas after the kill",
    )

    def new_answering() -> set[str]:  # replicas not there before that answered a request sent after the kill
        answered = {r["replica"] for r in run.tail.read() if r["t0"] >= killed and r["error"] is None}
        return answered - set(before)

    new_at, new = run.wait(new_answering, "a new replica answering")
    end = max(back_at, new_at)
    new_id = sorted(new)[0]
    startup = run.health(new_id).get("startup") or {}
    time.sleep(run.cfg.after_s)
    failed = [r["t1"] for r in run.tail.read() if r["t1"] >= killed and r["first_error"] is not None]
    return {
        "killed_replica": victim["replica_id"],
        "new_replica": new_id,
        # Serve noticed the death and started a process for the replacement, which then got ready
        # (imports, weights from the store) and answered: each relative to the kill.
        "new_process_started_s": _since(startup.get("process_started"), killed),
        "new_replica_ready_s": _since(startup.get("ready"), killed),
        "replicas_back_s": round(back_at - killed, 2),
        "new_replica_serving_s": round(new_at - killed, 2),
        "failures_end_s": round(max(failed) - killed, 2) if failed else None,
        "before": run.window(start, killed),
        "during": run.window(killed, end),
        "after": run.window(end, end + run.cfg.after_s),
    }


def store_kill(run: Run) -> dict[str, Any]:
    """Kill the model store (restarted, then for good) while 2 replicas serve; then scale to 3 and 4."""
    import ray

    from loading.model_store import STORE_NAME, STORE_NAMESPACE

    start = time.time()
    old = set(run.running())
    reference = next(iter(run.probabilities(old).values()))
    store = ray.get_actor(STORE_NAME, namespace=STORE_NAMESPACE)
    stored_before = _stored(store)
    time.sleep(run.cfg.steady_s)

    killed = time.time()
    ray.kill(store, no_restart=False)
    restarted_at, _ = run.wait(lambda: _stored(store) == [], "store restarted")
    logger.info("store: killed, restarted empty in %.2f s", restarted_at - killed)
    time.sleep(run.cfg.steady_s)
    held = time.time()
    after_kill = run.probabilities(old)
    steps: dict[str, Any] = {
        "killed_restarted": {
            "restarted_s": round(restarted_at - killed, 2),
            "load": run.window(killed, held),
            "old_replicas_same_predictions": set(after_kill) == old
            and all(_same(p, reference) for p in after_kill.values()),
        },
        "scale_to_3": _scale_and_check(run, 3, reference),
    }
    steps["scale_to_3"]["store_repopulated"] = _stored(store)

    killed_for_good = time.time()
    ray.kill(store, no_restart=True)

    def store_gone() -> bool:
        try:
            ray.get_actor(STORE_NAME, namespace=STORE_NAMESPACE)
        except ValueError:
            return True
        return False

    run.wait(store_gone, "store name released")
    steps["killed_for_good_scale_to_4"] = step = _scale_and_check(run, 4, reference)
    step["store_recreated_with"] = _stored(ray.get_actor(STORE_NAME, namespace=STORE_NAMESPACE))
    step["load"] = run.window(killed_for_good, time.time())
    end = time.time()
    run.scale(2, "back to 2 replicas")
    return {
        "stored_before": stored_before,
        "steps": steps,
        "before": run.window(start, killed),
        "whole": run.window(killed, end),
    }


def _stored(store: Any) -> list[str] | None:
    """The variants the store holds; None while it is down (restarting or dead)."""
    import ray

    try:
        return sorted(ray.get(store.variants.remote(), timeout=30))
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None


def _scale_and_check(run: Run, replicas: int, reference: dict[str, float]) -> dict[str, Any]:
    """Scale to `replicas`; the new replica's health, predictions and the time it took."""
    before = set(run.running())
    asked = time.time()
    running = run.scale(replicas, f"{replicas} replicas")
    ready = time.time()
    (new_id,) = set(running) - before
    health = run.health(new_id)
    answer = run.probabilities({new_id}).get(new_id)
    return {
        "new_replica": new_id,
        "ready_s": round(ready - asked, 2),
        **{k: health.get(k) for k in ("weights_loaded_from", "weights_load_ms", "store_wait_ms")},
        "same_predictions": answer is not None and _same(answer, reference),
        "load": run.window(asked, ready),
    }


def run_all(config: Any, cfg: FaultsConfig, port: int) -> dict[str, Any]:
    """Every scenario in one private Serve session under one steady load."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp, ServeSession(config, port) as session:
        run = Run(session, cfg)
        run.scale(2, "base at 2 replicas")
        records = Path(tmp) / "requests.jsonl"
        with recorded_load(session.url, APP, cfg.users, 3600, records, cfg.retry_attempts) as run.tail:
            run.wait(lambda: len(run.tail.read()) > 20, "the load running", 120)
            for name, scenario in {
                "replica_kill": replica_kill,
                "store_kill": store_kill,
                "artifacts": lambda run: artifact_faults(run, Path(tmp)),
            }.items():
                logger.info("scenario %s", name)
                out[name] = scenario(run)
                logger.info("%s: %s", name, json.dumps(out[name]))
        records = run.tail.read()
        out["all_requests"] = summarize(records, records[0]["t0"], records[-1]["t1"] + 1e-3)
    return out


def targets(out: dict[str, Any]) -> dict[str, bool]:
    """The issue's targets, each True when met by this run."""
    kill, steps, art = out["replica_kill"], out["store_kill"]["steps"], out["artifacts"]
    deploys = art["deploy"].values()
    return {
        "replica_kill_0_user_visible_failures": all(kill[w]["failed"] == 0 for w in ("during", "after")),
        "replica_kill_recovered": kill["new_replica_serving_s"] is not None,
        "store_kill_replicas_keep_serving": steps["killed_restarted"]["load"]["failed_first_attempt"] == 0
        and steps["killed_restarted"]["old_replicas_same_predictions"],
        "store_kill_new_replicas_start": all(
            steps[k]["weights_loaded_from"] and steps[k]["same_predictions"]
            for k in ("scale_to_3", "killed_for_good_scale_to_4")
        ),
        "store_kill_0_user_visible_failures": out["store_kill"]["whole"]["failed"] == 0,
        "corrupt_refused_by_verify": all(v is not None for v in art["verify_artifact"].values()),
        "corrupt_refused_by_build": all(
            b["exit_code"] != 0 and not (b["traceback"] or b["wrote_variant"]) for b in art["build"].values()
        ),
        "corrupt_refused_at_deploy": all(d["status"] == "DEPLOY_FAILED" for d in deploys),
        "previous_deployment_keeps_serving": all(
            d["load"]["failed"] == 0 and d["old_replicas_kept"] for d in deploys
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = parser("benchmarks.faults", __doc__, serve_port=8300)
    p.add_argument("--users", type=int, default=FaultsConfig.users)
    p.add_argument("--quick", action="store_true", help="short windows, one corruption deployed")
    args = p.parse_args(argv)
    setup_logging()
    quick = {"steady_s": 5.0, "after_s": 5.0, "corruptions": ("truncated",), "same_name_case": False}
    cfg = FaultsConfig(users=args.users, **(quick if args.quick else {}))
    out = {"machine": machine_info(), "quick": args.quick, "users": cfg.users}
    out |= {"retry_attempts": cfg.retry_attempts, **run_all(load_serve_config(args.config), cfg, args.port)}
    out["machine_after"] = machine_info()
    out["targets"] = targets(out)
    emit(out, args.json, (f"{k:<40} {'met' if met else 'NOT MET'}" for k, met in out["targets"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
