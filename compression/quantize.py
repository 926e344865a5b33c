"""Dynamic int8 quantization of Linear layers (and 8-bit embeddings), in forms that can be shared.

Two forms of the same int8 weights:

- `torch.ao.nn.quantized.dynamic.Linear` (what `quantize_dynamic` makes): fast FBGEMM kernel, but the
  weight sits in a private packed object that `named_buffers()` can't see, so it can't be loaded
  zero-copy and every process holds its own copy.
- `Int8Linear`: the int8 weight and its per-output-channel scales as plain buffers, so they can live in
  shared, read-only memory. Its forward (`int8_linear`) quantizes each input row to int8 on the fly
  and multiplies with `torch._int_mm`, straight from the shared int8 weight: on BERT-base at batch
  32 x 128, one thread, 1.75x faster than fp32 (FBGEMM's private packed copy: ~1.6x), with no copy per
  process (docs/COMPRESSION.md). `torch._weight_int8pack_mm` measured 40x slower than fp32 here.
  That speed needs an int8 dot-product instruction (AVX-512 VNNI, AVX-VNNI or AMX): on a CPU with
  only AVX2, torch 2.13's `_int_mm` takes a slow path, 28-33x fp32's time
  (docs/COMPRESSION.md), so there `int8_linear` dequantizes the weight per call and multiplies in
  fp32 instead (`int8_matmul_is_fast` probes which; FBGEMM's kernel stays fast on AVX2).

`to_int8_linear` / `to_dynamic_quant` convert between the two without changing a single int8 value or
scale, so a replica can pick the kernel it wants after a zero-copy load.

Embeddings are quantized weight-only, one scale and zero point per row (torch.ao's
`float_qparams_weight_only_qconfig`): BERT-base's word embeddings alone are 94 MB in float32, more than
all its int8 Linear weights. `Int8Embedding` is their shareable form: a lookup gathers the 8-bit rows
and dequantizes just those, so it is as fast as the float lookup.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd
import torch.nn.functional as F
from torch import nn

from compression.registry import _swap_modules_, register
from compression.timing import best_ms

__all__ = [
    "Int8DynamicQuantConfig",
    "Int8Embedding",
    "Int8Linear",
    "dequantize",
    "empty_int8_embeddings_",
    "empty_int8_linears_",
    "int8_linear",
    "int8_matmul_is_fast",
    "to_dynamic_quant",
    "to_dynamic_quant_",
    "to_int8_linear",
]

_QMAX = 127  # symmetric range [-127, 127] so that -w quantizes to -q


@contextmanager
def _quiet_quantization_warnings() -> Iterator[None]:
    """Silence torch.ao's deprecation notices, which fire on every call and say nothing about us."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
        yield


