"""`python -m deployments.preflight`: a Serve config's applications checked before deploying them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from deployments.preflight import check_config, main
from loading.accuracy import AccuracyRecord, record_accuracy
from tests.conftest import minilm_dir

BASE_ACCURACY = 0.80


def _config(tmp_path, apps):
    path = tmp_path / "serve_config.yaml"
    catch_all = {"name": "not-found", "import_path": "deployments.not_found:app", "route_prefix": "/"}
    path.write_text(yaml.safe_dump({"applications": [*apps, catch_all]}))
    return path


def _measured(src: Path, dst: Path, accuracy: float) -> Path:
    """A copy of `src` with an accuracy recorded, `BASE_ACCURACY - accuracy` below its base."""
    shutil.copytree(src, dst)
    record = AccuracyRecord(
        split="dreaddit_testing.csv",
        rows=715,
        accuracy=accuracy,
        macro_f1=accuracy,
        base="base",
        base_accuracy=BASE_ACCURACY,
        parent="base",
        agreement=0.95,
    )
    record_accuracy(dst, record)
    return dst


@pytest.fixture(scope="module")
def tiny_measured(tiny_artifact, tmp_path_factory) -> Path:
    """The tiny artifact with a recorded accuracy inside the default budget (1 point below base)."""
    return _measured(tiny_artifact, tmp_path_factory.mktemp("measured") / "tiny", BASE_ACCURACY - 0.01)


def test_good_config_passes(tmp_path, tiny_measured, capsys):
    path = _config(tmp_path, [{"name": "tiny", "args": {"variant": "tiny", "model_dir": str(tiny_measured)}}])
    assert check_config(path) == {}
    assert main([str(path)]) == 0
    assert "every application" in capsys.readouterr().out


def test_each_bad_application_is_named_with_its_problem(tmp_path, tiny_measured, capsys):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_measured, corrupt)
    weights = corrupt / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor: only the hash can tell
    weights.write_bytes(bytes(data))
    path = _config(
        tmp_path,
        [
            {"name": "good", "args": {"variant": "tiny", "model_dir": str(tiny_measured)}},
            {"name": "flipped", "args": {"variant": "tiny", "model_dir": str(corrupt)}},
            {"name": "missing", "args": {"variant": "tiny", "model_dir": str(tmp_path / "nowhere")}},
            {"name": "typo", "args": {"variant": "tiny", "model_dir": str(tiny_measured), "max_txts": 8}},
        ],
    )
    problems = check_config(path)
    assert set(problems) == {"flipped", "missing", "typo"}
    assert "does not match variant.json" in problems["flipped"]
    assert "nowhere" in problems["missing"]
    assert "max_txts" in problems["typo"]
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 3 and "Traceback" not in err


def test_unreadable_config_is_one_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "absent.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_a_checkpoint_without_its_classifier_head_is_refused(tmp_path):
    """The bare MiniLM encoder: transformers would add a random head; preflight names the missing one."""
    path = _config(tmp_path, [{"name": "headless", "args": {"variant": "m", "model_dir": str(minilm_dir())}}])
    problems = check_config(path)
    assert set(problems) == {"headless"}
    assert "2 missing tensors (classifier.bias, classifier.weight)" in problems["headless"]


def test_the_pool_is_checked_variant_by_variant(tmp_path, tiny_measured):
    pool = {"name": "pool", "import_path": "deployments.pool:app_builder", "route_prefix": "/pool"}
    good = {**pool, "args": {"variants": {"tiny": str(tiny_measured)}}}
    assert check_config(_config(tmp_path, [good])) == {}
    bad = {**pool, "args": {"variants": {"tiny": str(tiny_measured), "gone": str(tmp_path / "nowhere")}}}
    problems = check_config(_config(tmp_path, [bad]))
    assert list(problems) == ["pool"]
    assert problems["pool"].startswith("stress/gone: ") and "nowhere" in problems["pool"]
    typo = {**pool, "args": {"variants": {"../up": str(tiny_measured)}}}
    assert "variant names must match" in check_config(_config(tmp_path, [typo]))["pool"]
    # every model the pool lists is checked, and named
    models = {"stress": {"tiny": str(tiny_measured)}, "sentiment": {"base": str(tmp_path / "nowhere")}}
    problems = check_config(_config(tmp_path, [{**pool, "args": {"models": models}}]))
    assert problems["pool"].startswith("sentiment/base: ") and "stress" not in problems["pool"]


# The accuracy gate (loading.accuracy): every served variant needs a recorded accuracy within the
# app's `accuracy_budget_points` of its base.


def _app(name: str, model_dir: Path, **args) -> dict:
    return {"name": name, "args": {"variant": "tiny", "model_dir": str(model_dir), **args}}


@pytest.fixture(scope="module")
def two_points_below(tiny_artifact, tmp_path_factory) -> Path:
    return _measured(tiny_artifact, tmp_path_factory.mktemp("collapsed") / "tiny", BASE_ACCURACY - 0.02)


def test_a_variant_with_no_recorded_accuracy_is_refused(tmp_path, tiny_artifact, capsys):
    problems = check_config(_config(tmp_path, [_app("unmeasured", tiny_artifact)]))
    assert set(problems) == {"unmeasured"}
    assert "variant 'tiny' has no recorded accuracy" in problems["unmeasured"]
    assert main([str(_config(tmp_path, [_app("unmeasured", tiny_artifact)]))]) == 2
    err = capsys.readouterr().err
    assert "error: unmeasured: variant 'tiny' has no recorded accuracy" in err
    assert "hint: " in err and "--no-accuracy-gate" in err and "ACCURACY_GATE=off" in err


def test_a_variant_two_points_below_base_is_refused_naming_its_accuracy_and_the_budget(
    tmp_path, two_points_below, capsys
):
    path = _config(tmp_path, [_app("collapsed", two_points_below)])
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("error: "))
    assert line.startswith("error: collapsed: variant 'tiny' scores 78.00% on dreaddit_testing.csv")
    assert "2.00 points below base's 80.00%" in line and line.endswith("the budget is 1.5 points")


def test_a_variant_one_point_below_base_passes(tmp_path, tiny_measured, capsys):
    assert main([str(_config(tmp_path, [_app("close", tiny_measured)]))]) == 0
    captured = capsys.readouterr()
    assert "ok: every application" in captured.out and "warning" not in captured.err


def test_the_budget_is_the_configs_to_state(tmp_path, tiny_measured, two_points_below):
    loose = _app("loose", two_points_below, accuracy_budget_points=2.5)
    strict = _app("strict", tiny_measured, accuracy_budget_points=0)
    problems = check_config(_config(tmp_path, [loose, strict]))
    assert set(problems) == {"strict"}
    assert "1.00 points below" in problems["strict"] and "the budget is 0 points" in problems["strict"]


def test_the_pool_gates_each_of_its_variants(
    tmp_path, tiny_artifact, tiny_measured, two_points_below, capsys
):
    variants = {"close": str(tiny_measured), "far": str(two_points_below), "new": str(tiny_artifact)}
    pool = {"name": "pool", "import_path": "deployments.pool:app_builder", "args": {"variants": variants}}
    path = _config(tmp_path, [pool])
    problems = check_config(path)
    assert list(problems) == ["pool"] and "close" not in problems["pool"]
    assert main([str(path)]) == 2
    far, new = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]  # one a variant
    assert far.startswith("error: pool: stress/far: variant 'tiny' scores 78.00%")
    assert far.endswith("the budget is 1.5 points")
    assert new.startswith("error: pool: stress/new: variant 'tiny' has no recorded accuracy")


def test_no_accuracy_gate_lets_them_through_with_a_warning_each(
    tmp_path, tiny_artifact, tiny_measured, two_points_below, capsys
):
    pool = {
        "name": "pool",
        "import_path": "deployments.pool:app_builder",
        "args": {"variants": {"close": str(tiny_measured), "far": str(two_points_below)}},
    }
    apps = [_app("unmeasured", tiny_artifact), _app("collapsed", two_points_below), pool]
    path = _config(tmp_path, apps)
    assert check_config(path, accuracy_gate=False) == {}
    assert main([str(path), "--no-accuracy-gate"]) == 0
    captured = capsys.readouterr()
    warnings = [x for x in captured.err.splitlines() if x.startswith("warning: ")]
    assert len(warnings) == 3 and "error" not in captured.err and "ok: every application" in captured.out
    assert warnings[0].startswith("warning: unmeasured: accuracy gate off, serving it anyway: variant 'tiny'")
    assert "the budget is 1.5 points" in warnings[1] and warnings[2].startswith("warning: pool: ")
    assert "far: variant 'tiny' scores 78.00%" in warnings[2]


def test_no_accuracy_gate_waives_the_gate_only(tmp_path, tiny_artifact, capsys):
    apps = [_app("unmeasured", tiny_artifact), _app("missing", tmp_path / "nowhere")]
    assert main([str(_config(tmp_path, apps)), "--no-accuracy-gate"]) == 2
    err = capsys.readouterr().err
    assert "warning: unmeasured: " in err and "error: missing: " in err and "hint: " not in err


@pytest.mark.parametrize("budget", [-0.5, "lots", float("inf"), float("nan")])
@pytest.mark.parametrize("kind", ["classifier", "pool"])
def test_the_budget_arg_is_validated(tmp_path, tiny_measured, kind, budget):
    app = {**_app("app", tiny_measured, accuracy_budget_points=budget), "import_path": f"deployments.{kind}:"}
    if kind == "pool":
        app["args"] = {"variants": {"tiny": str(tiny_measured)}, "accuracy_budget_points": budget}
    problems = check_config(_config(tmp_path, [app]))
    assert list(problems) == ["app"]
    assert problems["app"].startswith("args rejected: accuracy_budget_points: ")


def test_serve_config_states_the_default_budget_for_every_served_variant():
    from deployments.serve_config import load_serve_config
    from loading.accuracy import ACCURACY_BUDGET_POINTS

    config = load_serve_config()
    for app in config.served_apps():
        assert app["args"]["accuracy_budget_points"] == ACCURACY_BUDGET_POINTS
        assert config.validated_args(app).accuracy_budget_points == ACCURACY_BUDGET_POINTS
