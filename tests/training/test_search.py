"""`python -m training.search` on a tiny model: ranks grid points by validation, never sees the test rows."""

from __future__ import annotations

import json

import pytest

from training import search
from training.recover import recover


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, tiny_model_dir, train_csv):
    from training import finetune

    out = tmp_path_factory.mktemp("search") / "base"
    args = ["--data", str(train_csv), "--model", str(tiny_model_dir), "--out", str(out), "--batch-size", "8"]
    assert finetune.main(args) == 0
    return out


def test_search_ranks_every_grid_point_on_validation_without_test_rows(tiny_base, tmp_path, monkeypatch):
    seen = []

    def spy(base_dir, spec, splits, cfg):
        seen.append((len(splits.test), len(splits.validation), cfg.lr, cfg.epochs))
        return recover(base_dir, spec, splits, cfg)

    monkeypatch.setattr(search, "recover", spy)
    out = tmp_path / "search.json"
    argv = [
        "--model",
        str(tiny_base),
        "--variant",
        "pruned-kd-structured-50",
        "--grid",
        "lr=1e-4,5e-5",
        "epochs=1",
    ]
    assert search.main([*argv, "--out", str(out)]) == 0
    assert sorted((t, v, lr, e) for t, v, lr, e in seen) == [(0, 4, 5e-5, 1), (0, 4, 1e-4, 1)]
    results = json.loads(out.read_text())["results"]
    assert [r["final"] for r in results] == sorted((r["final"] for r in results), reverse=True)
    assert {r["point"]["lr"] for r in results} == {1e-4, 5e-5}


@pytest.mark.parametrize(
    "grid, message",
    [(["nope=1"], "name one of"), (["lr="], "name one of"), (["epochs=two"], "epochs takes int values")],
)
def test_bad_grids_are_one_line_errors(tiny_base, capsys, grid, message):
    assert search.main(["--model", str(tiny_base), "--variant", "pruned-kd-50", "--grid", *grid]) == 2
    assert message in capsys.readouterr().err


def test_a_one_shot_name_is_refused(tiny_base, capsys):
    assert search.main(["--model", str(tiny_base), "--variant", "pruned-75", "--grid", "lr=1e-4"]) == 2
    assert "must be a recovery name" in capsys.readouterr().err
