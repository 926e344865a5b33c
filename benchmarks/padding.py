"""How much padding a forward pass may carry, measured: `python -m benchmarks.padding --json`.

A served batch holds texts of mixed lengths. `Predictor` cuts it into passes whose padding is at
most `max_padding` x their real tokens (`loading.predict.plan_passes`). This times the same random
test texts, in batches of `--batch` in arrival order (as a replica receives them), at several
`max_padding` values side by side, one thread, and also the served default with `malloc_trim`
after every batch (what replicas did before trimming only when idle). The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from loading.artifact import resolve_model_dir
from loading.host import machine_info, set_worker_env
from loading.memory import trim_heap
from loading.predict import MAX_PADDING, Predictor

__all__ = ["main", "texts_per_s"]

PADDINGS = (float("inf"), 1.0, 0.5, 0.25, MAX_PADDING, 0.05, 0.0)


def texts_per_s(predictor: Predictor, texts: list[str], batch: int, trim: bool = False) -> float:
    """Texts/s predicting `texts` in consecutive batches of `batch` (after one warm-up batch)."""
    predictor.predict(texts[:batch], batch)
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        predictor.predict(texts[i : i + batch], batch)
        if trim:
            trim_heap()
    return len(texts) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    from loading.store import load_from_disk
    from benchmarks.throughput import random_texts

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.padding", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--variants", default="base,quant")
    parser.add_argument("--model-root", default="artifacts")
    parser.add_argument("--texts", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="(the last line is always the JSON object)")
    args = parser.parse_args(argv)
    set_worker_env()
    torch.set_num_threads(1)
    texts = random_texts(args.texts, seed=0)
    out: dict[str, Any] = {
        "machine": machine_info(),
        "batch": args.batch,
        "texts": len(texts),
        "variants": {},
    }
    for variant in args.variants.split(","):
        loaded = load_from_disk(resolve_model_dir(Path(args.model_root) / variant))
        rates = {}
        for padding in PADDINGS:
            predictor = Predictor(loaded.model, loaded.tokenizer, max_padding=padding)
            rates[str(padding)] = texts_per_s(predictor, texts, args.batch)
        default = Predictor(loaded.model, loaded.tokenizer)
        rates[f"{MAX_PADDING}+trim_every_batch"] = texts_per_s(default, texts, args.batch, trim=True)
        out["variants"][variant] = rates
        print(
            f"{variant:>16}: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()) + " texts/s", flush=True
        )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
