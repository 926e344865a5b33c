"""Check the cluster configs against `serve_config.yaml`: same applications, spot only where it belongs.

`python -m cluster.check` validates `cluster/aws-spot.yaml` (Ray cluster launcher) and
`cluster/rayservice.yaml` (KubeRay RayService) and exits 1 if anything is wrong, logging one line per
problem that names the file. Everything is read at run time: `serve_config.yaml` is the source of
truth, so retuning it (autoscaling, num_cpus, a new variant) is checked against the clusters without
touching this module. `--sync` rewrites the RayService's `serveConfigV2` applications from it.
The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import re
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "AWS_FILE",
    "DOCKERFILE",
    "Finding",
    "ON_DEMAND_RESOURCE",
    "RAYSERVICE_FILE",
    "SERVE_CONFIG_FILE",
    "SPOT_RESOURCE",
    "check_all",
    "check_aws",
    "check_launcher_schema",
    "check_rayservice",
    "check_versions",
    "main",
    "render_serve_config_v2",
    "serve_applications",
    "sync_rayservice",
]

logger = logging.getLogger(__name__)

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
DEFAULT_NUM_CPUS = 1.0  # what `deployments/classifier.py` asks for when the YAML gives no num_cpus
# Kubernetes node labels of spot / on-demand capacity on EKS, Karpenter, GKE and AKS.
SPOT_SELECTORS = {
    "eks.amazonaws.com/capacityType": "SPOT",
    "karpenter.sh/capacity-type": "spot",
    "cloud.google.com/gke-spot": "true",
    "kubernetes.azure.com/scalesetpriority": "spot",
}
ON_DEMAND_SELECTORS = {
    "eks.amazonaws.com/capacityType": "ON_DEMAND",
    "karpenter.sh/capacity-type": "on-demand",
}
# Private memory of one replica at its peak: a Ray worker that imported torch, transformers and the app,
# running a full batch (16 x 512 tokens) on zero-copy weights, which live in the object store and are
# counted there. cluster/README.md ("Sizing") has the measurement; rounded up.
REPLICA_MEMORY_BYTES = 400 * 2**20
# Raylet, dashboard agent, Serve proxy, and the shared libraries (torch, ~0.3 GiB) every replica maps
# once per pod; the head adds GCS, dashboard, Serve controller and model store.
# Plus the one idle, pre-imported spare worker each node keeps for its next replica
# (deployments/warm_worker.py; 231 MiB USS measured, docs/SCALING.md).
SPARE_WORKER_MEMORY_BYTES = 240 * 2**20
WORKER_BASE_MEMORY_BYTES = 1024 * 2**20 + SPARE_WORKER_MEMORY_BYTES
HEAD_MEMORY_BYTES = 2048 * 2**20 + SPARE_WORKER_MEMORY_BYTES
_MEMORY_UNITS = {
    "": 1,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


_Report = Callable[..., None]  # err(message, level="error"): records a Finding for the file being checked


@dataclass(frozen=True)
class Finding:
    """One problem (`error`: the config is wrong) or caveat (`warning`) in one file."""

    file: str
    message: str
    level: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


def serve_applications(serve_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Serve config's applications by name."""
    apps = serve_config.get("applications")
    if not isinstance(apps, list):
        raise ValueError(f"applications must be a list, got {type(apps).__name__}")
    return {app["name"]: app for app in apps}


def _deployments(app: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, deployment) of an application; an app without any runs one default deployment."""
    deployments = app.get("deployments") or [{"name": "(default)"}]
    for dep in deployments:
        yield dep.get("name", "(default)"), dep


def _num_cpus(dep: dict[str, Any]) -> float:
    return float((dep.get("ray_actor_options") or {}).get("num_cpus", DEFAULT_NUM_CPUS))


def _replica_bounds(dep: dict[str, Any]) -> tuple[int, int]:
    """(min, max) replicas of a deployment: autoscaling bounds, else its fixed num_replicas."""
    auto = dep.get("autoscaling_config")
    if isinstance(auto, dict):
        low = int(auto.get("min_replicas", 1))
        return low, int(auto.get("max_replicas", low))
    fixed = dep.get("num_replicas", 1)
    return (1, 1) if fixed == "auto" else (int(fixed), int(fixed))


@dataclass(frozen=True)
class _Demand:
    """What serve_config.yaml's deployments ask of a cluster, in Ray CPUs."""

    largest: float  # one replica of the hungriest deployment: every worker must fit it
    smallest: float  # the least a replica takes: bounds how many replicas a node can hold
    baseline: float  # every deployment at min_replicas
    peak: float  # every deployment at max_replicas


