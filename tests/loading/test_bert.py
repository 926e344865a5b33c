"""`loading.bert`: our plain-torch BERT classifier against transformers', and strict loading."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from compression import (
    Int8Embedding,
    Int8Linear,
    SparseLinear,
    build_variant,
    densify_,
    parse_variant,
    to_dynamic_quant_,
    to_int8_linear,
)
from deployments.preflight import check_config
from loading.artifact import VARIANT_FILE, WEIGHTS_FILE, ArtifactError, content_hash, resolve_model_dir
from loading.bert import BertConfig, BertForSequenceClassification, checkpoint_names
from loading.build import build_variants
from loading.checkpoint import check_tensor_names, load_model
from tests.conftest import minilm_dir, tiny_classifier

TOLERANCE = 1e-4  # max |logit difference| against transformers, float32
TEXTS = [
    "A short one.",
    "I have three deadlines tomorrow and I cannot sleep, so I keep rereading the same page.",
    "Lovely walk today.",
]
VARIANTS = ["quant", "pruned-50", "pruned-quant-50"]
BASE = resolve_model_dir("artifacts/base")
ROOT = Path(__file__).resolve().parents[2]


def _ours_from(hf_model: torch.nn.Module) -> BertForSequenceClassification:
    """Our classifier sharing a transformers model's tensors (strict: every name must match)."""
    config = BertConfig.from_dict(hf_model.config.to_dict())
    with torch.device("meta"):
        ours = BertForSequenceClassification(config)
    ours.load_state_dict(hf_model.state_dict(), strict=True, assign=True)
    return ours.eval()


def _max_diff(ours: torch.nn.Module, reference: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    with torch.inference_mode():
        return float((ours(**batch).logits - reference(**batch).logits).abs().max())


def _batch(tokenizer, texts: list[str] = TEXTS) -> dict[str, torch.Tensor]:
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))  # (B, T) with padding


def _bert_base() -> torch.nn.Module:
    from transformers import BertConfig as HFBertConfig
    from transformers import BertForSequenceClassification as HFBert

    torch.manual_seed(0)
    config = HFBertConfig(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
    )
    return HFBert(config).eval()


@pytest.fixture(scope="module")
def bert_base():
    return _bert_base()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("shape", ["tiny", "bert-base"])
def test_logits_match_transformers(shape, attn, tokenizer, request):
    hf = tiny_classifier(num_labels=3) if shape == "tiny" else request.getfixturevalue("bert_base")
    hf.set_attn_implementation(attn)
    texts = TEXTS if shape == "tiny" else TEXTS[:2]
    assert _max_diff(_ours_from(hf), hf, _batch(tokenizer, texts)) <= TOLERANCE


def test_artifact_loads_as_our_module_with_the_same_logits(tiny_artifact, tokenizer):
    ours = load_model(tiny_artifact)
    assert isinstance(ours, BertForSequenceClassification)
    assert ours.config.id2label == {0: "label_0", 1: "label_1"} and ours.config.num_labels == 2
    assert _max_diff(ours, tiny_classifier(), _batch(tokenizer)) <= TOLERANCE


@pytest.mark.skipif(not (BASE / WEIGHTS_FILE).exists(), reason="artifacts/base not built (make artifacts)")
def test_default_model_matches_transformers(tokenizer):
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(str(BASE), local_files_only=True).eval()
    ours = load_model(BASE)
    assert ours.config.id2label == hf.config.id2label
    assert _max_diff(ours, hf, _batch(tokenizer)) <= TOLERANCE


def test_padded_rows_equal_each_text_alone(tiny_artifact, tokenizer):
    ours = load_model(tiny_artifact)
    batch = _batch(tokenizer)
    assert (batch["attention_mask"] == 0).any()  # the batch really is padded
    with torch.inference_mode():
        padded = ours(**batch).logits
        alone = torch.cat([ours(**_batch(tokenizer, [t])).logits for t in TEXTS])
        no_mask = ours(input_ids=_batch(tokenizer, TEXTS[:1])["input_ids"]).logits
    assert float((padded - alone).abs().max()) <= 1e-5
    assert torch.allclose(no_mask, alone[:1], atol=1e-6)  # no mask, no segments: all real, segment 0


