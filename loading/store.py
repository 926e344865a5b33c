"""Attach a variant's weights zero-copy from the model store (`loading.model_store`), in any process.

A replica asks for a variant by name; the first replica on a node pulls the arena into that node's
shared memory, later ones map the same pages. Per process, mappings, templates and tokenizers are
kept so that attaching again costs a clone; kernels that need private copies (FBGEMM, dense sparse
layers) are applied here. `load_from_disk` is the baseline without the store.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import ray
import torch
from torch import nn

from compression import Int8Linear, SparseLinear, densify_, int8_matmul_is_fast, to_dynamic_quant_
from loading.artifact import VariantInfo, load_tokenizer, read_variant_info
from loading.checkpoint import load_model
from loading.encoder import TextEncoder
from loading.model_store import STORE_NAME, STORE_NAMESPACE, Bundle, model_store
from loading.zerocopy import (
    populate_arena_,
    protect_arena_,
    replace_tensors_,
    tree_cloner,
)

__all__ = [
    "AttachedModel",
    "Int8Kernel",
    "SparseKernel",
    "attach",
    "forget_attached",
    "import_model_code",
    "keep_template_",
    "load_from_disk",
    "prefetch",
    "set_threads",
]

logger = logging.getLogger(__name__)


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
    private_bytes: int = 0  # tensor bytes this process holds outside the shared arena (kernel copies)
    template_key: tuple | None = field(default=None, repr=False)  # see keep_template_

    def describe(self) -> dict[str, Any]:
        return {
            "variant": self.info.name,
            "attach_ms": round(self.attach_ms, 3),
            "store_wait_ms": round(self.store_wait_ms, 3),
            "arena_bytes": self.arena_bytes,
            "loaded_from": self.loaded_from,
            "private_bytes": self.private_bytes,
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
    """How a replica runs pruned layers stored sparse (`SparseLinear`; see `benchmarks.sparse_kernels`)."""

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

    Per process, the first attach of a variant maps its arena and protects its pages once; the
    mapping stays until `forget_attached` (it costs page tables, not memory: the store holds the
    pages anyway). Later attaches reuse it: protecting pages a forward pass has touched costs ~25 ms
    for BERT-base, so it is never done twice. With `keep_for_reattach` the first model's module tree
    is also kept as a template (~0.7 MB of module objects for BERT-base) and later attaches with the
    same options return clones of it (`tree_cloner`): no store round trip, unpickle or re-wrap.
    """
    # A collection in the middle of an attach would scan the whole heap (torch's, Ray's) because of
    # the module objects it makes: 2-20 ms at random. They are no garbage; collect later, not now.
    with _gc_paused():
        return _attach(
            variant, model_dir, protect, with_tokenizer, int8_kernel, sparse_kernel, keep_for_reattach
        )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _attach(
    variant: str,
    model_dir: str | os.PathLike,
    protect: bool,
    with_tokenizer: bool,
    int8_kernel: Int8Kernel | str,
    sparse_kernel: SparseKernel | str,
    keep_for_reattach: bool,
) -> AttachedModel:
    int8_kernel = Int8Kernel(int8_kernel)
    sparse_kernel = SparseKernel(sparse_kernel)
    start = time.perf_counter()
    key = (variant, str(Path(model_dir).resolve()))
    template_key = (*key, protect, int8_kernel, sparse_kernel)
    kept = _attached.get(template_key)
    if kept is not None:  # this process mapped the variant already: new modules, same tensors
        template, clone = kept
        return replace(
            template,
            model=clone(),
            tokenizer=_tokenizer(_refs[key]["tokenizer"]) if with_tokenizer else None,
            attach_ms=(time.perf_counter() - start) * 1e3,
            store_wait_ms=0.0,
            loaded_from=template.loaded_from + "+process-mapping",
        )
    _store_refs(key)  # the store round trip, timed on its own (once per process and variant)
    store_wait_ms = (time.perf_counter() - start) * 1e3
    arena = _map_arena(key, protect)
    bundle: Bundle = ray.get(_refs[key]["bundle"])  # a fresh skeleton: earlier ones are live models
    tokenizer = _tokenizer(_refs[key]["tokenizer"]) if with_tokenizer else None
    model = bundle.skeleton.module
    replace_tensors_(bundle.skeleton, arena)  # protected (or not) once per process: `_map_arena`
    loaded_from = "object-store-zero-copy" + _apply_kernels_(model, int8_kernel, sparse_kernel)
    attach_ms = (time.perf_counter() - start) * 1e3
    attached = AttachedModel(
        model,
        tokenizer,
        bundle.info,
        attach_ms,
        store_wait_ms,
        int(arena.nbytes),
        loaded_from,
        _bytes_outside(model, arena),
        template_key,
    )
    if keep_for_reattach:
        keep_template_(attached)
    return attached


