"""Cold start of the served variants: `python -m benchmarks.coldstart --json`.

Three measurements on a private local Ray + Serve deployed from `serve_config.yaml` (127.0.0.1):

(a) application: from submitting the config (as `serve deploy` does) to each variant's first 200;
    a variant's first replica also waits for the store to read it from disk.
(b) replica: with one replica serving, Serve is asked for a second; from that request to the new
    replica's first 200 (told apart by `x-replica-id`), split by the replica's own clock into the
    `PHASES`. Once with weights mapped zero-copy from the store (the node already holds them), once
    reading them from disk (`weights: disk`).
(c) scale-up: the config's autoscaling under a step load, from the step to each added replica's first
    200; `benchmarks.autoscale` also follows it back down.

`--quick` measures base only, once each, in < 1 minute.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import httpx

from benchmarks.autoscale import step_load
from benchmarks.harness.cli import emit, parser, setup_logging
from benchmarks.harness.load import post_text, wait_until
from benchmarks.harness.replicas import replica_counts, replica_health
from benchmarks.harness.session import ServeSession, app_entry
from deployments.serve_config import load_serve_config
from loading.host import machine_info

__all__ = ["app_cold_start", "breakdown", "main", "replica_cold_start"]

logger = logging.getLogger(__name__)

PHASES = (  # (name, from, to) over the replica's startup clock; "asked"/"first_200" are the driver's
    ("to_process_start_s", "asked", "process_started"),
    ("boot_and_imports_s", "process_started", "init_started"),  # Ray worker, torch, transformers, ours
    ("model_code_import_s", "init_started", "weights_started"),  # the model class's module
    ("weights_s", "weights_started", "weights_done"),
    ("init_rest_s", "weights_done", "ready"),
    ("ready_to_first_200_s", "ready", "first_200"),
)


def breakdown(asked: float, first_200: float, startup: dict[str, Any]) -> dict[str, float]:
    """Seconds per phase of one replica's cold start; they sum to `total_s`."""
    clock = {**startup, "asked": asked, "first_200": first_200}
    phases = {name: clock[end] - clock[begin] for name, begin, end in PHASES}
    phases["first_inference_s"] = (startup.get("first_inference_ms") or 0.0) / 1e3
    phases["total_s"] = first_200 - asked
    phases["weights_share"] = phases["weights_s"] / phases["total_s"]
    return phases


def app_cold_start(session: ServeSession, variants: list[str], timeout_s: float) -> dict[str, Any]:
    """Submit every variant's application at once; seconds to each one's first 200."""
    submitted = session.deploy([app_entry(session.config, v) for v in variants])
    first: dict[str, float] = {}
    with httpx.Client() as client:

        def all_up() -> bool:
            for v in set(variants) - set(first):
                if (r := post_text(client, session.url, v)) is not None and r.status_code == 200:
                    first[v] = time.time() - submitted
            return len(first) == len(variants)

        wait_until(all_up, timeout_s, "application cold start: every variant up")
        health = {v: client.get(f"{session.url}/{v}/healthz", timeout=30).json() for v in variants}
    keys = ("store_wait_ms", "weights_load_ms")
    return {v: {"first_200_s": first[v], **{k: health[v][k] for k in keys}} for v in variants}


