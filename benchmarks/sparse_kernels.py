"""Per-layer cost of serving a pruned Linear from its sparse form: `python -m benchmarks.sparse_kernels`.

Measures, on one thread, for one (rows, cols) weight with L1-style random sparsity:

- decode: `SparseLinear.dense_weight()` (bitmask and CSR, float32 and int8) against `F.linear` for a
  batch of 32x128 tokens, one 128-token text and one 32-token text;
- a CSR kernel, `torch.mm(W_csr, x.T)` on a `torch.sparse_csr_tensor` built from the stored parts,
  against dense `F.linear` over a range of sparsities: where it breaks even.

The last stdout line is JSON; the tables go to the log.
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from compression.sparse import encode
from compression.sparse_linear import SparseLinear
from compression.timing import best_ms

__all__ = ["csr_kernel", "main", "measure"]

logger = logging.getLogger(__name__)

_TOKENS = {"32x128": 32 * 128, "1x128": 128, "1x32": 32}  # batch x sequence length, as F.linear sees them


def _pruned(shape: tuple[int, int], sparsity: float, seed: int = 0) -> torch.Tensor:
    """A random weight with the smallest-magnitude `sparsity` share zeroed (as L1 pruning does)."""
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    drop = int(sparsity * weight.numel())
    if drop == 0:
        return weight
    threshold = weight.abs().flatten().kthvalue(drop).values
    return torch.where(weight.abs() > threshold, weight, torch.zeros(()))


def csr_kernel(layer: SparseLinear) -> tuple[torch.Tensor, dict[str, bool]]:
    """A `torch.sparse_csr` weight over `layer`'s CSR parts, and which parts it shares (no copy).

    torch takes int32 or int64 indices only, so int16 column indices are widened (a copy).
    """
    parts = layer.parts().tensors
    col = parts["col"].to(torch.int32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        weight = torch.sparse_csr_tensor(
            parts["crow"],
            col,
            parts["values"],
            (layer.out_features, layer.in_features),
            check_invariants=False,
        )
    shared = {
        "crow": weight.crow_indices().data_ptr() == parts["crow"].data_ptr(),
        "col": weight.col_indices().data_ptr() == parts["col"].data_ptr(),
        "col_after_widening": weight.col_indices().data_ptr() == col.data_ptr(),
        "values": weight.values().data_ptr() == parts["values"].data_ptr(),
    }
    return weight, shared


def measure(shape: tuple[int, int], sparsity: float, sweep: list[float], repeats: int) -> dict[str, Any]:
    """Decode and matmul times (ms) for `shape` at `sparsity`, and the CSR sweep over `sweep`."""
    rows, cols = shape
    weight = _pruned(shape, sparsity)
    inputs = {name: torch.randn(n, cols) for name, n in _TOKENS.items()}
    layers = {
        "bitmask-fp32": SparseLinear(encode(weight, "bitmask")),
        "csr-fp32": SparseLinear(encode(weight, "csr")),
    }
    int8 = torch.round(weight / weight.abs().amax(dim=1, keepdim=True) * 127).to(torch.int8)
    scale = torch.rand(rows) + 0.5
    layers["bitmask-int8"] = SparseLinear(encode(int8, "bitmask"), scale=scale)
    layers["csr-int8"] = SparseLinear(encode(int8, "csr"), scale=scale)
    result: dict[str, Any] = {
        "shape": list(shape),
        "sparsity": sparsity,
        "decode_ms": {name: best_ms(layer.dense_weight, repeats) for name, layer in layers.items()},
        "linear_ms": {name: best_ms(lambda x=x: F.linear(x, weight), repeats) for name, x in inputs.items()},
    }
    _, result["csr_shares"] = csr_kernel(layers["csr-fp32"])
    result["csr_build_ms"] = best_ms(lambda: csr_kernel(layers["csr-fp32"]), repeats)
    rows_out = [
        _sweep_row(SparseLinear(encode(_pruned(shape, level, seed=1), "csr")), inputs, repeats)
        for level in sweep
    ]
    result["csr_sweep"] = rows_out
    return result


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


def _log_tables(result: dict[str, Any]) -> None:
    logger.info(
        "decode per layer %s at %.0f%%: %s", result["shape"], 100 * result["sparsity"], result["decode_ms"]
    )
    logger.info(
        "F.linear: %s; CSR build: %.3f ms, shares %s",
        result["linear_ms"],
        result["csr_build_ms"],
        result["csr_shares"],
    )
    header = " | ".join(f"dense {n} | csr | csr+build" for n in _TOKENS)
    logger.info("CSR kernel vs dense F.linear, ms: sparsity | %s", header)
    for row in result["csr_sweep"]:
        cells = " | ".join(
            f"{row[f'dense_{n}_ms']:.3f} | {row[f'csr_{n}_ms']:.3f} | {row[f'csr_built_{n}_ms']:.3f}"
            for n in _TOKENS
        )
        logger.info("%.1f%% | %s", 100 * row["sparsity"], cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sparse_kernels", description=__doc__)
    parser.add_argument("--rows", type=int, default=3072, help="out_features (BERT-base FFN: 3072)")
    parser.add_argument("--cols", type=int, default=768, help="in_features (BERT-base hidden: 768)")
    parser.add_argument("--sparsity", type=float, default=0.75, help="for the decode timings")
    parser.add_argument("--sweep", default="0.6,0.7,0.75,0.8,0.85,0.9,0.95", help="CSR sparsities")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per number (the fastest is kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not 0.0 <= args.sparsity < 1.0:
        parser.error(f"--sparsity must be in [0, 1), got {args.sparsity}")
    torch.set_num_threads(args.threads)
    sweep = [float(s) for s in args.sweep.split(",") if s.strip()]
    with torch.inference_mode():
        result = measure((args.rows, args.cols), args.sparsity, sweep, args.repeats)
    result["threads"] = args.threads
    _log_tables(result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
