"""What a new replica of ours costs over the floor: `python -m benchmarks.replica_floor --json`.

One private local Ray + Serve (the ingress `make serve` uses) holds side by side: `floor` (imports
torch, answers a constant), `base` (our classifier, `serve_config.yaml`'s base app), `bert-base` (the
same on a BERT-base-shaped random model, built into `--bert-base-dir` if missing) and `pipeline` (the
replica the Ray Serve docs show: a transformers `pipeline("text-classification")`); floor and
pipeline are `benchmarks.floor_apps`. Each starts at one replica; then, one application at a time,
Serve is asked for a second (the "scale decision") and the driver posts until the new replica answers.
Per application: seconds from the decision and from the new replica's process start (/proc) to that
first 200, from its end of construction to it, and its USS once idle; then ours minus the floor.

Our replicas keep a spare, already-imported Ray worker per node (`deployments/warm_worker.py`), so a
new one usually starts on a process that ran before the decision (`decision_to_process_start_s` < 0,
`on_spare_worker` true); `--no-spare-worker` (`BERTSERVE_SPARE_WORKER=0`) turns that off to compare.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from typing import Any

import httpx

from benchmarks.harness import ROOT
from benchmarks.harness.cli import emit, parser, positive_int, setup_logging
from benchmarks.harness.load import post_text, wait_until
from benchmarks.harness.models import BERT_BASE_DIR, build_random_bert
from benchmarks.harness.replicas import memory_mib, replica_health
from benchmarks.harness.session import ServeSession, app_entry
from benchmarks.replica_memory import IDLE_AFTER_S
from deployments.serve_config import ServeConfig, load_serve_config
from deployments.warm_worker import FIRST_CHECK_AFTER_S, SPARE_WORKER_ENV, spare_worker_on
from loading.host import machine_info

__all__ = ["FIGURES", "main", "minus_floor", "reference_apps", "scale_up"]

logger = logging.getLogger(__name__)

NUM_CPUS = 0.25  # per replica: 4 apps x 2 replicas and Ray's own actors fit on 2 cores
FIGURES = ("process_start_to_200_s", "decision_to_200_s", "constructed_to_200_s", "uss_mib")
APPS = ("floor", "base", "bert-base", "pipeline")


def reference_apps(model_dir: str, replicas: int) -> list[dict[str, Any]]:
    """The floor and pipeline applications as config entries at `replicas` fixed replicas."""
    options = {"num_replicas": replicas, "ray_actor_options": {"num_cpus": NUM_CPUS}}
    return [
        {
            "name": name,
            "route_prefix": f"/{name}",
            "import_path": f"benchmarks.floor_apps:{name}_app",
            "args": {"model_dir": model_dir} if name == "pipeline" else {},
            "deployments": [{"name": name.title(), **options}],
        }
        for name in ("floor", "pipeline")
    ]


def _apps(config: ServeConfig, dirs: dict[str, str], replicas: dict[str, int]) -> list[dict[str, Any]]:
    """Config entries of the `replicas` apps: name -> fixed replica count."""
    apps = []
    for name, n in replicas.items():
        if name in ("floor", "pipeline"):
            apps += [a for a in reference_apps(dirs["base"], n) if a["name"] == name]
            continue
        app = app_entry(config, "base", replicas=n, model_dir=dirs[name], variant=name)  # route, store key
        app["name"], app["route_prefix"] = name, f"/{name}"
        for deployment in app["deployments"]:
            deployment.setdefault("ray_actor_options", {})["num_cpus"] = NUM_CPUS
        apps.append(app)
    return apps


def _answer(client: httpx.Client, url: str, name: str) -> tuple[str, dict[str, Any]] | None:
    """(replica id, body) of one POST to `name`, or None while nothing answers 200."""
    r = post_text(client, url, name)
    if r is None or r.status_code != 200:
        return None
    body = r.json()
    return r.headers.get("x-replica-id") or body.get("replica_id"), body


def scale_up(
    session: ServeSession, dirs: dict[str, str], name: str, timeout_s: float, deployed: tuple[str, ...]
) -> dict[str, Any]:
    """Ask Serve for a second replica of `name` (the `dirs` and `deployed` apps stay at one); time the
    new one's first 200."""
    replicas = dict.fromkeys([*dirs, *deployed], 1)
    with httpx.Client() as client:
        seen = {a[0] for _ in range(6) if (a := _answer(client, session.url, name))}
        decided = session.deploy(_apps(session.config, dirs, replicas | {name: 2}))

        def new_replica() -> tuple[str, dict[str, Any]] | None:
            answered = _answer(client, session.url, name)
            return answered if answered and answered[0] not in seen else None

        first_200, (replica_id, body) = wait_until(new_replica, timeout_s, f"a new {name} replica")
    if "pid" in body:  # floor, pipeline: the answer says when it started
        pid, started, constructed = body["pid"], body["process_started"], body["constructed"]
    else:
        health = replica_health(session.url, name, replica_id)
        if health is None:
            raise RuntimeError(f"{name}: replica {replica_id} never answered /healthz")
        startup = health["startup"]
        pid, started, constructed = int(health["pid"]), startup["process_started"], startup["ready"]
    time.sleep(IDLE_AFTER_S)  # our replica trims its heap once idle
    uss_mib = memory_mib(pid)["uss_mib"]
    if "pid" not in body and spare_worker_on():
        # Ours asks for the node's next spare worker FIRST_CHECK_AFTER_S after construction, and Serve
        # keeps an added replica `downscale_delay_s` (30 s in the product). Removed sooner, it would
        # leave every other scale-up here without a spare, which the product never sees.
        time.sleep(max(0.0, constructed + FIRST_CHECK_AFTER_S + 1.0 - time.time()))
    session.deploy(_apps(session.config, dirs, replicas))
    return {
        "pid": pid,
        "process_start_to_200_s": first_200 - started,
        "decision_to_200_s": first_200 - decided,
        "decision_to_process_start_s": started - decided,
        "on_spare_worker": started < decided,
        "constructed_to_200_s": first_200 - constructed,
        "uss_mib": uss_mib,
    }


