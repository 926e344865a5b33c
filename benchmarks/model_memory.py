"""Does the served model code itself keep memory? `python -m benchmarks.model_memory --json`.

The soak sees a replica's USS creep up by a few MiB over minutes. This separates the model from the
serving stack: in this process, with no Ray and no HTTP, the replica's own code (`load_from_disk` +
`Predictor`, one torch thread, the config's `env_vars`) predicts random batches of 1-4 Dreaddit texts
(what 4 closed-loop users make of the replica's batching). Every `--every` batches the heap is trimmed
as an idle replica trims it and the anonymous memory (heap and anonymous maps: what a leak grows) is
read; its trend after `--warmup` batches is judged by the soak's rule (`benchmarks.soak.memory_trend`).
USS is recorded too, but alone in a process it also counts libtorch's and the weights' pages, so it
jumps by ~250 MiB as soon as another torch process maps them. `--quick`: 600 batches.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import ROOT
from benchmarks.harness.cli import emit, parser, setup_logging
from benchmarks.harness.load import random_texts
from benchmarks.harness.replicas import memory_mib
from benchmarks.harness.session import app_entry
from benchmarks.soak import memory_trend
from deployments.serve_config import DEFAULT_PATH, load_serve_config
from loading.artifact import resolve_model_dir
from loading.host import machine_info
from loading.memory import trim_heap

__all__ = ["anonymous_mib", "main", "model_memory"]

logger = logging.getLogger(__name__)


def anonymous_mib(pid: int | str = "self") -> float:
    """Anonymous memory of a process (heap, anonymous maps), MiB: /proc/<pid>/smaps_rollup (Linux)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/smaps_rollup has no Anonymous line")


def model_memory(model_dir: Path, batches: int, every: int, warmup: int, seed: int = 0) -> dict[str, Any]:
    """Anonymous memory and USS after a heap trim every `every` batches of 1-4 random texts, and the
    anonymous memory's trend after `warmup` batches."""
    from loading.predict import Predictor
    from loading.store import load_from_disk

    torch.set_num_threads(1)
    texts = random_texts(4000, seed)
    loaded = load_from_disk(model_dir)
    predictor = Predictor(loaded.model, loaded.tokenizer, None)
    rng = random.Random(seed)
    series: list[tuple[int, float, float]] = []
    start = time.perf_counter()
    for done in range(batches + 1):
        if done % every == 0:
            trim_heap()
            series.append((done, anonymous_mib(), memory_mib(os.getpid())["uss_mib"]))
            logger.info("%d batches: anonymous %.1f MiB, USS %.1f MiB", *series[-1])
        if done < batches:
            predictor.predict(rng.sample(texts, rng.randint(1, 4)), 16)
    return {
        "batches": batches,
        "seconds": round(time.perf_counter() - start, 1),
        "series_anonymous_uss_mib": [[n, round(anon, 1), round(uss, 1)] for n, anon, uss in series],
        "anonymous": memory_trend([(float(n), anon) for n, anon, _ in series], float(warmup)),
    }


def main(argv: list[str] | None = None) -> int:
    p = parser("benchmarks.model_memory", __doc__)
    p.add_argument("--config", type=Path, default=DEFAULT_PATH)
    p.add_argument("--variant", default="base")
    p.add_argument("--batches", type=int, default=6000)
    p.add_argument("--every", type=int, default=300, help="batches between two memory readings")
    p.add_argument("--warmup", type=int, default=600, help="batches not in the trend")
    p.add_argument("--quick", action="store_true", help="600 batches, a reading every 60")
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.every, args.warmup = 600, 60, 120
    if args.every < 1 or args.warmup < 0 or args.batches < args.warmup + 2 * args.every:
        p.error("--every must be >= 1, --batches >= --warmup + 2 x --every (3 readings for a trend)")
    setup_logging()
    config = load_serve_config(args.config)
    app = app_entry(config, args.variant)
    env = {str(k): str(v) for k, v in config.env_vars(app).items()}
    if any(os.environ.get(k) != v for k, v in env.items()):
        # glibc (arenas) and oneDNN (its cache size) read these once, at start: run again with them set
        argv = sys.argv[1:] if argv is None else argv
        command = [sys.executable, "-m", "benchmarks.model_memory", *argv]
        os.execve(sys.executable, command, {**os.environ, **env})
    model_dir = resolve_model_dir(ROOT / app["args"]["model_dir"])
    result = model_memory(model_dir, args.batches, args.every, args.warmup)
    result.update(variant=args.variant, env=env, machine=machine_info())
    a = result["anonymous"]
    summary = (
        f"{args.variant}: anonymous {a['start_mib']} -> {a['end_mib']} MiB (growth {a['growth_mib']}, "
        f"noise {a['noise_mib']}): {'growing' if a['growing'] else 'not growing'}"
    )
    emit(result, args.json, [summary])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
