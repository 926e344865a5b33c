"""The cluster configs parse, Ray's own schema accepts the launcher file, both serve what
serve_config.yaml serves, and `cluster.check` names the file and the problem in broken copies."""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.check import check_all, main
from cluster.demand import AWS_FILE, DOCKERFILE, RAYSERVICE_FILE, SERVE_CONFIG_FILE
from cluster.rayservice import sync_rayservice
from deployments.serve_config import ServeConfig, load_serve_config

ROOT = Path(__file__).resolve().parents[2]
HEAD = "ray.head.on_demand"
SMALL = "ray.worker.spot.m5_large"
LARGE = "ray.worker.spot.m5_xlarge"


def _yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.fixture
def serve_config() -> dict[str, Any]:
    return _yaml(SERVE_CONFIG_FILE)


@pytest.fixture
def aws() -> dict[str, Any]:
    return _yaml(AWS_FILE)


@pytest.fixture
def rayservice() -> dict[str, Any]:
    return _yaml(RAYSERVICE_FILE)


def _apps(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A Serve config's applications by name, as the one serve_config reader sees them."""
    return ServeConfig(Path(SERVE_CONFIG_FILE), config).by_name()


def _v2(rayservice: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(rayservice["spec"]["serveConfigV2"])


def _cluster(rayservice: dict[str, Any]) -> dict[str, Any]:
    return rayservice["spec"]["rayClusterConfig"]


def _worker_pod(rayservice: dict[str, Any]) -> dict[str, Any]:
    return _cluster(rayservice)["workerGroupSpecs"][0]["template"]["spec"]


def _write_repo(tmp: Path, serve_config: dict, aws: dict, rayservice: dict) -> Path:
    """A repository copy holding these three configs plus the real Dockerfile and pyproject.toml."""
    (tmp / "cluster").mkdir(parents=True, exist_ok=True)
    (tmp / SERVE_CONFIG_FILE).write_text(yaml.safe_dump(serve_config, sort_keys=False))
    (tmp / AWS_FILE).write_text(yaml.safe_dump(aws, sort_keys=False))
    (tmp / RAYSERVICE_FILE).write_text(yaml.safe_dump(rayservice, sort_keys=False))
    shutil.copy(ROOT / DOCKERFILE, tmp / DOCKERFILE)
    shutil.copy(ROOT / "pyproject.toml", tmp / "pyproject.toml")
    return tmp


def _errors(root: Path) -> list[str]:
    return [str(f) for f in check_all(root) if f.level == "error"]


# ------------------------------------------------------------------------------------------- the real files


def test_real_configs_pass_the_check():
    errors = [str(f) for f in check_all(ROOT) if f.level == "error"]
    assert errors == []


def test_launcher_yaml_is_accepted_by_rays_own_schema(aws):
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(aws, schema)  # as written
    validate_config(prepare_config(copy.deepcopy(aws)))  # and as `ray up` sees it, defaults filled in


def test_launcher_yaml_has_on_demand_head_and_spot_workers(aws):
    assert aws["provider"]["type"] == "aws"
    assert aws["provider"]["region"] == "us-east-1"
    assert aws["auth"]["ssh_user"] == "ubuntu"
    assert aws["idle_timeout_minutes"] > 0
    types = aws["available_node_types"]
    assert aws["head_node_type"] == HEAD
    head = types[HEAD]
    assert "InstanceMarketOptions" not in head["node_config"]
    assert head["resources"]["on_demand"] == 1 and "spot" not in head["resources"]
    assert head["max_workers"] == 0
    workers = {name: t for name, t in types.items() if name != HEAD}
    assert {t["node_config"]["InstanceType"] for t in workers.values()} == {"m5.large", "m5.xlarge"}
    for t in workers.values():
        assert t["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
        assert t["resources"]["spot"] == 1 and "on_demand" not in t["resources"]
        assert 0 <= t["min_workers"] <= t["max_workers"] <= aws["max_workers"]
    assert aws["provider"]["cache_stopped_nodes"] is False  # one-time spot instances cannot be stopped


def test_launcher_installs_torch_then_the_project_and_deploys_serve_config(aws):
    setup = aws["setup_commands"]
    torch_at = next(i for i, c in enumerate(setup) if "torch==2.13.0" in c)
    project_at = next(i for i, c in enumerate(setup) if "-e ~/bertserve" in c)
    assert torch_at < project_at
    assert aws["file_mounts"] == {"~/bertserve": "."}
    assert "artifacts" not in aws["rsync_exclude"] and ".venv" in aws["rsync_exclude"]
    start = aws["head_start_ray_commands"]
    ray_at = next(i for i, c in enumerate(start) if "ray start --head" in c)
    deploy_at = next(i for i, c in enumerate(start) if "serve deploy serve_config.yaml" in c)
    assert ray_at < deploy_at and "cd ~/bertserve" in start[deploy_at]


def test_rayservice_serves_the_same_applications_as_serve_config(rayservice, serve_config):
    ours, theirs = _apps(serve_config), _apps(_v2(rayservice))
    assert sorted(theirs) == sorted(ours)
    for name, app in ours.items():
        other = theirs[name]
        for key in ("route_prefix", "import_path", "args", "runtime_env"):
            assert other[key] == app[key], (name, key)
        deps = {d["name"]: d for d in other["deployments"]}
        for dep in app["deployments"]:
            assert deps[dep["name"]]["ray_actor_options"]["num_cpus"] == dep["ray_actor_options"]["num_cpus"]
            assert deps[dep["name"]].get("autoscaling_config") == dep.get("autoscaling_config")


def test_rayservice_head_on_demand_workers_on_spot(rayservice):
    assert (rayservice["apiVersion"], rayservice["kind"]) == ("ray.io/v1", "RayService")
    assert _v2(rayservice)["http_options"]["host"] == "0.0.0.0"
    cluster = _cluster(rayservice)
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["template"]["spec"]["nodeSelector"] == {"eks.amazonaws.com/capacityType": "ON_DEMAND"}
    assert "on_demand" in head["rayStartParams"]["resources"]
    pod = _worker_pod(rayservice)
    assert pod["nodeSelector"] == {"eks.amazonaws.com/capacityType": "SPOT"}
    assert pod["tolerations"] == [
        {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    assert "tolerations" not in head["template"]["spec"]
    worker = cluster["workerGroupSpecs"][0]
    assert "spot" in worker["rayStartParams"]["resources"]
    assert 0 <= worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"]
    images = {c["image"] for g in (head, worker) for c in g["template"]["spec"]["containers"]}
    assert len(images) == 1


# ------------------------------------------------------------------------------------------ broken copies


def _edit_v2(fn: Callable[[dict], None]) -> Callable[[dict, dict, dict], None]:
    def edit(serve_config: dict, aws: dict, rs: dict) -> None:
        v2 = _v2(rs)
        fn(v2)
        rs["spec"]["serveConfigV2"] = yaml.safe_dump(v2, sort_keys=False)

    return edit


def _drop_app(v2: dict, name: str) -> None:
    v2["applications"] = [a for a in v2["applications"] if a["name"] != name]


def _set(path: tuple[str | int, ...], value: Any) -> Callable[[dict, dict, dict], None]:
    """Set ("aws" | "rs" | "serve", key, ..., key) to value (or delete it) in one of the three configs."""
    which, *keys = path

    def edit(serve_config: dict, aws: dict, rs: dict) -> None:
        node = {"aws": aws, "rs": rs, "serve": serve_config}[which]
        for key in keys[:-1]:
            node = node[key]
        if value is _DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value

    return edit


_DELETE = object()
_TYPES = ("aws", "available_node_types")
_WORKER = ("rs", "spec", "rayClusterConfig", "workerGroupSpecs", 0)
_HEAD_POD = ("rs", "spec", "rayClusterConfig", "headGroupSpec", "template", "spec")


def _reverse_setup(serve_config: dict, aws: dict, rs: dict) -> None:
    aws["setup_commands"].reverse()


def _drop_deploy(serve_config: dict, aws: dict, rs: dict) -> None:
    aws["head_start_ray_commands"] = [c for c in aws["head_start_ray_commands"] if "serve deploy" not in c]


def _bigger_replicas(serve_config: dict, aws: dict, rs: dict) -> None:
    serve_config["applications"][0]["deployments"][0]["ray_actor_options"]["num_cpus"] = 3


def _new_app(serve_config: dict, aws: dict, rs: dict) -> None:
    app = copy.deepcopy(serve_config["applications"][0])
    app.update(name="pruned-90", route_prefix="/pruned-90")
    serve_config["applications"].append(app)


BROKEN = [
    # (id, edit, file the message names, what it says)
    (
        "worker without spot",
        _set((*_TYPES, SMALL, "node_config", "InstanceMarketOptions"), _DELETE),
        AWS_FILE,
        rf"worker type '{re.escape(SMALL)}' has no InstanceMarketOptions",
    ),
    (
        "spot head",
        _set((*_TYPES, HEAD, "node_config", "InstanceMarketOptions"), {"MarketType": "spot"}),
        AWS_FILE,
        "head node type .* is spot",
    ),
    (
        "head without on_demand",
        _set((*_TYPES, HEAD, "resources"), {"CPU": 2}),
        AWS_FILE,
        "resources must hold 'on_demand' >= 1",
    ),
    (
        "worker fits no replica",
        _set((*_TYPES, SMALL, "resources", "CPU"), 0),
        AWS_FILE,
        rf"'{re.escape(SMALL)}' has CPU 0, less than one replica needs \(0.25\)",
    ),
    (
        "min above max",
        _set((*_TYPES, LARGE, "min_workers"), 3),
        AWS_FILE,
        "needs 0 <= min_workers <= max_workers",
    ),
    (
        "unknown key",
        _set((*_TYPES, SMALL, "min_worker"), 1),
        AWS_FILE,
        "Ray's cluster schema rejects available_node_types",
    ),
    ("torch after project", _reverse_setup, AWS_FILE, r"install the project \(command 0\) before torch=="),
    ("no serve deploy", _drop_deploy, AWS_FILE, "must `serve deploy serve_config.yaml`"),
    ("repo not mounted", _set(("aws", "file_mounts"), {}), AWS_FILE, "file_mounts must ship the repository"),
    (
        "artifacts excluded",
        _set(("aws", "rsync_exclude"), [".venv", "artifacts"]),
        AWS_FILE,
        "drops artifacts/",
    ),
    (
        "app missing from serveConfigV2",
        _edit_v2(lambda v2: _drop_app(v2, "quant")),
        RAYSERVICE_FILE,
        "serveConfigV2 is missing application 'quant'",
    ),
    (
        "autoscaling differs",
        _edit_v2(
            lambda v2: v2["applications"][0]["deployments"][0]["autoscaling_config"].update(max_replicas=9)
        ),
        RAYSERVICE_FILE,
        r"applications\[base\]\.deployments\.Classifier\.autoscaling_config\.max_replicas is 9",
    ),
    (
        "args differ",
        _edit_v2(lambda v2: v2["applications"][1]["args"].update(model_dir="artifacts/base")),
        RAYSERVICE_FILE,
        r"applications\[quant\]\.args\.model_dir is 'artifacts/base'",
    ),
    (
        "proxies on loopback",
        _edit_v2(lambda v2: v2["http_options"].update(host="127.0.0.1")),
        RAYSERVICE_FILE,
        "listen on loopback",
    ),
    (
        "worker without spot selector",
        _set((*_WORKER, "template", "spec", "nodeSelector"), {}),
        RAYSERVICE_FILE,
        "no spot nodeSelector",
    ),
    (
        "worker without toleration",
        _set((*_WORKER, "template", "spec", "tolerations"), _DELETE),
        RAYSERVICE_FILE,
        "no toleration",
    ),
    (
        "head on spot",
        _set((*_HEAD_POD, "nodeSelector"), {"eks.amazonaws.com/capacityType": "SPOT"}),
        RAYSERVICE_FILE,
        "headGroupSpec is not pinned to on-demand nodes",
    ),
    (
        "head tolerates the spot taint",
        _set((*_HEAD_POD, "tolerations"), [{"key": "spot", "operator": "Exists"}]),
        RAYSERVICE_FILE,
        "headGroupSpec selects or tolerates spot nodes",
    ),
    (
        "worker marked on_demand",
        _set((*_WORKER, "rayStartParams", "resources"), '"{\\"on_demand\\": 1}"'),
        RAYSERVICE_FILE,
        r"workerGroupSpecs\[0\] \(spot\)\.rayStartParams\.resources must hold 'spot'",
    ),
    (
        "pod memory too small",
        _set(
            (*_WORKER, "template", "spec", "containers", 0, "resources"),
            {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
        ),
        RAYSERVICE_FILE,
        "memory limit 1Gi < .* GiB needed for 8 replicas",
    ),
    (
        "two images",
        _set((*_WORKER, "template", "spec", "containers", 0, "image"), "bertserve:0.0.9"),
        RAYSERVICE_FILE,
        "must run one image",
    ),
    (
        "ray version drift",
        _set(("rs", "spec", "rayClusterConfig", "rayVersion"), "2.59.0"),
        RAYSERVICE_FILE,
        "Ray versions differ",
    ),
    # serve_config.yaml is read at run time: retuning it is checked against both clusters
    (
        "replica outgrows spot workers",
        _bigger_replicas,
        AWS_FILE,
        rf"'{re.escape(SMALL)}' has CPU 2, less than one replica needs \(3\)",
    ),
    (
        "replica outgrows worker pods",
        _bigger_replicas,
        RAYSERVICE_FILE,
        r"\(spot\) has 2 CPUs, less than one replica needs \(3",
    ),
    ("new variant not in serveConfigV2", _new_app, RAYSERVICE_FILE, "missing application 'pruned-90'"),
]


@pytest.mark.parametrize(("edit", "file", "pattern"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_copy_is_reported_naming_file_and_problem(
    tmp_path, serve_config, aws, rayservice, edit, file, pattern
):
    assert _errors(_write_repo(tmp_path, serve_config, aws, rayservice)) == []  # the copy itself is fine
    edit(serve_config, aws, rayservice)
    errors = _errors(_write_repo(tmp_path, serve_config, aws, rayservice))
    assert any(e.startswith(f"{file}: ") and re.search(pattern, e) for e in errors), errors


def test_main_exits_nonzero_naming_the_file(tmp_path, serve_config, aws, rayservice, capsys, caplog):
    del aws["available_node_types"][SMALL]["node_config"]["InstanceMarketOptions"]
    root = _write_repo(tmp_path, serve_config, aws, rayservice)
    assert main(["--root", str(root)]) == 1
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["ok"] is False
    assert any(f["file"] == AWS_FILE and "InstanceMarketOptions" in f["message"] for f in last["findings"])
    assert f"{AWS_FILE}: worker type '{SMALL}'" in caplog.text


def test_main_passes_on_the_repository(capsys):
    assert main([]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ok"] is True


def test_sync_copies_serve_config_into_serve_config_v2_keeping_the_rest(tmp_path, serve_config):
    root = tmp_path
    shutil.copytree(ROOT / "cluster", root / "cluster", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    serve_config["applications"][1]["deployments"][0]["autoscaling_config"]["max_replicas"] = 4
    (root / SERVE_CONFIG_FILE).write_text(yaml.safe_dump(serve_config, sort_keys=False))
    assert any("max_replicas is 2" in e for e in _errors(root))

    before = (root / RAYSERVICE_FILE).read_text()
    assert sync_rayservice(root / RAYSERVICE_FILE, load_serve_config(root / SERVE_CONFIG_FILE)) is True
    after = (root / RAYSERVICE_FILE).read_text()
    assert _errors(root) == []
    rs = yaml.safe_load(after)
    assert _apps(_v2(rs)) == _apps(serve_config)
    assert _v2(rs)["http_options"] == {"host": "0.0.0.0", "port": 8000}  # the RayService's own, kept
    # everything outside the block is untouched, comments included
    head, tail = "  serveConfigV2: |", "  rayClusterConfig:"
    assert after.split(head)[0] == before.split(head)[0]
    assert after[after.index(tail) :] == before[before.index(tail) :]
    assert (
        sync_rayservice(root / RAYSERVICE_FILE, load_serve_config(root / SERVE_CONFIG_FILE)) is False
    )  # idempotent


def test_check_needs_no_cluster_and_no_ray_start(monkeypatch):
    """The check is static: it must not start Ray (tests share one machine)."""
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError("check_all started Ray")

    monkeypatch.setattr(ray, "init", refuse)
    # (warnings, such as artifacts not built in a fresh checkout, are no errors)
    assert [f for f in check_all(ROOT) if f.level == "error"] == []


def test_the_artifacts_a_deploy_needs_cover_every_model_the_pool_serves(serve_config):
    dirs = ServeConfig(Path(SERVE_CONFIG_FILE), serve_config).model_dirs()
    assert {"stress/base", "stress/quant", "sentiment/base", "sentiment/quant"} <= set(dirs)
    assert dirs["sentiment/quant"] == "artifacts/sentiment/quant"
    # a pool-only config: its models are what must be built
    config = ServeConfig(
        Path(SERVE_CONFIG_FILE),
        {
            "applications": [
                {
                    "name": "pool",
                    "import_path": "deployments.pool:app_builder",
                    "args": {"models": {"x": {"base": "artifacts/nowhere"}}},
                }
            ]
        },
    )
    assert config.model_dirs() == {"x/base": "artifacts/nowhere"}
