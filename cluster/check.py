"""Check the cluster configs against `serve_config.yaml`: same applications, spot only where it belongs.

`python -m cluster.check` validates `cluster/aws-spot.yaml` (Ray cluster launcher, `cluster.launcher`)
and `cluster/rayservice.yaml` (KubeRay RayService, `cluster.rayservice`) and exits 1 if anything is
wrong, logging one line per problem that names the file. Everything is read at run time:
`serve_config.yaml` is the source of truth, so retuning it (autoscaling, num_cpus, a new variant) is
checked against the clusters without touching this package. `--sync` rewrites the RayService's
`serveConfigV2` applications from it. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from cluster.demand import (
    AWS_FILE,
    DOCKERFILE,
    RAYSERVICE_FILE,
    REPO_ROOT,
    SERVE_CONFIG_FILE,
    Finding,
)
from cluster.launcher import check_aws
from cluster.rayservice import check_rayservice, kuberay_resources, sync_rayservice
from deployments.serve_config import ServeConfigError, load_serve_config

__all__ = ["check_all", "check_versions", "main"]

logger = logging.getLogger(__name__)


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
        kube_head = custom(kuberay_resources((spec.get("headGroupSpec") or {}).get("rayStartParams") or {}))
        kube_workers = set().union(
            *(
                custom(kuberay_resources(g.get("rayStartParams") or {}))
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


def _read_cluster_file(root: Path, name: str) -> dict[str, Any]:
    """A cluster YAML file as a mapping; ValueError says what is wrong (the caller names the file)."""
    try:
        data = yaml.safe_load((root / name).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"cannot read: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"must hold a YAML mapping, got {type(data).__name__}")
    return data


def check_all(root: Path = REPO_ROOT) -> list[Finding]:
    """Every check on the files under `root` (its serve_config.yaml, cluster/ and pyproject.toml)."""
    try:
        config = load_serve_config(root / SERVE_CONFIG_FILE)
    except ServeConfigError as e:
        return [Finding(SERVE_CONFIG_FILE, str(e))]
    out: list[Finding] = []
    loaded: dict[str, dict[str, Any]] = {}
    for name in (AWS_FILE, RAYSERVICE_FILE):
        try:
            loaded[name] = _read_cluster_file(root, name)
        except ValueError as e:
            out.append(Finding(name, str(e)))
    if AWS_FILE in loaded:
        out += check_aws(loaded[AWS_FILE], config, root=root)
    if RAYSERVICE_FILE in loaded:
        out += check_rayservice(loaded[RAYSERVICE_FILE], config)
    if len(loaded) == 2:
        dockerfile = root / DOCKERFILE
        out += check_versions(
            loaded[AWS_FILE],
            loaded[RAYSERVICE_FILE],
            dockerfile.read_text() if dockerfile.is_file() else None,
        )
        out += _check_custom_resources(loaded[AWS_FILE], loaded[RAYSERVICE_FILE])
    return out


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
        synced = sync_rayservice(root / RAYSERVICE_FILE, load_serve_config(root / SERVE_CONFIG_FILE))
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
