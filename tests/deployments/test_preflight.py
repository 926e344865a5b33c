"""`python -m deployments.preflight`: a Serve config's applications checked before deploying them."""

from __future__ import annotations

import shutil

import yaml

from deployments.preflight import check_config, main
from tests.conftest import minilm_dir


def _config(tmp_path, apps):
    path = tmp_path / "serve_config.yaml"
    catch_all = {"name": "not-found", "import_path": "deployments.not_found:app", "route_prefix": "/"}
    path.write_text(yaml.safe_dump({"applications": [*apps, catch_all]}))
    return path


def test_good_config_passes(tmp_path, tiny_artifact, capsys):
    path = _config(tmp_path, [{"name": "tiny", "args": {"variant": "tiny", "model_dir": str(tiny_artifact)}}])
    assert check_config(path) == {}
    assert main([str(path)]) == 0
    assert "every application" in capsys.readouterr().out


def test_each_bad_application_is_named_with_its_problem(tmp_path, tiny_artifact, capsys):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_artifact, corrupt)
    weights = corrupt / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor: only the hash can tell
    weights.write_bytes(bytes(data))
    path = _config(
        tmp_path,
        [
            {"name": "good", "args": {"variant": "tiny", "model_dir": str(tiny_artifact)}},
            {"name": "flipped", "args": {"variant": "tiny", "model_dir": str(corrupt)}},
            {"name": "missing", "args": {"variant": "tiny", "model_dir": str(tmp_path / "nowhere")}},
            {"name": "typo", "args": {"variant": "tiny", "model_dir": str(tiny_artifact), "max_txts": 8}},
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


def test_the_pool_is_checked_variant_by_variant(tmp_path, tiny_artifact):
    pool = {"name": "pool", "import_path": "deployments.pool:app_builder", "route_prefix": "/pool"}
    good = {**pool, "args": {"variants": {"tiny": str(tiny_artifact)}}}
    assert check_config(_config(tmp_path, [good])) == {}
    bad = {**pool, "args": {"variants": {"tiny": str(tiny_artifact), "gone": str(tmp_path / "nowhere")}}}
    problems = check_config(_config(tmp_path, [bad]))
    assert list(problems) == ["pool"]
    assert problems["pool"].startswith("gone: ") and "nowhere" in problems["pool"]
    typo = {**pool, "args": {"variants": {"../up": str(tiny_artifact)}}}
    assert "variant names must match" in check_config(_config(tmp_path, [typo]))["pool"]
