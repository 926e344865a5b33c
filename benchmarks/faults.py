"""Faults under load: a killed replica, a killed model store, corrupt artifacts:
`python -m benchmarks.faults --json`.

A private Ray + Serve (`benchmarks.harness.session`, 127.0.0.1:8300) serves base from `serve_config.yaml` at
2 fixed replicas. Locust users (`benchmarks/locust_retry.py`: closed loop, single real texts, the
documented client retry `benchmarks.retry.RetryPolicy`) keep a steady load on /base throughout and log
every request, so failures are counted twice: on the first attempt (what a client without retries
sees) and after retries (what a user sees).

1. replica: one replica actor is `ray.kill`ed mid-load. Measured: failures, the time until Serve
   runs 2 replicas again and until a new replica answers.
2. store: the model store actor is killed and restarts empty (it has `max_restarts=-1`): running
   replicas keep answering, with the same predictions (their weights stay mapped); a third replica
   then starts and its weights come through the restarted store, which re-reads the artifact from
   disk. Then the store is killed for good: a fourth replica still starts (`loading.store` creates a
   new store).
3. artifacts: copies of the base artifact with a truncated weights file, flipped bytes in the
   weights, and a `variant.json` whose hash does not match are refused by `verify_artifact`, by
   `python -m loading.build` (exit 2, one line, no traceback) and by a redeploy of the running
   app (DEPLOY_FAILED naming the file and hashes) while the previous replicas keep answering.

The last stdout line is one JSON object. `--quick`: short windows, one corruption deployed, no
same-name redeploy (~3-5 minutes instead of ~11).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from loading.artifact import VARIANT_FILE, WEIGHTS_FILE, ArtifactError, resolve_model_dir, verify_artifact
from loading.host import machine_info
from benchmarks.harness.locust import locust_command, stop_locust
from benchmarks.records import RecordTail, summarize
from benchmarks.harness.session import ROOT, SHORT_TEXT, ServeSession, app_entry, load_serve_config, replica_health

__all__ = [
    "CORRUPTIONS",
    "FaultsConfig",
    "build_refusal",
    "corrupt_artifact",
    "main",
]

logger = logging.getLogger(__name__)

APP = "base"  # the application (and route) under test
DEPLOYMENT = "Classifier"
CORRUPTIONS = ("truncated", "flipped", "bad-hash")


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
        unknown = set(self.corruptions) - set(CORRUPTIONS)
        if unknown:
            raise ValueError(f"corruptions must be among {CORRUPTIONS}, got {sorted(unknown)}")


# -- corrupt artifacts -----------------------------------------------------------------------------


def corrupt_artifact(src: str | Path, dst: str | Path, kind: str) -> Path:
    """Copy the artifact `src` to `dst` and damage the copy as `kind` says; `src` is left alone.

    truncated: the weights file cut to half its length (an interrupted copy). flipped: 16 bytes
    inverted in the middle of the tensor data (bit rot: the file still parses, the values are wrong).
    bad-hash: `variant.json` records another hash than the weights file's (a swapped file).
    """
    if kind not in CORRUPTIONS:
        raise ValueError(f"kind must be one of {CORRUPTIONS}, got {kind!r}")
    dst = Path(dst)
    shutil.copytree(src, dst)
    weights = dst / WEIGHTS_FILE
    if kind == "truncated":
        with weights.open("r+b") as f:
            f.truncate(weights.stat().st_size // 2)
    elif kind == "flipped":
        with weights.open("r+b") as f:
            (header_bytes,) = struct.unpack("<Q", f.read(8))  # safetensors: u64 header length first
            data_start = 8 + header_bytes
            at = data_start + (weights.stat().st_size - data_start) // 2
            f.seek(at)
            chunk = f.read(16)
            f.seek(at)
            f.write(bytes(b ^ 0xFF for b in chunk))
    else:
        meta = dst / VARIANT_FILE
        info = json.loads(meta.read_text())
        info["content_hash"] = "sha256:" + "0" * 64
        meta.write_text(json.dumps(info, indent=2, sort_keys=True))
    return dst


def build_refusal(model_dir: Path, out: Path) -> dict[str, Any]:
    """`python -m loading.build` from a damaged base: its exit code and what it printed."""
    cmd = [sys.executable, "-m", "loading.build", "--model", str(model_dir), "--variants", "quant"]
    done = subprocess.run([*cmd, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return {
        "exit_code": done.returncode,
        "message": lines[-1] if lines else "",
        "traceback": "Traceback" in done.stderr,
        "wrote_variant": (out / "quant").exists(),
    }


def _verify_refusal(model_dir: Path) -> str | None:
    """`verify_artifact`'s error for `model_dir`, or None if it passes."""
    try:
        verify_artifact(model_dir)
    except ArtifactError as exc:
        return str(exc)
    return None


