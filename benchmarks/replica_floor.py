"""What a new replica of ours costs over the floor: `python -m benchmarks.replica_floor --json`.

One private local Ray + Serve (`benchmarks.harness.session`, the ingress `make serve` uses) holds side by side:

1. `floor`: imports torch, answers a constant (`benchmarks.floor_apps.Floor`);
2. `base`: our classifier (`deployments.classifier:app_builder`, `serve_config.yaml`'s base app);
3. `bert-base`: the same app on a BERT-base-shaped model with random weights (built once into
   `--bert-base-dir` with `save_artifact` if missing; `--no-bert-base` skips it);
4. `pipeline`: the replica the Ray Serve docs show, a transformers `pipeline("text-classification")`
   of the default model (`benchmarks.floor_apps.Pipeline`).

Each starts at one replica; then, one application at a time, Serve is asked for a second replica (the
"scale decision": the config submitted with 2 replicas) and the driver posts until a request is
answered by the new replica (its first 200). Per application: seconds from the decision and from the
new replica's process start (/proc, `loading.host.process_start_time`) to that first 200, the
tail from the replica's end of construction to it, and the replica's USS once idle. Then ours minus
the floor. The last stdout line is one JSON object.

Our replicas keep a spare, already-imported Ray worker per node (`deployments/warm_worker.py`), so a
new one of ours usually starts on a process that was running before the decision (then
`decision_to_process_start_s` < 0 and `on_spare_worker` is true). `--no-spare-worker` turns that off
(`BERTSERVE_SPARE_WORKER=0`) to compare; `--apps floor base` times only those rows.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from loading.host import cpu_model, machine_info
from benchmarks.replica_memory import IDLE_AFTER_S, MIB
from benchmarks.harness.session import ROOT, ServeSession, app_entry, load_serve_config, wait_until

__all__ = ["build_bert_base", "main", "minus_floor", "reference_apps", "scale_up"]

logger = logging.getLogger(__name__)

NUM_CPUS = 0.25  # per replica: 4 apps x 2 replicas and Ray's own actors fit on 2 cores
FIGURES = ("process_start_to_200_s", "decision_to_200_s", "constructed_to_200_s", "uss_mib")
OURS = ("base", "bert-base", "pipeline")
TEXT = "I cannot sleep before my exam and everything feels like too much."


def reference_apps(model_dir: str, replicas: int) -> list[dict[str, Any]]:
    """The floor and pipeline applications as config entries at `replicas` fixed replicas."""
    apps = [
        {"name": "floor", "route_prefix": "/floor", "import_path": "benchmarks.floor_apps:floor_app"},
        {
            "name": "pipeline",
            "route_prefix": "/pipeline",
            "import_path": "benchmarks.floor_apps:pipeline_app",
            "args": {"model_dir": model_dir},
        },
    ]
    for app in apps:
        app["deployments"] = [
            {
                "name": app["name"].title(),
                "num_replicas": replicas,
                "ray_actor_options": {"num_cpus": NUM_CPUS},
            }
        ]
    return apps


def _classifier_app(config: dict[str, Any], name: str, model_dir: str, replicas: int) -> dict[str, Any]:
    app = app_entry(config, "base", replicas=replicas, model_dir=model_dir)
    app["args"]["variant"] = name  # the route and the store's key
    app["name"], app["route_prefix"] = name, f"/{name}"
    for deployment in app["deployments"]:
        deployment["ray_actor_options"] = {**deployment.get("ray_actor_options", {}), "num_cpus": NUM_CPUS}
    return app


def _apps(config: dict[str, Any], dirs: dict[str, str], replicas: dict[str, int]) -> list[dict[str, Any]]:
    refs = {a["name"]: a for a in reference_apps(dirs["base"], 1)}
    apps = []
    for name, n in replicas.items():
        if name in refs:
            app = copy.deepcopy(refs[name])
            app["deployments"][0]["num_replicas"] = n
        else:
            app = _classifier_app(config, name, dirs[name], n)
        apps.append(app)
    return apps


def _answer(client: httpx.Client, url: str, name: str) -> tuple[str, dict[str, Any]] | None:
    """(replica id, body) of one POST to `name`, or None while nothing answers 200."""
    try:
        r = client.post(f"{url}/{name}/classify", json={"text": TEXT}, timeout=30)
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    body = r.json()
    return r.headers.get("x-replica-id") or body.get("replica_id"), body


def _startup(
    client: httpx.Client, url: str, name: str, replica_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    """pid, process start and end of construction of the replica that answered."""
    if "pid" in body:  # floor, pipeline: the answer says it
        return {
            "pid": body["pid"],
            "process_started": body["process_started"],
            "constructed": body["constructed"],
        }
    from benchmarks.coldstart import _health_of

    health = _health_of(client, url, name, replica_id)
    s = health["startup"]
    return {"pid": int(health["pid"]), "process_started": s["process_started"], "constructed": s["ready"]}


def scale_up(
    session: ServeSession,
    config: dict[str, Any],
    dirs: dict[str, str],
    name: str,
    timeout_s: float,
    deployed: tuple[str, ...] = ("floor", "pipeline"),
) -> dict[str, Any]:
    """Ask Serve for a second replica of `name` (the `dirs` and `deployed` apps stay at one); time the
    new one's first 200."""
    replicas = {n: 1 for n in dirs} | {n: 1 for n in deployed}
    with httpx.Client() as client:
        seen = set()
        for _ in range(6):
            answered = _answer(client, session.url, name)
            if answered:
                seen.add(answered[0])
        decided = session.deploy(_apps(config, dirs, replicas | {name: 2}))

        def new_replica() -> tuple[str, dict[str, Any]] | None:
            answered = _answer(client, session.url, name)
            return answered if answered and answered[0] not in seen else None

        first_200, (replica_id, body) = wait_until(new_replica, timeout_s, f"a new {name} replica")
        startup = _startup(client, session.url, name, replica_id, body)
    time.sleep(IDLE_AFTER_S)  # our replica trims its heap once idle
    uss_mib = psutil.Process(startup["pid"]).memory_full_info().uss / MIB
    session.deploy(_apps(config, dirs, replicas))
    return {
        "pid": startup["pid"],
        "process_start_to_200_s": first_200 - startup["process_started"],
        "decision_to_200_s": first_200 - decided,
        "decision_to_process_start_s": startup["process_started"] - decided,
        "on_spare_worker": startup["process_started"] < decided,
        "constructed_to_200_s": first_200 - startup["constructed"],
        "uss_mib": uss_mib,
    }


