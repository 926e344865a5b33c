"""The Ray cluster launcher config for AWS (`cluster/aws-spot.yaml`) against serve_config.yaml.

Ray's own schema accepts it; the head is on-demand, workers are spot and fit a replica; `ray up` ships
the repository, installs torch before the project, and the head deploys serve_config.yaml.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from cluster.demand import (
    AWS_FILE,
    ON_DEMAND_RESOURCE,
    REPO_ROOT,
    SERVE_CONFIG_FILE,
    SPOT_RESOURCE,
    Finding,
    Report,
    marking_problem,
    replica_demand,
)
from deployments.serve_config import ServeConfig

__all__ = ["check_aws", "check_launcher_schema"]


def check_launcher_schema(cluster: dict[str, Any]) -> list[str]:
    """Ray's own validation of a cluster-launcher config (its JSON schema, after filling defaults)."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        validate_config(prepare_config(copy.deepcopy(cluster)))
    except jsonschema.ValidationError as e:
        where = ".".join(map(str, e.absolute_path)) or "(top level)"
        return [f"Ray's cluster schema rejects {where}: {e.message}"]
    except (ValueError, KeyError, TypeError, RuntimeError, AssertionError) as e:
        return [f"Ray rejects the config: {e}"]
    return []


def check_aws(
    cluster: dict[str, Any],
    config: ServeConfig,
    *,
    root: Path = REPO_ROOT,
    file: str = AWS_FILE,
    serve_config_file: str = SERVE_CONFIG_FILE,
) -> list[Finding]:
    """The launcher config: on-demand head, spot workers that fit a replica, serve_config.yaml deployed."""
    out = [Finding(file, msg) for msg in check_launcher_schema(cluster)]

    def err(msg: str, level: Literal["error", "warning"] = "error") -> None:
        out.append(Finding(file, msg, level))

    types = cluster.get("available_node_types") or {}
    head_name = cluster.get("head_node_type")
    if head_name not in types:
        err(f"head_node_type {head_name!r} is not one of available_node_types {sorted(types)}")
        return out
    demand = replica_demand(config)
    head = types[head_name]
    head_res = head.get("resources") or {}
    problem = marking_problem(head_res, ON_DEMAND_RESOURCE)
    if problem:
        err(f"head node type {head_name!r} resources {problem}")
    if _market(head) == "spot":
        err(
            f"head node type {head_name!r} is spot; the head (Serve controller, model store) "
            "must be on-demand"
        )
    if "CPU" not in head_res:
        err(f"head node type {head_name!r} must declare resources.CPU (how much of it replicas may use)")
    elif head_res["CPU"] < demand.baseline:
        err(
            f"head node type {head_name!r} has CPU {head_res['CPU']} but the deployments' min_replicas need "
            f"{demand.baseline:g}: the rest run on spot, so a spot reclaim can leave a variant "
            "without a replica",
            "warning",
        )
    workers = {name: t for name, t in types.items() if name != head_name}
    if not workers:
        err("available_node_types has no worker types")
    max_total = cluster.get("max_workers", 0)
    capacity = float(head_res.get("CPU", 0))
    for name, t in sorted(workers.items(), key=lambda kv: -(kv[1].get("resources") or {}).get("CPU", 0)):
        res = t.get("resources") or {}
        if _market(t) != "spot":
            err(f"worker type {name!r} has no InstanceMarketOptions: {{MarketType: spot}} in its node_config")
        problem = marking_problem(res, SPOT_RESOURCE)
        if problem:
            err(f"worker type {name!r} resources {problem}")
        low, high = t.get("min_workers", 0), t.get("max_workers", max_total)
        if not 0 <= low <= high or high < 1:
            err(
                f"worker type {name!r} needs 0 <= min_workers <= max_workers and max_workers >= 1, "
                f"got {low}, {high}"
            )
        if "CPU" not in res:
            err(f"worker type {name!r} must declare resources.CPU so replicas' fit can be checked")
        elif res["CPU"] < demand.largest:
            err(
                f"worker type {name!r} has CPU {res['CPU']}, less than one replica needs ({demand.largest:g})"
            )
        count = max(0, min(high, max_total))
        max_total -= count
        capacity += count * float(res.get("CPU", 0))
    if capacity < demand.peak:
        err(
            f"at max_workers the cluster has {capacity:g} CPUs but every deployment at max_replicas needs "
            f"{demand.peak:g}: autoscaling will stop short",
            "warning",
        )
    _check_commands(cluster, config, root, serve_config_file, err)
    return out


