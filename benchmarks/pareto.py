"""Accuracy against served cost per million requests, with the Pareto front: `python -m benchmarks.pareto`.

Accuracy per variant comes from a sweep's `sweep.json` (`python -m evaluation.sweep`; a variant in
several phases takes the phase on the most rows, the later one on a tie). Requests/s per variant
comes either from records of `python -m benchmarks.throughput --json` (`--throughput FILE`,
repeatable: one served replica's req/s at the record's fixed user count; variants go by name), or,
with `--measure`, from timing each variant's folder in the sweep cache here without Serve
(`benchmarks.throughput.plain_rate`, one thread: the model's own speed, above what a served replica
reaches). USD per million requests at full use is `benchmarks.cost_model`'s on one instance type: a
replica per vCPU as memory allows, each replica's memory and the proxy's CPU per request from the
cost measurements (the variant's own if measured, else base's; the table says which). A variant with
no req/s is listed as such, never guessed. The front: the variants no other one beats on both
accuracy and cost.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from benchmarks.cost_model import (
    DEFAULT_INSTANCES,
    FleetAssumptions,
    Instance,
    VariantMeasurement,
    load_measurements,
    load_prices,
    plan,
)
from benchmarks.harness import ROOT
from benchmarks.harness.cli import emit, parser, positive_int, setup_logging

__all__ = ["accuracies", "main", "pareto_front", "served_rates"]

logger = logging.getLogger(__name__)

DEFAULT_MEASUREMENTS = ROOT / "docs" / "benchmarks" / "cost_measurements.json"  # as benchmarks.cost reads


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """The names no other point dominates, cheapest first; a point is (cost, accuracy).

    Dominated: another point costs no more and is no less accurate, and is better in one of the two.
    Identical points are all kept.
    """
    front: list[str] = []
    best = -math.inf
    for name, (cost, accuracy) in sorted(points.items(), key=lambda kv: (kv[1][0], -kv[1][1])):
        if accuracy > best or (front and points[front[-1]] == (cost, accuracy)):
            front.append(name)
            best = accuracy
    return front


def accuracies(sweep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Variant -> accuracy, its 95% interval, rows and phase, from the phase on the most rows."""
    phases = sweep.get("phases") if isinstance(sweep, dict) else None
    if not isinstance(phases, dict) or not phases:
        raise ValueError(
            "the sweep record must have a non-empty 'phases' object (evaluation.sweep's sweep.json)"
        )
    out: dict[str, dict[str, Any]] = {}
    for phase, results in phases.items():
        for name, m in results["variants"].items():
            if name not in out or m["rows"] >= out[name]["rows"]:
                out[name] = {
                    "accuracy": m["accuracy"],
                    "accuracy_ci95": m["accuracy_ci95"],
                    "rows": m["rows"],
                    "phase": phase,
                }
    return out


def served_rates(records: list[dict[str, Any]]) -> dict[str, float]:
    """Variant -> one replica's served req/s at each record's fixed user count (later records win)."""
    rates = {}
    for record in records:
        variants = record.get("variants") if isinstance(record, dict) else None
        if not isinstance(variants, dict):
            raise ValueError(
                "a throughput record must have a 'variants' object (benchmarks.throughput --json)"
            )
        for name, r in variants.items():
            served = [x for x in r.get("served", []) if x.get("users") == record.get("fixed_users")]
            if not served:
                raise ValueError(
                    f"throughput record: {name!r} has no run at the fixed {record.get('fixed_users')} users"
                )
            rates[name] = served[0]["requests_per_s"]
    return rates


def _measure(names: list[str], cache: Path, count: int, batch: int) -> dict[str, float]:
    """Texts/s of each variant's cached folder in this process, one thread, no Serve."""
    from benchmarks.harness.load import random_texts
    from benchmarks.throughput import plain_rate
    from loading.artifact import resolve_model_dir

    texts = random_texts(count, seed=0)
    rates = {}
    for name in names:
        if not (cache / name).is_dir():
            logger.warning("%s: not in %s; not measured", name, cache)
            continue
        rates[name] = plain_rate(resolve_model_dir(cache / name), texts, batch, {})
        logger.info("%s: %.1f texts/s (plain, 1 thread)", name, rates[name])
    return rates


def _costs(
    rates: dict[str, float], measured: dict[str, VariantMeasurement], inst: Instance, pricing: str
) -> dict[str, dict[str, Any]]:
    """Variant -> USD per million requests at full use, and whose memory it was sized with."""
    out = {}
    for name, rps in rates.items():
        memory_from = name if name in measured else "base" if "base" in measured else None
        if memory_from is None:
            raise ValueError(f"the cost measurements have neither {name!r} nor base: cannot size a replica")
        ref = measured[memory_from]
        m = VariantMeasurement(
            name,
            rps,
            ref.replica_memory_mib,
            ref.shared_weights_mib,
            ref.cpus_per_replica,
            ref.proxy_cpu_ms_per_request,
        )
        p = plan(m, inst, FleetAssumptions())
        fleet = p.on_demand if pricing == "on-demand" else p.spot
        out[name] = {
            "usd_per_million": fleet.usd_per_million_at_full_use,
            "memory_from": memory_from,
            "replicas_per_instance": p.replicas_per_instance,
            "memory_bound": p.replicas_by_memory < p.replicas_by_cpu,
        }
    return out


