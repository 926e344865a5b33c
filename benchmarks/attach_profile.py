"""Where a zero-copy attach spends its time: `python -m benchmarks.attach_profile --json`.

On a BERT-base-shaped classifier (random weights), in one process with its own local Ray: median
ms of getting the skeleton from the object store (includes unpickling it), getting the arena (a
mapping, no copy), unpickling the skeleton alone, and `replace_tensors_` with and without page
protection.
"""

from __future__ import annotations

import gc
import pickle
import statistics
import time

from benchmarks.harness.cli import emit, parser, positive_int, setup_logging
from benchmarks.harness.models import random_bert
from benchmarks.harness.session import local_ray
from loading.host import machine_info

__all__ = ["main", "profile_attach"]


def profile_attach(repeats: int = 30) -> dict[str, float]:
    """Median ms per step over `repeats` attaches, on a private local Ray."""
    import ray

    from loading.zerocopy import extract_tensors, replace_tensors_

    skeleton, arena = extract_tensors(random_bert())
    blob = pickle.dumps(skeleton)
    steps: dict[str, list[float]] = {
        k: [] for k in ("get_skeleton", "get_arena", "unpickle_skeleton", "replace", "replace_protected")
    }
    with local_ray(num_cpus=1):
        skeleton_ref, arena_ref = ray.put(skeleton), ray.put(arena)
        del skeleton, arena
        gc.collect()
        gc.freeze()  # the collector then skips the import-time heap between attaches
        for _ in range(repeats):
            for protect in (False, True):
                t0 = time.perf_counter()
                skel = ray.get(skeleton_ref)
                t1 = time.perf_counter()
                mapped = ray.get(arena_ref)
                t2 = time.perf_counter()
                replace_tensors_(skel, mapped, protect=protect)
                steps["replace_protected" if protect else "replace"].append((time.perf_counter() - t2) * 1e3)
                if not protect:
                    steps["get_skeleton"].append((t1 - t0) * 1e3)
                    steps["get_arena"].append((t2 - t1) * 1e3)
                del skel, mapped
                gc.collect()
            t0 = time.perf_counter()
            pickle.loads(blob)
            steps["unpickle_skeleton"].append((time.perf_counter() - t0) * 1e3)
    return {f"{k}_ms": round(statistics.median(v), 3) for k, v in steps.items()}


def main(argv: list[str] | None = None) -> int:
    p = parser(__name__, __doc__)
    p.add_argument("--repeats", type=positive_int, default=30, help="attaches timed per step")
    args = p.parse_args(argv)
    setup_logging()
    result = {"machine": machine_info(), "repeats": args.repeats, **profile_attach(args.repeats)}
    emit(result, args.json, [f"{k}: {v}" for k, v in result.items() if k.endswith("_ms")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