def keep_template_(attached: AttachedModel) -> bool:
    """Keep `attached`'s module tree so that this process's later attaches of it are clones (<1 ms).

    `attach(keep_for_reattach=True)` does it at once (1-3 ms for BERT-base); a warm pool attaches
    every variant so at start, so that no request pays a full attach. Not for a model holding
    private copies (FBGEMM's packed weights, densified layers): the template would keep them alive
    after the model is dropped. Returns whether a template is kept.
    """
    if attached.template_key is None or attached.private_bytes > 0:
        return False
    if attached.template_key not in _attached:
        # The template is a clone: what the caller does to its model (train(), hooks) stays out of it.
        template = tree_cloner(attached.model)()
        _attached[attached.template_key] = (
            replace(attached, model=template, tokenizer=None),
            tree_cloner(template),
        )
    return True


def prefetch(model_dirs: dict[str, str | os.PathLike], *, map_pages: bool = False) -> None:
    """Ask the store for several variants in one round trip, so their first `attach` needs none.

    Their tokenizers come too (one per model). With `map_pages` each arena is also mapped, protected
    and its page tables filled now (`populate_arena_`), so that neither the attach nor the first
    forward pass pays for it: shared pages, so no private memory, ~2 KB of page tables per MB.
    A warm pool replica calls it at start: attaching a variant later is then local work only.
    """
    keys = {variant: str(Path(d).resolve()) for variant, d in model_dirs.items()}
    missing = {v: d for v, d in keys.items() if (v, d) not in _refs}
    if missing:
        for variant, refs in _call_store("ensure_many", missing).items():
            _refs[(variant, missing[variant])] = refs
    for variant, d in keys.items():  # one per model, 20-40 ms each: not on a request's path
        key = (variant, d)
        _tokenizer(_refs[key]["tokenizer"])
        if map_pages and key not in _mapped:
            populate_arena_(_map_arena(key, protect=True))


