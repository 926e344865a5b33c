"""The model store: one named, detached Ray actor that owns every variant's shared weights.

Objects made by `ray.put` die with the process that made them, so weights must not be owned by a
replica (which autoscaling kills) or by a driver (which exits). The store reads each variant from
disk once, puts its skeleton and weight arena into the object store and hands out the references.
A replica asks for a variant by name; the first replica on a node pulls the arena into that node's
shared memory, later ones map the same pages (`attach`).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import ray
import torch
from torch import nn

from compression import Int8Linear, SparseLinear, densify_, int8_matmul_is_fast, to_dynamic_quant_
from loading.artifact import VariantInfo, load_model, load_tokenizer, read_variant_info, verify_artifact
from loading.encoder import TextEncoder
from loading.zerocopy import (
    ModelSkeleton,
    arena_nbytes,
    extract_tensors,
    replace_tensors_,
    tree_cloner,
)

__all__ = [
    "AttachedModel",
    "Int8Kernel",
    "ModelStore",
    "STORE_NAME",
    "STORE_NAMESPACE",
    "SparseKernel",
    "attach",
    "forget_attached",
    "import_model_code",
    "load_from_disk",
    "model_store",
    "set_threads",
]

logger = logging.getLogger(__name__)

STORE_NAME = "model_store"
STORE_NAMESPACE = "bertserve"


@dataclass(frozen=True)
class _Bundle:
    """The model without its weights: small, unpickled by every attach (1-3 ms for BERT-base)."""

    skeleton: ModelSkeleton
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
        entry = {
            "model_dir": model_dir,
            "bundle": ray.put(_Bundle(skeleton, info)),
            # Separate from the bundle: rebuilding a tokenizer costs 35-75 ms, so each process fetches
            # it once per variant (see `_tokenizer`), not on every attach. The bare Rust tokenizer
            # only: it takes ~2/3 of a transformers tokenizer's memory in every replica.
            "tokenizer": ray.put(TextEncoder.from_pretrained_tokenizer(load_tokenizer(model_dir))),
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
            name: {k: v for k, v in e.items() if k not in ("bundle", "arena", "tokenizer")}
            for name, e in self._entries.items()
        }


def model_store() -> ray.actor.ActorHandle:
    """The cluster's model store, created on first use (detached: it outlives its creator)."""
    return ModelStore.options(
        name=STORE_NAME,
        namespace=STORE_NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        # On the head node, as Serve's controller: it owns the weights, so it must not live on a spot
        # worker that can vanish (every node's replicas would lose their weights with it).
        resources={"node:__internal_head__": 0.001},
    ).remote()


@dataclass
class AttachedModel:
    """A ready-to-run classifier whose weights view the object store's shared memory."""

    model: nn.Module
    tokenizer: TextEncoder | None  # None when attached with with_tokenizer=False
    info: VariantInfo
    attach_ms: float  # time from asking the store to a runnable model (store_wait_ms included)
    store_wait_ms: float  # of which: waiting for the store (reads the disk only for the first replica)
    arena_bytes: int
    loaded_from: str = "object-store-zero-copy"  # plus "+densified", "+fbgemm-prepack": see attach

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

    SHARED = "shared"  # int8 x int8 matmuls (torch._int_mm) straight from the shared weights
    FBGEMM = "fbgemm"  # prepack a private copy per replica: faster int8 matmuls, more memory
    # shared where this CPU has a fast int8 matmul (`int8_matmul_is_fast`), else fbgemm: without one
    # shared falls back to fp32 matmuls (no faster than base) while fbgemm stays ~1.9x fp32 on AVX2.
    AUTO = "auto"

    def resolve(self) -> Int8Kernel:
        """SHARED or FBGEMM: AUTO decided for this CPU."""
        if self is not Int8Kernel.AUTO:
            return self
        return Int8Kernel.SHARED if int8_matmul_is_fast() else Int8Kernel.FBGEMM


class SparseKernel(StrEnum):
    """How a replica runs pruned layers stored sparse (`SparseLinear`; see `compression.sparse_bench`)."""

    SHARED = "shared"  # decode each weight per call from the shared sparse parts: no private copy
    DENSE = "dense"  # densify_ into private dense weights per replica: dense speed and memory


