"""The study's pruning protocol in one command: `python -m evaluation.sweep`.

Phase "coarse": accuracy over pruning amounts 10%-99% in 20 linear steps (rounded to whole percents,
as variant names are) on a balanced sample of 2,000 rows (the whole set if smaller), for L1 pruning
with and without int8 after it, and optionally random and structured pruning. Phase "fine": the full
set at 60%-95% in steps of 5. Both phases run the distributed evaluation job (`evaluation.job`)
with base and quant as references, so every point also gets agreement with base and McNemar's test.

Variants are built with the project's builder (`loading.build.build_variants`) into a cache folder
and reused on the next run when built from the same base weights; predictions resume like any job's.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compression import parse_variant
from evaluation.data import DataError, DataSpec
from evaluation.job import JobConfig, add_data_arguments, data_spec, run_job
from evaluation.report import write_sweep_report
from evaluation.worker_pool import WorkerLostError
from loading.artifact import ArtifactError, read_variant_info, resolve_model_dir, verify_artifact
from loading.build import build_variants
from loading.host import machine_info

__all__ = ["METHODS", "SweepConfig", "coarse_amounts", "main", "run_sweep", "sweep_variants"]

logger = logging.getLogger(__name__)

METHODS = {"l1": "", "random": "random-", "structured": "structured-"}  # method -> variant-name infix


def coarse_amounts(low: int = 10, high: int = 99, steps: int = 20) -> list[int]:
    """`steps` linearly spaced percents from `low` to `high`, rounded to whole percents (names need them)."""
    if not 0 <= low < high <= 99 or steps < 2:
        raise ValueError(
            f"amounts must satisfy 0 <= low < high <= 99 and steps >= 2, got {low}, {high}, {steps}"
        )
    return sorted({int(round(a)) for a in np.linspace(low, high, steps)})


@dataclass(frozen=True)
class SweepConfig:
    """Which pruned variants to build and evaluate, and where."""

    model: str = "artifacts/base"  # the base artifact every variant is derived from
    cache: str = "artifacts/sweep"  # built variants, one folder each, reused across runs
    out: str = "reports/sweep"  # <out>/coarse, <out>/fine (job outputs) and sweep.md
    methods: tuple[str, ...] = ("l1",)  # of METHODS; each with and without int8 after pruning
    coarse_amounts: tuple[int, ...] = tuple(coarse_amounts())  # percents, phase "coarse"
    coarse_sample: int = 2000  # balanced rows for the coarse phase (all rows if the set is smaller)
    fine_amounts: tuple[int, ...] = tuple(range(60, 96, 5))  # percents, phase "fine", on the full set
    phases: tuple[str, ...] = ("coarse", "fine")
    job: JobConfig = field(default_factory=JobConfig)  # workers, batching, kernels (variants ignored)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be some of {list(METHODS)}, got {list(self.methods)}")
        bad = [p for p in self.phases if p not in ("coarse", "fine")]
        if bad or not self.phases:
            raise ValueError(f"phases must be some of ['coarse', 'fine'], got {list(self.phases)}")
        if any(not 0 < a <= 99 for a in (*self.coarse_amounts, *self.fine_amounts)):
            raise ValueError("amounts must be whole percents in 1-99")
        if self.coarse_sample < 1:
            raise ValueError(f"coarse_sample must be >= 1, got {self.coarse_sample}")


def sweep_variants(methods: tuple[str, ...], amounts: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """Variant name -> (method, quant, amount) for every method, with and without int8, at each amount."""
    points = {}
    for method in methods:
        for quant in (False, True):
            for amount in amounts:
                name = f"pruned-{METHODS[method]}{'quant-' if quant else ''}{amount}"
                parse_variant(name)  # the builder's grammar: fails here, before any work
                points[name] = {"method": method, "quant": quant, "amount_pct": amount}
    return points


def _prepare_cache(cfg: SweepConfig, names: list[str]) -> Path:
    """Build the missing variants into the cache (rebuilding ones made from other base weights)."""
    cache = Path(cfg.cache)
    cache.mkdir(parents=True, exist_ok=True)
    model_dir = resolve_model_dir(cfg.model)
    base_hash = verify_artifact(model_dir).content_hash
    link = cache / "base"
    if link.is_symlink() and link.resolve() != model_dir:
        link.unlink()
    if not link.exists():
        link.symlink_to(model_dir, target_is_directory=True)  # the job reads base from the cache root too
    for name in names:
        folder = cache / name
        if folder.exists():
            try:
                parent = read_variant_info(folder).parameters.get("parent_hash")
            except ArtifactError:
                parent = None
            if parent != base_hash:
                logger.warning("%s was built from other weights (or is damaged); rebuilding it", folder)
                shutil.rmtree(folder)
    build_variants(model_dir, names, cache, if_missing=True)
    return cache


def run_sweep(spec: DataSpec, cfg: SweepConfig, command: str = "") -> dict[str, Any]:
    """Build and evaluate every phase's variants; writes `<out>/sweep.md` and returns the results."""
    start = time.perf_counter()
    plan = {
        "coarse": sweep_variants(cfg.methods, cfg.coarse_amounts),
        "fine": sweep_variants(cfg.methods, cfg.fine_amounts),
    }
    plan = {phase: plan[phase] for phase in cfg.phases}
    names = list(dict.fromkeys(["quant", *(n for points in plan.values() for n in points)]))
    logger.info("sweep: %d variants to build or reuse in %s", len(names), cfg.cache)
    cache = _prepare_cache(cfg, names)
    phases = {}
    for phase, points in plan.items():
        phase_spec = spec
        if phase == "coarse":
            phase_spec = DataSpec(
                **{**spec.__dict__, "sample": min(cfg.coarse_sample, spec.sample or cfg.coarse_sample)}
            )
        job = JobConfig(
            **{
                **cfg.job.__dict__,
                "variants": ("quant", *points),
                "model_root": str(cache),
                "out": str(Path(cfg.out) / phase),
                "base": "base",
            }
        )
        logger.info(
            "sweep phase %s: %d variants on %s", phase, len(job.all_variants()), phase_spec.describe()
        )
        phases[phase] = run_job(phase_spec, job)
    sweep = {
        "data": spec.describe(),
        "protocol": (
            f"coarse: {list(cfg.coarse_amounts)}% on a balanced sample of {cfg.coarse_sample} rows; "
            f"fine: {list(cfg.fine_amounts)}% on all rows; methods {list(cfg.methods)}, each also + int8"
        ),
        "command": command,
        "phases": phases,
        "points": {name: point for points in plan.values() for name, point in points.items()},
        "machine": machine_info(),
        "wall_s": time.perf_counter() - start,
    }
    (Path(cfg.out) / "sweep.json").write_text(json.dumps(sweep, indent=1))
    write_sweep_report(sweep, cfg.out)
    return sweep


