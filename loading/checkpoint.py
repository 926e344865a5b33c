"""The classifier module in an artifact folder, built strictly: every tensor its config needs, no other.

BERT checkpoints (`model_type: bert`) become `loading.bert` modules, never importing transformers;
other architectures load through transformers. Compressed variants are rebuilt with their int8 and
sparse layers. A checkpoint with missing or unexpected tensors is refused with `ArtifactError`
naming them (`check_tensor_names` does it from the safetensors header alone, for preflight).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from loading.artifact import (
    COMPRESSED_METHOD,
    VARIANT_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    check_folder,
    read_variant_info,
)
from loading.bert import BertConfig, BertForSequenceClassification, checkpoint_names

__all__ = ["check_tensor_names", "load_model"]

logger = logging.getLogger(__name__)


def _read_config(model_dir: Path) -> dict[str, Any]:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{model_dir / 'config.json'} is not readable JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ArtifactError(f"{model_dir / 'config.json'} must hold an object, got {type(config).__name__}")
    return config


def _bert_config(model_dir: Path, config: dict[str, Any]) -> BertConfig:
    try:
        return BertConfig.from_dict(config)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"{model_dir / 'config.json'} is not a BERT classifier we serve: {exc}") from exc


def _is_compressed(model_dir: Path) -> bool:
    return (model_dir / VARIANT_FILE).exists() and read_variant_info(model_dir).method == COMPRESSED_METHOD


def _tensor_names(weights_path: Path) -> list[str]:
    """The tensor names in a safetensors file, from its header alone."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as f:
            return list(f.keys())
    except Exception as exc:  # safetensors raises several types for a damaged header
        raise ArtifactError(f"{weights_path} is not a valid safetensors file: {exc}") from exc


def _dense_names(names: list[str]) -> set[str]:
    """The float model's state-dict names that a compressed artifact's tensors stand for.

    `<w>.__mask` / `__values` / ... (a sparse weight) stand for `<w>`; `<m>.weight_int8` (+ `scale`) and
    `<m>.weight_uint8` (+ `scale`, `zero_point`) for `<m>.weight` (see `compression.pack_state_dict`).
    """
    stems = {n.split(".__")[0] for n in names}
    quantized = {s.rpartition(".")[0] for s in stems if s.endswith((".weight_int8", ".weight_uint8"))}
    dense = set()
    for stem in stems:
        module, _, attr = stem.rpartition(".")
        if module in quantized and attr in ("scale", "zero_point"):
            continue
        dense.add(f"{module}.weight" if attr in ("weight_int8", "weight_uint8") else stem)
    return dense


def _expected_names(config: BertConfig) -> set[str]:
    """Every state-dict name of our classifier for `config`, built on the meta device (no memory)."""
    with torch.device("meta"):
        return set(BertForSequenceClassification(config).state_dict())


def _names_problem(missing: list[str], unexpected: list[str]) -> str | None:
    """'2 missing tensors (a, b) and 1 unexpected tensor (c)', or None when both lists are empty."""
    parts = []
    for what, names in (("missing", sorted(missing)), ("unexpected", sorted(unexpected))):
        if names:
            more = f", ... ({len(names) - 3} more)" if len(names) > 3 else ""
            plural = "s" if len(names) != 1 else ""
            parts.append(f"{len(names)} {what} tensor{plural} ({', '.join(names[:3])}{more})")
    return " and ".join(parts) or None


def _refuse_names(model_dir: Path, problem: str) -> ArtifactError:
    return ArtifactError(
        f"{model_dir / WEIGHTS_FILE} does not fit its config.json: {problem}; "
        "refusing to serve a model with random or unused weights"
    )


def check_tensor_names(model_dir: str | os.PathLike) -> None:
    """Refuse a BERT artifact whose weights file lacks tensors its config needs, or has others.

    Reads config.json and the safetensors header only (no weights): cheap enough for a preflight.
    Checkpoint names are taken as Hugging Face's loader takes them for BERT (`loading.bert.checkpoint_names`);
    compressed artifacts by the float tensors they encode. Other architectures are checked when
    transformers loads them (`load_model`).

    Raises:
        ArtifactError: naming a few of the missing / unexpected tensors and how many there are.
    """
    model_dir = Path(model_dir)
    check_folder(model_dir)
    config = _read_config(model_dir)
    if config.get("model_type") != "bert":
        return
    expected = _expected_names(_bert_config(model_dir, config))
    names = _tensor_names(model_dir / WEIGHTS_FILE)
    if _is_compressed(model_dir):
        found = _dense_names(names)
    else:
        found = {new for new in checkpoint_names(names).values() if new is not None}
    problem = _names_problem(list(expected - found), list(found - expected))
    if problem:
        raise _refuse_names(model_dir, problem)


