"""Measure the bytes each variant really stores, per sparse layout: `python -m benchmarks.sizes`.

A BERT-base-shaped Linear weight (768 x 3072) and a whole `BertConfig()` classifier (random
weights, ~110M parameters), each as dense fp32, int8, L1-pruned (fp32 values) and
pruned-then-quantized (int8 values) in the bitmask, CSR and automatic ("auto": smallest per weight)
layouts, with the ratios the project targets. Bytes are tensor bytes of the packed state dict (what
safetensors writes, minus its small JSON header); int8 weights are counted in `Int8Linear` form
(int8 values + a float32 scale per output row). Embeddings are float32 in base and pruned and 8-bit
(a scale and zero point per row) in quant and pruned-quant; they count in every total.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from benchmarks.harness.cli import emit, parser, setup_logging
from benchmarks.harness.models import random_bert
from compression.prune import L1UnstructuredPruneConfig
from compression.quantize import Int8DynamicQuantConfig, Int8Embedding, Int8Linear, to_int8_linear
from compression.registry import compress
from compression.sparse import SparseLayout, encode, pack_state_dict

__all__ = ["layer_sizes", "main", "model_sizes"]

logger = logging.getLogger(__name__)

_LAYOUTS = {"bitmask": SparseLayout.BITMASK, "csr": SparseLayout.CSR, "auto": None}


def _nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def layer_sizes(rows: int = 768, cols: int = 3072, amount: float = 0.75, seed: int = 0) -> dict[str, Any]:
    """Bytes of one random (rows, cols) Linear weight: dense, int8, and L1-pruned per layout."""
    torch.manual_seed(seed)
    linear = nn.Linear(cols, rows, bias=False)
    dense_fp32 = linear.weight.numel() * 4
    int8 = Int8Linear.from_float(linear)
    int8_bytes = _nbytes({"w": int8.weight_int8, "s": int8.scale})
    prune.l1_unstructured(linear, "weight", amount=amount)
    prune.remove(linear, "weight")
    pruned = linear.weight.detach()
    pruned_int8 = Int8Linear.from_float(linear)
    sizes: dict[str, Any] = {
        "shape": [rows, cols],
        "amount": amount,
        "dense_fp32": dense_fp32,
        "int8": int8_bytes,
        "pruned_fp32": {name: encode(pruned, layout).nbytes for name, layout in _LAYOUTS.items()},
        "pruned_int8": {
            name: encode(pruned_int8.weight_int8, layout).nbytes + pruned_int8.scale.nbytes
            for name, layout in _LAYOUTS.items()
        },
    }
    sizes["ratios"] = {
        "int8/dense": int8_bytes / dense_fp32,
        "pruned_auto/dense": sizes["pruned_fp32"]["auto"] / dense_fp32,
        "pruned_int8_auto/int8": sizes["pruned_int8"]["auto"] / int8_bytes,
    }
    return sizes


def _embedding_bytes(model: nn.Module) -> int:
    """Bytes of the embedding tables (float or 8-bit with their qparams)."""
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding | Int8Embedding)]
    return sum(_nbytes(dict(m.state_dict())) for m in tables)


def model_sizes(model: nn.Module, amount: float = 0.75) -> dict[str, Any]:
    """Bytes of `model` as base, quant, pruned and pruned-quant (per layout), plus the target checks."""
    base = _nbytes(model.state_dict())
    logger.info("quantizing")
    quant_model = to_int8_linear(compress(model, Int8DynamicQuantConfig()))
    quant = _nbytes(quant_model.state_dict())
    embeddings_8bit = _embedding_bytes(quant_model)
    del quant_model
    logger.info("pruning %.0f%%", amount * 100)
    pruned_model = compress(model, L1UnstructuredPruneConfig(amount=amount))
    pruned = {name: _nbytes(pack_state_dict(pruned_model, lay)) for name, lay in _LAYOUTS.items()}
    logger.info("quantizing the pruned model")
    pq_model = to_int8_linear(compress(pruned_model, Int8DynamicQuantConfig()))
    del pruned_model
    pruned_quant = {name: _nbytes(pack_state_dict(pq_model, lay)) for name, lay in _LAYOUTS.items()}
    pct = round(amount * 100)
    ratios = {
        "quant/base": quant / base,
        f"pruned-{pct}/base": pruned["auto"] / base,
        f"pruned-quant-{pct}/quant": pruned_quant["auto"] / quant,
        f"pruned-quant-{pct}/quant, embeddings excluded": (pruned_quant["auto"] - embeddings_8bit)
        / (quant - embeddings_8bit),
    }
    return {
        "amount": amount,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "embeddings_fp32": _embedding_bytes(model),
        "embeddings_8bit": embeddings_8bit,
        "base": base,
        "quant": quant,
        f"pruned-{pct}": pruned,
        f"pruned-quant-{pct}": pruned_quant,
        "ratios": ratios,
        "targets": {
            "quant <= 42% of base": ratios["quant/base"] <= 0.42,
            f"pruned-{pct} <= 50% of base": ratios[f"pruned-{pct}/base"] <= 0.50,
            f"pruned-quant-{pct} <= 60% of quant": ratios[f"pruned-quant-{pct}/quant"] <= 0.60,
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = parser(__name__, __doc__)
    p.add_argument("--amount", type=float, default=0.75, help="share of encoder Linear weights pruned")
    p.add_argument("--rows", type=int, default=768, help="rows of the single-layer measurement")
    p.add_argument("--cols", type=int, default=3072, help="columns of the single-layer measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-model", action="store_true", help="only measure the single layer")
    args = p.parse_args(argv)
    setup_logging()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    report: dict[str, Any] = {"layer": layer_sizes(args.rows, args.cols, args.amount, args.seed)}
    if not args.skip_model:
        report["bert_base"] = model_sizes(random_bert(args.seed), args.amount)
    summary = [f"{k}: {part['ratios']} {part.get('targets', '')}" for k, part in report.items()]
    emit(report, args.json, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