def minus_floor(results: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each non-floor row's FIGURES minus the floor's (seconds, MiB)."""
    if "floor" not in results:
        raise ValueError(f"results must hold a 'floor' row, got {sorted(results)}")
    floor = results["floor"]
    return {name: {k: row[k] - floor[k] for k in FIGURES} for name, row in results.items() if name != "floor"}


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    medians = {
        k: statistics.median(r[k] for r in runs) for k in runs[0] if k not in ("pid", "on_spare_worker")
    }
    return medians | {"on_spare_worker": sum(r["on_spare_worker"] for r in runs)}  # how many runs


def _table(results: dict[str, dict[str, float]], diff: dict[str, dict[str, float]]) -> list[str]:
    def row(name: str, r: dict[str, float], sign: str = "") -> str:
        return (
            f"{name:>10} {r['process_start_to_200_s']:{sign}12.2f} {r['decision_to_200_s']:{sign}16.2f} "
            f"{r['constructed_to_200_s']:{sign}19.2f} {r['uss_mib']:{sign}8.0f}"
        )

    names = ("replica", "proc->200 s", "decision->200 s", "constructed->200 s", "USS MiB", "on spare")
    return [
        " ".join(f"{n:>{w}}" for n, w in zip(names, (10, 12, 16, 19, 8, 8), strict=True)),
        *(f"{row(n, r)} {r['on_spare_worker']:8d}" for n, r in results.items()),
        "minus floor:",
        *(row(n, d, "+") for n, d in diff.items()),
    ]


def main(argv: list[str] | None = None) -> int:
    p = parser(__name__, __doc__, serve_port=8130)
    p.add_argument("--model-dir", default="artifacts/base", help="our default model (base and pipeline)")
    p.add_argument("--bert-base-dir", default=str(BERT_BASE_DIR), help="built here if missing")
    p.add_argument("--no-bert-base", action="store_true", help="skip the BERT-base-shaped row")
    p.add_argument("--repeats", type=positive_int, default=1, help="scale-ups per application (medians)")
    p.add_argument("--apps", nargs="+", choices=APPS, default=APPS, help="default: all four")
    p.add_argument(
        "--no-spare-worker", action="store_true", help="BERTSERVE_SPARE_WORKER=0: new replicas start fresh"
    )
    p.add_argument("--ingress", choices=("haproxy", "proxy"), default=None, help="default: as make serve")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds any one wait may take")
    args = p.parse_args(argv)
    if args.no_spare_worker:
        os.environ[SPARE_WORKER_ENV] = "0"  # before Ray starts: its workers inherit it
    setup_logging()
    config = load_serve_config(args.config)
    dirs = {"base": str((ROOT / args.model_dir).resolve())}
    if not args.no_bert_base and "bert-base" in args.apps:
        dirs["bert-base"] = str(build_random_bert((ROOT / args.bert_base_dir).resolve()))
    order = [n for n in ("floor", *dirs, "pipeline") if n in args.apps]
    out: dict[str, Any] = {
        "machine": machine_info(),
        "repeats": args.repeats,
        "spare_worker": spare_worker_on(),
    }
    with ServeSession(config, args.port, ingress=args.ingress) as session:
        out["ingress"] = session.ingress
        session.deploy(_apps(config, dirs, dict.fromkeys(order, 1)))
        with httpx.Client() as client:
            for name in order:
                wait_until(lambda n=name: _answer(client, session.url, n), args.timeout, f"{name} serving")
        runs: dict[str, list[dict[str, float]]] = {n: [] for n in order}
        for _ in range(args.repeats):
            for name in order:
                runs[name].append(scale_up(session, dirs, name, args.timeout, tuple(order)))
                logger.info("%s: %s", name, {k: round(v, 2) for k, v in runs[name][-1].items()})
                time.sleep(2.0)  # the old second replica drains and exits
    out["runs"] = runs
    out["results"] = {n: _median(r) for n, r in runs.items()}
    out["minus_floor"] = minus_floor(out["results"]) if "floor" in out["results"] else {}
    out["machine_after"] = machine_info()
    emit(out, args.json, _table(out["results"], out["minus_floor"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