def minus_floor(results: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each non-floor row's FIGURES minus the floor's (seconds, MiB)."""
    if "floor" not in results:
        raise ValueError(f"results must hold a 'floor' row, got {sorted(results)}")
    floor = results["floor"]
    return {name: {k: row[k] - floor[k] for k in FIGURES} for name, row in results.items() if name != "floor"}


def build_bert_base(out_dir: Path) -> Path:
    """A BERT-base-shaped classifier (random weights, the default model's tokenizer) at `out_dir`."""
    if (out_dir / "variant.json").exists():
        return out_dir
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from loading.artifact import default_encoder_dir, load_tokenizer, save_artifact

    torch.manual_seed(0)
    labels = ["not_stress", "stress"]
    model = BertForSequenceClassification(
        BertConfig(
            num_labels=2, id2label=dict(enumerate(labels)), label2id={k: i for i, k in enumerate(labels)}
        )
    ).eval()
    save_artifact(
        model, load_tokenizer(default_encoder_dir()), out_dir, name="base", method="random-bert-base"
    )
    logger.info("built %s", out_dir)
    return out_dir


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    medians = {
        k: statistics.median(r[k] for r in runs) for k in runs[0] if k not in ("pid", "on_spare_worker")
    }
    return medians | {"on_spare_worker": sum(r["on_spare_worker"] for r in runs)}  # how many runs


def _table(results: dict[str, dict[str, float]], diff: dict[str, dict[str, float]]) -> str:
    lines = [
        f"{'replica':>10} {'proc->200 s':>12} {'decision->200 s':>16} "
        f"{'constructed->200 s':>19} {'USS MiB':>8} {'on spare':>8}"
    ]
    for name, r in results.items():
        lines.append(
            f"{name:>10} {r['process_start_to_200_s']:12.2f} {r['decision_to_200_s']:16.2f} "
            f"{r['constructed_to_200_s']:19.2f} {r['uss_mib']:8.0f} {r['on_spare_worker']:8d}"
        )
    lines.append("minus floor:")
    for name, d in diff.items():
        lines.append(
            f"{name:>10} {d['process_start_to_200_s']:+12.2f} {d['decision_to_200_s']:+16.2f} "
            f"{d['constructed_to_200_s']:+19.2f} {d['uss_mib']:+8.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.replica_floor", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", default="serve_config.yaml")
    parser.add_argument("--model-dir", default="artifacts/base", help="our default model (base and pipeline)")
    parser.add_argument("--bert-base-dir", default="artifacts/bert-base-random", help="built here if missing")
    parser.add_argument("--no-bert-base", action="store_true", help="skip the BERT-base-shaped row")
    parser.add_argument("--repeats", type=int, default=1, help="scale-ups per application (medians)")
    parser.add_argument(
        "--apps", nargs="+", choices=("floor", "base", "bert-base", "pipeline"), help="default: all four"
    )
    parser.add_argument(
        "--no-spare-worker", action="store_true", help="BERTSERVE_SPARE_WORKER=0: new replicas start fresh"
    )
    parser.add_argument("--port", type=int, default=8130, help="their own Serve (8000 may be `make serve`)")
    parser.add_argument(
        "--ingress", choices=("haproxy", "proxy"), default=None, help="default: as make serve"
    )
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds any one wait may take")
    parser.add_argument("--json", action="store_true", help="(the last line is always the JSON object)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.no_spare_worker:
        os.environ["BERTSERVE_SPARE_WORKER"] = "0"  # before Ray starts: its workers inherit it
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    config = load_serve_config(args.config)
    dirs = {"base": str((ROOT / args.model_dir).resolve())}
    if not args.no_bert_base and (args.apps is None or "bert-base" in args.apps):
        dirs["bert-base"] = str(build_bert_base((ROOT / args.bert_base_dir).resolve()))
    order = [n for n in ("floor", *dirs, "pipeline") if args.apps is None or n in args.apps]
    out: dict[str, Any] = {
        "machine": machine_info() | {"cpu": cpu_model()},
        "repeats": args.repeats,
        "spare_worker": os.environ.get("BERTSERVE_SPARE_WORKER", "1") != "0",
    }
    with ServeSession(config, args.port, ingress=args.ingress) as session:
        out["ingress"] = session.ingress
        session.deploy(_apps(config, dirs, {n: 1 for n in order}))
        with httpx.Client() as client:
            for name in order:
                wait_until(lambda n=name: _answer(client, session.url, n), args.timeout, f"{name} serving")
        runs: dict[str, list[dict[str, float]]] = {n: [] for n in order}
        for _ in range(args.repeats):
            for name in order:
                runs[name].append(scale_up(session, config, dirs, name, args.timeout, tuple(order)))
                logger.info("%s: %s", name, {k: round(v, 2) for k, v in runs[name][-1].items()})
                time.sleep(2.0)  # the old second replica drains and exits
    out["runs"] = runs
    out["results"] = {n: _median(r) for n, r in runs.items()}
    out["minus_floor"] = minus_floor(out["results"]) if "floor" in out["results"] else {}
    out["machine_after"] = machine_info()
    print(_table(out["results"], out["minus_floor"]))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