# -- the load and its records ----------------------------------------------------------------------


def _since(at: float | None, start: float) -> float | None:
    return None if at is None else round(at - start, 2)


def _start_locust(url: str, cfg: FaultsConfig, records: Path) -> subprocess.Popen:
    """Retrying Locust users on /base for up to an hour, logging every request; stopped with `stop_locust`."""
    options = ["--retry-attempts", str(cfg.retry_attempts), "--records", str(records)]
    cmd = locust_command(url, APP, cfg.users, 3600, locustfile="locust_retry.py", options=options)
    log = records.with_suffix(".log").open("wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc


# -- Serve's view ----------------------------------------------------------------------------------


class _Run:
    """The session, the load's records and the Serve views every scenario uses."""

    def __init__(self, session: ServeSession, cfg: FaultsConfig, tail: RecordTail) -> None:
        self.session, self.cfg, self.tail = session, cfg, tail
        self.url = session.url

    def app(self) -> dict[str, Any]:
        """The app's status, message, deployment status/message and replicas, from the controller."""
        details = self.session.client.get_serve_details()
        app = details.get("applications", {}).get(APP) or {}
        deployment = (app.get("deployments") or {}).get(DEPLOYMENT) or {}
        return {
            "status": app.get("status"),
            "message": app.get("message") or "",
            "deployment_status": deployment.get("status"),
            "deployment_message": deployment.get("message") or "",
            "replicas": deployment.get("replicas") or [],
        }

    def running(self) -> dict[str, dict[str, Any]]:
        """replica_id -> details of the app's RUNNING replicas."""
        return {r["replica_id"]: r for r in self.app()["replicas"] if r["state"] == "RUNNING"}

    def deploy(self, replicas: int, **args: Any) -> None:
        """Deploy the app at `replicas`; `args` override its arguments (`variant` included)."""
        app = app_entry(self.session.config, APP, replicas=replicas)
        app["args"].update(args)
        self.session.deploy([app])

    def wait(self, check: Callable[[], Any], what: str, timeout_s: float | None = None) -> tuple[float, Any]:
        """Poll `check` every 0.25 s until truthy; (epoch time, its value)."""
        deadline = time.monotonic() + (timeout_s or self.cfg.timeout_s)
        while time.monotonic() < deadline:
            value = check()
            if value:
                return time.time(), value
            time.sleep(0.25)
        raise TimeoutError(f"{what}: not within {timeout_s or self.cfg.timeout_s:.0f} s; app {self.app()}")

    def wait_serving(self, replicas: int, what: str) -> dict[str, dict[str, Any]]:
        """Until the app is RUNNING with exactly `replicas` RUNNING replicas; returns them."""

        def ready() -> dict[str, dict[str, Any]] | None:
            app = self.app()
            running = {r["replica_id"]: r for r in app["replicas"] if r["state"] == "RUNNING"}
            ok = app["status"] == "RUNNING" and len(running) == replicas == len(app["replicas"])
            return running if ok else None

        return self.wait(ready, what)[1]

    def served_by(self, since: float) -> set[str]:
        """Replicas that answered a request (2xx) started after `since`."""
        return {r["replica"] for r in self.tail.read() if r["t0"] >= since and r["error"] is None}

    def window(self, start: float, end: float) -> dict[str, Any]:
        self.wait(lambda: any(r["t1"] >= end for r in self.tail.read()), "records past the window", 60)
        return summarize(self.tail.records, start, end)


def _probabilities(url: str, replica_ids: set[str], tries: int = 400) -> dict[str, dict[str, float]]:
    """Each listed replica's answer for one fixed text: replica id -> label probabilities."""
    found: dict[str, dict[str, float]] = {}
    with httpx.Client() as client:
        for _ in range(tries):
            try:
                r = client.post(f"{url}/{APP}/classify", json={"text": SHORT_TEXT}, timeout=30)
            except httpx.HTTPError:
                continue
            rid = r.headers.get("x-replica-id")
            if r.status_code == 200 and rid in replica_ids and rid not in found:
                found[rid] = r.json()["predictions"][0]["probabilities"]
            if set(found) == replica_ids:
                break
    return found


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-6 for k in a)


# -- the scenarios ---------------------------------------------------------------------------------


