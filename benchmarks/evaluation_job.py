"""Throughput of the evaluation job, side by side: `python -m benchmarks.evaluation_job --json`.

For each variant (default base and quant of the served model) the job runs on the same rows with
1 and with 2 workers (1 CPU each), each run in a fresh output folder, and rows per second are taken
from the first shard sent to the last one written (worker start-up, imports of the model code
included, is reported apart). The rows are the test split `--repeat` times over, so that a run
lasts long enough for the last shard's tail not to decide the ratio. As a ceiling for the scaling,
the first variant also runs in 1 and 2 plain processes (no Ray) on the same rows. Then a
BERT-base-shaped classifier (random weights: speed does not depend on their values) is timed on the
same texts in one process with one thread, fp32 and int8, to turn measured per-core throughput into
an estimate for the study's 70,400-row set on a 16-core node.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch

from benchmarks.harness.cli import emit, listed, parser, positive_int, setup_logging
from benchmarks.harness.models import random_bert
from benchmarks.harness.session import local_ray
from evaluation.data import DataSpec, load_eval_data
from evaluation.job import JobConfig, run_job
from loading.artifact import load_tokenizer, resolve_model_dir
from loading.checkpoint import load_model
from loading.host import machine_info
from loading.model_store import model_store
from loading.predict import Predictor

__all__ = ["main", "measure_bert_base", "measure_job", "measure_plain_processes", "repeated_rows"]

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


def measure_job(spec: DataSpec, variant: str, workers: int, **job: Any) -> dict[str, Any]:
    """One clean job run of `variant` alone on `workers` 1-CPU workers; rows/s over its shards."""
    fixed = {"cpus_per_worker": 1.0, "bootstrap_resamples": 10, "report": False}
    with tempfile.TemporaryDirectory(prefix="job-bench-") as out:
        cfg = JobConfig(variants=(variant,), base=variant, out=out, workers=workers, **fixed, **job)
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
    procs = []
    for k in range(processes):  # rows interleaved: equal lengths on average
        args = (str(model_dir), texts[k::processes], batch_size, barrier, results)
        procs.append(ctx.Process(target=_plain_worker, args=args))
        procs[-1].start()
    seconds = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    return len(texts) / max(seconds)


def measure_bert_base(texts: list[str], tokenizer: Any, batch_size: int) -> dict[str, float]:
    """Rows/s of a BERT-base-shaped classifier (12 x 768, 110 M parameters) on one thread, fp32 and int8."""
    from compression import build_variant

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = random_bert()
        rates = {}
        for name in ("base", "quant"):
            predictor = Predictor(model if name == "base" else build_variant(model, "quant"), tokenizer)
            predictor.probabilities(texts[:batch_size], batch_size)  # warm-up: first-call allocations
            start = time.perf_counter()
            predictor.probabilities(texts, batch_size)
            rates[name] = len(texts) / (time.perf_counter() - start)
        return rates
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    p = parser(__name__, __doc__)
    p.add_argument("--variants", type=listed(), default=("base", "quant"))
    p.add_argument("--model-root", default="artifacts")
    p.add_argument("--sample", type=int, default=None, help="balanced rows (default: all 715 test rows)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeat", type=positive_int, default=3, help="time the rows this many times over")
    p.add_argument("--bert-base-rows", type=int, default=64, help="rows timed on the BERT-base shape")
    args = p.parse_args(argv)
    setup_logging()
    dirs = {v: resolve_model_dir(Path(args.model_root) / v) for v in args.variants}
    job = {"model_root": args.model_root, "batch_size": args.batch_size}  # shards: the job's 64 rows
    record: dict[str, Any] = {"machine_before": machine_info(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="job-bench-data-") as work:
        spec = repeated_rows(DataSpec(sample=args.sample), args.repeat, Path(work))
        # Workers at nice 0, as the job's own local Ray runs them (they *are* the job).
        with local_ray(_system_config={"worker_niceness": 0}):
            for variant, model_dir in dirs.items():  # the store reads each from disk once, untimed
                ray.get(model_store().ensure.remote(variant, str(model_dir)))
            for variant in dirs:
                for workers in (1, 2):
                    record["runs"].append(run := measure_job(spec, variant, workers, **job))
                    logger.info("%s, %d worker(s): %s", variant, workers, run)
        texts = load_eval_data(spec).texts
    rate = {(r["variant"], r["workers"]): r["rows_per_s"] for r in record["runs"]}
    first = args.variants[0]
    # The same rows in plain processes without Ray: how well this machine runs two at once at all.
    plain = {n: measure_plain_processes(dirs[first], texts, n, args.batch_size) for n in (1, 2)}
    texts = texts[: args.bert_base_rows]
    single = measure_bert_base(texts, load_tokenizer(dirs[first]), args.batch_size)
    before, after = record["machine_before"], machine_info()
    record.update(plain_processes_rows_per_s=plain, bert_base_1_thread_rows_per_s=single, machine_after=after)
    lines = [
        f"date {before['date']}, {before['cores']} cores, load average before {before['load_avg_1_5_15m']}, "
        f"after {after['load_avg_1_5_15m']}",
        f"{'variant':>8} | 1 worker rows/s | 2 workers rows/s | speed-up | efficiency",
        *(
            f"{v:>8} | {rate[v, 1]:15.1f} | {rate[v, 2]:16.1f} | {rate[v, 2] / rate[v, 1]:7.2f}x | "
            f"{rate[v, 2] / rate[v, 1] / 2:9.0%}"
            for v in dirs
        ),
        f"ceiling: {first} in 1 / 2 plain processes without Ray: {plain[1]:.1f} / {plain[2]:.1f} rows/s = "
        f"{plain[2] / plain[1]:.2f}x",
        f"BERT-base shape, 1 thread, {len(texts)} rows: fp32 {single['base']:.2f} rows/s, "
        f"int8 {single['quant']:.2f} rows/s",
    ]
    for name in ("base", "quant"):
        key = name if name in dirs else first
        efficiency = rate[key, 2] / rate[key, 1] / 2
        node_rate = single[name] * NODE_CORES * efficiency
        estimate = {"rows_per_s": node_rate, "minutes": STUDY_ROWS / node_rate / 60}
        record.setdefault("estimates_16_cores", {})[name] = estimate
        lines.append(
            f"estimate, {STUDY_ROWS:,} rows on {NODE_CORES} cores (per-core rate x {NODE_CORES} x measured "
            f"efficiency {efficiency:.0%}), BERT-base {name}: {node_rate:.0f} rows/s = "
            f"{estimate['minutes']:.1f} min (study: {STUDY_HOURS:.0f} h)"
        )
    emit(record, args.json, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
