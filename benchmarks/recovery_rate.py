"""How long building a recovered variant takes: seconds per training step, measured, times the steps.

Runs `training.recover.recover` (teacher pass, distillation, gradual pruning) for a few steps on
Dreaddit training texts with the default model and a BERT-base-shaped random model, side by side,
and projects the whole build (3 epochs over the base's training rows, as `training.build` runs it).

    python -m benchmarks.recovery_rate --json
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from benchmarks.harness.cli import emit, parser, positive_int, setup_logging
from benchmarks.harness.models import BERT_BASE_DIR, build_random_bert
from loading.host import machine_info
from training.finetune import FinetuneConfig, splits_of
from training.loop import cpu_count
from training.recover import RecoveryConfig, RecoverySpec, recover
from training.splits import Splits, load_splits

__all__ = ["main", "step_seconds"]


def step_seconds(model_dir: str, spec: RecoverySpec, splits: Splits, steps: int) -> float:
    """Wall seconds per step of a `steps`-step recovery, teacher pass and pruning included."""
    cfg = RecoveryConfig(epochs=1, batch_size=16)
    rows = splits.train.select(range(min(len(splits.train), steps * cfg.batch_size)))
    short = Splits(rows, splits.validation.select([]), splits.test, splits.classes, splits.test_name)
    start = time.perf_counter()
    recover(model_dir, spec, short, cfg)
    return (time.perf_counter() - start) / math.ceil(len(rows) / cfg.batch_size)


def main(argv: list[str] | None = None) -> int:
    p = parser(__name__, __doc__)
    p.add_argument("--model", default="artifacts/base", help="the default model's base artifact")
    p.add_argument("--steps", type=positive_int, default=12, help="steps timed per model")
    p.add_argument("--variant", default="pruned-kd-80", help="a recovery variant name")
    p.add_argument(
        "--bert-base", default=str(BERT_BASE_DIR), help="BERT-base-shaped artifact (built if missing)"
    )
    args = p.parse_args(argv)
    setup_logging()
    torch.set_num_threads(cpu_count())
    try:
        splits = splits_of_or_dreaddit(args.model)
    except ValueError as exc:
        p.exit(2, f"{p.prog}: error: {exc}\n")
    spec = RecoverySpec.from_name(args.variant)
    if spec is None:
        p.exit(
            2, f"{p.prog}: error: --variant must be a recovery name (pruned-kd-...), got {args.variant!r}\n"
        )
    full_steps = RecoveryConfig().epochs * math.ceil(len(splits.train) / 16)
    record = {
        "variant": args.variant,
        "train_rows": len(splits.train),
        "build_steps": full_steps,
        "models": {},
    }
    for label, folder in (
        ("default", args.model),
        ("bert-base", str(build_random_bert(Path(args.bert_base)))),
    ):
        rate = step_seconds(folder, spec, splits, args.steps)
        record["models"][label] = {"s_per_step": rate, "projected_build_min": rate * full_steps / 60}
    record["bert_base_vs_default"] = (
        record["models"]["bert-base"]["s_per_step"] / record["models"]["default"]["s_per_step"]
    )
    record["machine"] = machine_info()
    emit(
        record,
        args.json,
        [
            f"{label}: {m['s_per_step']:.2f} s/step, {m['projected_build_min']:.1f} min / {full_steps} steps"
            for label, m in record["models"].items()
        ],
    )
    return 0


def splits_of_or_dreaddit(model: str) -> Splits:
    """The base's recorded splits, else Dreaddit's (a base made elsewhere)."""
    from loading.artifact import read_variant_info

    try:
        return splits_of(read_variant_info(model))
    except ValueError:
        return load_splits(FinetuneConfig())


if __name__ == "__main__":
    raise SystemExit(main())