def import_model_code(model_dir: str | os.PathLike) -> float:
    """Import the module defining the variant's model class; returns the seconds taken.

    Unpickling a skeleton imports it anyway; doing it first lets a worker pay it before its clock
    starts and a cold start report imports apart. BERT checkpoints are served by `loading.bert`
    (plain torch, already imported by `loading.artifact`); other architectures by their transformers
    module, whose import (~3 s with transformers itself) is nearly all of a fresh process's first attach.
    """
    start = time.perf_counter()
    try:
        model_type = json.loads((Path(model_dir) / "config.json").read_text())["model_type"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0  # attach reports what is wrong with the folder
    if model_type == "bert":
        importlib.import_module("loading.bert")
        return time.perf_counter() - start
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

    The baseline a zero-copy replica is measured against (`benchmarks.coldstart`): same artifact, same
    kernels, same tokenizer type; only where the weights come from differs. The weights hash is not
    checked here (the store checks it once per cluster; doing it per replica would only add time).
    """
    start = time.perf_counter()
    info = read_variant_info(model_dir)
    model = load_model(model_dir)
    tokenizer = TextEncoder.from_pretrained_tokenizer(load_tokenizer(model_dir))
    loaded_from = "disk" + _apply_kernels_(model, Int8Kernel(int8_kernel), SparseKernel(sparse_kernel))
    return AttachedModel(
        model, tokenizer, info, (time.perf_counter() - start) * 1e3, 0.0, _bytes_outside(model), loaded_from
    )


def _bytes_outside(model: nn.Module, arena: Any = None) -> int:
    """Bytes of the distinct storages behind `model`'s tensors that do not view `arena`: the private
    copies kernels made, or with no arena everything a disk load holds.

    FBGEMM's packed int8 weights hide in a script object; they are counted from the layer's shape
    (int8 weight + fp32 bias) rather than unpacked, which would copy them.
    """
    lo = arena.ctypes.data if arena is not None else 0
    hi = lo + arena.nbytes if arena is not None else 0
    total = 0
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, torch.ao.nn.quantized.dynamic.Linear):
            total += module.in_features * module.out_features + 4 * module.out_features
        for tensor in (*module._parameters.values(), *module._buffers.values()):
            if tensor is None or tensor.numel() == 0:
                continue
            storage = tensor.untyped_storage()
            ptr = storage.data_ptr()
            if not lo <= ptr < hi and ptr not in seen:
                seen.add(ptr)
                total += storage.nbytes()
    return total


_store: list[ray.actor.ActorHandle] = []  # per process: the store's handle, looked up once
_refs: dict[tuple[str, str], dict[str, Any]] = {}  # per process: (variant, folder) -> store refs
# Per process: (variant, folder) -> the mapped arena, whether its pages are protected, and its refs.
_mapped: dict[tuple[str, str], tuple[Any, bool, dict[str, Any]]] = {}
# Per process: (variant, folder, protect, kernels) -> the first attach, whose clones later attaches return.
_attached: dict[
    tuple[str, str, bool, Int8Kernel, SparseKernel], tuple[AttachedModel, Callable[[], nn.Module]]
] = {}


def forget_attached() -> None:
    """Drop this process's mappings and templates; the memory goes once no model uses it."""
    _attached.clear()
    _mapped.clear()


def _map_arena(key: tuple[str, str], protect: bool) -> Any:
    """The variant's arena in this process: fetched, and protected if asked, once per process."""
    refs = _store_refs(key)
    mapped = _mapped.get(key)
    if mapped is None or mapped[2] is not refs:
        try:
            arena = ray.get(refs["arena"])
        except ray.exceptions.ObjectLostError:  # the store was restarted: its old objects are gone
            refs = _store_refs(key, refresh=True)
            arena = ray.get(refs["arena"])
        mapped = (arena, False, refs)
    arena, protected, refs = mapped
    if protect and not protected:
        protect_arena_(arena)
        protected = True
    _mapped[key] = (arena, protected, refs)
    return arena


def _call_store(method: str, *args: Any) -> Any:
    """Call the cluster's store, found once per process; a store killed for good is made anew."""
    if not _store:
        _store.append(_find_store())
    try:
        return ray.get(getattr(_store[0], method).remote(*args))
    except ray.exceptions.RayActorError:
        _store[:] = [model_store()]
        return ray.get(getattr(_store[0], method).remote(*args))


def _find_store() -> ray.actor.ActorHandle:
    # A lookup by name is one GCS query; `model_store()` (get-or-create) costs a few ms more.
    try:
        return ray.get_actor(STORE_NAME, namespace=STORE_NAMESPACE)
    except ValueError:  # no store yet: this process creates it
        return model_store()


def _store_refs(key: tuple[str, str], refresh: bool = False) -> dict[str, Any]:
    """The store's references for a variant, asked for once per process (a round trip costs ms)."""
    if refresh or key not in _refs:
        _refs[key] = _call_store("ensure", *key)
    return _refs[key]


_tokenizers: dict[ray.ObjectRef, TextEncoder] = {}  # per process: one per distinct tokenizer


def _tokenizer(ref: ray.ObjectRef) -> TextEncoder:
    if ref not in _tokenizers:
        _tokenizers[ref] = ray.get(ref)
    return _tokenizers[ref]


def set_threads(num_cpus: float) -> int:
    """Give torch as many threads as this process's CPU share, so replicas don't oversubscribe."""
    threads = max(1, int(num_cpus))
    torch.set_num_threads(threads)
    return threads
