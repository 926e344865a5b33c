"""Per-layer cost of serving a pruned Linear from its sparse form: `python -m benchmarks.sparse_kernels`.

Measures, on one thread, for one (rows, cols) weight with L1-style random sparsity:

- decode: `SparseLinear.dense_weight()` (bitmask and CSR, float32 and int8) against `F.linear` for a
  batch of 32x128 tokens, one 128-token text and one 32-token text;
- a CSR kernel, `torch.mm(W_csr, x.T)` on a `torch.sparse_csr_tensor` built from the stored parts,
  against dense `F.linear` over a range of sparsities: where it breaks even.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.harness.cli import emit, listed, parser, positive_int, setup_logging
from compression.sparse import encode
from compression.sparse_linear import SparseLinear
from compression.timing import best_ms

__all__ = ["csr_kernel", "main", "measure"]

_SWEEP = (0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)  # sparsities of the CSR break-even sweep
_TOKENS = {"32x128": 32 * 128, "1x128": 128, "1x32": 32}  # batch x sequence length, as F.linear sees them


def _pruned(shape: tuple[int, int], sparsity: float, seed: int = 0) -> torch.Tensor:
    """A random weight with the smallest-magnitude `sparsity` share zeroed (as L1 pruning does)."""
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    if (drop := int(sparsity * weight.numel())) == 0:
        return weight
    threshold = weight.abs().flatten().kthvalue(drop).values
    return torch.where(weight.abs() > threshold, weight, torch.zeros(()))


def csr_kernel(layer: SparseLinear) -> tuple[torch.Tensor, dict[str, bool]]:
    """A `torch.sparse_csr` weight over `layer`'s CSR parts, and which parts it shares (no copy).

    torch takes int32 or int64 indices only, so int16 column indices are widened (a copy).
    """
    parts, shape = layer.parts().tensors, (layer.out_features, layer.in_features)
    col = parts["col"].to(torch.int32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        weight = torch.sparse_csr_tensor(parts["crow"], col, parts["values"], shape, check_invariants=False)
    held = {"crow": weight.crow_indices(), "col": weight.col_indices(), "values": weight.values()}
    shared = {k: t.data_ptr() == parts[k].data_ptr() for k, t in held.items()}
    shared["col_after_widening"] = held["col"].data_ptr() == col.data_ptr()
    return weight, shared


def measure(shape: tuple[int, int], sparsity: float, sweep: list[float], repeats: int) -> dict[str, Any]:
    """Decode and matmul times (ms) for `shape` at `sparsity`, and the CSR sweep over `sweep`."""
    rows, cols = shape
    weight = _pruned(shape, sparsity)
    inputs = {name: torch.randn(n, cols) for name, n in _TOKENS.items()}
    int8 = torch.round(weight / weight.abs().amax(dim=1, keepdim=True) * 127).to(torch.int8)
    scale = torch.rand(rows) + 0.5
    layers = {
        f"{layout}-{kind}": SparseLinear(encode(w, layout), **extra)
        for kind, w, extra in (("fp32", weight, {}), ("int8", int8, {"scale": scale}))
        for layout in ("bitmask", "csr")
    }
    csr = layers["csr-fp32"]
    return {
        "shape": list(shape),
        "sparsity": sparsity,
        "decode_ms": {name: best_ms(layer.dense_weight, repeats) for name, layer in layers.items()},
        "linear_ms": {name: best_ms(lambda x=x: F.linear(x, weight), repeats) for name, x in inputs.items()},
        "csr_shares": csr_kernel(csr)[1],
        "csr_build_ms": best_ms(lambda: csr_kernel(csr), repeats),
        "csr_sweep": [
            _sweep_row(SparseLinear(encode(_pruned(shape, level, seed=1), "csr")), inputs, repeats)
            for level in sweep
        ],
    }


def _sweep_row(layer: SparseLinear, inputs: dict[str, torch.Tensor], repeats: int) -> dict[str, Any]:
    """Dense F.linear vs the CSR kernel (prebuilt, and built per call) for one layer."""
    csr, _ = csr_kernel(layer)
    dense = layer.dense_weight()
    row: dict[str, Any] = {"sparsity": 1.0 - layer.nnz / dense.numel()}
    for name, x in inputs.items():
        row[f"dense_{name}_ms"] = best_ms(lambda x=x: F.linear(x, dense), repeats)
        row[f"csr_{name}_ms"] = best_ms(lambda x=x: torch.mm(csr, x.T).T, repeats)
        row[f"csr_built_{name}_ms"] = best_ms(lambda x=x: torch.mm(csr_kernel(layer)[0], x.T).T, repeats)
    return row


def _summary(result: dict[str, Any]) -> list[str]:
    lines = [
        f"decode per layer {result['shape']} at {100 * result['sparsity']:.0f}%: {result['decode_ms']}",
        f"F.linear: {result['linear_ms']}; CSR build: {result['csr_build_ms']:.3f} ms, "
        f"shares {result['csr_shares']}",
        "CSR kernel vs dense F.linear, ms: sparsity | "
        + " | ".join(f"dense {n} | csr | csr+build" for n in _TOKENS),
    ]
    for row in result["csr_sweep"]:
        cells = [f"{row[f'{k}_{n}_ms']:.3f}" for n in _TOKENS for k in ("dense", "csr", "csr_built")]
        lines.append(f"{100 * row['sparsity']:.1f}% | " + " | ".join(cells))
    return lines


def main(argv: list[str] | None = None) -> int:
    p = parser(__name__, __doc__)
    p.add_argument("--rows", type=int, default=3072, help="out_features (BERT-base FFN: 3072)")
    p.add_argument("--cols", type=int, default=768, help="in_features (BERT-base hidden: 768)")
    p.add_argument("--sparsity", type=float, default=0.75, help="for the decode timings")
    p.add_argument("--sweep", type=listed(float), default=_SWEEP, help="CSR sparsities")
    p.add_argument("--repeats", type=positive_int, default=7, help="timed runs per number (best kept)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    args = p.parse_args(argv)
    if not 0.0 <= args.sparsity < 1.0:
        p.error(f"--sparsity must be in [0, 1), got {args.sparsity}")
    setup_logging()
    torch.set_num_threads(args.threads)
    with torch.inference_mode():
        result = measure((args.rows, args.cols), args.sparsity, list(args.sweep), args.repeats)
    result["threads"] = args.threads
    emit(result, args.json, _summary(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
