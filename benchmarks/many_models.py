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

import itertools
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.harness import ROOT
from benchmarks.harness.cli import emit, parser, positive_int, setup_logging
from benchmarks.harness.load import ClosedLoopUsers, post_text, random_texts, wait_serving, wait_until
from benchmarks.harness.replicas import MIB, serve_replicas
from benchmarks.harness.session import ServeSession, app_entry, pool_entry
from deployments.serve_config import load_serve_config
from loading.artifact import (
    VARIANT_FILE,
    WEIGHTS_FILE,
    content_hash,
    read_variant_info,
    update_variant_info,
    verify_artifact,
)
from loading.host import machine_info

__all__ = [
    "CLONES_DIR",
    "ROLES",
    "build_clone",
    "compare",
    "ensure_clones",
    "main",
    "node_memory",
    "percentile",
    "role_of",
    "summarize_requests",
]

logger = logging.getLogger(__name__)

CLONES_DIR = ROOT / "artifacts" / "many-models"  # built once, reused by later runs
RECORD = ROOT / "docs" / "benchmarks" / "many_models.json"  # what docs/BENCHMARKS.md and the cost report read
VARIANT = "base"  # each clone is served as its model's one variant
NOISE = 0.01  # x each tensor's std, on every tensor: every clone's bytes differ, as distinct models' do
HEAD_NOISE = 0.5  # x the classifier head's std: the clones' predictions differ visibly
TARGET_RPS_RATIO = 0.85  # the pool's req/s over the dedicated apps' must reach this
TARGET_MEMORY_RATIO = 0.20  # and its node memory over theirs stay below this
ROLES = ("replicas", "serve_controller", "ingress", "model_store", "idle_workers", "ray_system")


def clone_name(i: int) -> str:
    return f"m{i:02d}"


def _clone_record(source_hash: str, seed: int, noise: float, head_noise: float) -> dict[str, Any]:
    return {"source_hash": source_hash, "seed": seed, "noise": noise, "head_noise": head_noise}


def build_clone(
    source: Path, out_dir: Path, seed: int, *, noise: float = NOISE, head_noise: float = HEAD_NOISE
) -> Path:
    """A copy of the artifact `source` at `out_dir` whose float tensors get seeded Gaussian noise
    (`noise` x each tensor's std; `head_noise` for `classifier.*`), with a variant.json that
    `verify_artifact` accepts (hash and size of the new weights; no accuracy: never measured).

    Written in a temp folder and renamed, so an interrupted build leaves no half clone.
    """
    import torch
    from safetensors.torch import load_file, save_file

    if not noise >= 0 or not head_noise >= 0:
        raise ValueError(f"noise and head_noise must be >= 0, got {noise}, {head_noise}")
    source_info = verify_artifact(source)
    generator = torch.Generator().manual_seed(seed)
    tensors = load_file(str(source / WEIGHTS_FILE))
    for name in sorted(tensors):  # a fixed order: the same seed gives the same clone
        t = tensors[name]
        scale = head_noise if name.startswith("classifier.") else noise
        if t.is_floating_point() and t.numel() > 1 and scale > 0:
            std = float(t.float().std())
            tensors[name] = t + torch.randn(t.shape, generator=generator, dtype=t.dtype) * (scale * std)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for f in source.iterdir():
            if f.is_file() and f.name not in (WEIGHTS_FILE, VARIANT_FILE):
                shutil.copy2(f, tmp / f.name)
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / VARIANT_FILE).write_text(source_info.to_json())
        parameters = {
            **source_info.parameters,
            "clone": _clone_record(source_info.content_hash, seed, noise, head_noise),
        }
        update_variant_info(
            tmp,
            name=VARIANT,
            parent=source_info.name,
            parameters=parameters,
            content_hash=content_hash(tmp / WEIGHTS_FILE),
            weights_bytes=(tmp / WEIGHTS_FILE).stat().st_size,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            accuracy=None,
        )
        verify_artifact(tmp)
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def ensure_clones(source: Path, count: int, root: Path = CLONES_DIR, seed: int = 0) -> dict[str, Path]:
    """`count` clones of `source` ({model name: folder}), building only those missing or stale."""
    source_hash = verify_artifact(source).content_hash
    out = {}
    for i in range(count):
        name, folder = clone_name(i), root / clone_name(i)
        want = _clone_record(source_hash, seed + i, NOISE, HEAD_NOISE)
        try:
            have = read_variant_info(folder).parameters.get("clone")
        except ValueError:  # no folder yet (ArtifactError), or a broken one: build it again
            have = None
        if have != want:
            started = time.perf_counter()
            build_clone(source, folder, seed + i)
            logger.info("built clone %s in %.1f s", folder, time.perf_counter() - started)
        out[name] = folder
    return out


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation between the closest ranks; None if empty."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize_requests(rows: list[tuple], start: float, end: float) -> dict[str, Any]:
    """Requests answered within [start, end]: count, failures, req/s (answered 200), p50/p99 ms, and
    the spread of answers over routes. Rows: (epoch, route, status, latency ms, replica, attach ms)."""
    window = [r for r in rows if start <= r[0] <= end]
    ok = [r for r in window if r[2] == 200]
    per_route: dict[str, int] = {}
    for r in ok:
        per_route[r[1]] = per_route.get(r[1], 0) + 1
    latencies = [r[3] for r in ok]
    seconds = end - start
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return {
        "seconds": round(seconds, 2),
        "requests": len(window),
        "failed": len(window) - len(ok),
        "requests_per_s": round(len(ok) / seconds, 2) if seconds > 0 else 0.0,
        "p50_ms": None if p50 is None else round(p50, 1),
        "p99_ms": None if p99 is None else round(p99, 1),
        "routes_answered": len(per_route),
        "answers_per_route_min_max": [min(per_route.values()), max(per_route.values())] if per_route else [],
        "replicas_answering": len({r[4] for r in ok}),
    }