def _replica_demand(serve_config: dict[str, Any]) -> _Demand:
    cpus = []
    baseline = peak = 0.0
    for app in serve_applications(serve_config).values():
        for _, dep in _deployments(app):
            low, high = _replica_bounds(dep)
            cpus.append(_num_cpus(dep))
            baseline += cpus[-1] * low
            peak += cpus[-1] * high
    # A CPU-less deployment (the catch-all 404 app) does not bound how many replicas fit a node.
    return _Demand(max(cpus, default=0.0), min((c for c in cpus if c > 0), default=0.0), baseline, peak)


def _diff(ours: Any, theirs: Any, path: str) -> list[str]:
    """Where `theirs` differs from `ours`; list items with a `name` are matched by name."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = []
        for key in ours.keys() | theirs.keys():
            where = f"{path}.{key}"
            if key not in theirs:
                out.append(f"{where} is missing (serve_config.yaml has {ours[key]!r})")
            elif key not in ours:
                out.append(f"{where} is not in serve_config.yaml (has {theirs[key]!r})")
            else:
                out += _diff(ours[key], theirs[key], where)
        return sorted(out)
    named = (
        isinstance(ours, list)
        and isinstance(theirs, list)
        and all(isinstance(x, dict) and "name" in x for x in ours + theirs)
    )
    if named:
        return _diff({x["name"]: x for x in ours}, {x["name"]: x for x in theirs}, path)
    if ours != theirs:
        return [f"{path} is {theirs!r}, serve_config.yaml has {ours!r}"]
    return []


def _kube_cpus(value: Any) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _kube_bytes(value: Any) -> float:
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    if match is None or match.group(2) not in _MEMORY_UNITS:
        raise ValueError(f"memory must be a Kubernetes quantity like 3Gi, got {value!r}")
    return float(match.group(1)) * _MEMORY_UNITS[match.group(2)]


def _kuberay_resources(params: dict[str, Any]) -> dict[str, float]:
    """Custom resources from rayStartParams (KubeRay's quoted form '"{\\"spot\\": 1}"', or plain JSON)."""
    text = str(params.get("resources", "")).strip()
    if not text:
        return {}
    if len(text) > 1 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('\\"', '"')
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f'resources must be JSON like \'"{{\\"spot\\": 1}}"\', got {params["resources"]!r}'
        ) from e
    return {str(k): float(v) for k, v in parsed.items()}


# ---------------------------------------------------------------------------------------------- RayService


