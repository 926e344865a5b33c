"""Real sparse storage for pruned weight matrices, as plain tensors that safetensors can write.

Two layouts for a (rows, cols) matrix with `nnz` nonzeros of `v` bytes each (N = rows * cols):

- bitmask: one bit per element saying "nonzero here" (`ceil(N / 8)` bytes) plus the nonzero values
  in row-major order: `ceil(N / 8) + nnz * v` bytes.
- CSR: int32 row pointers (`4 * (rows + 1)` bytes), one column index per nonzero (int16 when every
  column index fits, else int32: `i` = 2 or 4 bytes) and the values: `4 * (rows + 1) + nnz * (i + v)`.

The mask costs a fixed 1/8 byte per element whatever the density; CSR costs `i` bytes per nonzero.
Ignoring the row pointers, bitmask is smaller once the density `nnz / N` exceeds `1 / (8 * i)`:
above 6.25% density (below 93.75% sparsity) with int16 indices, above 3.1% with int32. So for the
pruning amounts that keep accuracy (<= ~80%), bitmask wins, and CSR only pays off for very sparse
matrices. Against dense storage, bitmask is smaller once sparsity exceeds `1 / (8 * v)` (3.1% for
float32 values, 12.5% for int8) and CSR once it exceeds `i / (i + v)` (33% for fp32, 67% for int8,
with int16 indices): the study's theoretical CSR pruned+quantized model was bigger than the quantized
one for this reason. `choose_layout` compares the exact byte counts rather than these approximations.

Values keep the weight's dtype: float32 for pruned models, int8 for pruned+quantized `Int8Linear`
weights, whose per-row `scale` buffer is stored next to them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch
import torch.ao.nn.quantized as nnq
from torch import nn

from compression.quantize import Int8Linear

__all__ = [
    "SparseLayout",
    "SparseTensorParts",
    "choose_layout",
    "decode",
    "encode",
    "layout_nbytes",
    "pack_state_dict",
    "unpack_state_dict",
]

_INT16_MAX = torch.iinfo(torch.int16).max
_SHAPE_KEY = "__shape"  # the per-weight metadata entry: int64 (rows, cols)
_PART_NAMES = {  # which parts each sparse layout stores
    "bitmask": ("mask", "values"),
    "csr": ("crow", "col", "values"),
}


class SparseLayout(StrEnum):  # StrEnum is a (str, Enum) that also prints as its value
    """How a weight matrix is stored."""

    DENSE = "dense"  # every element; the tensor passes through unchanged
    BITMASK = "bitmask"  # packed 1-bit mask + nonzero values
    CSR = "csr"  # int32 row pointers + int16/int32 column indices + nonzero values


@dataclass(frozen=True)
class SparseTensorParts:
    """A 2-D tensor in one layout: plain tensors keyed "mask", "values", "crow", "col" (as used)."""

    layout: SparseLayout
    shape: tuple[int, int]  # (rows, cols) of the dense tensor
    tensors: dict[str, torch.Tensor]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


def _index_bytes(cols: int) -> int:
    return 2 if cols - 1 <= _INT16_MAX else 4


def layout_nbytes(layout: SparseLayout | str, shape: tuple[int, int], nnz: int, value_bytes: int) -> int:
    """Exact bytes `encode` produces for a (rows, cols) matrix with `nnz` nonzeros of `value_bytes` each."""
    rows, cols = shape
    layout = SparseLayout(layout)
    if layout is SparseLayout.DENSE:
        return rows * cols * value_bytes
    if layout is SparseLayout.BITMASK:
        return (rows * cols + 7) // 8 + nnz * value_bytes
    return 4 * (rows + 1) + nnz * (_index_bytes(cols) + value_bytes)


def choose_layout(shape: tuple[int, int], nnz: int, value_bytes: int) -> SparseLayout:
    """The layout with the fewest exact bytes (dense on a tie, then bitmask); see the module docstring."""
    if len(shape) != 2:
        raise ValueError(f"shape must be (rows, cols), got {tuple(shape)}")
    if not 0 <= nnz <= shape[0] * shape[1]:
        raise ValueError(f"nnz must be in [0, {shape[0] * shape[1]}], got {nnz}")
    if value_bytes <= 0:
        raise ValueError(f"value_bytes must be positive, got {value_bytes}")
    order = (SparseLayout.DENSE, SparseLayout.BITMASK, SparseLayout.CSR)  # min keeps the first on ties
    return min(order, key=lambda layout: layout_nbytes(layout, shape, nnz, value_bytes))


def encode(weight: torch.Tensor, layout: SparseLayout | str | None = None) -> SparseTensorParts:
    """Split a 2-D tensor into the parts of `layout` (default: `choose_layout`'s pick).

    Zeros are not stored; `decode` writes them back as +0.0 (a -0.0 comes back as +0.0).
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(
            f"weight must be a 2-D tensor, got {getattr(weight, 'shape', type(weight).__name__)}"
        )
    weight = weight.detach().contiguous()
    shape = (weight.shape[0], weight.shape[1])
    nonzero = weight != 0  # (rows, cols)
    if layout is None:
        layout = choose_layout(shape, int(nonzero.sum()), weight.element_size())
    layout = SparseLayout(layout)
    if layout is SparseLayout.DENSE:
        return SparseTensorParts(layout, shape, {"values": weight})
    values = weight[nonzero]  # row-major order, the same order both layouts put them back in
    if layout is SparseLayout.BITMASK:
        mask = torch.from_numpy(np.packbits(nonzero.reshape(-1).numpy()))  # (ceil(N / 8),) uint8
        return SparseTensorParts(layout, shape, {"mask": mask, "values": values})
    assert values.numel() <= torch.iinfo(torch.int32).max, "int32 row pointers overflow"
    crow = torch.zeros(shape[0] + 1, dtype=torch.int32)
    crow[1:] = torch.cumsum(nonzero.sum(dim=1), dim=0)
    col_dtype = torch.int16 if _index_bytes(shape[1]) == 2 else torch.int32
    col = nonzero.nonzero()[:, 1].to(col_dtype)
    return SparseTensorParts(layout, shape, {"crow": crow, "col": col, "values": values})


def decode(parts: SparseTensorParts) -> torch.Tensor:
    """The dense tensor `encode` was given (a new tensor; the parts are not modified)."""
    rows, cols = parts.shape
    values = parts.tensors["values"]
    if parts.layout is SparseLayout.DENSE:
        assert tuple(values.shape) == (rows, cols), "dense values have the wrong shape"
        return values.clone()
    out = torch.zeros(rows * cols, dtype=values.dtype)
    if parts.layout is SparseLayout.BITMASK:
        # unpackbits only reads the mask, so a read-only shared-memory view is fine (0.15 ms for a
        # 3072x768 mask, 15x faster than torch shifts); masked_scatter_ takes half the time of
        # index_put_ with a bool mask (7 vs 12 ms at 75% sparsity, one thread).
        bits = np.unpackbits(parts.tensors["mask"].numpy(), count=rows * cols).view(np.bool_)
        return out.masked_scatter_(torch.from_numpy(bits), values).view(rows, cols)
    crow = parts.tensors["crow"].long()
    row_start = torch.repeat_interleave(torch.arange(rows) * cols, crow[1:] - crow[:-1])  # (nnz,)
    out[row_start + parts.tensors["col"]] = values
    return out.view(rows, cols)


def _sparse_layout(weight: torch.Tensor, forced: SparseLayout | None) -> SparseLayout:
    """The layout to store a candidate weight in: `forced` (or the smallest) if it saves bytes, else dense."""
    shape = (weight.shape[0], weight.shape[1])
    nnz = int(torch.count_nonzero(weight))
    best = choose_layout(shape, nnz, weight.element_size()) if forced is None else forced
    dense_bytes = layout_nbytes(SparseLayout.DENSE, shape, nnz, weight.element_size())
    if layout_nbytes(best, shape, nnz, weight.element_size()) >= dense_bytes:
        return SparseLayout.DENSE
    return best


def _sparse_candidates(model: nn.Module) -> dict[str, torch.Tensor]:
    """State-dict key -> weight for every Linear weight that may be stored sparse."""
    found: dict[str, torch.Tensor] = {}
    for fqn, module in model.named_modules():
        prefix = f"{fqn}." if fqn else ""
        if isinstance(module, Int8Linear):
            found[f"{prefix}weight_int8"] = module.weight_int8
        elif isinstance(module, nn.Linear):
            found[f"{prefix}weight"] = module.weight
        elif isinstance(module, nnq.Linear):  # dynamic-quantized Linear subclasses it
            raise TypeError(
                f"model must hold Int8Linear, not packed int8 layers (use to_int8_linear), got {fqn!r}"
            )
    return found


def pack_state_dict(model: nn.Module, layout: SparseLayout | str | None = None) -> dict[str, torch.Tensor]:
    """`model`'s state dict with every Linear weight that gains by it stored sparse, as plain tensors.

    A weight `<key>` stored sparse becomes `<key>.__values` plus `<key>.__mask` (bitmask) or
    `<key>.__crow` and `<key>.__col` (CSR), and `<key>.__shape` (int64 rows, cols). Every other
    tensor, and any weight that would not shrink, passes through under its own key and shares memory
    with `model` (which is not modified). `layout` forces one sparse layout where it saves bytes;
    None picks the smallest per weight. Int8 models must be in `Int8Linear` form, and `SparseLinear`
    layers must be made dense first (`densify_`): their buffers would pass through under their own names.
    """
    forced = None if layout is None else SparseLayout(layout)
    candidates = _sparse_candidates(model)
    packed: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        best = _sparse_layout(tensor, forced) if key in candidates else SparseLayout.DENSE
        if best is SparseLayout.DENSE:
            packed[key] = tensor
            continue
        shape = (tensor.shape[0], tensor.shape[1])
        parts = encode(tensor, best)
        for name, part in parts.tensors.items():
            packed[f"{key}.__{name}"] = part
        packed[f"{key}.{_SHAPE_KEY}"] = torch.tensor(shape, dtype=torch.int64)
    return packed


def _packed_weights(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, SparseTensorParts], set[str]]:
    """The sparse weights in `pack_state_dict` output, by state-dict key, and every key they use.

    Raises:
        ValueError: a sparse weight lacks one of its parts, or a part has no weight (`.__shape` key).
    """
    suffix = f".{_SHAPE_KEY}"
    found: dict[str, SparseTensorParts] = {}
    used: set[str] = set()
    for key in [k[: -len(suffix)] for k in tensors if k.endswith(suffix)]:
        layout = SparseLayout.BITMASK if f"{key}.__mask" in tensors else SparseLayout.CSR
        names = _PART_NAMES[layout.value]
        missing = [f"{key}.__{n}" for n in names if f"{key}.__{n}" not in tensors]
        if missing:
            raise ValueError(
                f"tensors must hold every part of a {layout.value} weight {key!r}, got no {missing[0]!r}"
            )
        shape = tuple(int(n) for n in tensors[f"{key}{suffix}"].tolist())
        found[key] = SparseTensorParts(layout, shape, {n: tensors[f"{key}.__{n}"] for n in names})
        used.update(f"{key}.__{n}" for n in names)
        used.add(f"{key}{suffix}")
    stray = [k for k in tensors if ".__" in k and k not in used]
    if stray:
        raise ValueError(
            f"tensors must hold complete sparse entries with a {suffix} key, got stray {stray[0]!r}"
        )
    return found, used


def unpack_state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `pack_state_dict`: a state dict with every sparse weight decoded to dense.

    Pass-through tensors are returned as they are (same objects); decoded weights are new tensors.
    """
    packed, used = _packed_weights(tensors)
    state = {k: v for k, v in tensors.items() if k not in used}
    for key, parts in packed.items():
        state[key] = decode(parts)
    return state