def _attaches(rows: list[tuple], start: float) -> dict[str, int]:
    """Attaches seen in the answers: one per distinct (replica, route, x-weights-load-ms), as a new
    attach reports a new time; `in_window` counts those first seen from `start` on."""
    first: dict[tuple, float] = {}
    for at, route, status, _, replica, attach_ms in rows:
        if status == 200:
            first.setdefault((replica, route, attach_ms), at)
    return {"seen": len(first), "in_window": sum(1 for at in first.values() if at >= start)}


def role_of(cmdline: list[str]) -> str:
    """Which part of the node a process of this Ray session is, from its command line."""
    cmd = " ".join(cmdline)
    program = Path(cmdline[0]).name if cmdline else ""
    if cmd.startswith("ray::ServeReplica"):
        return "replicas"
    if cmd.startswith("ray::ServeController"):
        return "serve_controller"
    if cmd.startswith(("ray::ProxyActor", "ray::HAProxyManager")) or program == "haproxy":
        return "ingress"  # HAProxy, its manager actor, and Serve's Python proxy (idle under HAProxy)
    if cmd.startswith("ray::ModelStore"):
        return "model_store"
    if cmd.startswith("ray::IDLE"):
        return "idle_workers"  # pre-started workers, the spare warm worker (deployments/warm_worker.py)
    return "ray_system"  # raylet, GCS, Ray's agents and log monitor, any other worker


def _session_processes() -> list[psutil.Process]:
    """Every process this one started, at any depth: the whole local Ray session."""
    return psutil.Process().children(recursive=True)


def node_memory(processes: list[psutil.Process] | None = None) -> dict[str, Any]:
    """USS, PSS and RSS (MiB) summed by role and in total over `processes` (default: this session's)."""
    by_role = {role: {"processes": 0, "uss_mib": 0.0, "pss_mib": 0.0, "rss_mib": 0.0} for role in ROLES}
    for proc in _session_processes() if processes is None else processes:
        try:
            role = role_of(proc.cmdline())
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # gone meanwhile
        entry = by_role[role]
        entry["processes"] += 1
        for key, value in (("uss_mib", info.uss), ("pss_mib", info.pss), ("rss_mib", info.rss)):
            entry[key] += value / MIB
    total = {k: sum(r[k] for r in by_role.values()) for k in ("processes", "uss_mib", "pss_mib", "rss_mib")}
    return {"total": total, "by_role": by_role}


