"""The cost model: how many replicas fit an instance, how many instances a request rate needs, what
they cost on demand and on spot; and the price and measurement files it reads.

The model, per variant and instance type:
- replicas per instance = min(by CPU: vCPUs // CPUs per replica, by memory: (instance memory - a
  reserve for the OS and Ray - the variant's weights, once per node since replicas map them
  zero-copy from the object store) // one replica's private memory);
- requests/s per instance = replicas x requests/s per replica, capped by the vCPUs left for them
  once Ray has its reserve and the HTTP proxy its measured CPU time per request;
- instances = max(--min-instances, ceil(target x headroom / requests/s per instance)), headroom 1 on
  demand and --spot-headroom on spot (spot instances get reclaimed; the rest carry the load meanwhile);
- USD/year = instances x USD/h x 8760; USD per million requests = USD/year / million requests a year
  at the target rate, and at full use (an instance's capacity, all year).

N models (`plan_models`), the target rate split evenly over every model's variants:
- dedicated: each (model, variant) its own app with `min_replicas_per_app` always-on replicas, more
  if its share of the rate needs them; each replica a slot of `cpus_per_replica` vCPUs and its private
  memory plus its model's weights (the worst case: every replica on a node a different model's);
- warm pool: `pool_min_replicas` replicas or more for the whole rate, each serving every model (at
  `pool_rps_factor` x a dedicated replica's rate: the many-models benchmark's pool/dedicated ratio,
  at most 1); every node holds every model's weights once, in its object store;
- either way instances = max(min_instances, replicas / slots per instance, vCPUs the rate needs).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_INSTANCES",
    "FleetAssumptions",
    "Instance",
    "ModelsAssumptions",
    "ModelsPlan",
    "Plan",
    "VariantMeasurement",
    "capacity_rps",
    "instances_needed",
    "load_measurements",
    "load_many_models",
    "load_prices",
    "plan",
    "plan_models",
    "replicas_per_instance",
    "study_baseline_usd_per_year",
    "study_models_usd_per_year",
    "usd_per_million_requests",
    "usd_per_year",
]

HOURS_PER_YEAR = 8760  # 365 x 24: instances billed around the clock, as in the study's baseline
MIB_PER_GIB = 1024
# The study's starting point: two m5.large on demand all year (one English, one Swedish model).
STUDY_BASELINE_INSTANCES = 2
STUDY_BASELINE_TYPE = "m5.large"


@dataclass(frozen=True)
class Instance:
    """An instance type and its hourly prices (Linux, per instance)."""

    name: str
    vcpus: int  # AWS vCPUs (hyperthreads); taken as one CPU of the measuring machine each
    memory_gib: float
    on_demand_usd_h: float
    spot_usd_h: float

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("instance name must be non-empty")
        if not (isinstance(self.vcpus, int) and self.vcpus >= 1):
            raise ValueError(f"{self.name}: vcpus must be a whole number >= 1, got {self.vcpus!r}")
        _check_numbers(self, self.name, positive=("memory_gib", "on_demand_usd_h", "spot_usd_h"))


def _check_numbers(obj: Any, owner: str, positive: tuple[str, ...], zero_ok: tuple[str, ...] = ()) -> None:
    """ValueError unless each field is a finite number, > 0 (`positive`) or >= 0 (`zero_ok`)."""
    for field in (*positive, *zero_ok):
        value, bound = getattr(obj, field), "> 0" if field in positive else ">= 0"
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not number or value < 0 or (field in positive and value == 0):
            raise ValueError(f"{owner}: {field} must be a number {bound}, got {value!r}")


# Prices: AWS us-east-1, Linux, USD per instance-hour. On demand: AWS's published prices (m5.large
# 0.096 as in the study). Spot: an ASSUMPTION, typical levels of the us-east-1 spot price history in
# 2024-2025 (about 35-45% of on demand; spot prices move by zone and hour and could not be checked
# from this offline machine). Override with --prices FILE or --spot-usd-h.
DEFAULT_INSTANCES: dict[str, Instance] = {
    i.name: i
    for i in (
        Instance("m5.large", 2, 8, 0.096, 0.037),
        Instance("m5.xlarge", 4, 16, 0.192, 0.074),
        Instance("m5.2xlarge", 8, 32, 0.384, 0.150),
        Instance("c5.large", 2, 4, 0.085, 0.034),
        Instance("c5.xlarge", 4, 8, 0.170, 0.068),
    )
}


@dataclass(frozen=True)
class VariantMeasurement:
    """One replica of a variant, measured alone under load (`--measure`)."""

    variant: str
    requests_per_s_per_replica: float  # one replica saturated (closed-loop users), single-text requests
    replica_memory_mib: float  # the replica's private memory (USS) at its peak under that load
    shared_weights_mib: float  # the weights in the node's object store, mapped by every replica
    cpus_per_replica: float = 1.0  # one torch thread keeps one core busy under load
    proxy_cpu_ms_per_request: float = 0.0  # the HTTP proxy's CPU time per request (0: not measured)

    def __post_init__(self) -> None:
        positive = ("requests_per_s_per_replica", "replica_memory_mib", "cpus_per_replica")
        _check_numbers(self, self.variant, positive, ("shared_weights_mib", "proxy_cpu_ms_per_request"))


@dataclass(frozen=True)
class FleetAssumptions:
    """How a fleet is sized beyond the measurements."""

    target_rps: float = 50.0  # requests/s the fleet must serve all year (see --rps)
    reserve_gib: float = 1.5  # per node: OS, raylet, GCS, Serve controller and proxy, model store
    min_instances: int = 1  # never fewer instances than this (2: survive losing one)
    spot_headroom: float = 1.2  # spot capacity bought over the target: reclaimed instances' load
    reserve_vcpus: float = 0.1  # per node besides the proxy: raylet, GCS, controller (0.07 measured)

    def __post_init__(self) -> None:
        _check_numbers(self, "fleet", ("target_rps", "spot_headroom"), ("reserve_gib", "reserve_vcpus"))
        if self.min_instances < 1:
            raise ValueError(f"min_instances must be >= 1, got {self.min_instances}")
        if not self.spot_headroom >= 1:
            raise ValueError(f"spot_headroom must be >= 1, got {self.spot_headroom}")


@dataclass(frozen=True)
class Fleet:
    """One pricing (on demand or spot) of one variant's fleet; None where the variant does not fit."""

    instances: int | None
    usd_per_year: float | None
    usd_per_million_requests: float | None  # at the target rate
    usd_per_million_at_full_use: float | None  # every instance busy all year


