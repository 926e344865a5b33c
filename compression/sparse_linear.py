"""A pruned Linear layer that keeps its weight in sparse storage form, so shared memory holds only that.

`SparseLinear` holds a pruned weight as the plain tensors of `compression.sparse` (bitmask: packed
`mask` bits + `values`; CSR: `crow`, `col` + `values`), with a per-row `scale` when the values are
int8, all registered as buffers. Zero-copy loading puts buffers into the shared arena as they are, so
a pruned model takes its sparse size in serving memory, not its dense size.

Each forward decodes the weight into a transient dense tensor and calls `F.linear`: the same weights
and the same kernel as the dense pruned model, so the outputs are bit-identical. Decoding a 3072x768
layer at 75% sparsity costs 7-10 ms on one thread (`python -m benchmarks.sparse_kernels`): small next
to the layer's matmul for 32x128 tokens (~270 ms), but 2-3x the matmul for one 32-token text (3.6
ms). `densify_` trades the shared compact form for private dense layers (`nn.Linear` / `Int8Linear`)
when that speed matters.

Pairs: `to_sparse_linear` / `densify_` convert modules; `load_packed_state_dict_` is the inverse of
`compression.sparse.pack_state_dict`, building `SparseLinear` layers straight from packed tensors.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.ao.nn.quantized.dynamic as nnqd
import torch.nn.functional as F
from torch import nn

from compression.quantize import Int8Linear, empty_int8_embeddings_, int8_linear, int8_matmul_is_fast
from compression.registry import _swap_modules_
from compression.sparse import (
    _PART_NAMES,
    SparseLayout,
    SparseTensorParts,
    _packed_weights,
    _sparse_layout,
    decode,
    encode,
    layout_nbytes,
)

__all__ = ["SparseLinear", "densify_", "load_packed_state_dict_", "to_sparse_linear"]

_BUFFERS = ("mask", "crow", "col", "values", "scale", "bias")
_SPARSE = (SparseLayout.BITMASK, SparseLayout.CSR)


class SparseLinear(nn.Module):
    """`y = x @ W.T + bias` with W stored sparse (bitmask or CSR), float32 or int8 with per-row scales.

    Every tensor is a plain buffer (no Parameters), so zero-copy loading can re-point all of them at
    shared, read-only memory; `forward` never writes to them.
    """

    def __init__(
        self,
        parts: SparseTensorParts,
        *,
        scale: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
    ) -> None:
        """Wrap `parts` (and `scale`, `bias`) as buffers without copying them.

        Args:
            parts: a bitmask or CSR weight of shape (out_features, in_features); float32 values, or
                int8 values that `scale` dequantizes.
            scale: (out_features,) float32, required exactly when the values are int8.
            bias: (out_features,) float32 or None.
        """
        super().__init__()
        _check_parts(parts, scale, bias)
        self.out_features, self.in_features = parts.shape
        self.layout = parts.layout
        for name in _BUFFERS:
            self.register_buffer(name, parts.tensors.get(name))
        self.scale = scale
        self.bias = bias

    @classmethod
    def from_dense(
        cls, module: nn.Linear | Int8Linear, layout: SparseLayout | str | None = None
    ) -> SparseLinear:
        """Encode a float `nn.Linear` or an `Int8Linear`; `layout` None picks the smaller sparse one.

        Every tensor is copied: `module` is left alone and shares nothing with the result.
        """
        if isinstance(module, Int8Linear):
            weight, scale = module.weight_int8, module.scale.detach().clone()
        elif isinstance(module, nn.Linear):
            weight, scale = module.weight.detach().float(), None
        else:
            raise TypeError(f"module must be an nn.Linear or Int8Linear, got {type(module).__name__}")
        if layout is None:
            shape, nnz = (weight.shape[0], weight.shape[1]), int(torch.count_nonzero(weight))
            sizes = {lay: layout_nbytes(lay, shape, nnz, weight.element_size()) for lay in _SPARSE}
            layout = min(_SPARSE, key=sizes.__getitem__)
        bias = module.bias.detach().float().clone() if module.bias is not None else None
        return cls(encode(weight, layout), scale=scale, bias=bias)

    @property
    def nnz(self) -> int:
        return self.values.numel()

    def parts(self) -> SparseTensorParts:
        """The stored weight (views of the buffers, no copy)."""
        names = _PART_NAMES[self.layout.value]
        return SparseTensorParts(
            self.layout, (self.out_features, self.in_features), {n: getattr(self, n) for n in names}
        )

    def dense_weight(self) -> torch.Tensor:
        """The float32 (out, in) weight the forward uses: a new tensor, bit-identical to the dense layer's."""
        parts = self.parts()
        if self.scale is None:
            return decode(parts)
        # Scatter the int8 values as floats, then scale in place: float(q) * s per element, exactly what
        # Int8Linear.dequantized_weight computes, without a dense int8 pass in between.
        floats = {**parts.tensors, "values": self.values.to(torch.float32)}
        return decode(SparseTensorParts(parts.layout, parts.shape, floats)).mul_(self.scale[:, None])

    def to_dense(self) -> nn.Linear | Int8Linear:
        """An `nn.Linear` (float values) or `Int8Linear` (int8 values) with the decoded weight.

        The weight is a new private tensor; `bias` and `scale` are shared with this module, not copied.
        """
        if self.scale is None:
            linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
            linear.weight = nn.Parameter(decode(self.parts()), requires_grad=False)
            if self.bias is not None:
                linear.bias = nn.Parameter(self.bias, requires_grad=False)
            return linear
        return Int8Linear._from_parts(decode(self.parts()), self.scale, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in_features) -> (..., out_features)
        if self.scale is None or not int8_matmul_is_fast():  # no fast int8 matmul: scatter floats once
            return F.linear(x, self.dense_weight(), self.bias)
        # int8: decode the int8 weight (a quarter of the float bytes to write) and run Int8Linear's matmul.
        return int8_linear(x, decode(self.parts()), self.scale, self.bias)

    def extra_repr(self) -> str:
        density = self.nnz / (self.in_features * self.out_features)
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, layout={self.layout.value}, density={density:.3f}, "
            f"int8={self.scale is not None}"
        )