def replica_kill(run: _Run) -> dict[str, Any]:
    """`ray.kill` one of the 2 replicas mid-load; failures and the time until 2 serve again."""
    import ray

    cfg = run.cfg
    start = time.time()
    time.sleep(cfg.steady_s)
    before = run.running()
    busy = [r["replica"] for r in run.tail.read()[-50:] if r["replica"] in before]
    victim = before[max(set(busy), key=busy.count) if busy else next(iter(before))]
    killed = time.time()
    ray.kill(ray.get_actor(victim["actor_name"], namespace="serve"), no_restart=True)
    logger.info("replica: killed %s (pid %s)", victim["replica_id"], victim["pid"])

    def back() -> bool:
        running = run.running()
        return len(running) == 2 and victim["replica_id"] not in running

    back_at, _ = run.wait(back, "2 replicas after the kill")
    new_at, new = run.wait(lambda: run.served_by(killed) - set(before), "a new replica answering")
    end = max(back_at, new_at)
    (new_id,) = sorted(new)[:1]
    startup = (replica_health(run.url, APP, new_id, tries=400, timeout_s=30) or {}).get("startup") or {}
    time.sleep(cfg.after_s)
    records = run.tail.read()
    failed_after_kill = [r["t1"] for r in records if r["t1"] >= killed and r["first_error"] is not None]
    return {
        "killed_replica": victim["replica_id"],
        "new_replica": new_id,
        # Serve noticed the death and started a process for the replacement, which then got ready
        # (imports, weights from the store) and answered: each relative to the kill.
        "new_process_started_s": _since(startup.get("process_started"), killed),
        "new_replica_ready_s": _since(startup.get("ready"), killed),
        "replicas_back_s": round(back_at - killed, 2),
        "new_replica_serving_s": round(new_at - killed, 2),
        "failures_end_s": round(max(failed_after_kill) - killed, 2) if failed_after_kill else None,
        "before": run.window(start, killed),
        "during": run.window(killed, end),
        "after": run.window(end, end + cfg.after_s),
    }


def store_kill(run: _Run) -> dict[str, Any]:
    """Kill the model store (restarted, then for good) while 2 replicas serve; then scale to 3 and 4."""
    import ray

    from loading.model_store import STORE_NAME, STORE_NAMESPACE

    cfg = run.cfg
    start = time.time()
    old = set(run.running())
    reference = _probabilities(run.url, old)
    text_probabilities = next(iter(reference.values()))
    store = ray.get_actor(STORE_NAME, namespace=STORE_NAMESPACE)
    stored_before = _stored(store)
    time.sleep(cfg.steady_s)

    killed = time.time()
    ray.kill(store, no_restart=False)
    restarted_at, _ = run.wait(lambda: _stored(store) == [], "store restarted")
    logger.info("store: killed, restarted empty in %.2f s", restarted_at - killed)
    time.sleep(cfg.steady_s)
    held = time.time()
    after_kill = _probabilities(run.url, old)
    steps: dict[str, Any] = {
        "killed_restarted": {
            "restarted_s": round(restarted_at - killed, 2),
            "load": run.window(killed, held),
            "old_replicas_same_predictions": set(after_kill) == old
            and all(_same(p, text_probabilities) for p in after_kill.values()),
        }
    }
    steps["scale_to_3"] = _scale_and_check(run, 3, text_probabilities)
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
    steps["killed_for_good_scale_to_4"] = _scale_and_check(run, 4, text_probabilities)
    new_store = ray.get_actor(STORE_NAME, namespace=STORE_NAMESPACE)
    steps["killed_for_good_scale_to_4"]["store_recreated_with"] = _stored(new_store)
    steps["killed_for_good_scale_to_4"]["load"] = run.window(killed_for_good, time.time())
    end = time.time()
    run.deploy(2)
    run.wait_serving(2, "back to 2 replicas")
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


def _scale_and_check(run: _Run, replicas: int, reference: dict[str, float]) -> dict[str, Any]:
    """Scale to `replicas`; the new replica's health, predictions and the time it took."""
    before = set(run.running())
    asked = time.time()
    run.deploy(replicas)
    running = run.wait_serving(replicas, f"{replicas} replicas")
    ready = time.time()
    (new_id,) = set(running) - before
    health = replica_health(run.url, APP, new_id, tries=400, timeout_s=30) or {}
    answer = _probabilities(run.url, {new_id}).get(new_id)
    logger.info(
        "store: replica %d (%s) ready after %.1f s, weights %s, store wait %.0f ms",
        replicas,
        new_id,
        ready - asked,
        health.get("weights_loaded_from"),
        health.get("store_wait_ms", float("nan")),
    )
    return {
        "new_replica": new_id,
        "ready_s": round(ready - asked, 2),
        "weights_loaded_from": health.get("weights_loaded_from"),
        "weights_load_ms": health.get("weights_load_ms"),
        "store_wait_ms": health.get("store_wait_ms"),
        "same_predictions": answer is not None and _same(answer, reference),
        "load": run.window(asked, ready),
    }


