"""How long a replica takes to attach a variant: `python -m benchmarks.attach_speed --json`.

On a private local Ray, the store holds each variant; then in each of `--actors` fresh actors (a
replica's process, with the replica's imports done): the first attach of every variant as a
per-variant replica does it (finding the store, one round trip, the tokenizer), the same as a warm
pool replica does it (at its start: store references, tokenizers and mapped pages by `prefetch`,
then every variant attached once and kept as a template, `start_ms`; a request's attach is then a
clone), and attaching it again after a forward pass (a replica that dropped it). Medians in ms.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT
from benchmarks.harness.cli import emit, listed, parser, positive_int, setup_logging
from benchmarks.harness.models import BERT_BASE_DIR
from benchmarks.harness.session import local_ray
from deployments.protocol import split_key
from deployments.serve_config import DEFAULT_MODEL, load_serve_config
from loading.artifact import resolve_model_dir
from loading.host import machine_info

__all__ = ["main", "measure"]


def measure(model_dirs: dict[str, str], actors: int) -> dict[str, Any]:
    """Medians over `actors` fresh processes per kind ("cold": a per-variant replica, "warm": a pool's)."""
    import ray

    from loading.model_store import model_store

    with local_ray(num_cpus=2, namespace="attach"):
        ray.get(model_store().ensure_many.remote(model_dirs))  # the store reads the disk once, first
        probe = ray.remote(num_cpus=0, max_calls=1)(_first_and_again)
        runs: dict[str, list] = {"cold": [], "warm": []}
        for _ in range(actors):
            for kind in runs:
                runs[kind].append(ray.get(probe.remote(model_dirs, kind == "warm")))
    return {kind: _medians(results) for kind, results in runs.items()}


def _first_and_again(model_dirs: dict[str, str], warm: bool) -> dict[str, dict[str, float]]:
    """One fresh worker: per variant, its first attach (and its store wait), then a re-attach after
    a forward pass."""
    import torch

    import deployments.pool  # noqa: F401  the replica's imports, before the clock
    from loading.store import Int8Kernel, attach, prefetch

    torch.set_num_threads(1)
    Int8Kernel.AUTO.resolve()  # the int8 probe, once per process (a pool does it at start)
    out: dict[str, dict[str, float]] = {}
    if warm:  # as `deployments.pool` starts
        start = time.perf_counter()
        prefetch(model_dirs, map_pages=True)
        prefetched = time.perf_counter()
        for variant, model_dir in model_dirs.items():
            attach(variant, model_dir, int8_kernel="auto")  # kept as a template
        out["_start"] = {
            "prefetch_ms": (prefetched - start) * 1e3,
            "templates_ms": (time.perf_counter() - prefetched) * 1e3,
        }
    ids = torch.randint(1000, 2000, (4, 32))
    for variant, model_dir in model_dirs.items():
        # A per-variant replica keeps no template (it attaches once); the pool's attach is a clone.
        first = attach(variant, model_dir, keep_for_reattach=warm, int8_kernel="auto")
        with torch.inference_mode():
            first.model(input_ids=ids)
        row = {"first_ms": first.attach_ms, "store_wait_ms": first.store_wait_ms}
        del first
        again = attach(variant, model_dir, keep_for_reattach=warm, int8_kernel="auto")
        out[variant] = {**row, "reattach_ms": again.attach_ms}
    return out


def _medians(results: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {
        name: {k: round(statistics.median(r[name][k] for r in results), 3) for k in results[0][name]}
        for name in results[0]
    }


def main(argv: list[str] | None = None) -> int:
    p = parser(__name__, __doc__)
    p.add_argument(
        "--variants",
        type=listed(),
        default=None,
        help="folders under artifacts/ (default: the default model's served ones)",
    )
    p.add_argument("--bert-base", default=str(BERT_BASE_DIR), help="'' skips it")
    p.add_argument("--actors", type=positive_int, default=5, help="fresh processes per kind (medians)")
    args = p.parse_args(argv)
    if args.variants is None:  # what serve_config.yaml serves, so that the default never goes stale
        served = {split_key(k): d for k, d in load_serve_config().model_dirs().items()}
        dirs = {v: str(resolve_model_dir(d)) for (model, v), d in served.items() if model == DEFAULT_MODEL}
    else:
        dirs = {v: str(ROOT / "artifacts" / v) for v in args.variants}
    if args.bert_base:
        dirs["bert-base"] = args.bert_base
    if missing := [d for d in dirs.values() if not (Path(d) / "config.json").is_file()]:
        p.error(f"no model folder at {missing} (make artifacts; benchmarks.replica_floor builds bert-base)")
    setup_logging()
    result = {"machine": machine_info(), "actors": args.actors, **measure(dirs, args.actors)}
    summary = [
        f"{kind:5} {name:16} " + "  ".join(f"{k} {v:.2f}" for k, v in row.items())
        for kind in ("cold", "warm")
        for name, row in result[kind].items()
    ]
    emit(result, args.json, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
