"""Where a zero-copy attach spends its time: `python -m benchmarks.attach_profile`.

On a BERT-base-shaped classifier (random weights), in one process with its own local Ray: median
ms of getting the skeleton from the object store (includes unpickling it), getting the arena (a
mapping, no copy), unpickling the skeleton alone, and `replace_tensors_` with and without page
protection. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import pickle
import statistics
import time

__all__ = ["main", "profile_attach"]

logger = logging.getLogger(__name__)


def profile_attach(repeats: int = 30) -> dict[str, float]:
    """Median ms per step over `repeats` attaches; needs no running Ray (starts a local one)."""
    import ray
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from loading.host import set_worker_env
    from loading.zerocopy import extract_tensors, replace_tensors_

    set_worker_env()
    torch.manual_seed(0)
    skeleton, arena = extract_tensors(BertForSequenceClassification(BertConfig(num_labels=2)).eval())
    blob = pickle.dumps(skeleton)
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        skeleton_ref, arena_ref = ray.put(skeleton), ray.put(arena)
        del skeleton, arena
        gc.collect()
        gc.freeze()  # the collector then skips the import-time heap between attaches
        steps: dict[str, list[float]] = {
            k: [] for k in ("get_skeleton", "get_arena", "unpickle_skeleton", "replace", "replace_protected")
        }
        for _ in range(repeats):
            for protect in (False, True):
                t0 = time.perf_counter()
                skel = ray.get(skeleton_ref)
                t1 = time.perf_counter()
                mapped = ray.get(arena_ref)
                t2 = time.perf_counter()
                replace_tensors_(skel, mapped, protect=protect)
                t3 = time.perf_counter()
                if not protect:
                    steps["get_skeleton"].append((t1 - t0) * 1e3)
                    steps["get_arena"].append((t2 - t1) * 1e3)
                steps["replace_protected" if protect else "replace"].append((t3 - t2) * 1e3)
                del skel, mapped
                gc.collect()
            t4 = time.perf_counter()
            pickle.loads(blob)
            steps["unpickle_skeleton"].append((time.perf_counter() - t4) * 1e3)
    finally:
        ray.shutdown()
    return {f"{k}_ms": round(statistics.median(v), 3) for k, v in steps.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attach_profile", description=__doc__)
    parser.add_argument("--repeats", type=int, default=30, help="attaches timed per step")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from loading.host import machine_info

    result = {"machine": machine_info(), "repeats": args.repeats, **profile_attach(args.repeats)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