def replica_cold_start(
    session: ServeSession, variant: str, weights: str, repeats: int, timeout_s: float
) -> list[dict[str, float]]:
    """One replica serving, ask for a second, time it; `repeats` times (scaling back to 1 between)."""
    source = "disk" if weights == "disk" else "object-store"
    seen: set[str] = set()

    def deploy(replicas: int) -> float:
        return session.deploy([app_entry(session.config, variant, replicas=replicas, weights=weights)])

    def answered(new_only: bool) -> httpx.Response | None:
        r = post_text(client, session.url, variant)
        if r is None or r.status_code != 200 or not r.headers["x-weights-loaded-from"].startswith(source):
            return None  # not serving, or a replica of the previous deployment, still draining
        return None if new_only and r.headers["x-replica-id"] in seen else r

    deploy(1)
    results = []
    with httpx.Client() as client:
        wait_until(lambda: answered(False), timeout_s, f"{variant} ({weights}) serving")
        wait_until(lambda: replica_counts(variant)[0] == 1, timeout_s, "one replica", 0.1)
        for _ in range(5):
            r = post_text(client, session.url, variant)
            if r is not None:
                seen.add(r.headers.get("x-replica-id", ""))
        for _ in range(repeats):
            asked = deploy(2)
            first_200, r = wait_until(lambda: answered(True), timeout_s, f"a new {variant} replica")
            new_id = r.headers["x-replica-id"]
            health = replica_health(session.url, variant, new_id)
            if health is None:
                raise TimeoutError(f"no /healthz from replica {new_id}")
            results.append(breakdown(asked, first_200, health["startup"]))
            seen.add(new_id)
            logger.info("%s %s: new replica served after %.2f s", variant, weights, first_200 - asked)
            deploy(1)
            wait_until(lambda: replica_counts(variant)[0] == 1, timeout_s, "back to one replica", 0.1)
    return results


def main(argv: list[str] | None = None) -> int:
    p = parser("benchmarks.coldstart", __doc__, serve_port=8100)
    p.add_argument("--variants", default=None, help="default: every variant in the config (quick: base)")
    p.add_argument("--replica-variants", default="base,quant", help="variants for (b)")
    p.add_argument("--repeats", type=int, default=3, help="replica cold starts per variant and source")
    p.add_argument("--scale-variant", default="base")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds any one wait may take")
    p.add_argument("--quick", action="store_true", help="base only, once each: < 1 minute")
    args = p.parse_args(argv)
    setup_logging()
    config = load_serve_config(args.config)
    variants = (args.variants or ("base" if args.quick else ",".join(config.classifier_apps()))).split(",")
    replica_variants = ["base"] if args.quick else args.replica_variants.split(",")
    repeats = 1 if args.quick else args.repeats
    if repeats < 1:
        p.error(f"--repeats must be >= 1, got {repeats}")
    out: dict[str, Any] = {"machine": machine_info(), "quick": args.quick}
    with ServeSession(config, args.port) as session:
        out["ray_and_serve_start_s"] = session.start_s
        out["application"] = app_cold_start(session, variants, args.timeout)
        summary = [
            f"(a) {v:>16}: first 200 {x['first_200_s']:.2f} s after deploy, store {x['store_wait_ms']:.0f} ms"
            for v, x in out["application"].items()
        ]
        out["replica"] = {}
        for variant in replica_variants:
            for weights in ("store", "disk"):
                runs = replica_cold_start(session, variant, weights, repeats, args.timeout)
                m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                out["replica"][f"{variant}/{weights}"] = {"runs": runs, "median": m}
                summary.append(
                    f"(b) {variant:>8} {weights:>5}: {m['total_s']:.2f} s to first 200 = "
                    + ", ".join(f"{name[:-2]} {m[name]:.3f}" for name, _, _ in PHASES)
                )
            store = out["replica"][f"{variant}/store"]["median"]
            disk = out["replica"][f"{variant}/disk"]["median"]
            out["replica"][f"{variant}/disk_over_store"] = disk["total_s"] / store["total_s"]
            summary.append(
                f"    {variant}: disk / zero-copy = {disk['total_s'] / store['total_s']:.2f}x; weights "
                f"{store['weights_share']:.1%} of a zero-copy cold start, "
                f"{disk['weights_share']:.1%} from disk"
            )
        if not args.quick:
            steps = {"warm_s": 5.0, "hold_s": 0.0, "timeout_s": args.timeout, "scale_down": False}
            s = out["scale_up"] = step_load(session, args.scale_variant, (2, 48), **steps)
            s.pop("_requests")
            summary.append(
                f"(c) {args.scale_variant}: step {s['users_before_after']} users -> new replicas' "
                f"first 200 at {s['new_replicas_first_200_s']} s; "
                f"{s['failed']} of {s['requests']} requests failed"
            )
    out["machine_after"] = machine_info()
    emit(out, args.json, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
