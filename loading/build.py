"""Build compressed variant artifacts from a base artifact: `python -m loading.build ...`.

Each variant is written as its own artifact folder (same format as base) whose weights file holds
the really-compressed tensors: int8 values with their scales, and pruned weights in the smaller of
bitmask or CSR form. `variant.json` records the true bytes on disk, nonzero counts and sparsity.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from torch import nn
from tqdm import tqdm

from compression import (
    Int8DynamicQuantConfig,
    build_variant,
    pack_state_dict,
    parse_variant,
    sparsity_report,
    to_int8_linear,
)
from loading.artifact import (
    COMPRESSED_METHOD,
    ArtifactError,
    VariantInfo,
    load_tokenizer,
    save_artifact,
    verify_artifact,
)
from loading.checkpoint import load_model

__all__ = ["build_variants", "main", "save_variant"]

logger = logging.getLogger(__name__)


def _config_dict(cfg: Any) -> dict[str, Any]:
    fields = {k: (v.value if hasattr(v, "value") else v) for k, v in vars(cfg).items()}
    return {"method": cfg.NAME, **fields}


def build_variants(
    model_dir: str | Path, names: list[str], out_root: str | Path, *, if_missing: bool = False
) -> list[VariantInfo]:
    """Write `out_root/<name>/` for every variant name; all names are checked before any work."""
    chains = {name: parse_variant(name) for name in names}  # raises on an unknown name, first
    base_info = verify_artifact(model_dir)
    model = load_model(model_dir)
    tokenizer = load_tokenizer(model_dir)
    written = []
    for name in tqdm(names, desc="variants", unit="variant"):
        out = Path(out_root) / name
        if name == "base":
            logger.info("base is the model itself (%s); nothing to build", model_dir)
            continue
        if if_missing and out.exists():
            try:
                written.append(verify_artifact(out))  # a truncated or swapped weights file is rebuilt
                logger.info("%s exists; skipped", out)
                continue
            except ArtifactError:
                logger.warning("%s is damaged; rebuilding it", out)
        chain = chains[name]
        compressed = build_variant(model, name)
        info = save_variant(
            compressed,
            tokenizer,
            out,
            name=name,
            parent=base_info,
            parameters={"chain": [_config_dict(c) for c in chain]},
            quantized=any(isinstance(c, Int8DynamicQuantConfig) for c in chain),
        )
        written.append(info)
    return written


def save_variant(
    model: nn.Module,
    tokenizer: Any,
    out: str | Path,
    *,
    name: str,
    parent: VariantInfo,
    parameters: dict[str, Any],
    quantized: bool,
) -> VariantInfo:
    """Write a compressed model as a variant artifact: int8 layers as int8 values and scales, weights
    with zeros in the smaller of bitmask or CSR form, and their true sizes and sparsity recorded.

    `model` is float with zeros where it was pruned, at its own (possibly smaller) shapes; if
    `quantized` its Linear layers are dynamic-int8 (`compression.compress` with `Int8DynamicQuantConfig`).
    """
    storable = to_int8_linear(model) if quantized else model
    report = sparsity_report(storable)
    info = save_artifact(
        storable,
        tokenizer,
        out,
        name=name,
        parent=parent.name,
        method=COMPRESSED_METHOD,
        parameters={
            **parameters,
            "parent_hash": parent.content_hash,
            "parent_size_bytes": parent.size_bytes,
            "dense_sparsity": report["dense"]["sparsity"],
            "dense_nonzero": report["dense"]["nonzero"],
            "total_sparsity": report["total"]["sparsity"],
            "total_nonzero": report["total"]["nonzero"],
        },
        tensors=pack_state_dict(storable),
    )
    logger.info(
        "%s: %.1f MB on disk (%.0f%% of %s), dense sparsity %.1f%%",
        name,
        info.size_bytes / 1e6,
        100 * info.size_bytes / parent.size_bytes,
        parent.name,
        100 * report["dense"]["sparsity"],
    )
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loading.build", description=__doc__)
    parser.add_argument("--model", default="artifacts/base", help="base artifact folder")
    parser.add_argument("--variants", required=True, help="comma-separated, e.g. quant,pruned-75")
    parser.add_argument("--out", default=None, help="folder for the variants (default: beside --model)")
    parser.add_argument("--if-missing", action="store_true", help="skip variants already built")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    if not names:
        parser.error("--variants must name at least one variant, got none")
    out_root = Path(args.out) if args.out else Path(args.model).resolve().parent
    try:
        build_variants(args.model, names, out_root, if_missing=args.if_missing)
    except (ArtifactError, ValueError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