def attach(
    variant: str,
    model_dir: str | os.PathLike,
    *,
    protect: bool = True,
    with_tokenizer: bool = True,
    int8_kernel: Int8Kernel | str = Int8Kernel.SHARED,
    sparse_kernel: SparseKernel | str = SparseKernel.SHARED,
    keep_for_reattach: bool = True,
) -> AttachedModel:
    """Get `variant` from the model store (storing it from `model_dir` if needed), zero-copy.

    The returned model's tensors are read-only views of the node's shared memory; with `protect`
    a write to them faults instead of corrupting every other replica's copy. With
    `int8_kernel="fbgemm"` int8 layers are repacked into private FBGEMM weights (all other tensors
    stay shared). With `sparse_kernel="dense"` sparse layers are first decoded into private
    `nn.Linear` / `Int8Linear` layers, so fbgemm then packs the int8 ones too; with "shared" they stay
    `SparseLinear` (int8 ones dequantized per call) and fbgemm packs only the dense int8 layers.

    A process that already attached the variant with the same options gets a clone of that model's
    module tree sharing its tensors (`tree_cloner`): no store round trip, unpickle or re-wrap. The
    template for that (~0.7 MB of module objects for BERT-base) is kept unless `keep_for_reattach`
    is False; `forget_attached` drops every kept one.
    """
    int8_kernel = Int8Kernel(int8_kernel)
    sparse_kernel = SparseKernel(sparse_kernel)
    start = time.perf_counter()
    key = (variant, str(Path(model_dir).resolve()))
    template_key = (*key, protect, int8_kernel, sparse_kernel)
    kept = _attached.get(template_key)
    if kept is not None:  # this process mapped the variant already: new modules, same tensors
        template, clone = kept
        return AttachedModel(
            clone(),
            _tokenizer(_refs[key]["tokenizer"]) if with_tokenizer else None,
            template.info,
            (time.perf_counter() - start) * 1e3,
            0.0,
            template.arena_bytes,
            template.loaded_from + "+process-mapping",
        )
    refs = _store_refs(key)
    store_wait_ms = (time.perf_counter() - start) * 1e3
    try:
        bundle, arena = ray.get([refs["bundle"], refs["arena"]])
    except ray.exceptions.ObjectLostError:  # the store was restarted: its old objects are gone
        refs = _store_refs(key, refresh=True)
        bundle, arena = ray.get([refs["bundle"], refs["arena"]])
    tokenizer = _tokenizer(refs["tokenizer"]) if with_tokenizer else None
    model = bundle.skeleton.module
    replace_tensors_(bundle.skeleton, arena, protect=protect)
    loaded_from = "object-store-zero-copy" + _apply_kernels_(model, int8_kernel, sparse_kernel)
    attach_ms = (time.perf_counter() - start) * 1e3
    attached = AttachedModel(
        model, tokenizer, bundle.info, attach_ms, store_wait_ms, int(arena.nbytes), loaded_from
    )
    if not keep_for_reattach:
        return attached
    # The template is a clone: what the caller does to its model (train(), hooks) stays out of it.
    template = tree_cloner(model)()
    _attached[template_key] = (
        replace(attached, model=template, tokenizer=None),
        tree_cloner(template),
    )
    return attached