def _amounts(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(a) for a in text.split(",") if a.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"amounts must be comma-separated whole percents, got {text!r}"
        ) from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.sweep", description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--model", default="artifacts/base", help="base artifact the variants come from")
    parser.add_argument("--cache", default="artifacts/sweep", help="folder of built variants (reused)")
    parser.add_argument("--out", default="reports/sweep")
    parser.add_argument(
        "--methods", default="l1", help=f"comma-separated of {list(METHODS)} (random/structured: optional)"
    )
    parser.add_argument("--coarse-sample", type=int, default=2000, help="balanced rows for the coarse phase")
    parser.add_argument("--coarse-amounts", type=_amounts, default=tuple(coarse_amounts()))
    parser.add_argument("--fine-amounts", type=_amounts, default=tuple(range(60, 96, 5)))
    parser.add_argument("--phases", default="coarse,fine")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-rows", type=int, default=64)
    parser.add_argument("--sparse-kernel", choices=["shared", "dense"], default="shared")
    parser.add_argument("--int8-kernel", choices=["auto", "shared", "fbgemm"], default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = SweepConfig(
            model=args.model,
            cache=args.cache,
            out=args.out,
            methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()),
            coarse_amounts=args.coarse_amounts,
            coarse_sample=args.coarse_sample,
            fine_amounts=args.fine_amounts,
            phases=tuple(p.strip() for p in args.phases.split(",") if p.strip()),
            job=JobConfig(
                workers=args.workers,
                cpus_per_worker=args.cpus_per_worker,
                batch_size=args.batch_size,
                shard_rows=args.shard_rows,
                sparse_kernel=args.sparse_kernel,
                int8_kernel=args.int8_kernel,
                seed=args.seed,
            ),
        )
        sweep = run_sweep(
            data_spec(args),
            cfg,
            "python -m evaluation.sweep " + shlex.join(sys.argv[1:] if argv is None else argv),
        )
    except (DataError, ArtifactError, ValueError, WorkerLostError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    logger.info("wrote %s in %.0f s", Path(cfg.out) / "sweep.md", sweep["wall_s"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
