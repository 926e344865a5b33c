"""The KubeRay RayService (`cluster/rayservice.yaml`): render and sync its `serveConfigV2`, and check it.

The check: it serves serve_config.yaml's applications, its head is on on-demand nodes, its workers on
spot, and its pods are large enough for the replicas their CPUs admit.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml

from cluster.demand import (
    HEAD_MEMORY_BYTES,
    ON_DEMAND_RESOURCE,
    RAYSERVICE_FILE,
    REPLICA_MEMORY_BYTES,
    SPOT_RESOURCE,
    WORKER_BASE_MEMORY_BYTES,
    Finding,
    Report,
    diff,
    marking_problem,
    replica_demand,
)
from deployments.serve_config import ServeConfig

__all__ = ["check_rayservice", "kuberay_resources", "render_serve_config_v2", "sync_rayservice"]

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


# ------------------------------------------------------------------------------------------ render and sync


class _BlockDumper(yaml.SafeDumper):
    """Writes a shared mapping (serve_config.yaml's anchors) out in full, lists indented."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


def render_serve_config_v2(config: ServeConfig, current: str | None = None) -> str:
    """serveConfigV2 text: serve_config.yaml's applications under the RayService's own top-level keys.

    `http_options` and `proxy_location` stay the RayService's (the pods must listen on 0.0.0.0 for the
    Kubernetes serve Service, where a laptop listens on loopback); `applications` is replaced.
    """
    top: dict[str, Any] = {"proxy_location": "EveryNode", "http_options": {"host": "0.0.0.0", "port": 8000}}
    if current:
        top = {k: v for k, v in yaml.safe_load(current).items() if k != "applications"}
    top["applications"] = config.applications

    return yaml.dump(top, Dumper=_BlockDumper, sort_keys=False, width=110)


def sync_rayservice(path: Path, config: ServeConfig) -> bool:
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
    body = render_serve_config_v2(config, current or None)
    block = [(" " * (indent + 2) + line).rstrip() + "\n" for line in body.splitlines()]
    if block == lines[start + 1 : end]:
        return False
    path.write_text("".join(lines[: start + 1] + block + lines[end:]))
    return True


# ------------------------------------------------------------------------------------------------- check


def check_rayservice(
    rayservice: dict[str, Any], config: ServeConfig, file: str = RAYSERVICE_FILE
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
        out += _check_serve_config_v2(v2, config, file)
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
    demand = replica_demand(config)
    port = int((v2.get("http_options") or {}).get("port", 8000))

    head_where = "headGroupSpec"
    _check_marked(head, head_where, ON_DEMAND_RESOURCE, err)
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
        _check_marked(group, where, SPOT_RESOURCE, err)
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


def _check_serve_config_v2(v2: dict[str, Any], config: ServeConfig, file: str) -> list[Finding]:
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
    ours = config.by_name()
    try:
        theirs = _applications_by_name(v2)
    except (ValueError, KeyError, TypeError) as e:
        return [*out, Finding(file, f"serveConfigV2 applications are malformed: {e}")]
    for name in sorted(ours.keys() - theirs.keys()):
        out.append(Finding(file, f"serveConfigV2 is missing application {name!r} (in serve_config.yaml)"))
    for name in sorted(theirs.keys() - ours.keys()):
        out.append(Finding(file, f"serveConfigV2 has application {name!r}, which serve_config.yaml does not"))
    for name in sorted(ours.keys() & theirs.keys()):
        for problem in diff(ours[name], theirs[name], f"applications[{name}]"):
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


def _applications_by_name(v2: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """serveConfigV2's applications by name (a string inside the RayService, not a file to load)."""
    apps = v2.get("applications")
    if not isinstance(apps, list):
        raise ValueError(f"applications must be a list, got {type(apps).__name__}")
    return {app["name"]: app for app in apps}


# ------------------------------------------------------------------------------------ pods and quantities


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


def kuberay_resources(params: dict[str, Any]) -> dict[str, float]:
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


def _check_marked(group: dict[str, Any], where: str, capacity: str, err: Report) -> None:
    """The group's rayStartParams resources mark it as `capacity` (on_demand or spot)."""
    try:
        resources = kuberay_resources(group.get("rayStartParams") or {})
    except ValueError as e:
        err(f"{where}.rayStartParams.{e}")
        resources = {}
    problem = marking_problem(resources, capacity)
    if problem:
        err(f"{where}.rayStartParams.resources {problem}")


def _kube_cpus(value: Any) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _kube_bytes(value: Any) -> float:
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    if match is None or match.group(2) not in _MEMORY_UNITS:
        raise ValueError(f"memory must be a Kubernetes quantity like 3Gi, got {value!r}")
    return float(match.group(1)) * _MEMORY_UNITS[match.group(2)]


def _group_cpus(group: dict[str, Any], where: str, err: Report) -> float | None:
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
    group: dict[str, Any], where: str, cpus: float, smallest: float, base_bytes: int, err: Report
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


def _check_ports(group: dict[str, Any], where: str, port: int, err: Report) -> None:
    for container in _containers(group):
        for p in container.get("ports") or []:
            if p.get("name") == "serve" and int(p.get("containerPort", -1)) != port:
                err(
                    f"{where} container port 'serve' is {p.get('containerPort')}, "
                    f"serveConfigV2 serves on {port}"
                )
