"""What each compressed variant costs: bytes on disk, bytes in the object store, replica memory, latency.

    python -m benchmarks.variant_costs --json     # both models, ~30-45 min on 2 shared cores
    python -m benchmarks.variant_costs --quick    # smoke test: default model, served variants, batch 8

For each model (`default` = `artifacts/base`, the MiniLM-L6 classifier; `bert-base` = `BertConfig()`,
2 labels, random weights) base, quant, pruned-{60..95} and pruned-quant-{60..95} (L1 unstructured)
are built into a temp folder and measured (`benchmarks.variant_measure`):

- disk: `variant.json` size_bytes and weights_bytes, as a ratio to base (pruned-quant also to quant);
- object store: the bytes of the weight arena the model store holds for the variant;
- replica memory: k fresh Ray actors attach the variant one after another (each keeps it while the
  next joins) and run one forward; each reports its USS and RSS growth from a baseline taken after a
  warm-up attach of a tiny model of the same variant kind, so imports and lazy kernel set-up don't count;
- latency: one batch (32 texts x 128 random token ids) in an actor that attached the variant as a
  replica does; median of 3 after a warm-up round, per torch thread count, options timed in
  interleaved rounds so that load from other jobs hits them all alike.

Memory and latency are measured for every kernel option `loading.store.attach` offers the variant:
`int8_kernel` shared/fbgemm for int8 variants and `sparse_kernel` for pruned ones.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT
from benchmarks.harness.cli import emit, listed, parser, setup_logging
from benchmarks.harness.models import build_random_bert
from benchmarks.harness.session import local_ray
from benchmarks.variant_measure import MODELS, SERVED, VariantBenchConfig, measure_model, served_kernels
from deployments.serve_config import load_serve_config
from loading.host import machine_info

__all__ = ["main", "run_benchmark"]

# ~5 s per BERT-base forward at 1 thread: time a spread of amounts, not all sixteen.
_BERT_BASE_LATENCY = ("base", "quant", "pruned-60", "pruned-75", "pruned-90", "pruned-95")
_BERT_BASE_LATENCY += ("pruned-quant-75", "pruned-quant-90")
_DEFAULT_ARTIFACT = ROOT / "artifacts" / "base"


def run_benchmark(cfg: VariantBenchConfig, out_dir: Path) -> dict[str, Any]:
    """Measure every model on a private local Ray; the JSON-ready record."""
    import ray
    import transformers

    from loading.model_store import model_store
    from loading.store import SparseKernel

    transformers.utils.logging.set_verbosity_error()
    result: dict[str, Any] = {
        "machine": machine_info(),
        "config": asdict(cfg),
        "kernels": {"sparse": [k.value for k in SparseKernel], "served": served_kernels()},
        "replica_env_vars": load_serve_config().env_vars(),
        "models": {},
    }
    with local_ray(num_cpus=2):
        try:
            for name in cfg.models:
                start = time.perf_counter()
                model_cfg = cfg
                if name == "default":
                    if not (_DEFAULT_ARTIFACT / "variant.json").exists():
                        raise FileNotFoundError(f"{_DEFAULT_ARTIFACT} is missing; run `make artifacts` first")
                    model_dir = _DEFAULT_ARTIFACT
                else:
                    model_dir = build_random_bert(out_dir / name / "base")
                    if not cfg.latency_variants:  # a spread, not all sixteen
                        spread = tuple(v for v in _BERT_BASE_LATENCY if v in cfg.variants) or None
                        model_cfg = replace(cfg, latency_variants=spread)
                model = measure_model(model_dir, out_dir / name, model_cfg, tag=name)
                model["seconds"]["total"] = round(time.perf_counter() - start, 1)
                result["models"][name] = model
        finally:
            ray.kill(model_store())  # detached: it would outlive the session
    result["machine"]["load_avg_1_5_15m_end"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = result["models"].get("bert-base", {}).get("targets")  # judged on BERT-base only
    return result


def _summary(result: dict[str, Any]) -> list[str]:
    lines = ["variant costs"]
    for name, model in result["models"].items():
        lines.append(f"{name}: {'variant':<16} {'weights MB':>10} {'vs base':>8} {'store MB':>9}  latency ms")
        for variant, row in model["variants"].items():
            lat = {
                k: "error" if "error" in s else "/".join(str(s[n]["median_ms"]) for n in sorted(s))
                for k, s in row.get("latency", {}).items()
            }
            lines.append(
                f"{name}: {variant:<16} {row['weights_bytes'] / 1e6:10.1f} {row['weights_vs_base']:8.3f} "
                f"{row['store_arena_bytes'] / 1e6:9.1f}  {lat}"
            )
        lines.append(f"{name}: targets {model['targets']} {model['target_values']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = parser(__name__, __doc__)
    p.add_argument("--models", type=listed(), default=MODELS, help=f"comma-separated, from {MODELS}")
    p.add_argument("--quick", action="store_true", help="smoke test: default model, served variants, batch 8")
    p.add_argument("--all-latency", action="store_true", help="time every bert-base variant too")
    p.add_argument("--out-dir", help="keep (and reuse) the built variants here")
    args = p.parse_args(argv)
    setup_logging()
    try:
        if args.quick:
            cfg = VariantBenchConfig(
                models=("default",),
                variants=SERVED,
                memory_variants=("quant", "pruned-quant-75"),  # the int8 and the sparse+int8 code paths
                threads=(1,),
                replicas=2,
                batch_size=8,
                served_kernels_only=True,
            )
        else:
            cfg = VariantBenchConfig(
                models=args.models, latency_variants=VariantBenchConfig.variants if args.all_latency else None
            )
    except ValueError as exc:
        p.error(str(exc))
    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="variant-bench-")).resolve()
    try:
        result = run_benchmark(cfg, out_dir)
    finally:
        if not args.out_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
    emit(result, args.json, _summary(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