def _check_parts(parts: SparseTensorParts, scale: torch.Tensor | None, bias: torch.Tensor | None) -> None:
    """Raise ValueError unless the parts, scale and bias make one consistent sparse Linear."""
    if parts.layout is SparseLayout.DENSE:
        raise ValueError("parts must be in a sparse layout (bitmask or csr), got 'dense'")
    names = _PART_NAMES[parts.layout.value]
    if set(parts.tensors) != set(names):
        raise ValueError(f"{parts.layout.value} parts must be {sorted(names)}, got {sorted(parts.tensors)}")
    rows, cols = parts.shape
    values = parts.tensors["values"]
    if values.dtype not in (torch.float32, torch.int8) or values.dim() != 1:
        raise ValueError(f"values must be 1-D float32 or int8, got {values.dtype} {tuple(values.shape)}")
    if (values.dtype == torch.int8) != (scale is not None):
        raise ValueError(
            f"scale must be given exactly for int8 values, got {values.dtype} values "
            f"and scale={scale is not None}"
        )
    for name, tensor in (("scale", scale), ("bias", bias)):
        if tensor is not None and (tensor.dtype != torch.float32 or tuple(tensor.shape) != (rows,)):
            raise ValueError(
                f"{name} must be float32 of shape ({rows},), got {tensor.dtype} {tuple(tensor.shape)}"
            )
    if parts.layout is SparseLayout.BITMASK:
        mask = parts.tensors["mask"]
        mask_bytes = (rows * cols + 7) // 8
        if mask.dtype != torch.uint8 or tuple(mask.shape) != (mask_bytes,):
            raise ValueError(
                f"mask must be uint8 of shape ({mask_bytes},), got {mask.dtype} {tuple(mask.shape)}"
            )
        nnz = int(np.unpackbits(mask.numpy(), count=rows * cols).sum(dtype=np.int64))
    else:
        crow, col = parts.tensors["crow"], parts.tensors["col"]
        if crow.dtype != torch.int32 or tuple(crow.shape) != (rows + 1,):
            raise ValueError(
                f"crow must be int32 of shape ({rows + 1},), got {crow.dtype} {tuple(crow.shape)}"
            )
        if col.dtype not in (torch.int16, torch.int32) or col.shape != values.shape:
            raise ValueError(
                f"col must be int16/int32 shaped like values {tuple(values.shape)}, "
                f"got {col.dtype} {tuple(col.shape)}"
            )
        if col.numel() and not 0 <= int(col.min()) <= int(col.max()) < cols:
            raise ValueError(
                f"col must index columns in [0, {cols}), got [{int(col.min())}, {int(col.max())}]"
            )
        steps = crow[1:] - crow[:-1]
        if int(crow[0]) != 0 or bool((steps < 0).any()):
            raise ValueError("crow must start at 0 and never decrease")
        nnz = int(crow[-1])
    if values.numel() != nnz:
        raise ValueError(f"values must hold one entry per stored nonzero ({nnz}), got {values.numel()}")


