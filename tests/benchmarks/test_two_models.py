"""Two-model benchmark: the routes it derives from the config, its per-replica memory, (slow) a quick run."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import replace

import pytest

from benchmarks.harness import ROOT
from benchmarks.two_models import main, ready_routes, replica_uss, variant_routes
from deployments.serve_config import ServeConfig, ServeConfigError, load_serve_config
from tests.benchmarks import run_record

SHIPPED = load_serve_config(ROOT / "serve_config.yaml")


def _edited(edit: Callable[[list[dict]], None]) -> ServeConfig:
    """The shipped config with `edit` applied to a copy of its applications."""
    raw = copy.deepcopy(SHIPPED.raw)
    edit(raw["applications"])
    return replace(SHIPPED, raw=raw)


def _without(name: str) -> Callable[[list[dict]], None]:
    def edit(apps: list[dict]) -> None:
        apps[:] = [a for a in apps if a["name"] != name]

    return edit


def test_every_model_variant_of_the_shipped_config_has_one_client_route():
    routes = variant_routes(SHIPPED)
    stress = ["base", "quant", "pruned-kd-quant-80", "pruned-kd-structured-quant-50-2layers"]
    assert routes == {
        **{f"stress/{v}": f"stress/{v}" for v in stress},  # the dedicated apps' prefixes
        "sentiment/base": "sentiment/base",  # the pool, mounted at /
        "sentiment/quant": "sentiment/quant",
    }
    assert set(routes) == set(SHIPPED.model_dirs())  # every variant the config serves, once


def test_the_routes_to_wait_for_add_the_pool_serving_the_default_model():
    ready = ready_routes(SHIPPED)
    assert ready == [*variant_routes(SHIPPED).values(), "pool/stress/quant"]
    assert ready_routes(SHIPPED, "sentiment/base")[-1] == "pool/sentiment/base"
    with pytest.raises(ValueError, match="pool_probe must be a model/variant the pool serves"):
        ready_routes(SHIPPED, "stress/nope")


def test_a_variant_without_its_own_app_is_routed_through_the_pool_wherever_it_is_mounted():
    def edit(apps: list[dict]) -> None:
        _without("quant")(apps)
        next(a for a in apps if a["name"] == "pool")["route_prefix"] = "/shared"

    routes = variant_routes(_edited(edit))
    assert routes["stress/quant"] == "shared/stress/quant"  # no dedicated app left for it
    assert routes["stress/base"] == "stress/base" and routes["sentiment/base"] == "shared/sentiment/base"
    assert ready_routes(_edited(edit))[-1] == "shared/pool/stress/quant"


def test_a_config_without_a_pool_is_refused():
    config = _edited(_without("pool"))
    assert "sentiment/base" not in variant_routes(config)
    with pytest.raises(ServeConfigError, match="no warm pool"):
        ready_routes(config)


def test_each_replicas_uss_is_its_median_over_the_samples_it_is_in():
    def sample(uss: dict[int, float]) -> dict:
        return {"per_process": {pid: {"role": "replicas", "uss_mib": v} for pid, v in uss.items()}}

    samples = [sample({1: 250.0, 2: 300.0}), sample({1: 260.0, 2: 310.0}), sample({1: 270.0})]
    out = replica_uss(samples, {"base": [1], "pool": [2, 3]})  # pid 3: in no sample
    assert out == {"base": [260.0], "pool": [305.0]}


def test_a_config_without_a_pool_exits_2(tmp_path, capsys):
    path = tmp_path / "serve_config.yaml"
    path.write_text("applications:\n  - name: base\n    import_path: deployments.classifier:app_builder\n")
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(path)])
    assert exc.value.code == 2 and re.search("no warm pool", capsys.readouterr().err)


@pytest.mark.slow
def test_two_models_quick_serves_every_variant_of_both_models(tmp_path):
    out = run_record("benchmarks.two_models", "--quick", "--out", str(tmp_path / "r.json"), timeout=600)
    assert len(out["per_route"]) == 6 and out["load"]["failed"] == 0
    assert all(s["requests"] > 0 and s["failed"] == 0 for s in out["per_route"].values())
    assert out["replicas"]["dedicated"]["replicas"] == 4 and out["replicas"]["pool"]["replicas"] == 2
    assert out["memory"]["total"]["pss_mib"] > out["stored_weights_mib"] > 0
