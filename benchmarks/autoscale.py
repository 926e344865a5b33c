"""Autoscaling under a step load, up and back down: `python -m benchmarks.autoscale --json`.

One variant is deployed with its `autoscaling_config` on a private local Ray + Serve. Closed-loop
users send single texts: a few, then many at the step, then none. Serve's status is sampled every
0.25 s: the report shows when the autoscaler decided (target replicas up), when each new replica
served its first 200 (by `x-replica-id`), and when replicas came back down to the minimum after the
load stopped. `--plot`: replicas and requests/s over time. `--quick`: a short step, no scale-down.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness.cli import emit, parser, setup_logging
from benchmarks.harness.load import ClosedLoopUsers, wait_serving, wait_until
from benchmarks.harness.replicas import replica_counts
from benchmarks.harness.session import ServeSession, app_entry
from deployments.serve_config import load_serve_config
from loading.host import machine_info

__all__ = ["StepLoad", "main", "step_load", "summarize"]


@dataclass
class StepLoad:
    """What a step-load run recorded: requests and Serve's replica counts, on the epoch clock."""

    requests: list[tuple[float, str, int]] = field(default_factory=list)  # (time, replica id, status)
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (time, running, target)
    step_at: float = 0.0
    stop_at: float | None = None
    min_again_at: float | None = None  # back at min replicas, as the waiter saw it


def step_load(
    session: ServeSession,
    variant: str,
    users: tuple[int, int],
    *,
    warm_s: float,
    hold_s: float,
    timeout_s: float,
    scale_down: bool = True,
) -> dict[str, Any]:
    """Deploy `variant` with its autoscaling, step `users[0]` -> `users[1]` until max replicas all
    serve, hold `hold_s` longer, stop the load and (with `scale_down`) wait for the minimum again."""
    app = app_entry(session.config, variant)
    scaling = app["deployments"][0].get("autoscaling_config") or {}
    low, high = scaling.get("min_replicas", 1), scaling.get("max_replicas", 1)
    if high <= low:
        raise SystemExit(f"{variant}: its autoscaling_config cannot scale up (min {low}, max {high})")
    session.deploy([app])
    wait_serving(session.url, variant)
    wait_until(lambda: replica_counts(variant)[0] == low, timeout_s, f"{variant} at min replicas", 0.1)
    record, sampling = StepLoad(), threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            record.samples.append((time.time(), *replica_counts(variant)))
            sampling.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    load = ClosedLoopUsers(session.url, variant, record.requests)
    try:
        load.add(users[0])
        time.sleep(warm_s)
        record.step_at = time.time()
        load.add(users[1] - users[0])
        before = {rid for at, rid, _ in list(record.requests) if at < record.step_at}

        def serving() -> int:
            return len({rid for _, rid, s in list(record.requests) if s == 200} - before)

        wait_until(lambda: serving() >= high - len(before), timeout_s, f"{variant} at {high} replicas", 0.05)
        time.sleep(hold_s)
    finally:
        load.close()
    record.stop_at = time.time()
    try:
        if scale_down:
            record.min_again_at, _ = wait_until(
                lambda: replica_counts(variant)[0] == low, timeout_s, f"{variant} back at min", 0.25
            )
    finally:
        sampling.set()
        sampler.join()
    record.samples.append((time.time(), *replica_counts(variant)))  # the end state, as last seen
    return summarize(record, before, scaling, users)


