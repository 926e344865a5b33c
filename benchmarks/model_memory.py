"""Does the served model code itself keep memory? `python -m benchmarks.model_memory --json`.

The soak (`benchmarks.soak`) sees a replica's USS creep up by a few MiB over minutes. This separates the
model from the serving stack: in this process, with no Ray and no HTTP, the replica's own code
(`load_from_disk` + `Predictor`, one torch thread, the config's `env_vars` such as the oneDNN cache
size and glibc's arena count) predicts random batches of 1-4 real Dreaddit texts (what 4 closed-loop
users make of the replica's batching). After every `--every` batches the heap is trimmed as an idle
replica trims it (`loading.memory.trim_heap`) and the process's anonymous memory read (heap and
anonymous maps, from /proc: what a leak grows); the trend after `--warmup` batches is judged with the
soak's own rule (`benchmarks.soak.memory_trend`). USS is recorded too, but alone in a process it also
counts the pages of libtorch and of the weights file that no other process maps, so it jumps by
~250 MiB as soon as another Python process with torch maps them as well.

The last stdout line is one JSON object. `--quick`: 600 batches.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import torch

from loading.artifact import resolve_model_dir
from loading.host import machine_info
from loading.memory import trim_heap
from benchmarks.variant_costs import served_env_vars
from benchmarks.harness.session import ROOT, app_entry, load_serve_config
from benchmarks.soak import MIB, memory_trend
from benchmarks.throughput import random_texts

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
    proc = psutil.Process()
    series: list[tuple[int, float, float]] = []
    start = time.perf_counter()
    for done in range(batches + 1):
        if done % every == 0:
            trim_heap()
            series.append((done, anonymous_mib(), proc.memory_full_info().uss / MIB))
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "serve_config.yaml")
    parser.add_argument("--variant", default="base")
    parser.add_argument("--batches", type=int, default=6000)
    parser.add_argument("--every", type=int, default=300, help="batches between two memory readings")
    parser.add_argument("--warmup", type=int, default=600, help="batches not in the trend")
    parser.add_argument("--quick", action="store_true", help="600 batches, a reading every 60")
    parser.add_argument("--json", action="store_true", help="(the last line is always the JSON object)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.every, args.warmup = 600, 60, 120
    if args.every < 1 or args.warmup < 0 or args.batches < args.warmup + 2 * args.every:
        parser.error("--every must be >= 1, --batches >= --warmup + 2 x --every (3 readings for a trend)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    env = served_env_vars(args.config)
    if any(os.environ.get(k) != v for k, v in env.items()):
        # glibc (arenas) and oneDNN (its cache size) read these once, at start: run again with them set
        argv = sys.argv[1:] if argv is None else argv
        command = [sys.executable, "-m", "benchmarks.model_memory", *argv]
        os.execve(sys.executable, command, {**os.environ, **env})
    app = app_entry(load_serve_config(args.config), args.variant)
    result = model_memory(resolve_model_dir(app["args"]["model_dir"]), args.batches, args.every, args.warmup)
    result.update(variant=args.variant, env=env, machine=machine_info())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
