"""What `serve_config.yaml` asks of a cluster: replica CPUs and memory, capacity marks, and findings.

Shared by the launcher check (`cluster.launcher`) and the RayService check (`cluster.rayservice`), so
both clusters are measured against the same demand and report problems the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from deployments.serve_config import ServeConfig

__all__ = [
    "AWS_FILE",
    "DOCKERFILE",
    "HEAD_MEMORY_BYTES",
    "ON_DEMAND_RESOURCE",
    "RAYSERVICE_FILE",
    "REPLICA_MEMORY_BYTES",
    "REPO_ROOT",
    "SERVE_CONFIG_FILE",
    "SPOT_RESOURCE",
    "WORKER_BASE_MEMORY_BYTES",
    "Finding",
    "ReplicaDemand",
    "Report",
    "diff",
    "marking_problem",
    "replica_demand",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVE_CONFIG_FILE = "serve_config.yaml"
AWS_FILE = "cluster/aws-spot.yaml"
RAYSERVICE_FILE = "cluster/rayservice.yaml"
DOCKERFILE = "cluster/Dockerfile"

# Custom Ray resources marking capacity kinds, the same in both cluster files: `ray status` shows them,
# and anything that must survive spot reclaims can ask for a sliver of `on_demand`. The Serve controller
# and the model store are pinned to the head by Ray's built-in `node:__internal_head__` resource instead,
# which also exists on a laptop's one-node cluster.
ON_DEMAND_RESOURCE = "on_demand"
SPOT_RESOURCE = "spot"
_DEFAULT_NUM_CPUS = 1.0  # what `deployments/classifier.py` asks for when the YAML gives no num_cpus
# Private memory of one replica at its peak: a Ray worker that imported torch, transformers and the app,
# running a full batch (16 x 512 tokens) on zero-copy weights, which live in the object store and are
# counted there. cluster/README.md ("Sizing") has the measurement; rounded up.
REPLICA_MEMORY_BYTES = 400 * 2**20
# Raylet, dashboard agent, Serve proxy, and the shared libraries (torch, ~0.3 GiB) every replica maps
# once per pod; the head adds GCS, dashboard, Serve controller and model store.
# Plus the one idle, pre-imported spare worker each node keeps for its next replica
# (deployments/warm_worker.py; 231 MiB USS measured, docs/SCALING.md).
_SPARE_WORKER_MEMORY_BYTES = 240 * 2**20
WORKER_BASE_MEMORY_BYTES = 1024 * 2**20 + _SPARE_WORKER_MEMORY_BYTES
HEAD_MEMORY_BYTES = 2048 * 2**20 + _SPARE_WORKER_MEMORY_BYTES

Report = Callable[..., None]  # err(message, level="error"): records a Finding for the file being checked


@dataclass(frozen=True)
class Finding:
    """One problem (`error`: the config is wrong) or caveat (`warning`) in one file."""

    file: str
    message: str
    level: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass(frozen=True)
class ReplicaDemand:
    """What serve_config.yaml's deployments ask of a cluster, in Ray CPUs."""

    largest: float  # one replica of the hungriest deployment: every worker must fit it
    smallest: float  # the least a replica takes: bounds how many replicas a node can hold
    baseline: float  # every deployment at min_replicas
    peak: float  # every deployment at max_replicas


def replica_demand(config: ServeConfig) -> ReplicaDemand:
    """CPUs of one replica (largest, smallest) and of all deployments at min and max replicas."""
    cpus = []
    baseline = peak = 0.0
    for app in config.by_name().values():
        for dep in _deployments(app):
            low, high = _replica_bounds(dep)
            cpus.append(_num_cpus(dep))
            baseline += cpus[-1] * low
            peak += cpus[-1] * high
    # A CPU-less deployment (the catch-all 404 app) does not bound how many replicas fit a node.
    return ReplicaDemand(max(cpus, default=0.0), min((c for c in cpus if c > 0), default=0.0), baseline, peak)


def _deployments(app: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The deployments of an application; an app without any runs one default deployment."""
    yield from app.get("deployments") or [{"name": "(default)"}]


def _num_cpus(dep: dict[str, Any]) -> float:
    return float((dep.get("ray_actor_options") or {}).get("num_cpus", _DEFAULT_NUM_CPUS))


def _replica_bounds(dep: dict[str, Any]) -> tuple[int, int]:
    """(min, max) replicas of a deployment: autoscaling bounds, else its fixed num_replicas."""
    auto = dep.get("autoscaling_config")
    if isinstance(auto, dict):
        low = int(auto.get("min_replicas", 1))
        return low, int(auto.get("max_replicas", low))
    fixed = dep.get("num_replicas", 1)
    return (1, 1) if fixed == "auto" else (int(fixed), int(fixed))


def marking_problem(resources: dict[str, Any], capacity: str) -> str | None:
    """What is wrong with a node's custom resources for `capacity` (on_demand or spot), else None.

    A node is marked with its own kind (>= 1) and never the other, so code asking for one lands there.
    """
    other = SPOT_RESOURCE if capacity == ON_DEMAND_RESOURCE else ON_DEMAND_RESOURCE
    if resources.get(capacity, 0) < 1 or other in resources:
        return f"must hold {capacity!r} >= 1 and no {other!r}"
    return None


def diff(ours: Any, theirs: Any, path: str) -> list[str]:
    """Where `theirs` differs from serve_config.yaml's `ours`; list items with a `name` match by name."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = []
        for key in ours.keys() | theirs.keys():
            where = f"{path}.{key}"
            if key not in theirs:
                out.append(f"{where} is missing (serve_config.yaml has {ours[key]!r})")
            elif key not in ours:
                out.append(f"{where} is not in serve_config.yaml (has {theirs[key]!r})")
            else:
                out += diff(ours[key], theirs[key], where)
        return sorted(out)
    named = (
        isinstance(ours, list)
        and isinstance(theirs, list)
        and all(isinstance(x, dict) and "name" in x for x in ours + theirs)
    )
    if named:
        return diff({x["name"]: x for x in ours}, {x["name"]: x for x in theirs}, path)
    if ours != theirs:
        return [f"{path} is {theirs!r}, serve_config.yaml has {ours!r}"]
    return []
