"""A spike on one variant, taken by the warm pool vs by the variant's own app: `python -m benchmarks.spike`.

Both on one private local Ray + Serve (127.0.0.1), deployed from `serve_config.yaml`. First the pool
(2 warm replicas) serves all variants at a light load, then the load on one variant steps to
saturation: how soon is that variant served at >= 90% of the pool's steady capacity, and by how many
replicas? Then the same step on the variant's own application (1 replica, autoscaling): it must add
a replica process. Then switching: a pool replica serving BERT-base-shaped variants it has not held
(a first attach) and ones it holds, as extra latency over a held one.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness.cli import emit, parser, positive_int, setup_logging
from benchmarks.harness.load import SHORT_TEXT, ClosedLoopUsers, wait_serving, wait_until
from benchmarks.harness.models import BERT_BASE_DIR, build_random_bert
from benchmarks.harness.replicas import memory_mib
from benchmarks.harness.session import ServeSession, app_entry, pool_entry
from deployments.serve_config import DEFAULT_MODEL, load_serve_config
from loading.host import machine_info

__all__ = ["main", "rate_timeline", "time_to_fraction"]

logger = logging.getLogger(__name__)

BIN_S = 0.1  # resolution of the request-rate timeline
WINDOW_S = 0.5  # the rate at t is the answers in (t - WINDOW_S, t]: short enough to see a 1 s ramp


def rate_timeline(times: list[float], start: float, end: float) -> list[tuple[float, float]]:
    """(t, answers/s over the trailing `WINDOW_S`) every `BIN_S` from `start` to `end`, t from `start`."""
    times = sorted(times)
    out, lo, hi = [], 0, 0
    t = start + WINDOW_S
    while t <= end + 1e-9:
        while hi < len(times) and times[hi] <= t:
            hi += 1
        while lo < hi and times[lo] <= t - WINDOW_S:
            lo += 1
        out.append((round(t - start, 3), (hi - lo) / WINDOW_S))
        t += BIN_S
    return out


def time_to_fraction(
    timeline: list[tuple[float, float]], capacity: float, fraction: float = 0.9, sustain_s: float = 2.0
) -> float | None:
    """First t from which at least 80% of the windows over the next `sustain_s` reach `fraction` x
    `capacity`: a lasting level, not one lucky window (nor lost to one unlucky one); None if never."""
    level = fraction * capacity
    for i, (t, rate) in enumerate(timeline):
        ahead = sorted(r for u, r in timeline[i:] if u <= t + sustain_s)
        if rate >= level and timeline[-1][0] >= t + sustain_s and ahead[len(ahead) // 5] >= level:
            return t
    return None


def _step(
    url: str, spiked: str, light: list[str], users: int, warm_s: float, hold_s: float
) -> dict[str, Any]:
    """Light users on `light` routes for `warm_s`, then `users` more on `spiked` for `hold_s`."""
    background: list[tuple[float, str, int]] = []
    spike: list[tuple[float, str, int]] = []
    loads = [ClosedLoopUsers(url, route, background) for route in light]
    spiking = ClosedLoopUsers(url, spiked, spike)
    try:
        for load in loads:
            load.add(1)
        spiking.prepare(users)
        time.sleep(warm_s)
        step_at = time.time()
        spiking.start()
        time.sleep(hold_s)
        end = time.time()
    finally:
        spiking.close()
        for load in loads:
            load.close()
    ok = [at for at, _, status in spike if status == 200 and at <= end]
    timeline = rate_timeline(ok, step_at, end)
    steady = [rate for t, rate in timeline if t >= hold_s / 2]  # the second half of the step
    first_s: dict[str, float] = {}
    for at, rid, status in spike:
        if status == 200:
            first_s.setdefault(rid, round(at - step_at, 3))
    return {
        "steady_rps": statistics.median(steady) if steady else 0.0,
        "timeline": timeline,
        "replica_first_answer_s": first_s,
        "requests": len(spike) + len(background),
        "failed": sum(1 for _, _, s in spike + background if s != 200),
        "background_rps": round(len(background) / (warm_s + hold_s), 2),
    }


def spike(session: ServeSession, variant: str, users: int, warm_s: float, hold_s: float) -> dict[str, Any]:
    """The pool (2 warm replicas) vs `variant`'s own app (1 replica + autoscaling) under one step."""
    pool, own = pool_entry(session.config, replicas=2), app_entry(session.config, variant)
    served = pool["args"]["models"][DEFAULT_MODEL]  # the default model's variants, as its own apps
    routes = {v: f"{pool['route_prefix'].strip('/')}/{v}" for v in sorted(served)}
    if variant not in routes:
        raise SystemExit(f"--variant {variant!r} is not in the pool; it serves {list(routes)}")
    session.deploy([pool, own])
    for route in [*routes.values(), variant]:
        wait_serving(session.url, route, 300)
    pooled = _step(session.url, routes[variant], list(routes.values()), users, warm_s, hold_s)
    time.sleep(5)  # the pool's queues drain
    # The own app's step lasts until its added replica has served and the rate settled.
    others = [r for v, r in routes.items() if v != variant]
    dedicated = _step(session.url, variant, others, users, warm_s, max(hold_s, 60.0))
    for run in (pooled, dedicated):
        run["time_to_90pct_of_pool_capacity_s"] = time_to_fraction(run["timeline"], pooled["steady_rps"])
    ratio = round(pooled["steady_rps"] / dedicated["steady_rps"], 3) if dedicated["steady_rps"] else None
    return {
        "variant": variant,
        "users": users,
        "pool": pooled,
        "own_app": dedicated,
        "pool_vs_own_app_steady_rps": ratio,
    }