class _BlockDumper(yaml.SafeDumper):
    """Writes a shared mapping (serve_config.yaml's `*runtime_env`) out in full, lists indented."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


def render_serve_config_v2(serve_config: dict[str, Any], current: str | None = None) -> str:
    """serveConfigV2 text: serve_config.yaml's applications under the RayService's own top-level keys.

    `http_options` and `proxy_location` stay the RayService's (the pods must listen on 0.0.0.0 for the
    Kubernetes serve Service, where a laptop listens on loopback); `applications` is replaced.
    """
    top: dict[str, Any] = {"proxy_location": "EveryNode", "http_options": {"host": "0.0.0.0", "port": 8000}}
    if current:
        top = {k: v for k, v in yaml.safe_load(current).items() if k != "applications"}
    top["applications"] = serve_config["applications"]

    return yaml.dump(top, Dumper=_BlockDumper, sort_keys=False, width=110)


def sync_rayservice(path: Path, serve_config: dict[str, Any]) -> bool:
    """Rewrite the `serveConfigV2: |` block of the RayService file in place; True if it changed.

    Text-based, so the file's comments and layout outside the block are kept.
    """
    lines = path.read_text().splitlines(keepends=True)
    start = next(
        (i for i, line in enumerate(lines) if re.match(r"^\s*serveConfigV2:\s*\|[-+]?\s*$", line)), None
    )
    if start is None:
        raise ValueError(f"{path} has no 'serveConfigV2: |' block to rewrite")
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and (
        not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
    ):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():  # blank lines after the block stay
        end -= 1
    current = "".join(line[indent + 2 :] for line in lines[start + 1 : end])
    body = render_serve_config_v2(serve_config, current or None)
    block = [(" " * (indent + 2) + line).rstrip() + "\n" for line in body.splitlines()]
    if block == lines[start + 1 : end]:
        return False
    path.write_text("".join(lines[: start + 1] + block + lines[end:]))
    return True


def check_rayservice(
    rayservice: dict[str, Any], serve_config: dict[str, Any], file: str = RAYSERVICE_FILE
) -> list[Finding]:
    """The RayService serves serve_config.yaml's applications, head on-demand, workers on spot."""
    out: list[Finding] = []

    def err(msg: str, level: Literal["error", "warning"] = "error") -> None:
        out.append(Finding(file, msg, level))

    if rayservice.get("apiVersion") != "ray.io/v1" or rayservice.get("kind") != "RayService":
        err(
            f"must be apiVersion ray.io/v1, kind RayService, got "
            f"{rayservice.get('apiVersion')!r}, {rayservice.get('kind')!r}"
        )
    spec = rayservice.get("spec") or {}
    text = spec.get("serveConfigV2")
    v2: dict[str, Any] = {}
    if not isinstance(text, str):
        err("spec.serveConfigV2 must be a YAML string (a `|` block) holding the Serve config")
    else:
        try:
            v2 = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            err(f"spec.serveConfigV2 is not valid YAML: {e}")
        out += _check_serve_config_v2(v2, serve_config, file)
    cluster = spec.get("rayClusterConfig")
    if not isinstance(cluster, dict):
        err("spec.rayClusterConfig is missing")
        return out
    if not cluster.get("enableInTreeAutoscaling"):
        err("rayClusterConfig.enableInTreeAutoscaling must be true, or Serve autoscaling cannot add pods")
    head = cluster.get("headGroupSpec") or {}
    workers = cluster.get("workerGroupSpecs") or []
    if not workers:
        err("rayClusterConfig.workerGroupSpecs is empty: no spot worker group")
    images = {c.get("image") for c in _containers(head)} | {
        c.get("image") for w in workers for c in _containers(w)
    }
    if len(images) != 1 or None in images:
        err(
            f"head and workers must run one image (the project and its artifacts), "
            f"got {sorted(map(str, images))}"
        )
    demand = _replica_demand(serve_config)
    port = int((v2.get("http_options") or {}).get("port", 8000))

    head_where = "headGroupSpec"
    head_res = _group_resources(head, head_where, err)
    if head_res.get(ON_DEMAND_RESOURCE, 0) < 1 or SPOT_RESOURCE in head_res:
        err(
            f"{head_where}.rayStartParams.resources must hold {ON_DEMAND_RESOURCE!r} >= 1 "
            f"and no {SPOT_RESOURCE!r}"
        )
    pod = _pod(head)
    selector = pod.get("nodeSelector") or {}
    if not any(selector.get(k) == v for k, v in ON_DEMAND_SELECTORS.items()):
        err(
            f"{head_where} is not pinned to on-demand nodes: its nodeSelector needs one of "
            f"{ON_DEMAND_SELECTORS} (the Serve controller and the model store live on the head)"
        )
    spot_taints = {t.get("key") for w in workers for t in _pod(w).get("tolerations") or []}
    if any(selector.get(k) == v for k, v in SPOT_SELECTORS.items()) or _tolerates(pod, spot_taints):
        err(f"{head_where} selects or tolerates spot nodes; the head must never run on spot")
    head_cpus = _group_cpus(head, head_where, err)
    if head_cpus is not None and head_cpus < demand.baseline:
        err(
            f"{head_where} has {head_cpus:g} CPUs but the deployments' min_replicas need "
            f"{demand.baseline:g}: the rest run on spot pods, so a spot reclaim can leave a variant "
            "without a replica for a while",
            "warning",
        )
    if head_cpus is not None:
        _check_pod_memory(head, head_where, head_cpus, demand.smallest, HEAD_MEMORY_BYTES, err)
    _check_ports(head, head_where, port, err)

    for i, group in enumerate(workers):
        where = f"workerGroupSpecs[{i}] ({group.get('groupName', '?')})"
        res = _group_resources(group, where, err)
        if res.get(SPOT_RESOURCE, 0) < 1 or ON_DEMAND_RESOURCE in res:
            err(
                f"{where}.rayStartParams.resources must hold {SPOT_RESOURCE!r} >= 1 "
                f"and no {ON_DEMAND_RESOURCE!r}"
            )
        pod = _pod(group)
        selector = pod.get("nodeSelector") or {}
        keys = [k for k, v in SPOT_SELECTORS.items() if str(selector.get(k)) == v]
        if not keys:
            err(f"{where} has no spot nodeSelector (one of {SPOT_SELECTORS})")
        elif not pod.get("tolerations"):
            err(
                f"{where} selects spot nodes with {keys[0]!r} but has no toleration for the spot pool's taint"
            )
        low, high = group.get("minReplicas", 0), group.get("maxReplicas")
        replicas = group.get("replicas", low)
        if not (
            isinstance(high, int) and isinstance(low, int) and 0 <= low <= replicas <= high and high >= 1
        ):
            err(
                f"{where} needs 0 <= minReplicas <= replicas <= maxReplicas and maxReplicas >= 1, got "
                f"{low!r} <= {replicas!r} <= {high!r}"
            )
        cpus = _group_cpus(group, where, err)
        if cpus is not None and cpus < demand.largest:
            err(
                f"{where} has {cpus:g} CPUs, less than one replica needs "
                f"({demand.largest:g}, serve_config.yaml)"
            )
        if cpus is not None:
            _check_pod_memory(group, where, cpus, demand.smallest, WORKER_BASE_MEMORY_BYTES, err)
        _check_ports(group, where, port, err)
    return out