def to_sparse_linear(model: nn.Module, layout: SparseLayout | str | None = None) -> nn.Module:
    """Copy of `model` with every layer that `pack_state_dict` would store sparse made a `SparseLinear`.

    Those are the float `nn.Linear` and `Int8Linear` layers whose weight takes fewer bytes sparse, in
    the same layout `pack_state_dict(model, layout)` picks; `layout` None picks the smallest per layer.
    """
    forced = None if layout is None else SparseLayout(layout)
    if forced is SparseLayout.DENSE:
        raise ValueError("layout must be 'bitmask', 'csr' or None, got 'dense'")
    out = copy.deepcopy(model)
    chosen: dict[str, SparseLayout] = {}
    for fqn, module in out.named_modules():
        if isinstance(module, nnqd.Linear):
            raise TypeError(
                f"model must hold Int8Linear, not packed int8 layers (use to_int8_linear), got {fqn!r}"
            )
        weight = _stored_weight(module)
        if weight is not None:
            chosen[fqn] = _sparse_layout(weight, forced)
    with torch.no_grad():
        _swap_modules_(
            out,
            lambda _, fqn: chosen.get(fqn, SparseLayout.DENSE) is not SparseLayout.DENSE,
            lambda m, fqn: SparseLinear.from_dense(m, chosen[fqn]),
        )
    return out


def load_packed_state_dict_(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """In place: load `pack_state_dict` output into `model`, keeping every sparse weight sparse.

    `model` must have the packed model's architecture, with `Int8Linear` where its weights are int8
    (e.g. `to_int8_linear(skeleton)`). The layer of each sparse weight becomes a `SparseLinear` that
    holds the given tensors themselves (no decode, no copy), and each embedding stored 8-bit an
    `Int8Embedding`; every other tensor is copied into `model` as `load_state_dict(strict=True)` does.

    Raises:
        ValueError: `tensors` do not fit `model` (missing, unexpected or inconsistent entries).
    """
    empty_int8_embeddings_(model, {k.rpartition(".")[0] for k in tensors if k.endswith(".weight_uint8")})
    packed, consumed = _packed_weights(tensors)
    built: dict[str, SparseLinear] = {}
    for key, parts in packed.items():
        fqn, _, attr = key.rpartition(".")
        try:
            module = model.get_submodule(fqn)
        except AttributeError:
            raise ValueError(
                f"sparse weight {key!r} must belong to a layer of model, got no {fqn!r}"
            ) from None
        int8 = isinstance(module, Int8Linear)
        if _stored_weight(module) is None or attr != ("weight_int8" if int8 else "weight"):
            raise ValueError(
                f"sparse weight {key!r} must be the weight of an nn.Linear or weight_int8 of an Int8Linear, "
                f"got {type(module).__name__}.{attr}"
            )
        extras = [f"{fqn}.scale"] if int8 else []
        extras += [f"{fqn}.bias"] if module.bias is not None else []
        missing = [k for k in extras if k not in tensors]
        if missing:
            raise ValueError(
                f"tensors must hold every part of {parts.layout.value} weight {key!r}, got no {missing[0]!r}"
            )
        expected = (module.out_features, module.in_features)
        if tuple(parts.shape) != expected:
            raise ValueError(f"sparse weight {key!r} must have shape {expected}, got {tuple(parts.shape)}")
        built[fqn] = SparseLinear(
            parts,
            scale=tensors[f"{fqn}.scale"] if int8 else None,
            bias=tensors[f"{fqn}.bias"] if module.bias is not None else None,
        )
        consumed.update(extras)
    rest = {k: v for k, v in tensors.items() if k not in consumed}
    _swap_modules_(model, lambda _, fqn: fqn in built, lambda _, fqn: built[fqn])
    own = {f"{fqn}.{name}" for fqn, m in built.items() for name, _ in m.named_buffers()}
    result = model.load_state_dict(rest, strict=False)
    missing = [k for k in result.missing_keys if k not in own]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"tensors must match model's state dict, got missing {missing[:3]} and unexpected "
            f"{result.unexpected_keys[:3]}"
        )


def densify_(model: nn.Module) -> None:
    """In place: replace every `SparseLinear` by an `nn.Linear` / `Int8Linear` with its decoded weight.

    The decoded weights are private to this process (dense size); biases and scales stay where they
    were (e.g. shared memory), so `to_dynamic_quant_` can pack the int8 layers afterwards.
    """
    with torch.no_grad():
        _swap_modules_(model, lambda m, _: isinstance(m, SparseLinear), lambda m, _: m.to_dense())


def _stored_weight(module: nn.Module) -> torch.Tensor | None:
    """The weight `pack_state_dict` may store sparse (float nn.Linear, Int8Linear), else None."""
    if isinstance(module, Int8Linear):
        return module.weight_int8
    if type(module) is nn.Linear:
        return module.weight.detach()
    return None
