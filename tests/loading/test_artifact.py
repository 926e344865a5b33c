"""Artifact folders: safetensors only, honest sizes, hashes that catch damage, atomic writes."""

from __future__ import annotations

import json

import pytest
import torch

from loading.artifact import (
    VARIANT_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    VariantInfo,
    folder_bytes,
    read_variant_info,
    save_artifact,
    verify_artifact,
)
from loading.checkpoint import load_model
from tests.conftest import tiny_classifier


def test_save_writes_complete_folder_with_true_sizes(tmp_path, tokenizer):
    model = tiny_classifier(num_labels=3)
    info = save_artifact(model, tokenizer, tmp_path / "v", name="v", method="test", parameters={"k": 1})
    files = {p.name for p in (tmp_path / "v").iterdir()}
    assert {"config.json", WEIGHTS_FILE, VARIANT_FILE, "tokenizer.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]
    assert info.weights_bytes == (tmp_path / "v" / WEIGHTS_FILE).stat().st_size
    assert abs(info.size_bytes - folder_bytes(tmp_path / "v")) < 64  # variant.json's own digits
    expected_params = sum(t.numel() for t in model.state_dict().values())
    assert info.num_parameters == expected_params
    assert info.content_hash.startswith("sha256:")
    assert read_variant_info(tmp_path / "v") == info
    assert json.loads((tmp_path / "v" / VARIANT_FILE).read_text())["parameters"] == {"k": 1}


def test_round_trip_gives_identical_outputs(tiny_artifact, tokenizer):
    original = tiny_classifier()
    loaded = load_model(tiny_artifact)
    batch = tokenizer(["same weights, same logits"], return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(original(**batch).logits, loaded(**batch).logits)
    assert loaded.config.id2label == {0: "label_0", 1: "label_1"}


def test_truncated_weights_are_refused(tmp_path, tokenizer):
    out = tmp_path / "v"
    save_artifact(tiny_classifier(), tokenizer, out)
    weights = out / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ArtifactError, match="does not match variant.json"):
        verify_artifact(out)


def test_damaged_header_of_plain_checkpoint_is_refused(tmp_path, tokenizer):
    out = tmp_path / "v"
    save_artifact(tiny_classifier(), tokenizer, out)
    (out / VARIANT_FILE).unlink()
    (out / WEIGHTS_FILE).write_bytes(b"\xff" * 64)
    with pytest.raises(ArtifactError, match="not a valid safetensors file"):
        verify_artifact(out)


def test_pickle_only_checkpoint_is_refused(tmp_path, tokenizer):
    out = tmp_path / "v"
    save_artifact(tiny_classifier(), tokenizer, out)
    (out / WEIGHTS_FILE).unlink()
    torch.save(tiny_classifier().state_dict(), out / "pytorch_model.bin")
    with pytest.raises(ArtifactError, match="pickle weights"):
        load_model(out)


class _Planted:
    """Unpickling this creates `marker`: the kind of code a hostile checkpoint runs."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("beside_safetensors", [False, True])
def test_a_code_running_pickle_is_never_unpickled(tmp_path, tokenizer, beside_safetensors):
    from loading.store import load_from_disk

    out, marker = tmp_path / "v", tmp_path / "pwned"
    save_artifact(tiny_classifier(), tokenizer, out)
    torch.save({"classifier.weight": _Planted(marker)}, out / "pytorch_model.bin")
    torch.load(out / "pytorch_model.bin", weights_only=False)["classifier.weight"].close()
    assert marker.exists()  # the payload is live: plain unpickling runs it
    marker.unlink()
    if beside_safetensors:  # the pickle is ignored; the weights come from safetensors
        model = load_model(out)
        assert torch.equal(model.classifier.weight, tiny_classifier().classifier.weight)
        verify_artifact(out)
    else:
        (out / WEIGHTS_FILE).unlink()
        for load in (load_model, read_variant_info, verify_artifact, load_from_disk):
            with pytest.raises(ArtifactError, match=r"no model.safetensors \(found pickle weights"):
                load(out)
    assert not marker.exists()


def test_missing_folder_and_config_are_named(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        read_variant_info(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="no config.json"):
        read_variant_info(tmp_path / "empty")


def test_plain_hf_checkpoint_is_imported_as_base(tmp_path, tokenizer):
    model = tiny_classifier()
    model.save_pretrained(tmp_path / "user")
    tokenizer.save_pretrained(tmp_path / "user")
    info = read_variant_info(tmp_path / "user")
    assert (info.name, info.method) == ("base", "import")
    assert info.num_parameters == sum(t.numel() for t in model.state_dict().values())


def test_failed_write_leaves_previous_artifact_intact(tmp_path, tokenizer):
    out = tmp_path / "v"
    good = save_artifact(tiny_classifier(), tokenizer, out)

    class BrokenTokenizer:
        def save_pretrained(self, path):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_artifact(tiny_classifier(seed=1), BrokenTokenizer(), out)
    assert verify_artifact(out) == good
    assert [p.name for p in tmp_path.iterdir()] == ["v"]


@pytest.mark.parametrize("name", ["", "a/b", " padded "])
def test_bad_variant_names_are_refused(name):
    with pytest.raises(ValueError, match="variant name must be"):
        VariantInfo(name=name)


def _tiny_distilbert():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    config = DistilBertConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=64, max_position_embeddings=64)
    return DistilBertForSequenceClassification(config).eval()


def test_bert_loads_as_our_module_and_other_types_through_transformers(tmp_path, tokenizer, caplog):
    from loading.bert import BertForSequenceClassification

    save_artifact(tiny_classifier(), tokenizer, tmp_path / "bert")
    save_artifact(_tiny_distilbert(), tokenizer, tmp_path / "distil")
    assert isinstance(load_model(tmp_path / "bert"), BertForSequenceClassification)
    with caplog.at_level("INFO", logger="loading.checkpoint"):
        other = load_model(tmp_path / "distil")
    assert type(other).__name__ == "DistilBertForSequenceClassification"
    assert "'distilbert' is not BERT; loading it with transformers" in caplog.text


def test_transformers_models_are_loaded_strictly(tmp_path, tokenizer):
    from safetensors.torch import load_file, save_file

    out = tmp_path / "distil"
    save_artifact(_tiny_distilbert(), tokenizer, out)
    tensors = load_file(str(out / WEIGHTS_FILE))
    del tensors["classifier.bias"]
    tensors["extra.weight"] = torch.zeros(2)
    save_file(tensors, str(out / WEIGHTS_FILE))
    with pytest.raises(ArtifactError, match=r"1 missing tensor \(classifier.bias\) and 1 unexpected tensor"):
        load_model(out)