@dataclass(frozen=True)
class Int8DynamicQuantConfig:
    """Dynamic int8 quantization of every nn.Linear (weights int8, activations quantized per batch)."""

    NAME: ClassVar[str] = "quant"
    # One weight scale per output row: on the default model 98.6% agreement with base on Dreaddit test
    # vs 95.5% per tensor (the study's choice), for no extra bytes (Int8Linear keeps a scale per row).
    per_channel: bool = True
    # 8-bit embeddings with a scale per row: without them the float32 embeddings are half of quant's
    # bytes and cap pruned+quant at ~70% of quant (docs/COMPRESSION.md); accuracy: docs/EVALUATION.md.
    embeddings: bool = True
    # Linear (and Embedding) layers left in float32, as `fnmatch` patterns of their module names.
    # Every FFN output (`layer.N.output.dense`): on the default model agreement with base on Dreaddit
    # test rises from 98.3% to 99.0% with the shared int_mm kernel at the same speed (its per-row
    # quantization of the 1536-wide GELU output costs what int8 saves); docs/COMPRESSION.md, issue 18.
    fp32_layers: tuple[str, ...] = ("*.layer.?.output.dense", "*.layer.??.output.dense")

    def __post_init__(self) -> None:
        for name in ("per_channel", "embeddings"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        layers = self.fp32_layers
        if not isinstance(layers, tuple) or not all(isinstance(p, str) and p for p in layers):
            raise TypeError(f"fp32_layers must be a tuple of non-empty str patterns, got {layers!r}")

    def keeps_fp32(self, fqn: str) -> bool:
        """Whether the Linear or Embedding layer named `fqn` stays float32."""
        return any(fnmatch.fnmatchcase(fqn, pattern) for pattern in self.fp32_layers)


@register(Int8DynamicQuantConfig)
def _quantize_dynamic(model: nn.Module, cfg: Int8DynamicQuantConfig) -> nn.Module:
    tq = torch.ao.quantization
    spec: dict[type | str, object] = {
        nn.Linear: tq.per_channel_dynamic_qconfig if cfg.per_channel else tq.default_dynamic_qconfig
    }
    if cfg.embeddings:
        spec[nn.Embedding] = tq.float_qparams_weight_only_qconfig
    # A module name's entry overrides its type's, so None leaves that layer float.
    kept = [fqn for fqn, m in model.named_modules() if type(m) in spec and cfg.keeps_fp32(fqn)]
    spec.update(dict.fromkeys(kept))
    with _quiet_quantization_warnings():
        model = tq.quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
    # torch.ao's quantized Embedding refuses non-contiguous ids, which BERT passes (expanded token
    # types), so embeddings go straight to their shareable form, same values.
    _swap_modules_(
        model, lambda m, _: isinstance(m, nnq.Embedding), lambda m, _: Int8Embedding.from_quantized(m)
    )
    return model


INT8_MATMUL_ENV = "BERTSERVE_INT8_MATMUL"  # "int_mm" or "dequant" skips the probe (tests, odd CPUs)


@functools.cache
def int8_matmul_is_fast() -> bool:
    """Whether `torch._int_mm` beats fp32 here, so `int8_linear` should multiply int8 x int8.

    Probed once per process (~10-40 ms): best of 5 of a 64x384 by 384x384 product each way. With
    an int8 dot-product instruction `_int_mm` takes 0.5-0.6x fp32's time at BERT shapes; without
    one (AVX2 only) ~30x, so the 1.5x threshold is far from both. `$BERTSERVE_INT8_MATMUL`
    (`int_mm` / `dequant`) decides instead.
    """
    forced = os.environ.get(INT8_MATMUL_ENV, "").strip().lower()
    if forced in ("int_mm", "dequant"):
        return forced == "int_mm"
    if forced:
        raise ValueError(f"{INT8_MATMUL_ENV} must be 'int_mm' or 'dequant', got {forced!r}")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 384, generator=gen)
    weight = torch.randn(384, 384, generator=gen)
    weight_int8 = torch.randint(-_QMAX, _QMAX + 1, (384, 384), dtype=torch.int8, generator=gen)
    scale = torch.rand(384, generator=gen)
    fp32 = best_ms(lambda: F.linear(x, weight), repeats=5)
    int8 = best_ms(lambda: _int8_int_mm(x, weight_int8, scale), repeats=5)
    return int8 <= 1.5 * fp32