@pytest.fixture(scope="module")
def variants(tiny_artifact, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bert_variants")
    build_variants(tiny_artifact, VARIANTS, out)
    return out


def _hf_variant(name: str) -> torch.nn.Module:
    """transformers' tiny model with the swaps the build makes: same int8 / pruned layers as ours."""
    compressed = build_variant(tiny_classifier(), name)
    return to_int8_linear(compressed) if any(c.NAME == "quant" for c in parse_variant(name)) else compressed


@pytest.mark.parametrize("kernel", ["shared", "dense", "fbgemm"])
@pytest.mark.parametrize("name", VARIANTS)
def test_served_variants_match_transformers_with_the_same_layers(
    variants, tokenizer, int8_matmul, name, kernel
):
    ours, hf = load_model(variants / name), _hf_variant(name)
    assert isinstance(ours, BertForSequenceClassification)
    kinds = {type(m) for m in ours.modules()}
    assert (Int8Embedding in kinds) == ("quant" in name)
    assert (SparseLinear in kinds) == name.startswith("pruned")
    if kernel in ("dense", "fbgemm"):  # what attach's sparse_kernel="dense" / int8_kernel="fbgemm" do
        for model in (ours, hf):
            densify_(model)
            if kernel == "fbgemm":
                to_dynamic_quant_(model)
    if "quant" in name and kernel != "fbgemm":
        assert any(isinstance(m, Int8Linear | SparseLinear) for m in ours.modules())
    assert _max_diff(ours, hf, _batch(tokenizer)) <= TOLERANCE


def _write_weights(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Replace the weights file, keeping variant.json's hash right (only the names are wrong)."""
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / WEIGHTS_FILE))
    meta = folder / VARIANT_FILE
    if meta.exists():
        info = json.loads(meta.read_text())
        info["content_hash"] = content_hash(folder / WEIGHTS_FILE)
        meta.write_text(json.dumps(info))


def _edited(src: Path, dst: Path, drop: tuple[str, ...] = (), add: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst)
    tensors = load_file(str(dst / WEIGHTS_FILE))
    for name in drop:
        del tensors[name]
    for name in add:
        tensors[name] = torch.zeros(3)
    _write_weights(dst, tensors)
    return dst


