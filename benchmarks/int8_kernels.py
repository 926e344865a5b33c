"""Which int8 matmul is fast on this CPU: `python -m benchmarks.int8_kernels`.

Times one Linear layer, on one thread, every way an int8 variant can run it, side by side in one
run and as ratios to the fp32 `F.linear`:

- `int_mm`: `int8_linear`'s int8 x int8 -> int32 path (`torch._int_mm` from the shared weight);
- `dequant`: `int8_linear`'s other path (a transient fp32 copy of the shared int8 weight);
- `fbgemm`: `quantize_dynamic`'s packed private copy (`int8_kernel: fbgemm`);
- `int8pack`: `torch._weight_int8pack_mm` (weight-only int8, reads the shared weight);
- with `--extra`: `dequant-blocked`, `dequant` in blocks of 256 output rows so that the fp32 copy
  stays in cache, and `onednn`, `quantized::linear_dynamic` on oneDNN's packed private copy.

`_int_mm` is fast only with an int8 dot-product instruction (AVX-512 VNNI, AVX-VNNI, AMX); on an
AVX2-only CPU it took 28-33x fp32's time, which is why `int8_matmul_is_fast` probes and
`int8_kernel: auto` picks fbgemm there. The machine record names the CPU, which decides the answer.
`--isa avx2` reruns the script in a fresh process with oneDNN, ATen, FBGEMM and MKL held to AVX2
(`AVX2_ENV`): an emulation of an AVX2-only CPU, not one (ATen's own checks still see this CPU).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.harness.cli import emit, listed, parser, positive_int, setup_logging
from compression import quantize as q
from compression.timing import best_ms
from loading.host import machine_info

__all__ = ["main", "measure"]

# (tokens, out_features, in_features): MiniLM-L6's attention and FFN in and out at 16 texts x 32
# tokens, BERT-base's FFN in; `--tokens` overrides the tokens (16 x 128 = 2048).
SHAPES = {
    "minilm-attn 384->384": (512, 384, 384),
    "minilm-ffn-in 384->1536": (512, 1536, 384),
    "minilm-ffn-out 1536->384": (512, 384, 1536),
    "bert-base-ffn-in 768->3072": (512, 3072, 768),
}
EXTRA_KERNELS = ("dequant-blocked", "onednn")  # `--extra`: the search for a shared kernel on AVX2
AVX2_ENV = {  # each library's own switch; set before torch loads them, hence the fresh process
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}
_BLOCK_ROWS = 256


def _dequant_blocked(
    x: torch.Tensor, w8: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """`F.linear(x, dequantize(w8, scale), bias)` a block of output rows at a time: (N, in) -> (N, out)."""
    out_t = torch.empty(w8.shape[0], x.shape[0])  # (out, N): each block of output rows is contiguous
    for start in range(0, w8.shape[0], _BLOCK_ROWS):
        rows = slice(start, start + _BLOCK_ROWS)
        torch.addmm(bias[rows, None], q.dequantize(w8[rows], scale[rows]), x.t(), out=out_t[rows])
    return out_t.t()


def _packed(linear: nn.Linear, engine: str) -> Any:
    """`linear` as `engine`'s packed int8 weight (a private copy), per-channel as `quant` is."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        with q._quiet_quantization_warnings():
            qlinear = torch.ao.quantization.quantize_dynamic(
                nn.Sequential(linear), {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}
            )
    finally:
        torch.backends.quantized.engine = before
    return qlinear


def _kernels(tokens: int, out_features: int, in_features: int, extra: bool) -> dict[str, Callable[[], Any]]:
    x = torch.randn(tokens, in_features, generator=torch.Generator().manual_seed(0))
    linear = nn.Linear(in_features, out_features)
    int8 = q.Int8Linear.from_float(linear)
    w8, scale, bias = int8.weight_int8, int8.scale, linear.bias.detach()
    fbgemm = _packed(linear, "fbgemm")
    kernels = {
        "fp32": lambda: F.linear(x, linear.weight, linear.bias),
        "int_mm": lambda: q._int8_int_mm(x, w8, scale),
        "dequant": lambda: F.linear(x, q.dequantize(w8, scale), linear.bias),
        "fbgemm": lambda: fbgemm(x),
        "int8pack": lambda: torch._weight_int8pack_mm(x, w8, scale),
    }
    if extra:
        onednn = _packed(linear, "onednn")
        kernels["dequant-blocked"] = lambda: _dequant_blocked(x, w8, scale, bias)
        kernels["onednn"] = lambda: onednn(x)
    return kernels


