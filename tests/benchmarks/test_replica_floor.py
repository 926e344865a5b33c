"""`benchmarks.replica_floor`: ours minus the floor, and the reference applications' config."""

from __future__ import annotations

import pytest

from benchmarks.replica_floor import FIGURES, _median, minus_floor, reference_apps


def _row(value: float) -> dict[str, float]:
    return dict.fromkeys(FIGURES, value)


def test_minus_floor_subtracts_every_figure_and_drops_the_floor():
    diff = minus_floor({"floor": _row(6.5), "base": _row(10.0), "pipeline": _row(12.5)})
    assert sorted(diff) == ["base", "pipeline"]
    assert diff["base"] == pytest.approx(_row(3.5))
    assert diff["pipeline"] == pytest.approx(_row(6.0))


def test_minus_floor_needs_a_floor_row():
    with pytest.raises(ValueError, match="must hold a 'floor' row"):
        minus_floor({"base": _row(1.0)})


@pytest.mark.parametrize("replicas", [1, 2])
def test_reference_apps_are_fixed_size_and_point_at_the_model(replicas):
    apps = {a["name"]: a for a in reference_apps("/models/base", replicas)}
    assert sorted(apps) == ["floor", "pipeline"]
    assert apps["pipeline"]["args"] == {"model_dir": "/models/base"}
    for app in apps.values():
        assert app["route_prefix"] == f"/{app['name']}"
        (deployment,) = app["deployments"]
        assert deployment["num_replicas"] == replicas
        assert "autoscaling_config" not in deployment


def test_median_counts_the_runs_on_a_spare_worker():
    runs = [_row(v) | {"pid": 1, "on_spare_worker": v < 5} for v in (1.0, 8.0, 2.0)]
    medians = _median(runs)
    assert medians["decision_to_200_s"] == pytest.approx(2.0)
    assert medians["on_spare_worker"] == 2
    assert "pid" not in medians


def test_apps_give_each_of_ours_its_own_route_store_key_and_folder():
    from benchmarks.replica_floor import NUM_CPUS, _apps
    from deployments.serve_config import load_serve_config

    dirs = {"base": "/models/base", "bert-base": "/models/bb"}
    apps = {a["name"]: a for a in _apps(load_serve_config(), dirs, {"floor": 1, "base": 1, "bert-base": 2})}
    assert sorted(apps) == ["base", "bert-base", "floor"]
    for name in ("base", "bert-base"):
        app = apps[name]
        assert app["route_prefix"] == f"/{name}"
        assert app["args"]["variant"] == name and app["args"]["model_dir"] == dirs[name]
        (deployment,) = app["deployments"]
        assert deployment["ray_actor_options"]["num_cpus"] == NUM_CPUS
    assert apps["bert-base"]["deployments"][0]["num_replicas"] == 2
