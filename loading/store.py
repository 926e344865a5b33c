"""The model store: one named, detached Ray actor that owns every variant's shared weights.

Objects made by `ray.put` die with the process that made them, so weights must not be owned by a
replica (which autoscaling kills) or by a driver (which exits). The store reads each variant from
disk once, puts its skeleton and weight arena into the object store and hands out the references.
A replica asks for a variant by name; the first replica on a node pulls the arena into that node's
shared memory, later ones map the same pages (`attach`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import ray
import torch
from torch import nn

from compression import Int8Linear, to_dynamic_quant_
from loading.artifact import VariantInfo, load_model, load_tokenizer, verify_artifact
from loading.zerocopy import ModelSkeleton, arena_nbytes, extract_tensors, replace_tensors_

__all__ = [
    "AttachedModel",
    "Int8Kernel",
    "ModelStore",
    "STORE_NAME",
    "STORE_NAMESPACE",
    "attach",
    "model_store",
    "set_threads",
]

logger = logging.getLogger(__name__)

STORE_NAME = "model_store"
STORE_NAMESPACE = "bertserve"


@dataclass(frozen=True)
class _Bundle:
    """Everything a replica needs besides the weights: small, pickled once."""

    skeleton: ModelSkeleton
    tokenizer: Any
    info: VariantInfo


@ray.remote(num_cpus=0, max_restarts=-1)
class ModelStore:
    """Owns the object-store copies of each variant's weights; restarts re-read from disk."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Any]] = {}

    def ensure(self, variant: str, model_dir: str) -> dict[str, Any]:
        """References to `variant`'s bundle and arena, reading `model_dir` on first request."""
        entry = self._entries.get(variant)
        if entry is not None and entry["model_dir"] != model_dir:
            raise ValueError(
                f"variant {variant!r} is already stored from {entry['model_dir']}, "
                f"not {model_dir}; drop it first"
            )
        if entry is None:
            entry = self._put(variant, model_dir)
            self._entries[variant] = entry
        return dict(entry)

    def _put(self, variant: str, model_dir: str) -> dict[str, Any]:
        start = time.perf_counter()
        info = verify_artifact(model_dir)
        model = load_model(model_dir)
        skeleton, arena = extract_tensors(model)
        bundle = _Bundle(skeleton, load_tokenizer(model_dir), info)
        entry = {
            "model_dir": model_dir,
            "bundle": ray.put(bundle),
            "arena": ray.put(arena),
            "arena_bytes": int(arena.nbytes),
            "tensor_bytes": arena_nbytes(skeleton),
        }
        logger.info(
            "stored %s from %s: %.1f MB in %.2f s",
            variant,
            model_dir,
            arena.nbytes / 1e6,
            time.perf_counter() - start,
        )
        return entry

    def drop(self, variant: str) -> bool:
        """Forget a variant; its memory is freed once no replica holds it."""
        return self._entries.pop(variant, None) is not None

    def variants(self) -> dict[str, dict[str, Any]]:
        """Stored variants with their source folder and sizes."""
        return {
            name: {k: v for k, v in e.items() if k not in ("bundle", "arena")}
            for name, e in self._entries.items()
        }


def model_store() -> ray.actor.ActorHandle:
    """The cluster's model store, created on first use (detached: it outlives its creator)."""
    return ModelStore.options(
        name=STORE_NAME,
        namespace=STORE_NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
    ).remote()


@dataclass
class AttachedModel:
    """A ready-to-run classifier whose weights view the object store's shared memory."""

    model: nn.Module
    tokenizer: Any
    info: VariantInfo
    attach_ms: float  # time from asking the store to a runnable model (store_wait_ms included)
    store_wait_ms: float  # of which: waiting for the store (reads the disk only for the first replica)
    arena_bytes: int
    loaded_from: str = "object-store-zero-copy"  # plus "+fbgemm-prepack" when int8 layers were packed

    def describe(self) -> dict[str, Any]:
        return {
            "variant": self.info.name,
            "attach_ms": round(self.attach_ms, 3),
            "store_wait_ms": round(self.store_wait_ms, 3),
            "arena_bytes": self.arena_bytes,
            "loaded_from": self.loaded_from,
            "info": asdict(self.info),
        }


class Int8Kernel(StrEnum):
    """How a replica runs int8 Linear layers (measured in docs/COMPRESSION.md)."""

    SHARED = "shared"  # dequantize the shared int8 weights per call: no private copy, fp32 speed
    FBGEMM = "fbgemm"  # prepack a private copy per replica: faster int8 matmuls, more memory


def attach(
    variant: str,
    model_dir: str | os.PathLike,
    *,
    protect: bool = True,
    int8_kernel: Int8Kernel | str = Int8Kernel.SHARED,
) -> AttachedModel:
    """Get `variant` from the model store (storing it from `model_dir` if needed), zero-copy.

    The returned model's tensors are read-only views of the node's shared memory; with `protect`
    a write to them faults instead of corrupting every other replica's copy. With
    `int8_kernel="fbgemm"` int8 layers are repacked into private FBGEMM weights (all other tensors
    stay shared).
    """
    int8_kernel = Int8Kernel(int8_kernel)
    start = time.perf_counter()
    refs = ray.get(model_store().ensure.remote(variant, str(Path(model_dir).resolve())))
    store_wait_ms = (time.perf_counter() - start) * 1e3
    bundle, arena = ray.get([refs["bundle"], refs["arena"]])
    model = bundle.skeleton.module
    replace_tensors_(bundle.skeleton, arena, protect=protect)
    loaded_from = "object-store-zero-copy"
    if int8_kernel is Int8Kernel.FBGEMM and any(isinstance(m, Int8Linear) for m in model.modules()):
        to_dynamic_quant_(model)
        loaded_from += "+fbgemm-prepack"
    model.eval()
    attach_ms = (time.perf_counter() - start) * 1e3
    return AttachedModel(
        model, bundle.tokenizer, bundle.info, attach_ms, store_wait_ms, int(arena.nbytes), loaded_from
    )


def set_threads(num_cpus: float) -> int:
    """Give torch as many threads as this process's CPU share, so replicas don't oversubscribe."""
    threads = max(1, int(num_cpus))
    torch.set_num_threads(threads)
    return threads
