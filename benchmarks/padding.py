"""How much padding a forward pass may carry, measured: `python -m benchmarks.padding --json`.

A served batch holds texts of mixed lengths. `Predictor` cuts it into passes whose padding is at
most `max_padding` x their real tokens (`loading.predict.plan_passes`). This times the same random
test texts, in batches of `--batch` in arrival order (as a replica receives them), at several
`max_padding` values side by side, one thread, and also the served default with `malloc_trim`
after every batch (what replicas did before trimming only when idle).
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.harness.cli import emit, parser, setup_logging
from benchmarks.harness.load import random_texts
from benchmarks.throughput import texts_per_s
from loading.artifact import resolve_model_dir
from loading.host import machine_info, set_worker_env
from loading.predict import MAX_PADDING, Predictor

__all__ = ["main"]

PADDINGS = (float("inf"), 1.0, 0.5, 0.25, MAX_PADDING, 0.05, 0.0)


def main(argv: list[str] | None = None) -> int:
    from loading.store import load_from_disk

    p = parser("benchmarks.padding", __doc__)
    p.add_argument("--variants", default="base,quant")
    p.add_argument("--model-root", default="artifacts")
    p.add_argument("--texts", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args(argv)
    setup_logging()
    set_worker_env()
    torch.set_num_threads(1)
    texts = random_texts(args.texts, seed=0)
    out = {"machine": machine_info(), "batch": args.batch, "texts": len(texts), "variants": {}}
    summary = []
    for variant in args.variants.split(","):
        loaded = load_from_disk(resolve_model_dir(Path(args.model_root) / variant))
        rates = {
            str(padding): texts_per_s(
                Predictor(loaded.model, loaded.tokenizer, max_padding=padding), texts, args.batch
            )
            for padding in PADDINGS
        }
        default = Predictor(loaded.model, loaded.tokenizer)
        rates[f"{MAX_PADDING}+trim_every_batch"] = texts_per_s(default, texts, args.batch, trim=True)
        out["variants"][variant] = rates
        summary.append(f"{variant:>16}: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()) + " texts/s")
    emit(out, args.json, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