@dataclass(frozen=True)
class Plan:
    """One variant on one instance type."""

    variant: str
    instance: str
    replicas_by_cpu: int
    replicas_by_memory: int
    replicas_per_instance: int
    rps_per_instance: float
    target_rps: float
    on_demand: Fleet
    spot: Fleet


def replicas_per_instance(m: VariantMeasurement, inst: Instance, reserve_gib: float) -> tuple[int, int, int]:
    """(by CPU, by memory, the smaller): whole replicas, the weights counted once per node."""
    by_cpu = math.floor(inst.vcpus / m.cpus_per_replica + 1e-9)
    free_mib = (inst.memory_gib - reserve_gib) * MIB_PER_GIB - m.shared_weights_mib
    by_memory = max(0, math.floor(free_mib / m.replica_memory_mib + 1e-9))
    return by_cpu, by_memory, min(by_cpu, by_memory)


def capacity_rps(m: VariantMeasurement, inst: Instance, a: FleetAssumptions) -> float:
    """Requests/s one instance serves: its replicas, or fewer if they and the proxy outrun its vCPUs."""
    replicas = replicas_per_instance(m, inst, a.reserve_gib)[2]
    cpu_s_per_request = m.cpus_per_replica / m.requests_per_s_per_replica + m.proxy_cpu_ms_per_request / 1e3
    by_cpu = max(0.0, inst.vcpus - a.reserve_vcpus) / cpu_s_per_request
    return min(replicas * m.requests_per_s_per_replica, by_cpu)


def instances_needed(target_rps: float, per_instance_rps: float, min_instances: int = 1) -> int | None:
    """ceil(target / capacity), at least `min_instances`; None when an instance serves nothing."""
    if per_instance_rps <= 0:
        return None
    return max(min_instances, math.ceil(target_rps / per_instance_rps - 1e-9))


def usd_per_year(instances: int, usd_per_hour: float) -> float:
    return instances * usd_per_hour * HOURS_PER_YEAR


def usd_per_million_requests(yearly_usd: float, rps: float) -> float:
    """Yearly cost over the millions of requests a year at `rps` req/s."""
    return yearly_usd / (rps * 3600 * HOURS_PER_YEAR / 1e6)


def study_baseline_usd_per_year(instances: dict[str, Instance] | None = None) -> float:
    """Two m5.large on demand all year: 2 x 0.096 x 8760 = 1,681.92 USD with the default prices."""
    inst = (instances or DEFAULT_INSTANCES)[STUDY_BASELINE_TYPE]
    return usd_per_year(STUDY_BASELINE_INSTANCES, inst.on_demand_usd_h)