def _check_serve_config_v2(v2: dict[str, Any], serve_config: dict[str, Any], file: str) -> list[Finding]:
    out: list[Finding] = []
    host = (v2.get("http_options") or {}).get("host", "0.0.0.0")  # Serve's schema default
    if host in ("127.0.0.1", "localhost", "::1"):
        out.append(
            Finding(
                file,
                f"serveConfigV2 http_options.host is {host}: the Kubernetes serve Service "
                "cannot reach proxies that listen on loopback; use 0.0.0.0",
            )
        )
    ours = serve_applications(serve_config)
    try:
        theirs = serve_applications(v2)
    except (ValueError, KeyError, TypeError) as e:
        return [*out, Finding(file, f"serveConfigV2 applications are malformed: {e}")]
    for name in sorted(ours.keys() - theirs.keys()):
        out.append(Finding(file, f"serveConfigV2 is missing application {name!r} (in serve_config.yaml)"))
    for name in sorted(theirs.keys() - ours.keys()):
        out.append(Finding(file, f"serveConfigV2 has application {name!r}, which serve_config.yaml does not"))
    for name in sorted(ours.keys() & theirs.keys()):
        for problem in _diff(ours[name], theirs[name], f"applications[{name}]"):
            out.append(Finding(file, f"serveConfigV2 {problem}"))
    if any(f.message.startswith("serveConfigV2 ") and "application" in f.message for f in out):
        out.append(
            Finding(
                file,
                "run `python -m cluster.check --sync` to copy serve_config.yaml's applications",
                "warning",
            )
        )
    return out


def _containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    return _pod(group).get("containers") or []


def _pod(group: dict[str, Any]) -> dict[str, Any]:
    return (group.get("template") or {}).get("spec") or {}


def _tolerates(pod: dict[str, Any], keys: set[str | None]) -> bool:
    """Whether the pod tolerates a taint with one of these keys (a key-less Exists tolerates all)."""
    return any(
        t.get("key") in keys or (t.get("operator") == "Exists" and "key" not in t)
        for t in pod.get("tolerations") or []
    )


def _group_resources(group: dict[str, Any], where: str, err: _Report) -> dict[str, float]:
    try:
        return _kuberay_resources(group.get("rayStartParams") or {})
    except ValueError as e:
        err(f"{where}.rayStartParams.{e}")
        return {}


def _group_cpus(group: dict[str, Any], where: str, err: _Report) -> float | None:
    """Ray's logical CPUs of a pod: rayStartParams num-cpus, else (as KubeRay does) the CPU limit."""
    params = group.get("rayStartParams") or {}
    containers = _containers(group)
    if not containers:
        err(f"{where}.template.spec.containers is empty")
        return None
    limits = (containers[0].get("resources") or {}).get("limits") or {}
    value = params.get("num-cpus", limits.get("cpu"))
    if value is None:
        err(f"{where} sets neither rayStartParams num-cpus nor a CPU limit: Ray would count the node's CPUs")
        return None
    return _kube_cpus(value)


