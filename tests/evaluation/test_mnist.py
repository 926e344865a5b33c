"""MNIST sweep CLI on a tiny synthetic MNIST-shaped CSV: every row, the asked sparsity, clear errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import compression
from evaluation import mnist, mnist_data, mnist_model, mnist_report
from evaluation.mnist import MnistConfig, main
from evaluation.mnist_model import MnistMLP, PruneMethod, prune

AMOUNTS = [round(0.1 * i, 1) for i in range(1, 10)]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_split(path: Path, rows: int, seed: int) -> None:
    """Label + 784 pixels in 0-255; each class lights its own band of pixels: something to learn."""
    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % 10
    pixels = rng.integers(0, 60, size=(rows, 784))
    for i, label in enumerate(labels):
        pixels[i, label * 78 : (label + 1) * 78] = 255
    columns = ["label"] + [f"{r}x{c}" for r in range(1, 29) for c in range(1, 29)]
    pd.DataFrame(np.column_stack([labels, pixels]), columns=columns).to_csv(path, index=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mnist_data")
    _write_split(folder / "mnist_train.csv", 300, seed=0)
    _write_split(folder / "mnist_test.csv", 100, seed=1)
    return folder


def _args(data_dir: Path, out: Path) -> list[str]:
    return ["--data-dir", str(data_dir), "--out", str(out), "--epochs", "1", "--seed", "3"]


@pytest.fixture(scope="module")
def out(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("mnist_runs") / "a"
    assert main(_args(data_dir, out)) == 0
    return out


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_results_csv_has_base_int8_and_every_method_at_every_amount(out):
    rows = _rows(out)
    assert list(rows[0]) == ["method", "amount", "accuracy", "size_bytes"]
    assert [(r["method"], float(r["amount"])) for r in rows[:2]] == [("base", 0.0), ("int8_dynamic", 0.0)]
    for method in PruneMethod:
        assert [float(r["amount"]) for r in rows if r["method"] == method.value] == AMOUNTS
    assert len(rows) == 2 + 3 * 9
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    sizes = {r["method"]: int(r["size_bytes"]) for r in rows}
    assert sizes["int8_dynamic"] < 0.3 * sizes["base"]  # int8 weights: about a quarter of fp32
    # zeros are still stored densely, so every pruned model is as large as the base
    assert {int(r["size_bytes"]) for r in rows[2:]} == {sizes["base"]}


def test_measured_sparsity_of_every_pruned_model_equals_the_amount(out):
    results = json.loads((out / "results.json").read_text())
    pruned = [r for r in results["rows"] if r["method"] in {m.value for m in PruneMethod}]
    assert len(pruned) == 27
    for row in pruned:
        assert row["sparsity"] == pytest.approx(row["amount"], abs=1e-4), row


@pytest.mark.parametrize("method", list(PruneMethod))
def test_prune_hits_every_layer_of_the_mlp_at_the_amount(method):
    torch.manual_seed(0)
    model = MnistMLP()  # the study's widths: every row count is a multiple of 10, so shares are exact
    pruned = prune(model, method, 0.3, seed=0)
    report = compression.sparsity_report(pruned, include_classifier=True)
    assert set(report["layers"]) == {"encoder.0", "encoder.2", "encoder.4", "classifier"}
    for layer in report["layers"].values():
        assert layer["sparsity"] == pytest.approx(0.3, abs=1e-6)
    assert report["dense"]["sparsity"] == pytest.approx(0.3, abs=1e-6)
    assert compression.sparsity_report(model, include_classifier=True)["dense"]["sparsity"] == 0.0


def test_plot_is_a_png(out):
    data = (out / mnist_report.PLOT_FILE).read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_report_sets_our_figures_beside_the_study(out):
    report = (out / "report.md").read_text()
    assert "95.29%" in report and "| 70% |" in report and mnist_report.PLOT_FILE in report
    assert (out / mnist.MODEL_FILE).is_file()


@pytest.fixture
def one_thread():
    """As main() does: two threads on two busy shared cores made each step ~6x slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_twice_with_the_same_seed_gives_the_same_weights(data_dir, one_thread):
    pixels, labels = mnist_data.load_split(data_dir, "train")
    cfg = MnistConfig(epochs=2, batch_size=32, hidden=(16,))
    weights = []
    for _ in range(2):
        torch.manual_seed(cfg.seed)
        model = MnistMLP(cfg.hidden)
        mnist_model.train_(
            model, pixels, labels, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed
        )
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_saved_weights_evaluate_to_the_same_results_without_training(tmp_path, data_dir, out):
    args = ["--data-dir", str(data_dir), "--out", str(tmp_path / "c"), "--seed", "3"]
    assert main([*args, "--weights", str(out / mnist.MODEL_FILE)]) == 0
    assert (tmp_path / "c" / "results.csv").read_text() == (out / "results.csv").read_text()
    assert json.loads((tmp_path / "c" / "results.json").read_text())["train_rows"] == 0


@pytest.mark.parametrize("seed", [0, 3])
def test_random_masks_are_not_seeded_like_the_initial_weights(seed):
    torch.manual_seed(seed)
    first = MnistMLP(hidden=(1200,)).encoder[0].weight.detach()  # initialised first, as in the full net
    pruned = prune(MnistMLP(hidden=(1200,)), PruneMethod.RANDOM_UNSTRUCTURED, 0.5, seed)
    cut = pruned.encoder[0].weight == 0
    # with the training seed the mask cut exactly the weights that started largest: mean init ~ +0.018
    assert abs(float(first[cut].mean())) < 1e-3


def test_missing_weights_file_exits_with_a_clear_error(tmp_path, data_dir, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--data-dir", str(data_dir), "--out", str(tmp_path / "out"), "--weights", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "--weights must be a safetensors file" in capsys.readouterr().err


def test_missing_data_dir_exits_with_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert "--data-dir must be a folder holding mnist_train.csv" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_package_tells_the_user_to_run_make_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mnist_data, "_PACKAGE", "no_such_mnist_package")
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert "run `make install`" in capsys.readouterr().err


def test_a_csv_that_is_not_mnist_shaped_is_refused(tmp_path, capsys):
    pd.DataFrame({"label": [1, 2], "pixel": [0, 255]}).to_csv(tmp_path / "mnist_test.csv", index=False)
    with pytest.raises(SystemExit) as exc:
        main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert "columns must be label + 784 pixels, got 2" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epochs": 0}, ValueError, "epochs must be >= 1, got 0"),
        ({"batch_size": 2.5}, TypeError, "batch_size must be an int, got float"),
        ({"lr": 0.0}, ValueError, "lr must be > 0"),
        ({"max_train_rows": 0}, ValueError, "max_train_rows must be a positive int"),
        ({"amounts": (0.5, 1.0)}, ValueError, r"amounts must be shares in \(0, 0.99\]"),
    ],
)
def test_config_rejects_bad_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        MnistConfig(**kwargs)


def test_bad_flags_exit_with_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--epochs", "0"])
    assert exc.value.code == 2
    assert "epochs must be >= 1" in capsys.readouterr().err
