"""What one process pays to run a different BERT-base than the one it ran last: `python -m
benchmarks.forward_switch --json`.

The warm pool's switching figures (`benchmarks.spike --switching-only`) go through HTTP and Serve;
this isolates the forward pass. In one process at 1 thread, two BERT-base-shaped models with weights
in private memory (read from disk) and two attached zero-copy from the object store (mapped and
populated as a pool replica does): the same model twice against the model after the other one (its
438 MB no longer the freshest in the caches), for each kind, alternated so that each pair runs under
the same machine noise; and a store model's first forward pass after its attach against its second.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.harness.cli import emit, parser, positive_int, setup_logging
from benchmarks.harness.load import SHORT_TEXT
from benchmarks.harness.models import BERT_BASE_DIR, build_random_bert
from benchmarks.harness.session import local_ray
from loading.host import machine_info

__all__ = ["main", "measure"]


def _ms(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def measure(model_dir: Path, repeats: int, fresh: int) -> dict[str, Any]:
    """Median ms per forward pass of one short text: steady, after the other model, first after attach."""
    import torch

    from loading.predict import Predictor
    from loading.store import attach, load_from_disk, prefetch

    torch.set_num_threads(1)
    keys = [f"switch/bb-{i}" for i in range(2 + fresh)]
    with local_ray(num_cpus=2, namespace="forward-switch"):
        prefetch(dict.fromkeys(keys, model_dir), map_pages=True)
        kinds = {
            "private": [load_from_disk(model_dir) for _ in range(2)],
            "store": [attach(k, model_dir, keep_for_reattach=False) for k in keys[:2]],
        }
        encodings, _ = Predictor(kinds["store"][0].model, kinds["store"][0].tokenizer).encode([SHORT_TEXT])
        runs = {}
        for kind, (a, b) in kinds.items():
            pa, pb = (Predictor(m.model, m.tokenizer) for m in (a, b))
            runs[kind] = (lambda p=pa: p.forward(encodings), lambda p=pb: p.forward(encodings))
            for run in runs[kind] * 3:  # first passes: not counted
                run()
        times: dict[str, list[float]] = {
            f"{kind}_{case}": [] for kind in runs for case in ("same", "after_other")
        }
        for _ in range(repeats):
            for kind, (run_a, run_b) in runs.items():
                run_a()
                times[f"{kind}_same"].append(_ms(run_a))
                run_b()
                times[f"{kind}_after_other"].append(_ms(run_a))
        first, again = [], []
        for key in keys[2:]:  # attached now, as a pool replica does at a variant's first request
            runs["store"][0]()
            new = attach(key, model_dir, keep_for_reattach=False)
            p = Predictor(new.model, new.tokenizer)
            first.append(_ms(lambda p=p: p.forward(encodings)))
            again.append(_ms(lambda p=p: p.forward(encodings)))
    out = {name: round(statistics.median(v), 2) for name, v in times.items()}
    for kind in runs:
        out[f"{kind}_switch_extra_ms"] = round(out[f"{kind}_after_other"] - out[f"{kind}_same"], 2)
    extra = statistics.median(f - g for f, g in zip(first, again, strict=True))
    out["store_first_after_attach_extra_ms"] = round(extra, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    p = parser(__name__, __doc__)
    p.add_argument("--bert-base", default=str(BERT_BASE_DIR), help="built (random weights) if missing")
    p.add_argument("--repeats", type=positive_int, default=30, help="pairs timed per kind")
    p.add_argument("--fresh", type=positive_int, default=5, help="store models timed on their first pass")
    args = p.parse_args(argv)
    model_dir = Path(args.bert_base)
    if not (model_dir / "config.json").is_file():
        if model_dir.exists():
            p.error(f"--bert-base {model_dir}: not a model folder (no config.json)")
        build_random_bert(model_dir)
    setup_logging()
    result = {
        "machine": machine_info(),
        "repeats": args.repeats,
        **measure(model_dir, args.repeats, args.fresh),
    }
    summary = [
        f"{kind}: same model {result[f'{kind}_same']} ms, after the other {result[f'{kind}_after_other']} ms "
        f"({result[f'{kind}_switch_extra_ms']:+} ms)"
        for kind in ("private", "store")
    ]
    summary.append(f"store, first pass after an attach: {result['store_first_after_attach_extra_ms']:+} ms")
    emit(result, args.json, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
