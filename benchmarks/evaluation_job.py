"""Throughput of the evaluation job, side by side: `python -m benchmarks.evaluation_job`.

For each variant (default base and quant of the served model) the job runs on the same rows with
1 and with 2 workers (1 CPU each), each run in a fresh output folder, and rows per second are taken
from the first shard sent to the last one written (worker start-up, imports of the model code
included, is reported apart). The rows are the test split `--repeat` times over, so that a run
lasts long enough for the last shard's tail not to decide the ratio. Then a
BERT-base-shaped classifier (random weights: speed does not depend on their values) is timed on the
same texts in one process with one thread, fp32 and int8, to turn measured per-core throughput into
an estimate for the study's 70,400-row set on a 16-core node. As a ceiling for the scaling, the first
variant also runs in 1 and 2 plain processes (no Ray) on the same rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch

from evaluation.data import DataSpec, load_eval_data
from evaluation.job import JobConfig, _ensure_ray, run_job
from loading.artifact import load_tokenizer, resolve_model_dir
from loading.host import machine_info
from loading.model_store import model_store
from loading.predict import Predictor

__all__ = ["main", "measure_bert_base", "measure_job", "repeated_rows"]

logger = logging.getLogger(__name__)

STUDY_ROWS = 70_400  # the study's balanced PANDORA evaluation set
STUDY_HOURS = 15.0  # its one-process evaluation time
NODE_CORES = 16


def repeated_rows(spec: DataSpec, times: int, folder: Path) -> DataSpec:
    """`spec`'s rows `times` over, as a JSON-lines file in `folder` (the spec itself when once)."""
    if times == 1:
        return spec
    table = load_eval_data(spec)
    path = folder / f"rows-x{times}.jsonl"
    rows = [{"text": t, "label": y} for t, y in zip(table.texts, table.labels, strict=True)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows * times))
    return DataSpec(data=str(path))