def _fleet(target: float, capacity: float, usd_h: float, min_instances: int, headroom: float) -> Fleet:
    n = instances_needed(target * headroom, capacity, min_instances)
    if n is None:
        return Fleet(None, None, None, None)
    yearly, full_use = usd_per_year(n, usd_h), usd_per_million_requests(usd_per_year(1, usd_h), capacity)
    return Fleet(n, yearly, usd_per_million_requests(yearly, target), full_use)


def plan(m: VariantMeasurement, inst: Instance, a: FleetAssumptions) -> Plan:
    """Size and price `m`'s fleet on `inst`, on demand and on spot."""
    by_cpu, by_memory, replicas = replicas_per_instance(m, inst, a.reserve_gib)
    capacity = capacity_rps(m, inst, a)
    on_demand = _fleet(a.target_rps, capacity, inst.on_demand_usd_h, a.min_instances, 1.0)
    spot = _fleet(a.target_rps, capacity, inst.spot_usd_h, a.min_instances, a.spot_headroom)
    return Plan(m.variant, inst.name, by_cpu, by_memory, replicas, capacity, a.target_rps, on_demand, spot)


# The study's setup priced against the N-model plans: two m5.large per model, on demand all year.
STUDY_INSTANCES_PER_MODEL = 2


def study_models_usd_per_year(
    models: int, instances: dict[str, Instance] | None = None, per_model: int = STUDY_INSTANCES_PER_MODEL
) -> float:
    """`per_model` x `models` m5.large on demand all year (2 models: 4 x 0.096 x 8760 = 3,363.84 USD)."""
    inst = (instances or DEFAULT_INSTANCES)[STUDY_BASELINE_TYPE]
    return usd_per_year(per_model * models, inst.on_demand_usd_h)


