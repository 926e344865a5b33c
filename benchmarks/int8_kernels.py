"""Which int8 matmul is fast on this CPU: `python -m benchmarks.int8_kernels`.

Times one Linear layer, on one thread, every way an int8 variant can run it, side by side in one
run and as ratios to the fp32 `F.linear`:

- `int_mm`: `int8_linear`'s int8 x int8 -> int32 path (`torch._int_mm` from the shared weight);
- `dequant`: `int8_linear`'s other path (a transient fp32 copy of the shared int8 weight);
- `fbgemm`: `quantize_dynamic`'s packed private copy (`int8_kernel: fbgemm`);
- `int8pack`: `torch._weight_int8pack_mm` (weight-only int8), for reference.

`_int_mm` is fast only with an int8 dot-product instruction (AVX-512 VNNI, AVX-VNNI, AMX); on an
AVX2-only CPU it took 28-33x fp32's time, which is why `int8_matmul_is_fast` probes and
`int8_kernel: auto` picks fbgemm there. The machine record names the CPU, which decides the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.harness.cli import emit, parser, positive_int, setup_logging
from compression import quantize as q
from compression.timing import best_ms
from loading.host import machine_info

__all__ = ["main", "measure"]

# (tokens, out_features, in_features): MiniLM-L6's FFN in and out at 16 texts x 32 tokens, BERT-base's.
SHAPES = {
    "minilm-ffn-in 512x384->1536": (512, 1536, 384),
    "minilm-ffn-out 512x1536->384": (512, 384, 1536),
    "bert-base-ffn-in 512x768->3072": (512, 3072, 768),
}


def _kernels(tokens: int, out_features: int, in_features: int) -> dict[str, Callable[[], Any]]:
    x = torch.randn(tokens, in_features, generator=torch.Generator().manual_seed(0))
    linear = nn.Linear(in_features, out_features)
    int8 = q.Int8Linear.from_float(linear)
    w8, scale = int8.weight_int8, int8.scale
    with q._quiet_quantization_warnings():
        fbgemm = torch.ao.quantization.quantize_dynamic(nn.Sequential(linear), {nn.Linear}, dtype=torch.qint8)
    return {
        "fp32": lambda: F.linear(x, linear.weight, linear.bias),
        "int_mm": lambda: q._int8_int_mm(x, w8, scale),
        "dequant": lambda: F.linear(x, q.dequantize(w8, scale), linear.bias),
        "fbgemm": lambda: fbgemm(x),
        "int8pack": lambda: torch._weight_int8pack_mm(x, w8, scale),
    }


def measure(repeats: int) -> dict[str, Any]:
    """Best-of-`repeats` ms per kernel and shape, with each kernel's ratio to fp32."""
    rows = {}
    with torch.inference_mode():
        for name, shape in SHAPES.items():
            ms = {kernel: best_ms(fn, repeats) for kernel, fn in _kernels(*shape).items()}
            rows[name] = {"ms": ms, "vs_fp32": {k: v / ms["fp32"] for k, v in ms.items()}}
    return {"shapes": rows, "int8_matmul_is_fast": q.int8_matmul_is_fast()}


def _summary(result: dict[str, Any]) -> list[str]:
    kernels = list(next(iter(result["shapes"].values()))["ms"])
    lines = [f"{'shape':<32} | " + " | ".join(f"{k} ms (x fp32)" for k in kernels)]
    for name, row in result["shapes"].items():
        lines.append(
            f"{name:<32} | " + " | ".join(f"{row['ms'][k]:.2f} ({row['vs_fp32'][k]:.2f})" for k in kernels)
        )
    return [*lines, f"int8_matmul_is_fast (what int8_kernel: auto goes by): {result['int8_matmul_is_fast']}"]


def main(argv: list[str] | None = None) -> int:
    p = parser(__name__, __doc__)
    p.add_argument("--repeats", type=positive_int, default=5, help="timed runs per number (best kept)")
    args = p.parse_args(argv)
    setup_logging()
    torch.set_num_threads(1)
    result = {"machine": machine_info(), "threads": 1, **measure(args.repeats)}
    emit(result, args.json, _summary(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