def summarize(
    record: StepLoad, before: set[str], scaling: dict[str, Any], users: tuple[int, int]
) -> dict[str, Any]:
    """Times from the step (and from the load's stop) to each scaling event; request counts."""
    step, stop = record.step_at, record.stop_at
    low = scaling.get("min_replicas", 1)
    firsts: dict[str, float] = {}
    for at, rid, status in record.requests:
        if status == 200 and rid not in before:
            firsts.setdefault(rid, at - step)
    decided = next((t - step for t, _, target in record.samples if t >= step and target > low), None)
    peak = max((running for _, running, _ in record.samples), default=0)
    down = record.min_again_at - stop if record.min_again_at and stop else None
    return {
        "users_before_after": list(users),
        "autoscaling_config": scaling,
        "replicas_before": len(before),
        "peak_replicas": peak,
        "step_to_decision_s": decided,
        "new_replicas_first_200_s": sorted(firsts.values()),
        "step_to_full_capacity_s": max(firsts.values()) if firsts else None,
        "load_stop_to_min_replicas_s": down,
        "requests": len(record.requests),
        "failed": sum(1 for _, _, s in record.requests if s != 200),
        "timeline": {
            "samples": [(round(t - step, 2), r, g) for t, r, g in record.samples],
            "stop_s": round(stop - step, 2) if stop else None,
        },
        "_requests": [(at - step, rid, status) for at, rid, status in record.requests],
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """Replicas (running, target) and served requests/s over time from the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    samples = result["timeline"]["samples"]
    times = [t for t, _, _ in samples]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.step(times, [r for _, r, _ in samples], where="post", label="running replicas")
    ax.step(times, [g for _, _, g in samples], where="post", linestyle="--", label="target replicas")
    ax.set(xlabel="seconds from the load step", ylabel="replicas")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    rate = Counter(
        math.floor(at) for at, _, status in result["_requests"] if status == 200
    )  # s from the step
    twin = ax.twinx()
    seconds = sorted(rate)
    twin.plot(seconds, [rate[s] for s in seconds], color="grey", alpha=0.6, label="requests/s (200)")
    twin.set_ylabel("requests/s")
    ax.axvline(0, color="black", linewidth=0.8)
    if result["timeline"]["stop_s"] is not None:
        ax.axvline(result["timeline"]["stop_s"], color="black", linewidth=0.8, linestyle=":")
    low, high = result["users_before_after"]
    ax.set_title(f"{result['variant']}: {low} -> {high} users at 0 s, load stopped at the dotted line")
    (lines, labels), (more, more_labels) = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
    ax.legend(lines + more, labels + more_labels, loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = parser("benchmarks.autoscale", __doc__, serve_port=8100)
    p.add_argument("--variant", default="base")
    p.add_argument("--users", default="2,32", help="users before,after the step")
    p.add_argument("--warm", type=float, default=10.0, help="seconds at the low load before the step")
    p.add_argument("--hold", type=float, default=20.0, help="seconds at full capacity before stopping")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds any one wait may take")
    p.add_argument("--plot", type=Path, default=None, help="write the timeline as a PNG here")
    p.add_argument("--quick", action="store_true", help="short step, no scale-down wait: < 1 minute")
    args = p.parse_args(argv)
    try:
        low, high = (int(u) for u in args.users.split(","))
    except ValueError:
        p.error(f"--users must be two whole numbers like 2,32, got {args.users!r}")
    if not 0 < low < high:
        p.error(f"--users must rise from at least 1, got {args.users!r}")
    setup_logging()
    config = load_serve_config(args.config)
    out: dict[str, Any] = {"machine": machine_info(), "quick": args.quick, "variant": args.variant}
    steps = {"warm_s": 3.0, "hold_s": 2.0} if args.quick else {"warm_s": args.warm, "hold_s": args.hold}
    with ServeSession(config, args.port) as session:
        result = step_load(
            session, args.variant, (low, high), **steps, timeout_s=args.timeout, scale_down=not args.quick
        )
    requests = result.pop("_requests")
    out |= result
    if args.plot:
        plot({**out, "_requests": requests}, args.plot)
    out["machine_after"] = machine_info()
    summary = (
        f"{args.variant}: {low} -> {high} users; autoscaler decided after {result['step_to_decision_s']} s, "
        f"new replicas' first 200 at {[round(s, 1) for s in result['new_replicas_first_200_s']]} s; "
        f"back at min {result['load_stop_to_min_replicas_s']} s after the load stopped; "
        f"{result['failed']} of {result['requests']} requests failed"
    )
    emit(out, args.json, [summary])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