@dataclass(frozen=True)
class ModelsAssumptions:
    """How N models are served, beyond one variant's measurement and the fleet's assumptions."""

    models: int = 2  # distinct models (own weights each), e.g. the company's English and Swedish ones
    variants_per_model: int = 1  # served variants of each model (each its own app when dedicated)
    min_replicas_per_app: int = 1  # a dedicated app's always-on replicas (serve_config.yaml: min_replicas 1)
    pool_min_replicas: int = 2  # the warm pool's always-on replicas (serve_config.yaml: min_replicas 2)
    # A pool replica's req/s over a dedicated replica's with the models mixed (the many-models
    # benchmark's pool / dedicated req/s, capped at 1: no gain is assumed from pooling).
    pool_rps_factor: float = 1.0
    pool_replica_memory_mib: float | None = None  # a pool replica's private memory; None: the variant's

    def __post_init__(self) -> None:
        for name in ("models", "variants_per_model", "min_replicas_per_app", "pool_min_replicas"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        _check_numbers(self, "models", ("pool_rps_factor",))
        if self.pool_rps_factor > 1:
            raise ValueError(f"pool_rps_factor must be <= 1 (no gain assumed), got {self.pool_rps_factor}")
        if self.pool_replica_memory_mib is not None:
            _check_numbers(self, "models", ("pool_replica_memory_mib",))


@dataclass(frozen=True)
class ModelsPlan:
    """N models served one way (`dedicated` apps or the warm `pool`) on one instance type."""

    setup: str  # "dedicated" or "pool"
    models: int
    variants_per_model: int
    instance: str
    cpus_per_replica: float
    replicas: int  # on demand; spot's are `spot_replicas`
    spot_replicas: int
    replicas_by_cpu: int  # slots per instance
    replicas_by_memory: int
    replicas_per_instance: int
    weights_per_node_mib: (
        float  # shared weights a full node holds (pool: every model's; dedicated: its replicas')
    )
    replica_memory_mib: float  # private memory of one replica
    rps_per_replica: float
    target_rps: float
    on_demand: Fleet
    spot: Fleet
    study_usd_per_year: float  # STUDY_INSTANCES_PER_MODEL x models m5.large on demand


def _models_fleet(
    replicas: int, slots: int, cpu_instances: int, target: float, usd_h: float, min_instances: int
) -> Fleet:
    """Instances for `replicas` in `slots` per instance and `cpu_instances` for the rate; None if no
    replica fits. No price "at full use": a fleet of mixed models has no single capacity."""
    if slots <= 0:
        return Fleet(None, None, None, None)
    n = max(min_instances, math.ceil(replicas / slots - 1e-9), cpu_instances)
    yearly = usd_per_year(n, usd_h)
    return Fleet(n, yearly, usd_per_million_requests(yearly, target), None)


def plan_models(
    m: VariantMeasurement,
    inst: Instance,
    a: FleetAssumptions,
    n: ModelsAssumptions,
    setup: str,
    cpus_per_replica: float = 1.0,
    study_instances: dict[str, Instance] | None = None,
) -> ModelsPlan:
    """Size and price `n.models` models (each served as `m` measured) as `dedicated` apps or as the `pool`.

    The target rate `a.target_rps` is the fleet's total, split evenly over the models' variants;
    spot fleets are sized for `a.spot_headroom` x it. Whatever the slots, the fleet's vCPUs (less
    `a.reserve_vcpus` per node) must run the rate: one busy core per replica at its measured req/s,
    plus the ingress's CPU per request.
    """
    if setup not in ("dedicated", "pool"):
        raise ValueError(f"setup must be 'dedicated' or 'pool', got {setup!r}")
    if not cpus_per_replica > 0:
        raise ValueError(f"cpus_per_replica must be > 0, got {cpus_per_replica}")
    apps = n.models * n.variants_per_model
    free_mib = (inst.memory_gib - a.reserve_gib) * MIB_PER_GIB
    by_cpu = math.floor(inst.vcpus / cpus_per_replica + 1e-9)
    if setup == "dedicated":
        rps, weights_node = m.requests_per_s_per_replica, 0.0
        per_replica = m.replica_memory_mib + m.shared_weights_mib  # worst case: each a different model

        def replicas_for(target: float) -> int:
            return apps * max(n.min_replicas_per_app, math.ceil(target / apps / rps - 1e-9))

    else:
        rps, weights_node = m.requests_per_s_per_replica * n.pool_rps_factor, apps * m.shared_weights_mib
        per_replica = max(m.replica_memory_mib, n.pool_replica_memory_mib or 0.0)

        def replicas_for(target: float) -> int:
            return max(n.pool_min_replicas, math.ceil(target / rps - 1e-9))

    by_memory = max(0, math.floor((free_mib - weights_node) / per_replica + 1e-9))
    slots = min(by_cpu, by_memory)
    cpu_s_per_request = 1 / rps + m.proxy_cpu_ms_per_request / 1e3
    usable_vcpus = max(1e-9, inst.vcpus - a.reserve_vcpus)

    def fleet(target: float, usd_h: float) -> tuple[int, Fleet]:
        replicas = replicas_for(target)
        cpu_instances = math.ceil(target * cpu_s_per_request / usable_vcpus - 1e-9)
        f = _models_fleet(replicas, slots, cpu_instances, a.target_rps, usd_h, a.min_instances)
        return replicas, f

    replicas, on_demand = fleet(a.target_rps, inst.on_demand_usd_h)
    spot_replicas, spot = fleet(a.target_rps * a.spot_headroom, inst.spot_usd_h)
    return ModelsPlan(
        setup=setup,
        models=n.models,
        variants_per_model=n.variants_per_model,
        instance=inst.name,
        cpus_per_replica=cpus_per_replica,
        replicas=replicas,
        spot_replicas=spot_replicas,
        replicas_by_cpu=by_cpu,
        replicas_by_memory=by_memory,
        replicas_per_instance=slots,
        # dedicated: at most one model's weights per replica on the node
        weights_per_node_mib=weights_node if setup == "pool" else slots * m.shared_weights_mib,
        replica_memory_mib=per_replica if setup == "pool" else m.replica_memory_mib,
        rps_per_replica=rps,
        target_rps=a.target_rps,
        on_demand=on_demand,
        spot=spot,
        study_usd_per_year=study_models_usd_per_year(n.models, study_instances),
    )


_PRICE_FIELDS = {f.name: f.type for f in fields(Instance)}


def _instance_from_row(row: dict[str, Any], known: dict[str, Instance], where: str) -> Instance:
    name = str(row.get("name") or "").strip()
    if not name:
        raise ValueError(f"{where}: every instance needs a 'name'")
    if unknown := set(row) - set(_PRICE_FIELDS):
        raise ValueError(f"{where} ({name}): unknown fields {sorted(unknown)}; known: {list(_PRICE_FIELDS)}")
    values: dict[str, Any] = {}
    for key, raw in row.items():
        if key == "name" or raw is None or raw == "":
            continue
        try:
            number = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{where} ({name}): {key} must be a number, got {raw!r}") from None
        if key == "vcpus" and not number.is_integer():
            raise ValueError(f"{where} ({name}): vcpus must be a whole number, got {raw!r}")
        values[key] = int(number) if key == "vcpus" else number
    if name in known:
        return replace(known[name], **values)
    if missing := [k for k in _PRICE_FIELDS if k != "name" and k not in values]:
        raise ValueError(f"{where}: new instance {name!r} needs {missing}")
    return Instance(name=name, **values)


def load_prices(path: str | Path, base: dict[str, Instance] | None = None) -> dict[str, Instance]:
    """The price table with `path`'s rows laid over it (JSON or CSV; known types may give only some fields).

    JSON: `{"m5.large": {"spot_usd_h": 0.03}, ...}` or `[{"name": "m5.large", ...}, ...]`.
    CSV: a header row `name,vcpus,memory_gib,on_demand_usd_h,spot_usd_h` (any subset with `name`).
    """
    path = Path(path)
    table = dict(DEFAULT_INSTANCES if base is None else base)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read the price file {path}: {exc.strerror or exc}") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if not rows or "name" not in rows[0]:
            raise ValueError(f"{path}: a CSV price file needs a header row with 'name' and at least one row")
        rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in rows]
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON (use .csv for CSV): {exc}") from None
        if isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
            rows = [{"name": k, **v} for k, v in data.items()]
        elif isinstance(data, list) and all(isinstance(v, dict) for v in data):
            rows = data
        else:
            raise ValueError(f"{path}: expected {{name: {{field: value}}}} or a list of objects with 'name'")
    for i, row in enumerate(rows, 1):
        inst = _instance_from_row(row, table, f"{path} row {i}")
        table[inst.name] = inst
    return table


