"""Choose recovery hyperparameters on validation rows: `python -m training.search --variant ... --grid ...`.

Trains the variant once per combination of the grid (e.g. `--grid lr=5e-5,1e-4 kd_weight=0.5,0.9`)
and ranks the combinations by the student's accuracy on the base's validation rows (carved from its
training file). The test rows are dropped before any training, so a choice made here never saw
them; `training.build` with the chosen flags then builds the variant and gates it on test.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from loading.artifact import ArtifactError, verify_artifact
from training.data import DataError
from training.finetune import splits_of
from training.loop import cpu_count
from training.recover import RecoveryConfig, RecoverySpec, recover

__all__ = ["main", "parse_grid", "search"]

logger = logging.getLogger(__name__)


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """`["lr=5e-5,1e-4", "epochs=2,3"]` -> {"lr": [5e-05, 0.0001], "epochs": [2, 3]}, typed as the config."""
    types = {f.name: type(getattr(RecoveryConfig(), f.name)) for f in dataclasses.fields(RecoveryConfig)}
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or name not in types or not values:
            raise ValueError(
                f"grid items must look like name=v1,v2 with name one of {sorted(types)}, got {item!r}"
            )
        try:
            grid[name] = [types[name](v) for v in values.split(",")]
        except ValueError as exc:
            raise ValueError(f"{name} takes {types[name].__name__} values, got {values!r}") from exc
    return grid


def search(
    base_dir: Path, spec: RecoverySpec, grid: dict[str, list[Any]], base: RecoveryConfig
) -> list[dict]:
    """One recovery per grid point; each with its validation scores per epoch, best last epoch first."""
    splits = splits_of(verify_artifact(base_dir))
    if not len(splits.validation):
        raise DataError("the base has no validation rows (fine-tuned with validation_fraction 0)")
    splits = dataclasses.replace(splits, test=splits.test.select([]))  # never seen while choosing
    results = []
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values, strict=True))
        _, parameters = recover(base_dir, spec, splits, dataclasses.replace(base, **point))
        history = parameters["validation"]
        results.append({"point": point, "validation": history, "final": history[-1]["accuracy"]})
        logger.info("%s: validation accuracy by epoch %s", point, [round(h["accuracy"], 4) for h in history])
    return sorted(results, key=lambda r: -r["final"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.search", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="artifacts/base", help="base artifact (with recorded splits)")
    parser.add_argument(
        "--variant", required=True, help="a recovery name, e.g. pruned-kd-structured-50-3layers"
    )
    parser.add_argument("--grid", nargs="+", required=True, help="name=v1,v2 ... over RecoveryConfig fields")
    parser.add_argument("--out", type=Path, help="write the ranked results here (JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(cpu_count())
    try:
        spec = RecoverySpec.from_name(args.variant)
        if spec is None:
            raise ValueError(f"--variant must be a recovery name (pruned-kd-...), got {args.variant!r}")
        results = search(Path(args.model), spec, parse_grid(args.grid), RecoveryConfig())
    except (ArtifactError, DataError, ValueError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    for r in results:
        epochs = " / ".join(f"{100 * h['accuracy']:.1f}%" for h in r["validation"])
        print(f"{r['point']}: validation {100 * r['final']:.2f}% (by epoch {epochs})")
    if args.out:
        args.out.write_text(json.dumps({"variant": args.variant, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
