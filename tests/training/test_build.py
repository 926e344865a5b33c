"""`python -m training.build` on a tiny model: recovery variants are built, smaller, and scored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from loading.accuracy import accuracy_problem, read_accuracy
from loading.artifact import VARIANT_FILE, read_variant_info, verify_artifact
from loading.checkpoint import load_model
from training import build, finetune
from training.recover import RecoverySpec


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, tiny_model_dir, train_csv) -> Path:
    out = tmp_path_factory.mktemp("build") / "base"
    args = ["--data", str(train_csv), "--model", str(tiny_model_dir), "--out", str(out), "--batch-size", "8"]
    assert finetune.main(args) == 0
    return out


def test_recovery_names_parse_and_malformed_ones_are_refused():
    spec = RecoverySpec.from_name("pruned-kd-structured-quant-50-3layers")
    assert (spec.amount, spec.structured, spec.quant, spec.layers) == (0.5, True, True, 3)
    assert RecoverySpec.from_name("pruned-kd-quant-80") == RecoverySpec(
        "pruned-kd-quant-80", 0.8, False, True
    )
    assert RecoverySpec.from_name("pruned-75") is None
    for bad in ("pruned-kd-80-3layers", "pruned-kd-100", "pruned-kd-structured", "pruned-kd-05"):
        with pytest.raises(ValueError, match="unknown variant"):
            RecoverySpec.from_name(bad)


def test_build_trains_prunes_and_records_accuracy(tiny_base, capsys):
    names = ["quant", "pruned-kd-50", "pruned-kd-structured-quant-50-1layers"]
    argv = ["--model", str(tiny_base), "--variants", ",".join(names), "--epochs", "2"]
    assert build.main(argv) == 0
    summary = capsys.readouterr().out
    assert all(name in summary for name in ["base", *names])
    root = tiny_base.parent

    unstructured = load_model(root / "pruned-kd-50")
    linears = [
        m for n, m in unstructured.named_modules() if ".encoder." in f".{n}." and hasattr(m, "decoded")
    ]
    info = verify_artifact(root / "pruned-kd-50")
    assert info.parameters["dense_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert linears or info.parameters["dense_sparsity"] > 0  # stored in sparse form or as zeros
    assert [h["epoch"] for h in info.parameters["validation"]] == [1, 2]

    structured = load_model(root / "pruned-kd-structured-quant-50-1layers")
    config = json.loads((root / "pruned-kd-structured-quant-50-1layers" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["layer_heads"] == [1]  # tiny: 2 heads -> 1
    assert len(structured.bert.encoder.layer) == 1
    ids = torch.tensor([[101, 2023, 2003, 102]])
    assert structured(ids).logits.shape == (1, 2)

    base_record = read_accuracy(read_variant_info(tiny_base))
    for name in names:
        record = read_accuracy(read_variant_info(root / name))
        assert record is not None and record.parent == "base" and 0 <= record.agreement <= 1
        assert record.rows == base_record.rows and record.base_accuracy == base_record.accuracy
        assert record.split == base_record.split == "train.csv (held-out 0.1 share, seed 0)"
    assert read_accuracy(read_variant_info(root / "quant")).int8_kernel in ("int_mm", "dequant")
    assert read_accuracy(read_variant_info(root / "pruned-kd-50")).int8_kernel is None


def test_gate_refuses_a_variant_below_budget(tiny_base):
    folder = tiny_base.parent / "quant"
    if not folder.exists():
        pytest.skip("needs the build test's artifacts")
    info = read_variant_info(folder)
    record = dict(info.accuracy, accuracy=max(0.0, info.accuracy["base_accuracy"] - 0.1))
    (folder / VARIANT_FILE).write_text(json.dumps({**json.loads(info.to_json()), "accuracy": record}))
    assert "points below base" in accuracy_problem(read_variant_info(folder))


def test_unknown_variant_is_a_one_line_error(tiny_base, capsys):
    assert build.main(["--model", str(tiny_base), "--variants", "pruned-kd-structured-80-0layers"]) == 2
    assert "unknown variant" in capsys.readouterr().err


def test_int8_version_of_a_trained_student_is_quantized_not_trained_again(tiny_base, caplog):
    root = tiny_base.parent
    assert build.main(["--model", str(tiny_base), "--variants", "pruned-kd-30", "--epochs", "1"]) == 0
    caplog.clear()
    with caplog.at_level("INFO"):
        assert (
            build.main(["--model", str(tiny_base), "--variants", "pruned-kd-quant-30", "--if-missing"]) == 0
        )
    assert "quantizing the trained pruned-kd-30 instead of training again" in caplog.text
    float_info, int8_info = (verify_artifact(root / n) for n in ("pruned-kd-30", "pruned-kd-quant-30"))
    assert int8_info.parameters["validation"] == float_info.parameters["validation"]
    assert int8_info.parameters["dense_sparsity"] == pytest.approx(
        float_info.parameters["dense_sparsity"], abs=0.01
    )
    assert int8_info.weights_bytes < float_info.weights_bytes