def _check_pod_memory(
    group: dict[str, Any], where: str, cpus: float, smallest: float, base_bytes: int, err: _Report
) -> None:
    """A pod's memory limit holds as many replicas as its CPUs admit, plus Ray's own processes."""
    resources = _containers(group)[0].get("resources") or {}
    limit = (resources.get("limits") or {}).get("memory")
    if limit is None:
        err(
            f"{where} has no memory limit: replicas (~{REPLICA_MEMORY_BYTES / 2**20:.0f} MiB each) could "
            "starve the node"
        )
        return
    request = (resources.get("requests") or {}).get("memory", limit)
    try:
        limit_bytes, request_bytes = _kube_bytes(limit), _kube_bytes(request)
    except ValueError as e:
        err(f"{where}: {e}")
        return
    if request_bytes != limit_bytes:
        err(
            f"{where} memory request {request} != limit {limit}: Ray sizes its object store from the limit, "
            "so a pod squeezed to its request can be OOM-killed",
            "warning",
        )
    slots = int(cpus / smallest) if smallest > 0 else 0
    # Unset, Ray gives the object store 30% of the pod's memory.
    object_store = float((group.get("rayStartParams") or {}).get("object-store-memory", 0.3 * limit_bytes))
    need = base_bytes + slots * REPLICA_MEMORY_BYTES + object_store
    if limit_bytes < need:
        err(
            f"{where} memory limit {limit} < {need / 2**30:.2f} GiB needed for {slots} replicas "
            f"(~{REPLICA_MEMORY_BYTES / 2**20:.0f} MiB each), Ray's processes and the object store"
        )


def _check_ports(group: dict[str, Any], where: str, port: int, err: _Report) -> None:
    for container in _containers(group):
        for p in container.get("ports") or []:
            if p.get("name") == "serve" and int(p.get("containerPort", -1)) != port:
                err(
                    f"{where} container port 'serve' is {p.get('containerPort')}, "
                    f"serveConfigV2 serves on {port}"
                )


# ------------------------------------------------------------------------------------- AWS cluster launcher


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
    serve_config: dict[str, Any],
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
    demand = _replica_demand(serve_config)
    head = types[head_name]
    head_res = head.get("resources") or {}
    if head_res.get(ON_DEMAND_RESOURCE, 0) < 1 or SPOT_RESOURCE in head_res:
        err(
            f"head node type {head_name!r} resources must hold {ON_DEMAND_RESOURCE!r} >= 1 "
            f"and no {SPOT_RESOURCE!r}"
        )
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
        if res.get(SPOT_RESOURCE, 0) < 1 or ON_DEMAND_RESOURCE in res:
            err(
                f"worker type {name!r} resources must hold {SPOT_RESOURCE!r} >= 1 "
                f"and no {ON_DEMAND_RESOURCE!r}"
            )
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
    _check_aws_commands(cluster, serve_config, root, serve_config_file, err)
    return out


def _market(node_type: dict[str, Any]) -> str | None:
    options = (node_type.get("node_config") or {}).get("InstanceMarketOptions") or {}
    market = options.get("MarketType")
    return market.lower() if isinstance(market, str) else None