def _market(node_type: dict[str, Any]) -> str | None:
    options = (node_type.get("node_config") or {}).get("InstanceMarketOptions") or {}
    market = options.get("MarketType")
    return market.lower() if isinstance(market, str) else None


def _check_commands(
    cluster: dict[str, Any], config: ServeConfig, root: Path, serve_config_file: str, err: Report
) -> None:
    """The repo is mounted, torch then the project are installed, and the head deploys serve_config.yaml."""
    mounts = cluster.get("file_mounts") or {}
    serve_name = Path(serve_config_file).name
    remote = next(
        (r for r, local in mounts.items() if (root / Path(local).expanduser() / serve_name).is_file()), None
    )
    if remote is None:
        err(
            f"file_mounts must ship the repository (a local dir holding {serve_name}) to the nodes; "
            f"got {mounts}"
        )
        return
    excluded = {str(p).strip("/") for p in cluster.get("rsync_exclude") or []}
    if "artifacts" in excluded:
        err("rsync_exclude drops artifacts/: the head's model store would have no weights to serve")
    if ".venv" not in excluded:
        err("rsync_exclude should hold .venv (GBs the nodes do not need)", "warning")
    for model_dir in dict.fromkeys(config.model_dirs().values()):  # every model's, the pool's too
        if not Path(model_dir).is_absolute() and not (root / model_dir / "variant.json").is_file():
            err(
                f"{model_dir} is not built here: run `make artifacts` before `ray up` (file_mounts ships "
                "the repository's artifacts/ to the head)",
                "warning",
            )

    setup = [str(c) for c in cluster.get("setup_commands") or []]
    pin = _torch_pin(root)
    torch_at = next((i for i, c in enumerate(setup) if pin and f"torch=={pin}" in c and "pip" in c), None)
    project_at = next(
        (
            i
            for i, c in enumerate(setup)
            if "pip" in c and "install" in c and re.search(rf"{re.escape(remote)}\b", c)
        ),
        None,
    )
    if torch_at is None:
        err(f"setup_commands must `pip install torch=={pin}` (pyproject's pin) before the project")
    if project_at is None:
        err(f"setup_commands must pip install the project from {remote}")
    if torch_at is not None and project_at is not None and torch_at > project_at:
        err(
            f"setup_commands install the project (command {project_at}) before torch=={pin} "
            f"(command {torch_at}): "
            "the project's own torch requirement would pull another build"
        )

    start = [str(c) for c in cluster.get("head_start_ray_commands") or []]
    ray_at = next((i for i, c in enumerate(start) if re.search(r"ray start\b.*--head", c)), None)
    deploy_at = next(
        (i for i, c in enumerate(start) if "serve deploy" in c and serve_name in c and remote in c), None
    )
    if ray_at is None:
        err("head_start_ray_commands must `ray start --head`")
    if deploy_at is None:
        err(
            f"head_start_ray_commands must `serve deploy {serve_name}` from {remote} after `ray start --head`"
        )
    elif ray_at is not None and deploy_at < ray_at:
        err(f"head_start_ray_commands run `serve deploy` (command {deploy_at}) before `ray start --head`")


def _torch_pin(root: Path) -> str | None:
    """The exact torch version pyproject.toml pins (`torch==X`), read at run time."""
    path = root / "pyproject.toml"
    if not path.is_file():
        return None
    deps = tomllib.loads(path.read_text()).get("project", {}).get("dependencies", [])
    for dep in deps:
        match = re.fullmatch(r"torch\s*==\s*([^\s;]+)", dep.strip())
        if match:
            return match.group(1)
    return None