def measure_job(spec: DataSpec, variant: str, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    """One clean job run of `variant` alone on `workers` 1-CPU workers; rows/s over its shards."""
    with tempfile.TemporaryDirectory(prefix="job-bench-") as out:
        cfg = JobConfig(
            variants=(variant,),
            base=variant,
            out=out,
            model_root=args.model_root,
            workers=workers,
            cpus_per_worker=1.0,
            batch_size=args.batch_size,
            shard_rows=args.shard_rows,
            bootstrap_resamples=10,
            report=False,
        )
        start = time.perf_counter()
        results = run_job(spec, cfg)
        total_s = time.perf_counter() - start
    timing = results["job"]["timings"][variant]
    return {
        "variant": variant,
        "workers": workers,
        "rows": timing["rows"],
        "wall_s": timing["wall_s"],
        "rows_per_s": timing["rows"] / timing["wall_s"],
        "worker_busy_s": timing["worker_s"],
        "startup_s": results["job"]["startup_s"],
        "total_s": total_s,
        "accuracy": results["variants"][variant]["accuracy"],
    }


def _plain_worker(model_dir: str, texts: list[str], batch_size: int, barrier: Any, results: Any) -> None:
    """One plain process (no Ray): load, wait for the others, then time predicting `texts`."""
    torch.set_num_threads(1)
    from loading.checkpoint import load_model

    predictor = Predictor(load_model(model_dir), load_tokenizer(model_dir))
    predictor.probabilities(texts[:batch_size], batch_size)  # warm-up
    barrier.wait()
    start = time.perf_counter()
    for i in range(0, len(texts), 64):  # the job's shard size, so batches are formed the same way
        predictor.probabilities(texts[i : i + 64], batch_size)
    results.put(time.perf_counter() - start)


def measure_plain_processes(model_dir: Path, texts: list[str], processes: int, batch_size: int) -> float:
    """Rows/s of `processes` independent single-thread processes splitting `texts`: the machine's ceiling."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    parts = [texts[k::processes] for k in range(processes)]  # interleaved: equal lengths on average
    procs = [
        ctx.Process(target=_plain_worker, args=(str(model_dir), part, batch_size, barrier, results))
        for part in parts
    ]
    for proc in procs:
        proc.start()
    seconds = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    return len(texts) / max(seconds)


def measure_bert_base(texts: list[str], tokenizer: Any, batch_size: int) -> dict[str, float]:
    """Rows/s of a BERT-base-shaped classifier (12 x 768, 110 M parameters) on one thread, fp32 and int8."""
    from transformers import BertConfig, BertForSequenceClassification

    from compression import build_variant

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = BertForSequenceClassification(BertConfig(num_labels=2)).eval()
        rates = {}
        for name in ("base", "quant"):
            variant = model if name == "base" else build_variant(model, "quant")
            predictor = Predictor(variant, tokenizer)
            predictor.probabilities(texts[:batch_size], batch_size)  # warm-up: first-call allocations
            start = time.perf_counter()
            predictor.probabilities(texts, batch_size)
            rates[name] = len(texts) / (time.perf_counter() - start)
        return rates
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.evaluation_job", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--variants", default="base,quant")
    parser.add_argument("--model-root", default="artifacts")
    parser.add_argument("--sample", type=int, default=None, help="balanced rows (default: all 715 test rows)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-rows", type=int, default=64)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="time the rows this many times over (the 715 test rows last ~15 s on 2 workers: one "
        "shard's tail or warm-up is then several %% of the run; the study's set is 70,400 rows)",
    )
    parser.add_argument("--bert-base-rows", type=int, default=64, help="rows timed on the BERT-base shape")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    work = tempfile.TemporaryDirectory(prefix="job-bench-data-")
    spec = repeated_rows(DataSpec(sample=args.sample), args.repeat, Path(work.name))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    before = machine_info()
    _ensure_ray()
    for variant in variants:  # the store reads each variant from disk once, outside the timings
        ray.get(model_store().ensure.remote(variant, str(resolve_model_dir(Path(args.model_root) / variant))))
    runs = []
    for variant in variants:
        for workers in (1, 2):
            runs.append(measure_job(spec, variant, workers, args))
            print(
                f"{variant:>8} {workers} worker(s): {runs[-1]['rows_per_s']:6.1f} rows/s "
                f"({runs[-1]['rows']} rows in {runs[-1]['wall_s']:.1f} s; "
                f"start-up {runs[-1]['startup_s']:.1f} s)",
                flush=True,
            )
    table = load_eval_data(spec)
    # The same rows in plain processes without Ray: how well this machine runs two at once at all.
    base_dir = resolve_model_dir(Path(args.model_root) / variants[0])
    plain = {n: measure_plain_processes(base_dir, table.texts, n, args.batch_size) for n in (1, 2)}
    texts = table.texts[: args.bert_base_rows]
    tokenizer = load_tokenizer(resolve_model_dir(Path(args.model_root) / variants[0]))
    single = measure_bert_base(texts, tokenizer, args.batch_size)
    after = machine_info()
    rate = {(r["variant"], r["workers"]): r["rows_per_s"] for r in runs}
    print()
    print(
        f"date {before['date']}, {before['cores']} cores, load average before {before['load_avg_1_5_15m']}, "
        f"after {after['load_avg_1_5_15m']}"
    )
    print(f"{'variant':>8} | 1 worker rows/s | 2 workers rows/s | speed-up | efficiency")
    for variant in variants:
        one, two = rate[(variant, 1)], rate[(variant, 2)]
        print(f"{variant:>8} | {one:15.1f} | {two:16.1f} | {two / one:7.2f}x | {two / one / 2:9.0%}")
    print(
        f"ceiling: {variants[0]} in 1 / 2 plain processes without Ray: "
        f"{plain[1]:.1f} / {plain[2]:.1f} rows/s = {plain[2] / plain[1]:.2f}x"
    )
    print()
    print(
        f"BERT-base shape, 1 thread, {len(texts)} rows: fp32 {single['base']:.2f} rows/s, "
        f"int8 {single['quant']:.2f} rows/s"
    )
    estimates = {}
    for name in ("base", "quant"):
        key = name if (name, 1) in rate else variants[0]
        efficiency = rate[(key, 2)] / rate[(key, 1)] / 2
        node_rate = single[name] * NODE_CORES * efficiency
        estimates[name] = {"rows_per_s": node_rate, "minutes": STUDY_ROWS / node_rate / 60}
        print(
            f"estimate, {STUDY_ROWS:,} rows on {NODE_CORES} cores (per-core rate x {NODE_CORES} x measured "
            f"efficiency {efficiency:.0%}), BERT-base {name}: {node_rate:.0f} rows/s = "
            f"{estimates[name]['minutes']:.1f} min (study: {STUDY_HOURS:.0f} h)"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "runs": runs,
                    "plain_processes_rows_per_s": plain,
                    "bert_base_1_thread_rows_per_s": single,
                    "estimates_16_cores": estimates,
                    "machine_before": before,
                    "machine_after": after,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