def load_model(model_dir: str | os.PathLike) -> nn.Module:
    """The classifier in `model_dir`, read from safetensors only, in eval mode.

    BERT checkpoints (config.json `model_type: bert`) become `loading.bert.BertForSequenceClassification`,
    without importing transformers; other architectures load through transformers. Loading is
    strict: a weights file with missing or unexpected tensors raises `ArtifactError`. Compressed
    variants are rebuilt from their config: int8 layers as `Int8Linear`, pruned layers as
    `SparseLinear` holding their packed tensors as they are (decoded per call, so they stay small).
    """
    model_dir = Path(model_dir)
    check_folder(model_dir)
    config = _read_config(model_dir)
    if _is_compressed(model_dir):
        return _load_compressed(model_dir, config)
    if config.get("model_type") == "bert":
        return _load_bert(model_dir, config)
    return _load_transformers(model_dir, config)


def _load_bert(model_dir: Path, config: dict[str, Any]) -> nn.Module:
    from safetensors.torch import load_file

    bert_config = _bert_config(model_dir, config)
    check_tensor_names(model_dir)
    try:
        tensors = load_file(str(model_dir / WEIGHTS_FILE))
    except Exception as exc:  # safetensors raises several types for damaged files
        raise ArtifactError(f"cannot read the weights in {model_dir}: {exc}") from exc
    renamed = checkpoint_names(tensors)
    # Serving runs in float32 whatever the checkpoint was saved in (as transformers loads it).
    state = {
        new: t.float() if t.is_floating_point() else t
        for old, t in tensors.items()
        if (new := renamed[old]) is not None
    }
    with torch.device("meta"):  # no random init: every tensor comes from the file (assign=True)
        model = BertForSequenceClassification(bert_config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:  # shapes that do not fit the config
        raise ArtifactError(f"weights in {model_dir} do not fit its config.json: {exc}") from exc
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def _load_transformers(model_dir: Path, config: dict[str, Any]) -> nn.Module:
    from transformers import AutoModelForSequenceClassification

    logger.info(
        "%s: model_type %r is not BERT; loading it with transformers", model_dir, config.get("model_type")
    )
    try:
        model, report = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), use_safetensors=True, local_files_only=True, output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"cannot load a classifier from {model_dir}: {exc}") from exc
    # transformers fills missing tensors with random values and only warns: refuse instead.
    problem = _names_problem(list(report["missing_keys"]), list(report["unexpected_keys"]))
    if problem:
        raise _refuse_names(model_dir, problem)
    return model.eval()


def _load_compressed(model_dir: Path, config: dict[str, Any]) -> nn.Module:
    """Rebuild a `loading.build` artifact; pruned weights stay packed in `SparseLinear` layers.

    Nothing is decoded here, so the model store puts the compact form into shared memory; replicas
    decode per call or `densify_` (see `loading.store.attach`).
    """
    from safetensors.torch import load_file

    from compression import Int8Linear, SparseLinear, empty_int8_linears_, load_packed_state_dict_

    try:
        tensors = load_file(str(model_dir / WEIGHTS_FILE))
    except Exception as exc:  # safetensors raises several types for damaged files
        raise ArtifactError(f"cannot read the compressed model in {model_dir}: {exc}") from exc
    int8_fqns = _int8_layer_names(tensors)
    has_int8 = bool(int8_fqns)
    if config.get("model_type") == "bert":
        check_tensor_names(model_dir)
        model = _empty_bert(_bert_config(model_dir, config), int8_fqns)
    else:
        model = _empty_transformers_model(model_dir)
        empty_int8_linears_(model, int8_fqns)
    try:
        load_packed_state_dict_(model, tensors)
    except (RuntimeError, ValueError) as exc:
        raise ArtifactError(f"weights in {model_dir} do not fit its config: {exc}") from exc
    int8_layers = any(
        isinstance(m, Int8Linear) or (isinstance(m, SparseLinear) and m.scale is not None)
        for m in model.modules()
    )
    assert int8_layers == has_int8, "int8 layers and weights come together"
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def _int8_layer_names(tensors: dict[str, torch.Tensor]) -> set[str]:
    """The Linear layers stored int8: a dense `<m>.weight_int8` or its sparse parts `<m>.weight_int8.__*`.

    Every other Linear of a quantized variant was left float32 (`Int8DynamicQuantConfig.fp32_layers`).
    """
    stems = {k.split(".__")[0] for k in tensors}
    return {s.removesuffix(".weight_int8") for s in stems if s.endswith(".weight_int8")}


def _empty_bert(config: BertConfig, int8_fqns: set[str]) -> nn.Module:
    """Our classifier with `Int8Linear` layers at `int8_fqns`, its tensors allocated but not initialised.

    Nothing random and nothing quantized: `load_packed_state_dict_` overwrites every tensor it does
    not replace (it refuses a state dict that leaves one out).
    """
    from compression import empty_int8_linears_

    with torch.device("meta"):
        model = BertForSequenceClassification(config)
        empty_int8_linears_(model, int8_fqns)
    return model.to_empty(device="cpu")


def _empty_transformers_model(model_dir: Path) -> nn.Module:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    logger.info("%s: not a BERT config; building the compressed model with transformers", model_dir)
    try:
        config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read the config in {model_dir}: {exc}") from exc
    return AutoModelForSequenceClassification.from_config(config)