def int8_linear(
    x: torch.Tensor, weight_int8: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """`x @ (weight_int8 * scale[:, None]).T + bias`, reading `weight_int8` in place.

    Where `int8_matmul_is_fast`: an int8 x int8 -> int32 matmul, each input row (token) quantized
    symmetrically with its own scale, as dynamic quantization does per batch but finer. Elsewhere:
    the weight dequantized into a transient fp32 copy and an fp32 matmul (the same maths without
    quantizing the activations). Either way `weight_int8` can stay in shared, read-only memory.
    Shapes: x (..., in), weight_int8 (out, in), scale (out,) -> (..., out).
    """
    if not int8_matmul_is_fast():
        return F.linear(x, dequantize(weight_int8, scale), bias)
    out = _int8_int_mm(x, weight_int8, scale)
    if bias is not None:
        out.add_(bias)
    return out


def dequantize(weight_int8: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float32 (out, in) weight `weight_int8 * scale[:, None]`: a new tensor, the int8 one untouched."""
    return weight_int8.to(torch.float32).mul_(scale[:, None])


def _int8_int_mm(x: torch.Tensor, weight_int8: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """`int8_linear` without the bias, always through `torch._int_mm` (what the probe times)."""
    rows = x.reshape(-1, x.shape[-1])  # (N, in)
    amax = rows.abs().amax(dim=1, keepdim=True)  # (N, 1)
    row_scale = torch.where(amax > 0, amax / _QMAX, torch.ones_like(amax))
    q = torch.round(rows / row_scale).to(torch.int8)  # |rows / row_scale| <= 127 by construction
    out = torch._int_mm(q, weight_int8.t()).to(torch.float32).mul_(row_scale).mul_(scale)  # (N, out)
    return out.reshape(*x.shape[:-1], weight_int8.shape[0])


class Int8Linear(nn.Module):
    """A Linear layer with an int8 weight and per-output-channel float32 scales, all plain buffers.

    `y = x @ (weight_int8 * scale[:, None]).T + bias`. Nothing here is a Parameter: the module is for
    inference, and plain buffers are what zero-copy loading re-points at shared memory.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features, dtype=torch.float32))
        self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32) if bias else None)

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Int8Linear:
        """Quantize a float Linear symmetrically, one scale per output row."""
        weight = linear.weight.detach().float()  # (out, in)
        amax = weight.abs().amax(dim=1)
        # An all-zero row (e.g. structured pruning) gets scale 1: its int8 values are 0 either way.
        scale = torch.where(amax > 0, amax / _QMAX, torch.ones_like(amax))
        q = torch.round(weight / scale[:, None]).clamp_(-_QMAX, _QMAX).to(torch.int8)
        bias = linear.bias.detach().float().clone() if linear.bias is not None else None
        return cls._from_parts(q, scale, bias)

    @classmethod
    def from_dynamic(cls, qlinear: nnqd.Linear) -> Int8Linear:
        """Take the exact int8 weight, scales and bias out of a dynamic-quantized Linear."""
        with _quiet_quantization_warnings():
            qweight = qlinear.weight()
            bias = qlinear.bias()
        if qweight.dtype != torch.qint8:
            raise ValueError(f"qlinear weight must be qint8, got {qweight.dtype}")
        out_features = qweight.shape[0]
        if qweight.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            zero_points = torch.tensor([qweight.q_zero_point()])
            scale = torch.full((out_features,), qweight.q_scale(), dtype=torch.float32)
        elif qweight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            if qweight.q_per_channel_axis() != 0:
                raise ValueError(
                    f"qlinear weight must be quantized along axis 0, got {qweight.q_per_channel_axis()}"
                )
            zero_points = qweight.q_per_channel_zero_points()
            scale = qweight.q_per_channel_scales().to(torch.float32)
        else:
            raise ValueError(
                f"qlinear weight must be per-tensor or per-channel quantized, got {qweight.qscheme()}"
            )
        if bool((zero_points != 0).any()):
            raise ValueError(
                f"qlinear weight must be symmetric (zero point 0), got zero points {zero_points.unique()}"
            )
        bias = bias.detach().float().clone() if bias is not None else None
        return cls._from_parts(qweight.int_repr().clone(), scale, bias)

    @classmethod
    def _from_parts(
        cls, weight_int8: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
    ) -> Int8Linear:
        out_features, in_features = weight_int8.shape
        module = cls(in_features, out_features, bias=bias is not None)
        module.weight_int8 = weight_int8.contiguous()
        module.scale = scale.contiguous()
        module.bias = bias
        return module

    def to_dynamic(self) -> nnqd.Linear:
        """The same int8 values and scales as a dynamic-quantized Linear (FBGEMM packs a private copy)."""
        scale = self.scale.detach()
        with _quiet_quantization_warnings():
            if bool((scale == scale[0]).all()):
                # One shared scale: rebuild the per-tensor layout quantize_dynamic makes by default.
                qweight = torch._make_per_tensor_quantized_tensor(self.weight_int8, float(scale[0]), 0)
            else:
                zero_points = torch.zeros(self.out_features, dtype=torch.int64)
                qweight = torch._make_per_channel_quantized_tensor(
                    self.weight_int8, scale.double(), zero_points, 0
                )
            qlinear = nnqd.Linear(
                self.in_features, self.out_features, bias_=self.bias is not None, dtype=torch.qint8
            )
            bias = self.bias.detach().clone() if self.bias is not None else None
            qlinear.set_weight_bias(qweight, bias)
        return qlinear

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight the forward uses, (out, in)."""
        return dequantize(self.weight_int8, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return int8_linear(x, self.weight_int8, self.scale, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        )


class Int8Embedding(nn.Module):
    """An embedding table stored as 8-bit rows with a float scale and zero point per row, plain buffers.

    `row_i = (weight_uint8[i] - zero_point[i]) * scale[i]`, exactly what torch.ao's quantized
    `Embedding` computes, but in buffers zero-copy loading can point at shared memory.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.register_buffer("weight_uint8", torch.zeros(num_embeddings, embedding_dim, dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(num_embeddings, dtype=torch.float32))
        self.register_buffer("zero_point", torch.zeros(num_embeddings, dtype=torch.float32))

    @classmethod
    def from_quantized(cls, qembedding: nnq.Embedding) -> Int8Embedding:
        """Take the exact 8-bit rows and their qparams out of a torch.ao quantized Embedding."""
        with _quiet_quantization_warnings():
            qweight = qembedding.weight()
        if qweight.qscheme() != torch.per_channel_affine_float_qparams or qweight.q_per_channel_axis() != 0:
            raise ValueError(
                f"qembedding must be quantized per row with float qparams, got {qweight.qscheme()}"
            )
        module = cls(qembedding.num_embeddings, qembedding.embedding_dim)
        # Copies: the qparams returned here can view memory that dies with `qweight`.
        module.weight_uint8 = qweight.int_repr().contiguous()
        module.scale = qweight.q_per_channel_scales().to(torch.float32).clone()
        module.zero_point = qweight.q_per_channel_zero_points().to(torch.float32).clone()
        return module

    def dequantized_weight(self) -> torch.Tensor:
        """The whole float32 table, (num_embeddings, embedding_dim)."""
        return (self.weight_uint8.float() - self.zero_point[:, None]) * self.scale[:, None]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (...) -> (..., embedding_dim)
        rows = F.embedding(ids, self.weight_uint8).float()
        return (rows - self.zero_point[ids].unsqueeze(-1)) * self.scale[ids].unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


def empty_int8_embeddings_(model: nn.Module, fqns: set[str]) -> None:
    """In place: swap the nn.Embedding layers named in `fqns` for zero `Int8Embedding`s of their shape.

    For rebuilding a saved 8-bit model from its float architecture before loading its state dict.
    """
    _swap_modules_(
        model,
        lambda m, fqn: fqn in fqns and isinstance(m, nn.Embedding),
        lambda m, _: Int8Embedding(m.num_embeddings, m.embedding_dim),
    )


def empty_int8_linears_(model: nn.Module, fqns: set[str] | None = None) -> None:
    """In place: swap the float nn.Linear layers named in `fqns` (None: all) for zero `Int8Linear`s.

    For rebuilding a saved int8 model from its float architecture before loading its state dict,
    without quantizing weights that the load replaces anyway (under `torch.device("meta")` the new
    layers take no memory either). Layers not named stay float (`Int8DynamicQuantConfig.fp32_layers`).
    """
    _swap_modules_(
        model,
        lambda m, fqn: type(m) is nn.Linear and (fqns is None or fqn in fqns),
        lambda m, _: Int8Linear(m.in_features, m.out_features, bias=m.bias is not None),
    )


def to_int8_linear(model: nn.Module) -> nn.Module:
    """Copy of `model` with its Linear layers in the shareable int8 form.

    Dynamic-quantized Linear layers become `Int8Linear`, keeping their exact int8 values and scales.
    Float nn.Linear layers are quantized symmetrically per output channel, unless the model holds
    dynamic-quantized ones: then quantization already chose, and the float ones stay float
    (`Int8DynamicQuantConfig.fp32_layers`). (Quantized embeddings are `Int8Embedding` already.)
    """
    out = copy.deepcopy(model)
    quantized = any(isinstance(m, nnqd.Linear) for m in out.modules())
    with torch.no_grad():
        _swap_modules_(out, lambda m, _: isinstance(m, nnqd.Linear), lambda m, _: Int8Linear.from_dynamic(m))
        if not quantized:
            _swap_modules_(out, lambda m, _: type(m) is nn.Linear, lambda m, _: Int8Linear.from_float(m))
    return out


def to_dynamic_quant(model: nn.Module) -> nn.Module:
    """Copy of `model` with every Int8Linear turned into a dynamic-quantized Linear (bit-exact weights)."""
    out = copy.deepcopy(model)
    to_dynamic_quant_(out)
    return out


def to_dynamic_quant_(model: nn.Module) -> None:
    """In place: swap every Int8Linear for a dynamic-quantized Linear, sharing all other tensors.

    The FBGEMM kernel packs its own private copy of each int8 weight; every other tensor (e.g.
    embeddings attached from shared memory) stays where it is, which is why this is in place.
    """
    _swap_modules_(model, lambda m, _: isinstance(m, Int8Linear), lambda m, _: m.to_dynamic())
