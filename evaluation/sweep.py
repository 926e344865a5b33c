"""The study's pruning protocol, and pruning with recovery, in one command: `python -m evaluation.sweep`.

Phase "coarse": accuracy over pruning amounts 10%-99% in 20 linear steps (rounded to whole percents,
as variant names are) on a balanced sample of 2,000 rows (the whole set if smaller), for L1 pruning
with and without int8 after it, and optionally random and structured pruning. Phase "fine": the full
set at 60%-95% in steps of 5. Phase "recovery": the full set at 50/70/80/90% for the methods that
prune while distilling from the base (`training.recover`: gradual L1, `pruned-kd-<N>`, and whole heads
and FFN neurons, `pruned-kd-structured-<N>`), each with and without int8. Every phase runs the
distributed evaluation job (`evaluation.job`) with base and quant as references, so every point also
gets agreement with base and McNemar's test.

Variants are built into a cache folder (`evaluation.sweep_plan`) and reused on the next run when built
from the same base weights; predictions resume like any job's.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaluation.data import DataError, DataSpec
from evaluation.job import JobConfig, add_data_arguments, data_spec, run_job
from evaluation.report import write_sweep_report
from evaluation.sweep_plan import (
    METHODS,
    RECOVERY_METHODS,
    coarse_amounts,
    prepare_cache,
    recovery_variants,
    sweep_variants,
)
from evaluation.worker_pool import WorkerLostError
from loading.artifact import ArtifactError
from loading.host import machine_info
from training.recover import RecoveryConfig

__all__ = ["PHASES", "SweepConfig", "main", "run_sweep"]

logger = logging.getLogger(__name__)

PHASES = ("coarse", "fine", "recovery")


@dataclass(frozen=True)
class SweepConfig:
    """Which pruned variants to build and evaluate, and where."""

    model: str = "artifacts/base"  # the base artifact every variant is derived from
    cache: str = "artifacts/sweep"  # built variants, one folder each, reused across runs
    out: str = "reports/sweep"  # <out>/<phase> (job outputs), sweep.md and sweep.json
    methods: tuple[str, ...] = ("l1",)  # of METHODS; each with and without int8 after pruning
    coarse_amounts: tuple[int, ...] = tuple(coarse_amounts())  # percents, phase "coarse"
    coarse_sample: int = 2000  # balanced rows for the coarse phase (all rows if the set is smaller)
    fine_amounts: tuple[int, ...] = tuple(range(60, 96, 5))  # percents, phase "fine", on the full set
    # Of RECOVERY_METHODS, each with and without int8; phase "recovery", on the full set.
    recovery_methods: tuple[str, ...] = tuple(RECOVERY_METHODS)
    # Where one-shot L1 is safe (50), collapses (70) and the targets (80, 90).
    recovery_amounts: tuple[int, ...] = (50, 70, 80, 90)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)  # how the students train
    phases: tuple[str, ...] = PHASES
    job: JobConfig = field(default_factory=JobConfig)  # workers, batching, kernels (variants ignored)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be some of {list(METHODS)}, got {list(self.methods)}")
        unknown = [m for m in self.recovery_methods if m not in RECOVERY_METHODS]
        if unknown or not self.recovery_methods:
            raise ValueError(
                f"recovery methods must be some of {list(RECOVERY_METHODS)}, "
                f"got {list(self.recovery_methods)}"
            )
        bad = [p for p in self.phases if p not in PHASES]
        if bad or not self.phases:
            raise ValueError(f"phases must be some of {list(PHASES)}, got {list(self.phases)}")
        amounts = (*self.coarse_amounts, *self.fine_amounts, *self.recovery_amounts)
        if any(not 0 < a <= 99 for a in amounts):
            raise ValueError(f"amounts must be whole percents in 1-99, got {sorted(set(amounts))}")
        if self.coarse_sample < 1:
            raise ValueError(f"coarse_sample must be >= 1, got {self.coarse_sample}")

    def plan(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Phase -> variant name -> (method, quant, amount), for the chosen phases in order."""
        plans = {
            "coarse": lambda: sweep_variants(self.methods, self.coarse_amounts),
            "fine": lambda: sweep_variants(self.methods, self.fine_amounts),
            "recovery": lambda: recovery_variants(self.recovery_methods, self.recovery_amounts),
        }
        return {phase: plans[phase]() for phase in dict.fromkeys(self.phases)}

    def protocol(self) -> str:
        """One line saying what each chosen phase evaluates."""
        parts = {
            "coarse": f"coarse: {list(self.coarse_amounts)}% on a balanced sample of "
            f"{self.coarse_sample} rows, methods {list(self.methods)}",
            "fine": f"fine: {list(self.fine_amounts)}% on all rows, methods {list(self.methods)}",
            "recovery": f"recovery: {list(self.recovery_amounts)}% on all rows, methods "
            f"{list(self.recovery_methods)} ({self.recovery.epochs} epochs of distillation from base)",
        }
        return "; ".join(parts[p] for p in dict.fromkeys(self.phases)) + "; each method also + int8"


def run_sweep(spec: DataSpec, cfg: SweepConfig, command: str = "") -> dict[str, Any]:
    """Build and evaluate every phase's variants; writes `<out>/sweep.md` and returns the results."""
    start = time.perf_counter()
    plan = cfg.plan()
    names = list(dict.fromkeys(["quant", *(n for points in plan.values() for n in points)]))
    logger.info("sweep: %d variants to build or reuse in %s", len(names), cfg.cache)
    cache = prepare_cache(cfg.model, cfg.cache, names, cfg.recovery)
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
        "protocol": cfg.protocol(),
        "recovery": asdict(cfg.recovery) if "recovery" in plan else None,
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
    parser.add_argument(
        "--recovery-methods",
        default=",".join(RECOVERY_METHODS),
        help=f"comma-separated of {list(RECOVERY_METHODS)}, each also + int8 (phase recovery)",
    )
    parser.add_argument("--recovery-amounts", type=_amounts, default=SweepConfig.recovery_amounts)
    parser.add_argument(
        "--recovery-epochs", type=int, default=RecoveryConfig.epochs, help="distillation epochs per variant"
    )
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated of {list(PHASES)}")
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
            recovery_methods=tuple(m.strip() for m in args.recovery_methods.split(",") if m.strip()),
            recovery_amounts=args.recovery_amounts,
            recovery=RecoveryConfig(epochs=args.recovery_epochs),
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
