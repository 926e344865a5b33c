"""What serving each variant costs in money, on demand vs spot: `python -m benchmarks.cost`.

From each variant's measured requests/s and memory per replica (`docs/benchmarks/cost_measurements.json`,
re-measured with `--measure`: `benchmarks.replica_memory`) and an instance price table, it works out
how many replicas fit on an instance, how many instances a target request rate needs, and what that
costs per year and per million requests (the model: `benchmarks.cost_model`), next to the study's
starting point: two m5.large on demand all year. Then N models (`--models`, default 2 and 20): each
model's variants as dedicated always-on apps vs one warm pool for all of them (its figures from the
many-models benchmark's record when there is one), against two m5.large per model. The markdown
tables it prints go into docs/COST.md.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from benchmarks.cost_model import (
    DEFAULT_INSTANCES,
    STUDY_BASELINE_INSTANCES,
    STUDY_BASELINE_TYPE,
    STUDY_INSTANCES_PER_MODEL,
    FleetAssumptions,
    Instance,
    ModelsAssumptions,
    ModelsPlan,
    Plan,
    VariantMeasurement,
    load_many_models,
    load_measurements,
    load_prices,
    plan,
    plan_models,
    study_baseline_usd_per_year,
)
from benchmarks.harness import ROOT
from benchmarks.harness.cli import emit, listed, parser, setup_logging
from benchmarks.many_models import RECORD as MANY_MODELS_RECORD
from benchmarks.replica_memory import DEFAULT_MEASUREMENTS, measure_to_file

__all__ = ["main", "markdown_table", "models_table"]


def _usd(x: float | None, digits: int = 0, none: str = "does not fit") -> str:
    return none if x is None else f"{x:,.{digits}f}"


def _pair(on_demand: float | None, spot: float | None) -> str:
    return f"{_usd(on_demand, 3, '-')} / {_usd(spot, 3, '-')}"


def _pct(x: float | None, baseline: float) -> str:
    return "" if x is None else f" ({x / baseline - 1:+.0%})"


def markdown_table(
    plans: list[Plan], measured: dict[str, VariantMeasurement], inst: Instance, baseline: float
) -> str:
    """One instance type's table: a row per variant, on demand vs spot, vs the study's baseline."""
    lines = [
        f"**{inst.name}** ({inst.vcpus} vCPU, {inst.memory_gib:g} GiB; {inst.on_demand_usd_h:g} USD/h on "
        f"demand, {inst.spot_usd_h:g} spot)\n",
        "| variant | req/s per replica | private MiB per replica | shared weights MiB "
        "| replicas per instance (CPU / memory) | req/s per instance "
        "| instances on demand / spot | USD/year on demand (vs study) | USD/year spot (vs study) "
        "| USD per M requests on demand / spot | at full use on demand / spot |",
        "|---|---:|---:|---:|---|---:|---|---:|---:|---|---|",
    ]
    for p in plans:
        m = measured[p.variant]
        od, sp = p.on_demand, p.spot
        lines.append(
            f"| {p.variant} | {m.requests_per_s_per_replica:.1f} | {m.replica_memory_mib:.0f} "
            f"| {m.shared_weights_mib:.1f} | {p.replicas_per_instance} ({p.replicas_by_cpu} / "
            f"{p.replicas_by_memory}) | {p.rps_per_instance:.1f} "
            f"| {od.instances or '-'} / {sp.instances or '-'} "
            f"| {_usd(od.usd_per_year)}{_pct(od.usd_per_year, baseline)} "
            f"| **{_usd(sp.usd_per_year)}**{_pct(sp.usd_per_year, baseline)} "
            f"| {_pair(od.usd_per_million_requests, sp.usd_per_million_requests)} "
            f"| {_pair(od.usd_per_million_at_full_use, sp.usd_per_million_at_full_use)} |"
        )
    return "\n".join(lines)


def models_table(plans: list[ModelsPlan], inst: Instance) -> str:
    """One instance type's N-model table: a row per (models, setup), on demand vs spot, vs the study's
    two m5.large per model."""
    lines = [
        f"**{inst.name}**, N models: dedicated apps vs the warm pool\n",
        "| models | setup | vCPU per replica | replicas on demand / spot "
        "| replicas per instance (CPU / memory) | shared weights per node MiB "
        "| instances on demand / spot | USD/year on demand (vs study) | USD/year spot (vs study) "
        f"| study: {STUDY_INSTANCES_PER_MODEL} x {STUDY_BASELINE_TYPE} per model |",
        "|---:|---|---:|---|---|---:|---|---:|---:|---:|",
    ]
    for p in plans:
        od, sp, study = p.on_demand, p.spot, p.study_usd_per_year
        lines.append(
            f"| {p.models} | {p.setup} | {p.cpus_per_replica:g} | {p.replicas} / {p.spot_replicas} "
            f"| {p.replicas_per_instance} ({p.replicas_by_cpu} / {p.replicas_by_memory}) "
            f"| {p.weights_per_node_mib:,.0f} | {od.instances or '-'} / {sp.instances or '-'} "
            f"| {_usd(od.usd_per_year)}{_pct(od.usd_per_year, study)} "
            f"| **{_usd(sp.usd_per_year)}**{_pct(sp.usd_per_year, study)} | {study:,.0f} |"
        )
    return "\n".join(lines)


def _shown_path(path: str) -> str:
    """`path` from the checkout's root when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return path


