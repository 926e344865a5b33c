"""Clones of a model artifact, each with its own weights: as many distinct models as a measurement needs.

A clone is a copy of the source artifact whose float tensors get seeded noise (a share of each
tensor's std; more on the classifier head, so that predictions differ visibly), with a variant.json
that `verify_artifact` accepts. Built once, and again only when missing, stale or broken.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT
from loading.artifact import (
    VARIANT_FILE,
    WEIGHTS_FILE,
    content_hash,
    read_variant_info,
    update_variant_info,
    verify_artifact,
)

__all__ = ["CLONES_DIR", "CLONE_VARIANT", "build_clone", "clone_name", "ensure_clones"]

logger = logging.getLogger(__name__)

CLONES_DIR = ROOT / "artifacts" / "many-models"  # built once, reused by later runs
CLONE_VARIANT = "base"  # each clone is its model's one variant
NOISE = 0.01  # x each tensor's std, on every tensor: every clone's bytes differ, as distinct models' do
HEAD_NOISE = 0.5  # x the classifier head's std: the clones' predictions differ visibly


def clone_name(i: int) -> str:
    return f"m{i:02d}"


def _clone_record(source_hash: str, seed: int, noise: float, head_noise: float) -> dict[str, Any]:
    return {"source_hash": source_hash, "seed": seed, "noise": noise, "head_noise": head_noise}


def build_clone(
    source: Path, out_dir: Path, seed: int, *, noise: float = NOISE, head_noise: float = HEAD_NOISE
) -> Path:
    """A copy of the artifact `source` at `out_dir` whose float tensors get seeded Gaussian noise
    (`noise` x each tensor's std; `head_noise` for `classifier.*`), with a variant.json that
    `verify_artifact` accepts (hash and size of the new weights; no accuracy: never measured).

    Written in a temp folder and renamed, so an interrupted build leaves no half clone.
    """
    import torch
    from safetensors.torch import load_file, save_file

    if not noise >= 0 or not head_noise >= 0:
        raise ValueError(f"noise and head_noise must be >= 0, got {noise}, {head_noise}")
    source_info = verify_artifact(source)
    generator = torch.Generator().manual_seed(seed)
    tensors = load_file(str(source / WEIGHTS_FILE))
    for name in sorted(tensors):  # a fixed order: the same seed gives the same clone
        t = tensors[name]
        scale = head_noise if name.startswith("classifier.") else noise
        if t.is_floating_point() and t.numel() > 1 and scale > 0:
            std = float(t.float().std())
            tensors[name] = t + torch.randn(t.shape, generator=generator, dtype=t.dtype) * (scale * std)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for f in source.iterdir():
            if f.is_file() and f.name not in (WEIGHTS_FILE, VARIANT_FILE):
                shutil.copy2(f, tmp / f.name)
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / VARIANT_FILE).write_text(source_info.to_json())
        parameters = {
            **source_info.parameters,
            "clone": _clone_record(source_info.content_hash, seed, noise, head_noise),
        }
        update_variant_info(
            tmp,
            name=CLONE_VARIANT,
            parent=source_info.name,
            parameters=parameters,
            content_hash=content_hash(tmp / WEIGHTS_FILE),
            weights_bytes=(tmp / WEIGHTS_FILE).stat().st_size,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            accuracy=None,
        )
        verify_artifact(tmp)
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def ensure_clones(source: Path, count: int, root: Path = CLONES_DIR, seed: int = 0) -> dict[str, Path]:
    """`count` clones of `source` ({model name: folder}), building only those missing or stale."""
    source_hash = verify_artifact(source).content_hash
    out = {}
    for i in range(count):
        name, folder = clone_name(i), root / clone_name(i)
        want = _clone_record(source_hash, seed + i, NOISE, HEAD_NOISE)
        try:
            have = read_variant_info(folder).parameters.get("clone")
        except ValueError:  # no folder yet (ArtifactError), or a broken one: build it again
            have = None
        if have != want:
            started = time.perf_counter()
            build_clone(source, folder, seed + i)
            logger.info("built clone %s in %.1f s", folder, time.perf_counter() - started)
        out[name] = folder
    return out