def _preflight(model_dir: Path, tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "serve_config.yaml"
    app = {"name": "app", "args": {"variant": "v", "model_dir": str(model_dir)}}
    path.write_text(yaml.safe_dump({"applications": [app]}))
    problems = check_config(path)
    if problems:
        raise ArtifactError(problems["app"])


def _build(model_dir: Path, tmp_path: Path) -> None:
    build_variants(model_dir, ["quant"], tmp_path / "built")


ENTRY_POINTS = {"load_model": load_model, "check_tensor_names": check_tensor_names}
ENTRY_POINTS |= {"preflight": _preflight, "build": _build}

BROKEN = {
    "missing": (
        ("classifier.bias", "bert.encoder.layer.1.output.dense.weight"),
        (),
        r"2 missing tensors \(bert\.encoder\.layer\.1\.output\.dense\.weight, classifier\.bias\)",
    ),
    "unexpected": ((), ("bert.extra.weight",), r"1 unexpected tensor \(bert\.extra\.weight\)"),
    "both": (
        ("bert.pooler.dense.bias", "bert.pooler.dense.weight", "classifier.bias", "classifier.weight"),
        ("cls.a", "cls.b"),
        r"4 missing tensors \(bert\.pooler\.dense\.bias, .* \(1 more\)\) and 2 unexpected tensors",
    ),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("case", BROKEN)
def test_missing_or_unexpected_tensors_are_refused(tiny_artifact, tmp_path, entry, case):
    drop, add, message = BROKEN[case]
    broken = _edited(tiny_artifact, tmp_path / "broken", drop, add)
    call = ENTRY_POINTS[entry]
    with pytest.raises(ArtifactError, match=message):
        call(broken) if entry in ("load_model", "check_tensor_names") else call(broken, tmp_path)


@pytest.mark.parametrize("entry", ["load_model", "check_tensor_names", "preflight"])
@pytest.mark.parametrize("name", ["quant", "pruned-quant-50"])
def test_compressed_artifacts_with_missing_tensors_are_refused(variants, tmp_path, name, entry):
    src = variants / name
    gone = sorted(k for k in load_file(str(src / WEIGHTS_FILE)) if k.startswith("classifier."))
    broken = _edited(src, tmp_path / "broken", drop=tuple(gone))
    with pytest.raises(ArtifactError, match=r"missing tensors? \(classifier\."):
        if entry == "preflight":
            _preflight(broken, tmp_path)
        else:
            ENTRY_POINTS[entry](broken)


def test_served_variants_pass_the_name_check(variants):
    for name in VARIANTS:
        check_tensor_names(variants / name)


def test_the_minilm_encoder_without_a_head_is_refused():
    """The offline MiniLM package holds a bare `BertModel` checkpoint: transformers would add a
    random classifier; we refuse it, naming the head."""
    with pytest.raises(ArtifactError, match=r"2 missing tensors \(classifier\.bias, classifier\.weight\)"):
        load_model(minilm_dir())


def test_minilm_checkpoint_names_load_as_transformers_loads_them(tmp_path, tokenizer):
    """Bare names (no `bert.`), a saved `position_ids` buffer, TF-era `gamma`/`beta`: all taken."""
    from transformers import BertForSequenceClassification as HFBert

    torch.manual_seed(0)
    hf = HFBert.from_pretrained(str(minilm_dir()), local_files_only=True, num_labels=2).eval()
    folder = tmp_path / "minilm-head"
    shutil.copytree(minilm_dir(), folder)
    tensors = load_file(str(folder / WEIGHTS_FILE))
    assert "embeddings.position_ids" in tensors and not any(k.startswith("bert.") for k in tensors)
    legacy = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in tensors.items()
    }
    legacy |= {"classifier.weight": hf.classifier.weight, "classifier.bias": hf.classifier.bias}
    _write_weights(folder, legacy)
    ours = load_model(folder)
    assert _max_diff(ours, hf, _batch(tokenizer)) <= TOLERANCE


@pytest.mark.parametrize(
    "names, expected",
    [
        (["bert.embeddings.position_ids", "classifier.bias"], [None, "classifier.bias"]),
        (["encoder.layer.0.output.LayerNorm.gamma"], ["bert.encoder.layer.0.output.LayerNorm.weight"]),
        (["embeddings.token_type_ids", "pooler.dense.weight"], [None, "bert.pooler.dense.weight"]),
    ],
)
def test_checkpoint_names(names, expected):
    assert list(checkpoint_names(names).values()) == expected


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hidden_act": "relu"}, "hidden_act must be one of .*got 'relu'"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type must be 'absolute'"),
        ({"problem_type": "multi_label_classification"}, "problem_type must be"),
        ({"num_labels": 5}, "num_labels must match id2label"),
        ({"is_decoder": True}, "is_decoder"),
    ],
)
def test_unsupported_configs_are_refused(tiny_artifact, tmp_path, change, message):
    config = json.loads((tiny_artifact / "config.json").read_text())
    with pytest.raises(ValueError, match=message):
        BertConfig.from_dict({**config, **change})
    folder = tmp_path / "odd"
    shutil.copytree(tiny_artifact, folder)
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ArtifactError, match=message):
        load_model(folder)


def test_config_round_trips_through_config_json(tiny_artifact):
    source = json.loads((tiny_artifact / "config.json").read_text())
    config = BertConfig.from_dict(source)
    written = config.to_dict()
    assert {k: written[k] for k in source} == source  # nothing lost or changed; defaults may be added
    assert BertConfig.from_dict(config.to_dict()) == config


_REPLICA = """
import pickle, sys
import torch
import deployments.classifier  # what a replica process imports
from loading.checkpoint import load_model
from loading.predict import Predictor
from loading.store import import_model_code
from loading.zerocopy import replace_tensors_

base, variant, bundle = sys.argv[1:4]
import_model_code(base)
skeleton, arena, encoder = pickle.loads(open(bundle, "rb").read())  # what attach unpickles
replace_tensors_(skeleton, arena)
labels = {Predictor(skeleton.module, encoder).predict(["zero-copy"])[0].label}
for folder in (base, variant):  # a replica with weights: disk, and the model store, load these
    labels.add(Predictor(load_model(folder), encoder).predict(["from disk"])[0].label)
assert "transformers" not in sys.modules, "a replica imported transformers"
print("ok", sorted(labels))
"""


def test_replica_path_never_imports_transformers(tiny_artifact, variants, tokenizer, tmp_path):
    from loading.encoder import TextEncoder
    from loading.zerocopy import extract_tensors

    bundle = tmp_path / "bundle.pkl"
    skeleton, arena = extract_tensors(load_model(tiny_artifact))
    bundle.write_bytes(pickle.dumps((skeleton, arena, TextEncoder.from_pretrained_tokenizer(tokenizer))))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _REPLICA, str(tiny_artifact), str(variants / "pruned-quant-50"), str(bundle)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok")