def artifact_faults(run: _Run, tmp: Path) -> dict[str, Any]:
    """Corrupt copies of base: refused offline, by the build, and by a redeploy over the running app."""
    model_dir = resolve_model_dir(ROOT / app_entry(run.session.config, APP)["args"]["model_dir"])
    kinds = {kind: corrupt_artifact(model_dir, tmp / kind, kind) for kind in CORRUPTIONS}
    out: dict[str, Any] = {
        "verify_artifact": {kind: _verify_refusal(path) for kind, path in kinds.items()},
        "build": {kind: build_refusal(path, tmp / f"build-{kind}") for kind, path in kinds.items()},
        "deploy": {},
    }
    for kind in run.cfg.corruptions:
        out["deploy"][kind] = _failed_redeploy(run, f"base-{kind}", kinds[kind])
    if run.cfg.same_name_case:
        intact = tmp / "intact"
        shutil.copytree(model_dir, intact)
        out["deploy"]["same-name-new-folder"] = _failed_redeploy(run, APP, intact)
    return out


def _failed_redeploy(run: _Run, variant: str, model_dir: Path) -> dict[str, Any]:
    """Redeploy the running app from `model_dir`; expect DEPLOY_FAILED; then restore the good config."""
    before = run.running()
    asked = time.time()
    run.deploy(2, variant=variant, model_dir=str(model_dir))
    failed_at, app = run.wait(lambda: (a := run.app())["status"] == "DEPLOY_FAILED" and a, variant)
    time.sleep(run.cfg.steady_s / 3)
    left = run.running()
    message = app["deployment_message"] or app["message"]
    logger.info("artifacts: %s refused after %.1f s: %s", variant, failed_at - asked, _error_line(message))
    restore = time.time()
    run.deploy(2)
    run.wait_serving(2, "the good deployment restored")
    restored = time.time()
    return {
        "refused_after_s": round(failed_at - asked, 2),
        "status": app["status"],
        "error": _error_line(message),
        "names_the_file": str(model_dir) in message,
        "old_replicas_kept": sorted(set(before) & set(left)),
        "old_replicas_stopped": sorted(set(before) - set(left)),
        "replicas_running_after_refusal": len(left),
        "restore_s": round(restored - restore, 2),
        "load": run.window(asked, restored),
    }


def _error_line(message: str) -> str:
    """The line of a Serve failure message that carries our error (not the traceback around it)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    ours = [line for line in lines if "ArtifactError" in line or "ValueError" in line]
    return (ours or lines or [""])[-1][:500]


# -- the run ---------------------------------------------------------------------------------------


def run_all(config: dict[str, Any], cfg: FaultsConfig, port: int) -> dict[str, Any]:
    """Every scenario in one private Serve session under one steady load."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp, ServeSession(config, port) as session:
        records = Path(tmp) / "requests.jsonl"
        run = _Run(session, cfg, RecordTail(records))
        run.deploy(2)
        run.wait_serving(2, "base at 2 replicas")
        locust = _start_locust(session.url, cfg, records)
        try:
            run.wait(lambda: len(run.tail.read()) > 20, "the load running", 120)
            scenarios: dict[str, Callable[[], dict[str, Any]]] = {
                "replica_kill": lambda: replica_kill(run),
                "store_kill": lambda: store_kill(run),
                "artifacts": lambda: artifact_faults(run, Path(tmp)),
            }
            for name, scenario in scenarios.items():
                logger.info("scenario %s", name)
                out[name] = scenario()
                logger.info("%s: %s", name, json.dumps(out[name]))
        finally:
            stop_locust(locust)
        records = run.tail.read()
        out["all_requests"] = summarize(records, records[0]["t0"], records[-1]["t1"] + 1e-3)
    return out


def targets(out: dict[str, Any]) -> dict[str, bool]:
    """The issue's targets, each True when met by this run."""
    kill, store, art = out["replica_kill"], out["store_kill"], out["artifacts"]
    steps = store["steps"]
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
        "store_kill_0_user_visible_failures": store["whole"]["failed"] == 0,
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
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="serve_config.yaml")
    parser.add_argument("--port", type=int, default=8300, help="their own Serve (8000 may be `make serve`)")
    parser.add_argument("--users", type=int, default=FaultsConfig.users)
    parser.add_argument("--quick", action="store_true", help="short windows, one corruption deployed")
    parser.add_argument("--json", action="store_true", help="(the last line is always the JSON object)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per probe request otherwise
    cfg = FaultsConfig(users=args.users)
    if args.quick:
        cfg = FaultsConfig(
            users=args.users, steady_s=5.0, after_s=5.0, corruptions=("truncated",), same_name_case=False
        )
    config = load_serve_config(args.config)
    before = machine_info()
    out = {"machine": before, "quick": args.quick, "users": cfg.users, "retry_attempts": cfg.retry_attempts}
    out |= run_all(config, cfg, args.port)
    out["machine_after"] = machine_info()
    out["targets"] = targets(out)
    for name, met in out["targets"].items():
        logger.info("%-40s %s", name, "met" if met else "NOT MET")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