def _health(client: httpx.Client, url: str) -> dict[str, Any]:
    try:
        r = client.get(f"{url}/healthz")
        return r.json() if r.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return {}


def switching(session: ServeSession, model_dir: Path, variants: int, repeats: int) -> dict[str, Any]:
    """Extra latency of a pool replica's request for a variant it does not hold (a first attach) and
    for one it holds but did not serve last, each against the same variant's request right after.

    One replica, `variants` names for one BERT-base-shaped folder (each its own store entry and arena).
    Requests alternate so that each pair runs under the same machine noise.
    """
    names = [f"bb-{i}" for i in range(variants)]
    pool = pool_entry(
        session.config,
        replicas=1,
        models={DEFAULT_MODEL: dict.fromkeys(names, str(model_dir))},
        max_models=len(names),
    )
    session.deploy([pool])
    url = f"{session.url}/{pool['route_prefix'].strip('/')}"
    with httpx.Client(timeout=60) as client:
        # The spike's pool answers until Serve has replaced it with this one.
        first = f"{DEFAULT_MODEL}/{names[0]}"
        wait_until(lambda: first in _health(client, url).get("variants", []), 600, "pool of BERT-base")

        def post(name: str) -> tuple[float, float]:
            start = time.perf_counter()
            r = client.post(f"{url}/{name}/classify", json={"text": SHORT_TEXT})
            if r.status_code != 200:
                raise SystemExit(f"switching: {name} answered {r.status_code}: {r.text[:200]}")
            return (time.perf_counter() - start) * 1e3, float(r.headers["x-weights-load-ms"])

        for _ in range(3):
            post(names[0])  # the replica's first requests warm torch: not counted
        not_held, attach_ms = [], []
        for name in names[1:]:
            post(names[0])
            (first, attached), (again, _) = post(name), post(name)
            not_held.append(first - again)
            attach_ms.append(attached)
        held = []
        for i in range(repeats):
            a, b = names[i % len(names)], names[(i + 1) % len(names)]
            post(a)
            after_other, after_same = post(b)[0], post(b)[0]
            held.append(after_other - after_same)
        same = [post(names[0])[0] for _ in range(repeats)]
        health = _health(client, url)
    startup = health.get("startup", {})
    memory = memory_mib(health["pid"]) if "pid" in health else None
    return {
        # What holding every variant ready costs the replica: its start and its private memory.
        "replica_init_s": round(startup["ready"] - startup["init_started"], 3) if startup else None,
        "replica_uss_mib": round(memory["uss_mib"], 1) if memory else None,
        "model_dir": str(model_dir),
        "variants": len(names),
        "request_ms_median": round(statistics.median(same), 2),
        "not_held_extra_ms": [round(x, 2) for x in not_held],
        "not_held_extra_ms_median": round(statistics.median(not_held), 2),
        "not_held_attach_ms": [round(a, 3) for a in attach_ms],
        "held_switch_extra_ms_median": round(statistics.median(held), 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = parser(__name__, __doc__, serve_port=8000)
    p.add_argument("--variant", default="base", help="the variant whose load steps up")
    # 2 x max_batch_size: both pool replicas saturated, and above the own app's target of 16 ongoing
    # requests per replica, so that its autoscaler adds one.
    p.add_argument("--users", type=positive_int, default=32, help="closed-loop users of the step")
    p.add_argument("--warm-s", type=float, default=10.0, help="light load before the step")
    p.add_argument("--hold-s", type=float, default=30.0, help="the step's length on the pool")
    p.add_argument("--bert-base", default=str(BERT_BASE_DIR), help="for the switching part ('' skips it)")
    p.add_argument("--repeats", type=positive_int, default=20, help="held-variant switches timed")
    p.add_argument("--switch-variants", type=int, default=6, help="BERT-base variants in the switching pool")
    p.add_argument("--quick", action="store_true", help="short phases (a few minutes in all)")
    p.add_argument("--switching-only", action="store_true", help="skip the spike, time switching only")
    args = p.parse_args(argv)
    if args.switch_variants < 2 or args.warm_s < 0 or args.hold_s <= 4 * WINDOW_S:
        p.error(f"--switch-variants must be >= 2, --warm-s >= 0 and --hold-s > {4 * WINDOW_S}")
    if args.quick:
        args.warm_s, args.hold_s, args.repeats, args.switch_variants = 5.0, 12.0, 5, 3
    bert_base = Path(args.bert_base) if args.bert_base else None
    if args.switching_only and bert_base is None:
        p.error("--switching-only needs a --bert-base folder (it times switching between its copies)")
    if bert_base is not None and not (bert_base / "config.json").is_file():
        if bert_base.exists():
            p.error(f"--bert-base {bert_base}: not a model folder (no config.json)")
        build_random_bert(bert_base)  # random weights: the shape is what is measured
    setup_logging()
    result: dict[str, Any] = {
        "machine": machine_info(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    summary = []
    with ServeSession(load_serve_config(args.config), port=args.port) as session:
        if not args.switching_only:
            result["spike"] = spike(session, args.variant, args.users, args.warm_s, args.hold_s)
            for name, run in (("pool", result["spike"]["pool"]), ("own app", result["spike"]["own_app"])):
                summary.append(
                    f"{name}: {run['steady_rps']:.1f} req/s steady, 90% of the pool's capacity after "
                    f"{run['time_to_90pct_of_pool_capacity_s']} s, {len(run['replica_first_answer_s'])} "
                    f"replicas served the step, {run['failed']} failed"
                )
        if bert_base is not None:
            sw = result["switching"] = switching(session, bert_base, args.switch_variants, args.repeats)
            summary.append(
                f"switching (BERT-base, {sw['request_ms_median']} ms a request): not held "
                f"+{sw['not_held_extra_ms_median']} ms (attach {sw['not_held_attach_ms']} ms), held but not "
                f"last +{sw['held_switch_extra_ms_median']} ms; the replica's __init__ took "
                f"{sw['replica_init_s']} s and it holds {sw['replica_uss_mib']} MiB USS"
            )
    emit(result, args.json, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