def _check_aws_commands(
    cluster: dict[str, Any], serve_config: dict[str, Any], root: Path, serve_config_file: str, err: _Report
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
    for app in serve_applications(serve_config).values():
        model_dir = (app.get("args") or {}).get("model_dir")
        if (
            model_dir
            and not Path(model_dir).is_absolute()
            and not (root / model_dir / "variant.json").is_file()
        ):
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


# ----------------------------------------------------------------------------------------------- versions


def check_versions(
    cluster: dict[str, Any], rayservice: dict[str, Any], dockerfile: str | None
) -> list[Finding]:
    """One Ray version everywhere: a spot node that boots weeks later must still join the cluster."""
    found: dict[str, str] = {}
    image = str((cluster.get("docker") or {}).get("image", ""))
    match = re.search(r"rayproject/ray[-\w]*:(\d+\.\d+\.\d+)", image)
    if match:
        found[AWS_FILE] = match.group(1)
    else:
        return [Finding(AWS_FILE, f"docker.image must be a versioned rayproject/ray image, got {image!r}")]
    ray_version = str(((rayservice.get("spec") or {}).get("rayClusterConfig") or {}).get("rayVersion", ""))
    found[RAYSERVICE_FILE] = ray_version
    if dockerfile is not None:
        match = re.search(r"^FROM\s+rayproject/ray[-\w]*:(\d+\.\d+\.\d+)", dockerfile, re.M)
        found[DOCKERFILE] = match.group(1) if match else "(no FROM rayproject/ray:X.Y.Z)"
    out = []
    if len(set(found.values())) > 1:
        out.append(Finding(RAYSERVICE_FILE, f"Ray versions differ between files: {found}"))
    try:
        local = metadata.version("ray")
    except metadata.PackageNotFoundError:
        local = None
    if local and local != found[AWS_FILE]:
        out.append(
            Finding(
                AWS_FILE,
                f"the clusters run Ray {found[AWS_FILE]} but this machine has {local}: "
                "`ray up` / `serve deploy` from here may not talk to them",
                "warning",
            )
        )
    return out


# ------------------------------------------------------------------------------------------------- driver


def _load(root: Path, name: str) -> dict[str, Any]:
    path = root / name
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{name}: cannot read: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{name}: must hold a YAML mapping, got {type(data).__name__}")
    return data


def check_all(root: Path = REPO_ROOT) -> list[Finding]:
    """Every check on the files under `root` (its serve_config.yaml, cluster/ and pyproject.toml)."""
    try:
        serve_config = _load(root, SERVE_CONFIG_FILE)
        serve_applications(serve_config)
    except (ValueError, KeyError, TypeError) as e:
        return [Finding(SERVE_CONFIG_FILE, str(e))]
    out: list[Finding] = []
    loaded: dict[str, dict[str, Any]] = {}
    for name in (AWS_FILE, RAYSERVICE_FILE):
        try:
            loaded[name] = _load(root, name)
        except ValueError as e:
            out.append(Finding(name, str(e).split(": ", 1)[1]))
    if AWS_FILE in loaded:
        out += check_aws(loaded[AWS_FILE], serve_config, root=root)
    if RAYSERVICE_FILE in loaded:
        out += check_rayservice(loaded[RAYSERVICE_FILE], serve_config)
    if len(loaded) == 2:
        dockerfile = root / DOCKERFILE
        out += check_versions(
            loaded[AWS_FILE],
            loaded[RAYSERVICE_FILE],
            dockerfile.read_text() if dockerfile.is_file() else None,
        )
        out += _check_custom_resources(loaded[AWS_FILE], loaded[RAYSERVICE_FILE])
    return out


def _check_custom_resources(cluster: dict[str, Any], rayservice: dict[str, Any]) -> list[Finding]:
    """Both files give head and workers the same custom resource names (code may ask for either)."""
    types = cluster.get("available_node_types") or {}
    head_name = cluster.get("head_node_type")

    def custom(res: dict[str, Any]) -> set[str]:
        return {k for k in res if k not in ("CPU", "GPU", "memory", "object_store_memory")}

    aws_head = custom((types.get(head_name) or {}).get("resources") or {})
    aws_workers = set().union(*(custom(t.get("resources") or {}) for n, t in types.items() if n != head_name))
    spec = ((rayservice.get("spec") or {}).get("rayClusterConfig")) or {}
    try:
        kube_head = custom(_kuberay_resources((spec.get("headGroupSpec") or {}).get("rayStartParams") or {}))
        kube_workers = set().union(
            *(
                custom(_kuberay_resources(g.get("rayStartParams") or {}))
                for g in spec.get("workerGroupSpecs") or []
            )
        )
    except ValueError:
        return []  # reported by check_rayservice
    if (aws_head, aws_workers) != (kube_head, kube_workers):
        return [
            Finding(
                RAYSERVICE_FILE,
                f"custom resources differ from {AWS_FILE}: head {sorted(kube_head)} vs "
                f"{sorted(aws_head)}, workers {sorted(kube_workers)} vs {sorted(aws_workers)}",
            )
        ]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root holding the files")
    parser.add_argument(
        "--sync",
        action="store_true",
        help=f"first rewrite {RAYSERVICE_FILE}'s serveConfigV2 applications from {SERVE_CONFIG_FILE}",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    root = args.root.resolve()
    synced = False
    if args.sync:
        synced = sync_rayservice(root / RAYSERVICE_FILE, _load(root, SERVE_CONFIG_FILE))
        logger.info("%s: serveConfigV2 %s", RAYSERVICE_FILE, "rewritten" if synced else "already in sync")
    findings = check_all(root)
    for f in findings:
        (logger.error if f.level == "error" else logger.warning)("%s", f)
    errors = [f for f in findings if f.level == "error"]
    if not errors:
        logger.info("%s and %s match %s", AWS_FILE, RAYSERVICE_FILE, SERVE_CONFIG_FILE)
    print(json.dumps({"ok": not errors, "synced": synced, "findings": [asdict(f) for f in findings]}))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