def load_measurements(
    path: str | Path, cpus_per_replica: float = 1.0, per_busy_core: bool = False
) -> tuple[dict[str, Any], list[VariantMeasurement]]:
    """(the file's run metadata, one VariantMeasurement per variant) from a `--measure` JSON file.

    `per_busy_core`: divide each replica's requests/s by the cores it was measured to keep busy
    (`replica_cpu_cores`), i.e. what it would serve on a core of its own, for runs where other jobs
    starved it. Off by default: the measured rate as it was is the conservative figure.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read the measurements file {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"the measurements file {path} is not valid JSON: {exc}") from None
    variants = data.get("variants") if isinstance(data, dict) else None
    if not isinstance(variants, dict) or not variants:
        raise ValueError(f"{path}: expected an object with a non-empty 'variants' object (see --measure)")
    out = []
    for name, v in variants.items():
        need = ("requests_per_s_per_replica", "replica_memory_mib", "shared_weights_mib")
        if missing := [k for k in need if not isinstance(v, dict) or k not in v]:
            raise ValueError(f"{path}: variant {name!r} lacks {missing}")
        rps = v["requests_per_s_per_replica"]
        if per_busy_core:
            cores = v.get("replica_cpu_cores")
            if not isinstance(cores, int | float) or not cores > 0:
                raise ValueError(f"{path}: variant {name!r} has no replica_cpu_cores for --per-busy-core")
            rps = rps / cores if isinstance(rps, int | float) else rps
        memory = (v["replica_memory_mib"], v["shared_weights_mib"])
        proxy_ms = v.get("proxy_cpu_ms_per_request", 0.0)
        out.append(VariantMeasurement(name, rps, *memory, cpus_per_replica, proxy_ms))
    return {k: v for k, v in data.items() if k != "variants"}, out


def load_many_models(path: str | Path) -> dict[str, Any] | None:
    """From a many-models benchmark record (`python -m benchmarks.many_models`): the pool's req/s
    over the dedicated apps' (`pool_rps_ratio`), a pool replica's private memory (`pool_replica_uss_mib`:
    the pool replicas' median USS sum over their count) and the run's date, models and CPU; None
    when there is no such file.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        pool = data["setups"]["pool"]
        replicas = pool["memory"]["by_role"]["replicas"]
        ratio = float(data["pool_vs_dedicated"]["requests_per_s"])
        uss = float(replicas["uss_mib"]) / float(replicas["processes"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ValueError(
            f"{path} is not a many-models record (python -m benchmarks.many_models): {exc}"
        ) from None
    if not (math.isfinite(ratio) and ratio > 0 and math.isfinite(uss) and uss > 0):
        raise ValueError(f"{path}: pool/dedicated req/s and pool replica USS must be > 0, got {ratio}, {uss}")
    return {
        "pool_rps_ratio": ratio,
        "pool_replica_uss_mib": uss,
        "date": data.get("date"),
        "models": data.get("models"),
        "quick": data.get("quick"),
        "cpu": (data.get("cpu") or {}).get("model_name"),
        "path": str(path),
    }
