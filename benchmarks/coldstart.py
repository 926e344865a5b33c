"""Cold start of the served variants: `python -m benchmarks.coldstart --json`.

Three measurements on a private local Ray + Serve deployed from `serve_config.yaml` (127.0.0.1):

(a) application: from submitting the config (as `serve run`/`serve deploy` does) to each variant's
    first 200; the first replica of a variant also waits for the store to read it from disk.
(b) replica: with one replica serving, Serve is asked for a second; from that request to the new
    replica's first 200 (told apart by `x-replica-id`), split by the replica's own clock into
    process start, Ray worker boot and imports, the model class's import, weights, the rest of
    `__init__`, and routing plus first inference. Once with weights mapped zero-copy from the
    store (the node already holds them) and once with the same deployment reading them from disk
    (`weights: disk`).
(c) scale-up: the config's autoscaling deployment under a step load, from the step to the first 200
    of each added replica (the new capacity serving); `benchmarks.autoscale` also follows it back down.

The last stdout line is one JSON object. `--quick` measures base only, once each, in < 1 minute.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx

from loading.host import machine_info
from benchmarks.autoscale import step_load
from benchmarks.harness.session import ServeSession, app_entry, load_serve_config, post_text, variant_apps, wait_until

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
        deadline = time.monotonic() + timeout_s
        while len(first) < len(variants):
            if time.monotonic() > deadline:
                raise TimeoutError(f"application cold start: {sorted(set(variants) - set(first))} not up")
            for variant in variants:
                if variant not in first:
                    r = post_text(client, session.url, variant)
                    if r is not None and r.status_code == 200:
                        first[variant] = time.time() - submitted
            time.sleep(0.005)
        health = {v: client.get(f"{session.url}/{v}/healthz", timeout=30).json() for v in variants}
    return {
        v: {
            "first_200_s": first[v],
            "store_wait_ms": health[v]["store_wait_ms"],
            "weights_load_ms": health[v]["weights_load_ms"],
        }
        for v in variants
    }


def _replicas_running(variant: str) -> int:
    from ray import serve

    app = serve.status().applications.get(variant)
    if app is None:
        return 0
    return sum(d.replica_states.get("RUNNING", 0) for d in app.deployments.values())


def _health_of(client: httpx.Client, url: str, variant: str, replica_id: str) -> dict[str, Any]:
    """/healthz as answered by one given replica (requests are spread, so ask until it answers)."""

    def ask() -> dict[str, Any] | None:
        body = client.get(f"{url}/{variant}/healthz", timeout=30).json()
        return body if body.get("replica_id") == replica_id else None

    return wait_until(ask, 30, f"/healthz from replica {replica_id}")[1]


def replica_cold_start(
    session: ServeSession, variant: str, weights: str, repeats: int, timeout_s: float
) -> list[dict[str, float]]:
    """One replica serving, ask for a second, time it; `repeats` times (scaling back to 1 between)."""
    source = "disk" if weights == "disk" else "object-store"
    seen: set[str] = set()
    session.deploy([app_entry(session.config, variant, replicas=1, weights=weights)])
    results = []
    with httpx.Client() as client:

        def answered(new_only: bool) -> Callable[[], httpx.Response | None]:
            def check() -> httpx.Response | None:
                r = post_text(client, session.url, variant)
                if r is None or r.status_code != 200:
                    return None
                if not r.headers["x-weights-loaded-from"].startswith(source):
                    return None  # a replica of the previous deployment, still draining
                if new_only and r.headers["x-replica-id"] in seen:
                    return None
                return r

            return check

        wait_until(answered(False), timeout_s, f"{variant} ({weights}) serving")
        wait_until(lambda: _replicas_running(variant) == 1, timeout_s, "one replica", 0.1)
        for _ in range(5):
            r = post_text(client, session.url, variant)
            if r is not None:
                seen.add(r.headers.get("x-replica-id", ""))
        for _ in range(repeats):
            asked = session.deploy([app_entry(session.config, variant, replicas=2, weights=weights)])
            first_200, r = wait_until(answered(True), timeout_s, f"a new {variant} replica ({weights})")
            new_id = r.headers["x-replica-id"]
            startup = _health_of(client, session.url, variant, new_id)["startup"]
            results.append(breakdown(asked, first_200, startup))
            seen.add(new_id)
            logger.info("%s %s: new replica served after %.2f s", variant, weights, first_200 - asked)
            session.deploy([app_entry(session.config, variant, replicas=1, weights=weights)])
            wait_until(lambda: _replicas_running(variant) == 1, timeout_s, "back to one replica", 0.1)
    return results


def _median_breakdown(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.coldstart", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", default="serve_config.yaml")
    parser.add_argument("--variants", default=None, help="default: every variant in the config (quick: base)")
    parser.add_argument("--replica-variants", default="base,quant", help="variants for (b)")
    parser.add_argument("--repeats", type=int, default=3, help="replica cold starts per variant and source")
    parser.add_argument("--scale-variant", default="base")
    parser.add_argument("--port", type=int, default=8100, help="their own Serve (8000 may be `make serve`)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds any one wait may take")
    parser.add_argument("--quick", action="store_true", help="base only, once each: < 1 minute")
    parser.add_argument("--json", action="store_true", help="(the last line is always the JSON object)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_serve_config(args.config)
    every = list(variant_apps(config))
    variants = (args.variants or ("base" if args.quick else ",".join(every))).split(",")
    replica_variants = ["base"] if args.quick else args.replica_variants.split(",")
    repeats = 1 if args.quick else args.repeats
    if repeats < 1:
        parser.error(f"--repeats must be >= 1, got {repeats}")
    before = machine_info()
    out: dict[str, Any] = {"machine": before, "quick": args.quick}
    with ServeSession(config, args.port) as session:
        out["ray_and_serve_start_s"] = session.start_s
        out["application"] = app_cold_start(session, variants, args.timeout)
        for v, a in out["application"].items():
            print(
                f"(a) {v:>16}: first 200 {a['first_200_s']:.2f} s after deploy "
                f"(store read {a['store_wait_ms']:.0f} ms)"
            )
        out["replica"] = {}
        for variant in replica_variants:
            for weights in ("store", "disk"):
                runs = replica_cold_start(session, variant, weights, repeats, args.timeout)
                out["replica"][f"{variant}/{weights}"] = {"runs": runs, "median": _median_breakdown(runs)}
                m = out["replica"][f"{variant}/{weights}"]["median"]
                print(
                    f"(b) {variant:>8} {weights:>5}: {m['total_s']:.2f} s to first 200 = "
                    + ", ".join(f"{name[:-2]} {m[name]:.3f}" for name, _, _ in PHASES)
                )
            store = out["replica"][f"{variant}/store"]["median"]
            disk = out["replica"][f"{variant}/disk"]["median"]
            out["replica"][f"{variant}/disk_over_store"] = disk["total_s"] / store["total_s"]
            print(
                f"    {variant}: disk / zero-copy = {disk['total_s'] / store['total_s']:.2f}x; weights "
                f"{store['weights_share']:.1%} of a zero-copy cold start, "
                f"{disk['weights_share']:.1%} from disk"
            )
        if not args.quick:
            s = step_load(
                session,
                args.scale_variant,
                (2, 48),
                warm_s=5.0,
                hold_s=0.0,
                timeout_s=args.timeout,
                scale_down=False,
            )
            s.pop("_requests")
            out["scale_up"] = s
            print(
                f"(c) {args.scale_variant}: step {s['users_before_after']} users -> new replicas' "
                f"first 200 at {s['new_replicas_first_200_s']} s; "
                f"{s['failed']} of {s['requests']} requests failed"
            )
    out["machine_after"] = machine_info()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