def measure(
    repeats: int, tokens: int | None = None, shapes: tuple[str, ...] | None = None, extra: bool = False
) -> dict[str, Any]:
    """Best-of-`repeats` ms per kernel and shape, with each kernel's ratio to fp32 and to fbgemm.

    `tokens` overrides each shape's rows of x; `extra` adds `EXTRA_KERNELS`.
    """
    rows = {}
    with torch.inference_mode():
        for name in shapes or tuple(SHAPES):
            own_tokens, out_features, in_features = SHAPES[name]
            kernels = _kernels(tokens or own_tokens, out_features, in_features, extra)
            ms = {kernel: best_ms(fn, repeats) for kernel, fn in kernels.items()}
            rows[name] = {
                "tokens": tokens or own_tokens,
                "ms": ms,
                "vs_fp32": {k: v / ms["fp32"] for k, v in ms.items()},
                "vs_fbgemm": {k: v / ms["fbgemm"] for k, v in ms.items()},
            }
    return {"shapes": rows, "int8_matmul_is_fast": q.int8_matmul_is_fast()}


def _summary(result: dict[str, Any]) -> list[str]:
    kernels = list(next(iter(result["shapes"].values()))["ms"])
    lines = [f"isa {result['isa']} (torch sees {result['machine']['cpu_capability']}), one thread"]
    lines.append(f"{'shape':<34} | " + " | ".join(f"{k} ms (x fp32, x fbgemm)" for k in kernels))
    for name, row in result["shapes"].items():
        lines.append(
            f"{name + ' x' + str(row['tokens']):<34} | "
            + " | ".join(
                f"{row['ms'][k]:.2f} ({row['vs_fp32'][k]:.2f}, {row['vs_fbgemm'][k]:.2f})" for k in kernels
            )
        )
    return [*lines, f"int8_matmul_is_fast (what int8_kernel: auto goes by): {result['int8_matmul_is_fast']}"]


def main(argv: list[str] | None = None) -> int:
    p = parser(__name__, __doc__)
    p.add_argument("--repeats", type=positive_int, default=5, help="timed runs per number (best kept)")
    p.add_argument("--tokens", type=positive_int, help="rows of x for every shape (16 x 128 texts: 2048)")
    p.add_argument("--shapes", type=listed(), default=tuple(SHAPES), help=f"a subset of: {', '.join(SHAPES)}")
    p.add_argument("--extra", action="store_true", help=f"also time {', '.join(EXTRA_KERNELS)}")
    p.add_argument("--isa", choices=("native", "avx2"), default="native", help="avx2: emulate AVX2 only")
    args = p.parse_args(argv)
    if unknown := sorted(set(args.shapes) - set(SHAPES)):
        p.error(f"unknown shapes: {', '.join(unknown)}")
    emulated = all(os.environ.get(k) == v for k, v in AVX2_ENV.items())
    if args.isa == "avx2" and not emulated:  # torch is loaded already: rerun with the switches set
        argv = sys.argv[1:] if argv is None else argv
        os.execve(
            sys.executable,
            [sys.executable, "-m", "benchmarks.int8_kernels", *argv],
            {**os.environ, **AVX2_ENV},
        )
    setup_logging()
    torch.set_num_threads(1)
    result = {
        "machine": machine_info(),
        "threads": 1,
        "isa": args.isa,
        "env": {k: os.environ.get(k) for k in AVX2_ENV},
        **measure(args.repeats, args.tokens, tuple(args.shapes), args.extra),
    }
    emit(result, args.json, _summary(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
