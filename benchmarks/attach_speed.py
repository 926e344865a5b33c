"""How long a replica takes to attach a variant: `python -m benchmarks.attach_speed --json`.

On a private local Ray, the store holds each variant; then in each of `--actors` fresh actors (a
replica's process, with the replica's imports done): the first attach of every variant as a
per-variant replica does it (finding the store, one round trip, the tokenizer), the same as a warm
pool replica does it (store references, tokenizers and mapped pages fetched at its start by
`prefetch`, then one attach to warm the code path), and attaching it again after a forward pass
(a pool replica that dropped it). Medians in ms. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

from loading.host import machine_info
from benchmarks.harness.session import ROOT

__all__ = ["main"]

logger = logging.getLogger(__name__)


def measure(model_dirs: dict[str, str], actors: int) -> dict[str, Any]:
    import ray

    from loading.model_store import model_store

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="attach")
    try:
        ray.get(model_store().ensure_many.remote(model_dirs))  # the store reads the disk once, first
        probe = ray.remote(num_cpus=0, max_calls=1)(_first_and_again)
        runs = {"cold": [], "warm": []}
        for _ in range(actors):
            for kind in runs:
                runs[kind].append(ray.get(probe.remote(model_dirs, kind == "warm")))
    finally:
        ray.shutdown()
    return {kind: _medians(results) for kind, results in runs.items()}


def _first_and_again(model_dirs: dict[str, str], warm: bool) -> dict[str, dict[str, float]]:
    """One fresh worker: per variant, its first attach (and its store wait), then a re-attach after
    a forward pass."""
    import torch

    import deployments.pool  # noqa: F401  the replica's imports, before the clock
    from loading.store import Int8Kernel, attach, keep_template_, prefetch

    torch.set_num_threads(1)
    Int8Kernel.AUTO.resolve()  # the int8 probe, once per process (a pool does it at start)
    out: dict[str, dict[str, float]] = {}
    if warm:
        start = time.perf_counter()
        prefetch(model_dirs, map_pages=True)
        out["_prefetch"] = {"ms": (time.perf_counter() - start) * 1e3}
        variant, model_dir = next(iter(model_dirs.items()))  # as `deployments.pool` warms up
        attach(variant, model_dir, keep_for_reattach=False, int8_kernel="auto")
    ids = torch.randint(1000, 2000, (4, 32))
    for variant, model_dir in model_dirs.items():
        first = attach(variant, model_dir, keep_for_reattach=False, int8_kernel="auto")
        with torch.inference_mode():
            first.model(input_ids=ids)
        keep_template_(first)  # what the pool does after answering
        row = {"first_ms": first.attach_ms, "store_wait_ms": first.store_wait_ms}
        del first
        again = attach(variant, model_dir, keep_for_reattach=False, int8_kernel="auto")
        row["reattach_ms"] = again.attach_ms
        out[variant] = row
    return out


def _medians(results: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        name: {k: round(statistics.median(r[name][k] for r in results), 3) for k in results[0][name]}
        for name in results[0]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.attach_speed", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--variants", default="base,quant,pruned-75,pruned-quant-75", help="under artifacts/")
    parser.add_argument(
        "--bert-base", default=str(ROOT / "artifacts" / "bert-base-random"), help="'' skips it"
    )
    parser.add_argument("--actors", type=int, default=5, help="fresh processes per kind; medians over them")
    parser.add_argument("--json", action="store_true", help="(the last line is always the JSON object)")
    args = parser.parse_args(argv)
    if args.actors < 1:
        parser.error(f"--actors must be >= 1, got {args.actors}")
    dirs = {v: str(ROOT / "artifacts" / v) for v in args.variants.split(",") if v}
    if args.bert_base:
        dirs["bert-base"] = args.bert_base
    missing = [d for d in dirs.values() if not (Path(d) / "config.json").is_file()]
    if missing:
        parser.error(
            f"no model folder at {missing} (make artifacts; benchmarks.replica_floor builds bert-base)"
        )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = {"machine": machine_info(), "actors": args.actors, **measure(dirs, args.actors)}
    for kind in ("cold", "warm"):
        for name, row in result[kind].items():
            print(f"{kind:5} {name:16} " + "  ".join(f"{k} {v:.2f}" for k, v in row.items()))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