def plot(points: list[dict[str, Any]], front: list[str], path: Path, title: str) -> None:
    """Accuracy (with its 95% interval) against USD per million requests; the front joined in red."""
    fig = Figure(figsize=(9, 5.5), dpi=110)
    ax = fig.subplots()
    by_name = {p["variant"]: p for p in points}
    for p in points:
        on_front = p["variant"] in front
        acc, (low, high) = 100 * p["accuracy"], p["accuracy_ci95"]
        ax.errorbar(
            p["usd_per_million"],
            acc,
            yerr=[[acc - 100 * low], [100 * high - acc]],
            fmt="o",
            color="tab:red" if on_front else "tab:grey",
            markersize=6 if on_front else 4,
            capsize=3,
            alpha=1.0 if on_front else 0.6,
        )
        if on_front or len(points) <= 12:
            ax.annotate(p["variant"], (p["usd_per_million"], acc), textcoords="offset points", xytext=(5, 5))
    xs = [by_name[n]["usd_per_million"] for n in front]
    ax.step(
        xs, [100 * by_name[n]["accuracy"] for n in front], where="post", color="tab:red", label="Pareto front"
    )
    costs = [p["usd_per_million"] for p in points]
    if max(costs) > 5 * min(costs):
        ax.set_xscale("log")
    ax.set_xlabel("USD per million requests at full use")
    ax.set_ylabel("Accuracy (%), bar: bootstrap 95% interval")
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def _table(points: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| variant | accuracy | rows (phase) | req/s per replica | USD per M requests | memory from |",
        "|---|---:|---|---:|---:|---|",
    ]
    for p in points:
        lines.append(
            f"| {p['variant']} | {100 * p['accuracy']:.2f}% | {p['rows']} ({p['phase']}) "
            f"| {p['requests_per_s']:.1f} ({p['rate_source']}) | {p['usd_per_million']:.4f} "
            f"| {p['memory_from']} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = parser(__name__, __doc__)
    p.add_argument("--sweep", default="reports/sweep/sweep.json", help="evaluation.sweep's record")
    p.add_argument(
        "--throughput", action="append", default=[], help="a throughput --json record (repeatable)"
    )
    p.add_argument(
        "--measure", action="store_true", help="time each variant in --cache here (plain, 1 thread)"
    )
    p.add_argument("--cache", default="artifacts/sweep", help="with --measure: the sweep's variant folders")
    p.add_argument("--plain-texts", type=positive_int, default=320, help="with --measure: texts per variant")
    p.add_argument("--batch-size", type=positive_int, default=16, help="with --measure: texts per pass")
    p.add_argument("--variants", default=None, help="comma-separated; default: every variant in the sweep")
    p.add_argument("--instance", default="m5.large", help="the instance type to price on")
    p.add_argument("--prices", default=None, help="JSON or CSV laid over the built-in price table")
    p.add_argument("--pricing", choices=["on-demand", "spot"], default="on-demand")
    p.add_argument("--measurements", default=str(DEFAULT_MEASUREMENTS), help="replica memory and proxy CPU")
    p.add_argument("--plot", type=Path, default=Path("reports/sweep/pareto.png"))
    args = p.parse_args(argv)
    setup_logging()
    try:
        if bool(args.throughput) == args.measure:
            raise ValueError("give exactly one source of req/s: --throughput FILE (repeatable) or --measure")
        sweep = _read_json(args.sweep, "sweep record")
        scores = accuracies(sweep)
        if args.variants:
            wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
            if missing := sorted(set(wanted) - set(scores)):
                raise ValueError(f"{args.sweep} has no accuracy for {missing}")
            scores = {n: scores[n] for n in wanted}
        prices = load_prices(args.prices) if args.prices else dict(DEFAULT_INSTANCES)
        if args.instance not in prices:
            raise ValueError(
                f"unknown instance {args.instance!r}; known: {sorted(prices)} (add one with --prices)"
            )
        _, measured = load_measurements(args.measurements)
        if args.measure:
            rates, source = (
                _measure(list(scores), Path(args.cache), args.plain_texts, args.batch_size),
                "plain",
            )
        else:
            rates, source = (
                served_rates([_read_json(f, "throughput record") for f in args.throughput]),
                "served",
            )
        rates = {n: r for n, r in rates.items() if n in scores}
        costs = _costs(rates, {m.variant: m for m in measured}, prices[args.instance], args.pricing)
    except ValueError as exc:
        p.error(str(exc))
    points = sorted(
        (
            {"variant": n, **scores[n], "requests_per_s": rates[n], "rate_source": source, **costs[n]}
            for n in rates
            if costs[n]["usd_per_million"] is not None
        ),
        key=lambda x: (x["usd_per_million"], -x["accuracy"]),
    )
    unmeasured = [n for n in scores if n not in rates]
    unfit = [n for n in rates if costs[n]["usd_per_million"] is None]
    front = pareto_front({x["variant"]: (x["usd_per_million"], x["accuracy"]) for x in points})
    for x in points:
        x["on_front"] = x["variant"] in front
    title = f"Accuracy vs cost, {args.instance} {args.pricing}, req/s {source}"
    if points:
        plot(points, front, args.plot, title)
    summary = [
        f"{title}; accuracy from {args.sweep}. Pareto front ({len(front)} of {len(points)} variants):",
        *_table([x for x in points if x["on_front"]]),
        f"No req/s for (not plotted): {', '.join(unmeasured) or 'none'}",
    ]
    if unfit:
        summary.append(f"Does not fit on {args.instance}: {', '.join(unfit)}")
    if points:
        summary.append(f"Plot: {args.plot}")
    record = {
        "sweep": str(args.sweep),
        "instance": asdict(prices[args.instance]),
        "pricing": args.pricing,
        "rate_source": source,
        "measurements": str(args.measurements),
        "points": points,
        "front": front,
        "unmeasured": unmeasured,
        "does_not_fit": unfit,
        "plot": str(args.plot) if points else None,
    }
    emit(record, args.json, summary)
    return 0


def _read_json(path: str, what: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"the {what} {path} is not valid JSON: {exc}") from None


if __name__ == "__main__":
    raise SystemExit(main())