def _median_memory(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the samples (and the peak of the totals)."""

    def med(values: list[float]) -> float:
        return round(statistics.median(values), 1)

    keys = ("processes", "uss_mib", "pss_mib", "rss_mib")
    return {
        "samples": len(samples),
        "total": {k: med([s["total"][k] for s in samples]) for k in keys},
        "peak_total": {k: round(max(s["total"][k] for s in samples), 1) for k in keys[1:]},
        "by_role": {role: {k: med([s["by_role"][role][k] for s in samples]) for k in keys} for role in ROLES},
    }


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


class RoundRobinUsers(ClosedLoopUsers):
    """The harness's closed-loop users, each cycling over `routes` (user i starts at route i) and
    sending real `texts`; rows: (epoch, route, status, latency ms, x-replica-id, x-weights-load-ms)."""

    def __init__(self, url: str, routes: list[str], texts: list[str], requests: list[tuple]) -> None:
        super().__init__(url, routes[0], requests)
        self.routes, self.texts = routes, texts
        self._users = itertools.count()

    def _run(self, client: httpx.Client) -> None:
        user = next(self._users)
        with client:
            for k in itertools.count(user):
                if self.stop.is_set():
                    return
                route = self.routes[k % len(self.routes)]
                text = self.texts[(user * 7919 + k) % len(self.texts)]
                started = time.perf_counter()
                r = post_text(client, self.url, route, text)
                latency_ms = (time.perf_counter() - started) * 1e3
                row = (
                    time.time(),
                    route,
                    r.status_code if r is not None else 0,
                    latency_ms,
                    r.headers.get("x-replica-id", "") if r is not None else "",
                    r.headers.get("x-weights-load-ms", "") if r is not None else "",
                )
                with self.lock:
                    self.requests.append(row)


def _memory_sampler(every_s: float, samples: list[dict[str, Any]], stop: threading.Event) -> threading.Thread:
    def run() -> None:
        while not stop.wait(every_s):
            samples.append(node_memory())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _measure(url: str, routes: list[str], texts: list[str], args: Any) -> dict[str, Any]:
    """`args.users` round-robin users: `args.warmup_s` unmeasured, then `args.seconds` measured, the
    node's memory sampled every `args.memory_every_s` meanwhile (and once at the end)."""
    rows: list[tuple] = []
    users = RoundRobinUsers(url, routes, texts, rows)
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    try:
        users.add(args.users)
        time.sleep(args.warmup_s)
        start = time.time()
        sampler = _memory_sampler(args.memory_every_s, samples, stop)
        time.sleep(args.seconds)
        end = time.time()
        stop.set()
        sampler.join()
        samples.append(node_memory())  # still under load: the users stop below
    finally:
        stop.set()
        users.close()
    return {
        "load": summarize_requests(rows, start, end) | {"attaches": _attaches(rows, start)},
        "memory": _median_memory(samples),
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
        alive = set()
        for proc in _session_processes():
            try:
                if role_of(proc.cmdline()) == "replicas":
                    alive.add(proc.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return alive <= pids

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


def _pool_held(url: str, asks: int = 20) -> dict[str, int]:
    """{replica id: variants it holds}, from the pool's /healthz asked `asks` times (both replicas answer)."""
    held: dict[str, int] = {}
    with httpx.Client(timeout=10) as client:
        for _ in range(asks):
            try:
                body = client.get(f"{url}/pool/healthz").json()
            except (httpx.HTTPError, ValueError):
                continue
            held[body.get("replica_id", "?")] = len(body.get("held", {}))
    return held


def _stored_weights_mib() -> float:
    """The weights the model store holds in the object store (every arena, once)."""
    import ray

    from loading.model_store import model_store

    stored = ray.get(model_store().variants.remote())
    return round(sum(v.get("arena_bytes", 0) for v in stored.values()) / MIB, 1)


def _cpu() -> dict[str, Any]:
    """`lscpu`'s model name and whether the CPU has AVX-512 VNNI (int8 matmuls) and AMX."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    return {
        "model_name": fields.get("Model name", "unknown").strip(),
        "avx512_vnni": "avx512_vnni" in flags,
        "amx_int8": "amx_int8" in flags,
    }


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
        "cpu": _cpu(),
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
        setups["dedicated"]["stored_weights_mib"] = _stored_weights_mib()
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
            setups[label] |= {"max_models": max_models, "held_per_replica": _pool_held(url)}
            setups[label]["stored_weights_mib"] = _stored_weights_mib()
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
    p.add_argument(
        "--users", type=positive_int, default=32, help="closed-loop users, round-robin over models"
    )
    p.add_argument("--seconds", type=float, default=60.0, help="measured, per setup")
    p.add_argument("--warmup-s", type=float, default=15.0, help="load before each measured window")
    p.add_argument("--memory-every-s", type=float, default=15.0, help="node memory samples under load")
    p.add_argument("--pool-replicas", type=positive_int, default=2)
    p.add_argument("--churn-max-models", type=int, default=8, help="the LRU pool's max_models (0: skip it)")
    p.add_argument(
        "--dedicated-num-cpus", type=float, default=0.05, help="logical CPUs per dedicated replica"
    )
    p.add_argument("--source", default=str(ROOT / "artifacts" / "base"), help="the artifact to clone")
    p.add_argument("--clones-dir", default=str(CLONES_DIR), help="where the clones are built and kept")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deploy-timeout-s", type=float, default=600.0)
    p.add_argument(
        "--out", default=None, help=f"record file (default {RECORD.relative_to(ROOT)}; --quick: reports/)"
    )
    p.add_argument("--quick", action="store_true", help="3 models, 6 users, seconds-long phases")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.users, args.seconds, args.warmup_s, args.memory_every_s = 3, 6, 8.0, 4.0, 4.0
        args.churn_max_models = 2
    if args.seconds <= 0 or args.warmup_s < 0 or args.memory_every_s <= 0 or args.dedicated_num_cpus <= 0:
        p.error("--seconds, --memory-every-s and --dedicated-num-cpus must be > 0, --warmup-s >= 0")
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
    out = (
        Path(args.out)
        if args.out
        else (ROOT / "reports" / "many_models_quick.json" if args.quick else RECORD)
    )
    setup_logging()
    command = " ".join(["python -m benchmarks.many_models", *(sys.argv[1:] if argv is None else argv)])
    result = run(args, command)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    logger.info("wrote %s", out)
    emit(result, args.json, summary_lines(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