def _models_assumptions(args: argparse.Namespace) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the many-models record's figures or None, ModelsAssumptions' fields but `models`)."""
    record = load_many_models(args.many_models) if args.many_models else None
    fields: dict[str, Any] = {
        "variants_per_model": args.variants_per_model,
        "min_replicas_per_app": args.min_replicas_per_app,
        "pool_min_replicas": args.pool_min_replicas,
    }
    if record is not None:
        fields["pool_rps_factor"] = min(1.0, record["pool_rps_ratio"])
        fields["pool_replica_memory_mib"] = record["pool_replica_uss_mib"]
    return record, fields


def _plan_models(
    args: argparse.Namespace,
    measured: list[VariantMeasurement],
    chosen: list[Instance],
    table: dict[str, Instance],
    assumptions: FleetAssumptions,
) -> tuple[list[ModelsPlan], list[str], dict[str, Any]]:
    """The N-model plans, their summary lines and what the JSON record says of them."""
    if not args.models:
        return [], [], {}
    by_name = {m.variant: m for m in measured}
    name = args.models_variant or ("base" if "base" in by_name else measured[0].variant)
    if name not in by_name:
        raise ValueError(f"--models-variant {name!r} is not measured; have {sorted(by_name)}")
    m = by_name[name]
    record, fields = _models_assumptions(args)
    dedicated_cpus = [args.cpus_per_replica] + (
        [args.packed_cpus_per_replica] if args.packed_cpus_per_replica else []
    )
    plans = []
    for inst in chosen:
        for count in args.models:
            n = ModelsAssumptions(models=count, **fields)
            plans += [plan_models(m, inst, assumptions, n, "dedicated", c, table) for c in dedicated_cpus]
            plans.append(plan_models(m, inst, assumptions, n, "pool", args.cpus_per_replica, table))
    n = ModelsAssumptions(models=args.models[0], **fields)
    source = (
        f"the many-models benchmark ({_shown_path(record['path'])}, {record['models']} models, "
        f"{record['date']}{', a --quick run' if record['quick'] else ''}): pool "
        f"req/s = {record['pool_rps_ratio']:.2f} x the dedicated apps' (used: {n.pool_rps_factor:.2f}, at "
        f"most 1), a pool replica {record['pool_replica_uss_mib']:.0f} MiB USS"
        if record
        else "no many-models record: a pool replica taken as fast and as large as a dedicated one"
    )
    lines = [
        f"N models, each served as `{m.variant}` ({m.requests_per_s_per_replica:.1f} req/s, "
        f"{m.replica_memory_mib:.0f} MiB private per replica, {m.shared_weights_mib:.1f} MiB of weights); "
        f"{assumptions.target_rps:g} req/s in all, split evenly over {n.variants_per_model} variant(s) per "
        f"model. Dedicated: one app per variant, >= {n.min_replicas_per_app} always-on replica(s) each, a "
        f"replica's slot = its vCPUs, its private memory and its model's weights. Pool: >= "
        f"{n.pool_min_replicas} replicas for every model, every model's weights once per node; {source}. "
        f"Study: {STUDY_INSTANCES_PER_MODEL} x {STUDY_BASELINE_TYPE} per model, on demand all year.\n"
    ]
    lines += [models_table([p for p in plans if p.instance == inst.name], inst) + "\n" for inst in chosen]
    out = {
        "variant": m.variant,
        "many_models_record": record,
        "assumptions": asdict(n) | {"models": list(args.models)},
        "plans": [asdict(p) for p in plans],
    }
    return plans, lines, out


def _price_table(args: argparse.Namespace) -> tuple[dict[str, Instance], list[Instance]]:
    table = load_prices(args.prices) if args.prices else dict(DEFAULT_INSTANCES)
    names = list(table) if args.instance == "all" else [n.strip() for n in args.instance.split(",")]
    if unknown := [n for n in names if n not in table]:
        raise ValueError(f"unknown instance {unknown}; known: {sorted(table)} (add one with --prices)")
    overrides = {"on_demand_usd_h": args.on_demand_usd_h, "spot_usd_h": args.spot_usd_h}
    if overrides := {k: v for k, v in overrides.items() if v is not None}:
        if len(names) != 1:
            raise ValueError("--on-demand-usd-h / --spot-usd-h need exactly one --instance")
        table[names[0]] = replace(table[names[0]], **overrides)
    return table, [table[n] for n in names]


def main(argv: list[str] | None = None) -> int:
    p = parser("benchmarks.cost", __doc__, serve_port=8400)
    rps_help = "target requests/s all year (50: about one m5.large of base, so variants differ; docs/COST.md)"
    p.add_argument("--rps", type=float, default=FleetAssumptions.target_rps, help=rps_help)
    p.add_argument("--instance", default="m5.large", help="instance types, comma-separated, or 'all'")
    p.add_argument("--prices", default=None, help="JSON or CSV laid over the built-in price table")
    p.add_argument("--on-demand-usd-h", type=float, default=None, help="override, one --instance only")
    p.add_argument("--spot-usd-h", type=float, default=None, help="override, one --instance only")
    p.add_argument("--measurements", default=str(DEFAULT_MEASUREMENTS), help="read (or --measure: write)")
    p.add_argument("--variants", default=None, help="comma-separated; default: every measured variant")
    p.add_argument("--cpus-per-replica", type=float, default=1.0, help="a replica keeps 1 core busy")
    p.add_argument("--per-busy-core", action="store_true", help="scale each req/s to a whole busy core")
    p.add_argument("--reserve-gib", type=float, default=FleetAssumptions.reserve_gib)
    p.add_argument("--reserve-vcpus", type=float, default=FleetAssumptions.reserve_vcpus)
    p.add_argument("--min-instances", type=int, default=FleetAssumptions.min_instances)
    p.add_argument("--spot-headroom", type=float, default=FleetAssumptions.spot_headroom)
    models_help = "N-model tables for these model counts (dedicated apps vs the warm pool); '' skips them"
    p.add_argument("--models", type=listed(int), default=(2, 20), help=models_help)
    variant_help = "the measured variant every model is served as (default: base, else the first measured)"
    p.add_argument("--models-variant", default=None, help=variant_help)
    p.add_argument("--variants-per-model", type=int, default=1, help="served variants of each model")
    p.add_argument("--min-replicas-per-app", type=int, default=1, help="a dedicated app's always-on replicas")
    p.add_argument("--pool-min-replicas", type=int, default=2, help="the warm pool's always-on replicas")
    packed_help = "also price dedicated replicas packed at this many vCPUs (serve_config.yaml's 0.25; 0: no)"
    p.add_argument("--packed-cpus-per-replica", type=float, default=0.25, help=packed_help)
    many_help = (
        "the many-models benchmark's record: the pool's req/s ratio and replica memory ('' ignores it)"
    )
    p.add_argument("--many-models", default=str(MANY_MODELS_RECORD), help=many_help)
    p.add_argument("--measure", action="store_true", help="measure each variant now (minutes; Ray)")
    p.add_argument("--users", type=int, default=32, help="with --measure: closed-loop Locust users")
    p.add_argument("--seconds", type=float, default=30.0, help="with --measure: per variant")
    p.add_argument("--quick", action="store_true", help="with --measure: base only, short runs")
    args = p.parse_args(argv)
    setup_logging()
    try:
        assumptions = FleetAssumptions(
            args.rps, args.reserve_gib, args.min_instances, args.spot_headroom, args.reserve_vcpus
        )
        if not args.cpus_per_replica > 0:
            raise ValueError(f"--cpus-per-replica must be > 0, got {args.cpus_per_replica}")
        table, chosen = _price_table(args)
        if args.measure:
            argv_text = " ".join(sys.argv[1:] if argv is None else argv)
            measure_to_file(args, f"python -m benchmarks.cost {argv_text}".strip())
        meta, measured = load_measurements(args.measurements, args.cpus_per_replica, args.per_busy_core)
        if args.variants:
            wanted = [v.strip() for v in args.variants.split(",")]
            if missing := sorted(set(wanted) - {m.variant for m in measured}):
                raise ValueError(f"{args.measurements} has no measurement of {missing}")
            measured = [m for m in measured if m.variant in wanted]
        if not args.packed_cpus_per_replica >= 0:
            raise ValueError(f"--packed-cpus-per-replica must be >= 0, got {args.packed_cpus_per_replica}")
        if any(count < 1 for count in args.models):
            raise ValueError(f"--models must be counts >= 1, got {list(args.models)}")
        models_plans, models_lines, models_out = _plan_models(args, measured, chosen, table, assumptions)
    except ValueError as exc:
        p.error(str(exc))  # exit 2, the problem named, no traceback
    baseline = study_baseline_usd_per_year(table)
    by_name = {m.variant: m for m in measured}
    plans = [plan(m, inst, assumptions) for inst in chosen for m in measured]
    summary = [
        f"Target {assumptions.target_rps:g} req/s all year ({assumptions.target_rps * 86400 / 1e6:.2f} M "
        f"requests/day); spot fleets sized for {assumptions.spot_headroom:g}x that; min "
        f"{assumptions.min_instances} instance(s); {assumptions.reserve_gib:g} GiB per node reserved; "
        f"{args.cpus_per_replica:g} vCPU per replica"
        f"{' (req/s scaled to a whole busy core)' if args.per_busy_core else ''}, "
        f"{assumptions.reserve_vcpus:g} vCPU per node for Ray. Measured {meta.get('date', '?')}.\n"
        f"Study baseline: {STUDY_BASELINE_INSTANCES} x {STUDY_BASELINE_TYPE} on demand all year = "
        f"{baseline:,.0f} USD/year.\n"
    ]
    summary += [
        markdown_table([x for x in plans if x.instance == inst.name], by_name, inst, baseline) + "\n"
        for inst in chosen
    ]
    out = {
        "target_rps": assumptions.target_rps,
        "assumptions": asdict(assumptions)
        | {"cpus_per_replica": args.cpus_per_replica, "per_busy_core": args.per_busy_core},
        "measurements": str(args.measurements),
        "measured": meta.get("date"),
        "study_baseline_usd_per_year": baseline,
        "instances": {i.name: asdict(i) for i in chosen},
        "plans": [asdict(p) for p in plans],
        "many_models": models_out,
    }
    emit(out, args.json, summary + models_lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