def import_model_code(model_dir: str | os.PathLike) -> float:
    """Import the transformers module defining the variant's model class; returns the seconds taken.

    Unpickling a skeleton imports it anyway, and in a fresh process that import (~1-2 s for
    `modeling_bert`) is nearly all of the first attach (the mapping itself takes ms). Doing it
    first lets a worker pay it before its clock starts and a cold start report imports apart.
    """
    start = time.perf_counter()
    try:
        model_type = json.loads((Path(model_dir) / "config.json").read_text())["model_type"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0  # attach reports what is wrong with the folder
    name = model_type.replace("-", "_")
    try:
        importlib.import_module(f"transformers.models.{name}.modeling_{name}")
    except ImportError:
        pass  # a model class outside transformers: unpickling imports it
    return time.perf_counter() - start


def _apply_kernels_(model: nn.Module, int8_kernel: Int8Kernel, sparse_kernel: SparseKernel) -> str:
    """Swap in private kernels where asked; returns the suffix that says so in `loaded_from`."""
    suffix = ""
    if sparse_kernel is SparseKernel.DENSE and any(isinstance(m, SparseLinear) for m in model.modules()):
        densify_(model)  # before fbgemm, so that it packs the decoded int8 layers as well
        suffix += "+densified"
    int8 = any(isinstance(m, Int8Linear) for m in model.modules())
    if int8 and int8_kernel.resolve() is Int8Kernel.FBGEMM:  # resolve last: AUTO's probe costs ~40 ms
        to_dynamic_quant_(model)
        suffix += "+fbgemm-prepack"
    model.eval()
    return suffix


def load_from_disk(
    model_dir: str | os.PathLike,
    *,
    int8_kernel: Int8Kernel | str = Int8Kernel.SHARED,
    sparse_kernel: SparseKernel | str = SparseKernel.SHARED,
) -> AttachedModel:
    """The model `attach` gives, read from disk into this process's private memory instead.

    The baseline a zero-copy replica is measured against (`loadtest.coldstart`): same artifact, same
    kernels, same tokenizer type; only where the weights come from differs. The weights hash is not
    checked here (the store checks it once per cluster; doing it per replica would only add time).
    """
    start = time.perf_counter()
    info = read_variant_info(model_dir)
    model = load_model(model_dir)
    tokenizer = TextEncoder.from_pretrained_tokenizer(load_tokenizer(model_dir))
    loaded_from = "disk" + _apply_kernels_(model, Int8Kernel(int8_kernel), SparseKernel(sparse_kernel))
    return AttachedModel(
        model, tokenizer, info, (time.perf_counter() - start) * 1e3, 0.0, _private_bytes(model), loaded_from
    )


def _private_bytes(model: torch.nn.Module) -> int:
    """Bytes of the distinct storages behind `model`'s state: what a disk load holds privately.

    A dynamic-int8 Linear's state holds its packed (weight, bias) pair and a dtype, not one tensor.
    """
    storages: dict[int, int] = {}
    pending = list(model.state_dict().values())
    while pending:
        item = pending.pop()
        if isinstance(item, (tuple, list)):
            pending.extend(item)
        elif isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def forget_attached() -> None:
    """Drop this process's mappings kept for re-attaching; the memory goes once no model uses it."""
    _attached.clear()


_store: list[ray.actor.ActorHandle] = []  # per process: the store's handle, looked up once
_refs: dict[tuple[str, str], dict[str, Any]] = {}  # per process: (variant, folder) -> store refs
# Per process: (variant, folder, protect, kernels) -> the first attach, whose clones later attaches return.
_attached: dict[
    tuple[str, str, bool, Int8Kernel, SparseKernel], tuple[AttachedModel, Callable[[], nn.Module]]
] = {}


def _store_refs(key: tuple[str, str], refresh: bool = False) -> dict[str, Any]:
    """The store's references for a variant, asked for once per process (a round trip costs ms)."""
    if refresh or key not in _refs:
        if not _store:
            _store.append(model_store())
        try:
            _refs[key] = ray.get(_store[0].ensure.remote(*key))
        except ray.exceptions.RayActorError:  # the store was killed for good: make a new one
            _store[:] = [model_store()]
            _refs[key] = ray.get(_store[0].ensure.remote(*key))
    return _refs[key]


_tokenizers: dict[ray.ObjectRef, TextEncoder] = {}  # per process: one tokenizer per stored variant


def _tokenizer(ref: ray.ObjectRef) -> TextEncoder:
    if ref not in _tokenizers:
        _tokenizers[ref] = ray.get(ref)
    return _tokenizers[ref]


def set_threads(num_cpus: float) -> int:
    """Give torch as many threads as this process's CPU share, so replicas don't oversubscribe."""
    threads = max(1, int(num_cpus))
    torch.set_num_threads(threads)
    return threads
