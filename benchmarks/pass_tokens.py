"""One forward pass's time per padded-token budget, the measurement behind `max_batch_tokens`:
`python -m benchmarks.pass_tokens --json` (`make pass-tokens`).

The default model (`artifacts/base`) loaded as a replica loads it (`loading.checkpoint.load_model`,
the artifact's tokenizer as `loading.encoder.TextEncoder`), on one torch thread as a replica runs,
times one pass of B texts x L tokens (real words: Dreaddit texts joined and cut to L tokens, so no
padding) for budgets B x L of 512..16384 tokens, at L=512 (B=1..32) and L=128 (B=4..128), the two
lengths side by side per budget in one run. A replica answers nothing else while a pass runs, so the
budget is the longest a short request waits behind others' texts; tokens/s says what a smaller
budget costs in throughput. Per point: one warm-up pass, then `--repeats` timed ones (median and
best). Recorded with the date, CPU (AVX-512 VNNI or not) and load average in
docs/benchmarks/pass_tokens.json (`--quick`: two budgets, reports/pass_tokens_quick.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.harness import ROOT
from benchmarks.harness.cli import emit, listed, parser, positive_int, setup_logging
from loading.encoder import TextEncoder
from loading.host import cpu_model, machine_info

__all__ = ["RECORD", "main", "measure", "pass_inputs", "pass_shapes", "summary_lines"]

logger = logging.getLogger(__name__)

RECORD = ROOT / "docs" / "benchmarks" / "pass_tokens.json"
BUDGETS = (512, 1024, 2048, 4096, 8192, 16384)  # padded tokens per pass
LENGTHS = (512, 128)  # tokens per text: the model's maximum, and a typical short post's


def pass_shapes(lengths: Sequence[int], budgets: Sequence[int]) -> list[tuple[int, int, int]]:
    """(budget, tokens per text L, texts B) for every budget and length with B x L = budget exactly,
    budgets ascending, lengths in the order given (a budget's lengths are timed one after the other)."""
    if not lengths or not budgets or min(*lengths, *budgets) < 1:
        raise ValueError(f"lengths and budgets must be positive integers, got {lengths}, {budgets}")
    return [(b, n, b // n) for b in sorted(set(budgets)) for n in lengths if b >= n and b % n == 0]


def pass_inputs(
    encoder: TextEncoder, texts: Sequence[str], length: int, count: int
) -> dict[str, torch.Tensor]:
    """Model inputs of `count` texts of exactly `length` tokens each (special tokens included): each
    (count, length), no padding. `texts` must each reach `length` tokens (they are cut to it)."""
    if len(texts) < count:
        raise ValueError(f"texts must number >= count ({count}), got {len(texts)}")
    encodings, _ = encoder.encode(texts[:count], length)
    if short := [len(e.ids) for e in encodings if len(e.ids) != length]:
        raise ValueError(f"texts must each reach {length} tokens, got some of {sorted(set(short))}")
    return encoder.pad(encodings)


def _time_pass(model: nn.Module, batch: dict[str, torch.Tensor], repeats: int) -> list[float]:
    """Milliseconds of `repeats` passes over `batch`, after one untimed (allocator, kernel choice)."""
    times = []
    with torch.inference_mode():
        for k in range(repeats + 1):
            started = time.perf_counter()
            model(**batch)
            if k:
                times.append((time.perf_counter() - started) * 1e3)
    return times


def measure(
    model: nn.Module,
    encoder: TextEncoder,
    texts: Sequence[str],
    lengths: Sequence[int],
    budgets: Sequence[int],
    repeats: int,
) -> list[dict[str, Any]]:
    """One row per (budget, length): texts, ms per pass (median, best) and tokens/s (at the median)."""
    model_max = int(getattr(model.config, "max_position_embeddings", 512))
    if max(lengths) > model_max:
        raise ValueError(f"lengths must be <= the model's {model_max} positions, got {max(lengths)}")
    rows = []
    for budget, length, count in pass_shapes(lengths, budgets):
        ms = _time_pass(model, pass_inputs(encoder, texts, length, count), repeats)
        median = statistics.median(ms)
        rows.append(
            {
                "budget_tokens": budget,
                "tokens_per_text": length,
                "texts": count,
                "ms_per_pass": round(median, 2),
                "ms_per_pass_best": round(min(ms), 2),
                "tokens_per_s": round(budget / median * 1e3),
            }
        )
        logger.info("%5d tokens = %3d x %3d: %.0f ms", budget, count, length, median)
    return rows


def summary_lines(rows: list[dict[str, Any]], lengths: Sequence[int]) -> list[str]:
    """The rows as one table: a budget per line, each length's texts, ms per pass and tokens/s."""
    head = f"{'budget':>7}" + "".join(
        f" | L={n:<4} {'texts':>5} {'ms/pass':>8} {'tokens/s':>8}" for n in lengths
    )
    lines = [head, "-" * len(head)]
    by_key = {(r["budget_tokens"], r["tokens_per_text"]): r for r in rows}
    for budget in sorted({r["budget_tokens"] for r in rows}):
        line = f"{budget:>7}"
        for n in lengths:
            r = by_key.get((budget, n))
            cells = (r["texts"], r["ms_per_pass"], r["tokens_per_s"]) if r else ("-", "-", "-")
            line += f" | {'':6} {cells[0]:>5} {cells[1]:>8} {cells[2]:>8}"
        lines.append(line)
    return lines


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Load the model as a replica does, time every shape, and the record."""
    from benchmarks.harness.load import random_texts
    from benchmarks.heavy_mix import joined_texts
    from loading.artifact import load_tokenizer
    from loading.checkpoint import load_model

    torch.set_num_threads(1)  # a replica's one torch thread (num_cpus 0.25, docs/SCALING.md)
    started = machine_info()
    model = load_model(args.model_dir)
    encoder = TextEncoder.from_pretrained_tokenizer(load_tokenizer(args.model_dir))
    count = max(texts for _, _, texts in pass_shapes(args.lengths, args.budgets))
    # ~6 characters per token in English posts: 8 per token leaves every text past the longest L.
    texts = joined_texts(random_texts(200, args.seed), count, 8 * max(args.lengths), args.seed)
    rows = measure(model, encoder, texts, args.lengths, args.budgets, args.repeats)
    cpu = cpu_model()
    config = model.config
    return {
        "command": command,
        "date": started["date"],
        "cpu": cpu,
        "avx512_vnni": "avx512_vnni" in cpu,
        "load_avg_1_5_15m_before": started["load_avg_1_5_15m"],
        "load_avg_1_5_15m_after": [round(x, 2) for x in os.getloadavg()],
        "machine": started,
        "model_dir": str(args.model_dir),
        "model": {
            "layers": config.num_hidden_layers,
            "hidden_size": config.hidden_size,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "lengths": list(args.lengths),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    p = parser(__name__, __doc__)
    p.add_argument("--model-dir", type=Path, default=ROOT / "artifacts" / "base")
    p.add_argument("--lengths", type=listed(positive_int), default=LENGTHS, help="tokens per text")
    p.add_argument("--budgets", type=listed(positive_int), default=BUDGETS, help="padded tokens per pass")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed passes per point")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help=f"default {RECORD.relative_to(ROOT)}")
    p.add_argument("--quick", action="store_true", help="budgets 512 and 2048, 2 repeats")
    args = p.parse_args(argv)
    if args.quick:
        args.budgets, args.repeats = (512, 2048), 2
    if not (args.model_dir / "config.json").is_file():
        p.error(f"--model-dir {args.model_dir}: no model there (make artifacts builds artifacts/base)")
    out = args.out or (ROOT / "reports" / "pass_tokens_quick.json" if args.quick else RECORD)
    setup_logging()
    command = " ".join(["python -m benchmarks.pass_tokens", *(sys.argv[1:] if argv is None else argv)])
    result = run(args, command)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    logger.info("wrote %s", out)
    head = [
        f"{result['model_dir']}: {result['model']['layers']} layers x {result['model']['hidden_size']}, "
        f"1 torch thread; {result['cpu']}; load {result['load_avg_1_5_15m_before']}"
    ]
    emit(result, args.json, head + summary_lines(result["rows"], args.lengths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
