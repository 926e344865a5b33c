"""The distributed evaluation job: `python -m evaluation.job --variants base,quant --workers 2 --out DIR`.

Also runs on a cluster: `ray job submit --working-dir . -- python -m evaluation.job ...` (it joins the
cluster named by RAY_ADDRESS; without one it starts a private local Ray).

The rows are cut into fixed shards (`--shard-rows`, independent of the worker count). For each
variant, N worker actors (`evaluation.worker_pool`) attach the variant's weights zero-copy from the
model store, predict shards with `loading.predict.Predictor` (the serving path) and write each shard's
predictions to `DIR/predictions/<variant>/` atomically. A lost worker is replaced and its shard
redone; a job that dies anyway is resumed by running it again: finished shards are kept, so the final
metrics equal those of a clean one-process run. Metrics go to `DIR/metrics.json`, the report to
`DIR/report.md`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray
from tqdm import tqdm

from evaluation.data import DataError, DataSpec, check_labels, load_eval_data, model_labels
from evaluation.metrics import variant_metrics
from evaluation.report import write_report
from evaluation.shards import (
    data_fingerprint,
    plan_shards,
    prepare_variant_dir,
    read_predictions,
    shard_is_complete,
)
from evaluation.worker_pool import ShardDone, ShardTask, WorkerLostError, run_shard_tasks
from loading.artifact import ArtifactError, read_variant_info, resolve_model_dir
from loading.host import machine_info, set_worker_env
from loading.predict import MAX_PADDING
from loading.store import Int8Kernel, SparseKernel
from training.data import LabelledTable

__all__ = ["JobConfig", "add_data_arguments", "collect_metrics", "data_spec", "main", "run_job"]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
_CHARS_CAP = 2048  # ~512 tokens of English: text past the model's limit costs nothing


@dataclass(frozen=True)
class JobConfig:
    """How to evaluate: which variants, on how many workers, written where."""

    variants: tuple[str, ...] = ("base",)  # base is added first if missing: the others are compared to it
    out: str = "reports/evaluation"  # predictions, metrics.json and the report
    model_root: str = "artifacts"  # variant v is read from <model_root>/<v>/
    workers: int = 2  # worker actors, each predicting whole shards (of any variant) one at a time
    cpus_per_worker: float = 1.0  # Ray CPUs per worker; torch threads follow (min 1)
    batch_size: int = 32  # texts per forward pass
    shard_rows: int = 64  # rows per shard file: the unit of resuming and of load balancing
    max_tokens: int | None = None  # None: the model maximum; longer texts are truncated, as in serving
    int8_kernel: Int8Kernel = Int8Kernel.AUTO  # as served (serve_config.yaml)
    sparse_kernel: SparseKernel = SparseKernel.SHARED  # as served
    max_worker_losses: int = 3  # lost workers replaced per run; one more and the job stops (re-run resumes)
    bootstrap_resamples: int = 2000  # for the accuracy 95% interval
    seed: int = 0  # of the bootstrap
    base: str = "base"  # the variant agreement and McNemar compare against
    report: bool = True  # write report.md, CSV tables and plots after the metrics

    def __post_init__(self) -> None:
        if not self.variants or any(not v or "/" in v for v in self.variants):
            raise ValueError(f"variants must be non-empty names without '/', got {self.variants}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if self.batch_size < 1 or self.shard_rows < 1:
            raise ValueError(
                f"batch_size and shard_rows must be >= 1, got {self.batch_size}, {self.shard_rows}"
            )
        if self.max_worker_losses < 0:
            raise ValueError(f"max_worker_losses must be >= 0, got {self.max_worker_losses}")
        object.__setattr__(self, "int8_kernel", Int8Kernel(self.int8_kernel))
        object.__setattr__(self, "sparse_kernel", SparseKernel(self.sparse_kernel))

    def all_variants(self) -> list[str]:
        """Base first, then the others in the given order, each once."""
        return list(dict.fromkeys([self.base, *self.variants]))

    def model_dir(self, variant: str) -> Path:
        return resolve_model_dir(Path(self.model_root) / variant)


def _store_key(variant: str, model_dir: Path) -> str:
    """The served name when the folder is the served one (so evaluation maps serving's copy), else private."""
    return (
        variant if model_dir == resolve_model_dir(Path("artifacts") / variant) else f"{variant}@{model_dir}"
    )


def _fingerprint(table: LabelledTable, cfg: JobConfig, variant: str, info: Any) -> dict[str, Any]:
    return {
        "variant": variant,
        "model_hash": info.content_hash,
        "data": data_fingerprint(table),
        "rows": len(table),
        "shard_rows": cfg.shard_rows,
        "batch_size": cfg.batch_size,
        "max_tokens": cfg.max_tokens,
        "max_padding": MAX_PADDING,  # how texts are grouped into passes (float sums differ per shape)
        "int8_kernel": cfg.int8_kernel.value,
        "sparse_kernel": cfg.sparse_kernel.value,
        # Threads can change float summation order, so a resumed shard must use the same share.
        "threads": max(1, int(cfg.cpus_per_worker)),
    }


def _pending_tasks(table: LabelledTable, cfg: JobConfig, infos: dict[str, Any]) -> list[ShardTask]:
    """Every shard not yet written, variant by variant; prepares (or checks) each variant's folder."""
    tasks = []
    # Longest shards first (by characters, capped near the token limit): the last shards to finish are
    # then short ones, so workers run out of work at nearly the same time.
    cost = [
        sum(min(len(t), _CHARS_CAP) for t in table.texts[s.start : s.stop])
        for s in plan_shards(len(table), cfg.shard_rows)
    ]
    shards = sorted(plan_shards(len(table), cfg.shard_rows), key=lambda s: -cost[s.index])
    for variant in cfg.all_variants():
        model_dir = cfg.model_dir(variant)
        folder = Path(cfg.out) / "predictions" / variant
        prepare_variant_dir(folder, _fingerprint(table, cfg, variant, infos[variant]))
        key = _store_key(variant, model_dir)
        for shard in shards:
            if not shard_is_complete(shard.path(folder), shard.start, shard.rows):
                tasks.append(ShardTask(variant, key, str(model_dir), shard, str(shard.path(folder))))
    return tasks


def _check_inputs(table: LabelledTable, cfg: JobConfig) -> dict[str, Any]:
    """Each variant's artifact info, after checking that it exists and knows the table's labels."""
    infos = {}
    for variant in cfg.all_variants():
        model_dir = cfg.model_dir(variant)
        try:
            infos[variant] = read_variant_info(model_dir)
        except ArtifactError as exc:
            raise ArtifactError(f"variant {variant!r}: {exc} (build it with `make artifacts`)") from exc
        check_labels(table, model_labels(model_dir), f"variant {variant!r} ({model_dir})")
    return infos


def _ensure_ray() -> None:
    """Join RAY_ADDRESS's cluster (e.g. under `ray job submit`), else start a private local one."""
    if ray.is_initialized():
        return
    set_worker_env()  # local workers inherit this process's environment
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
    else:
        # Ray runs workers at nice 15 so they yield to its daemons; here the workers *are* the job, and at
        # nice 15 every other process on a busy node takes its time from them first (2 workers on 2
        # cores lost ~8% per row to that). Job drivers under `ray job submit` get nice 0 too.
        ray.init(
            address="local",
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            _system_config={"worker_niceness": 0},
        )


def run_job(
    spec: DataSpec, cfg: JobConfig, on_shard: Callable[[ShardDone], None] | None = None
) -> dict[str, Any]:
    """Evaluate every variant on the rows `spec` names; writes and returns the metrics.

    `on_shard` is called in the driver after each finished shard (tests use it to kill a worker).
    """
    table = load_eval_data(spec)
    infos = _check_inputs(table, cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    variants = cfg.all_variants()
    logger.info(
        "%s: %d rows, labels %s; variants %s", spec.describe(), len(table), table.label_names, variants
    )
    tasks = _pending_tasks(table, cfg, infos)
    total = len(table) * len(variants)
    done = total - sum(t.shard.rows for t in tasks)
    if done:
        logger.info("resuming: %d of %d rows already predicted in %s", done, total, out / "predictions")
    if tasks:
        _ensure_ray()
    with tqdm(total=total, initial=done, unit="row", desc="evaluation", smoothing=0.05) as progress:
        timings, startup_s = run_shard_tasks(
            tasks,
            table,
            workers=cfg.workers,
            cpus_per_worker=cfg.cpus_per_worker,
            options={
                "int8_kernel": cfg.int8_kernel.value,
                "sparse_kernel": cfg.sparse_kernel.value,
                "max_tokens": cfg.max_tokens,
                "batch_size": cfg.batch_size,
            },
            max_worker_losses=cfg.max_worker_losses,
            out=cfg.out,
            progress=progress,
            on_shard=on_shard,
        )
    results = collect_metrics(out, variants, infos, cfg)
    results["data"] = {
        "description": spec.describe(),
        "spec": asdict(spec),
        "rows": len(table),
        "skipped_empty_rows": table.skipped_rows,
        "labels": list(table.label_names),
    }
    results["job"] = {
        **_jsonable(asdict(cfg)),
        "timings": timings,
        "startup_s": startup_s,
        "machine": machine_info(),
    }
    (out / METRICS_FILE).write_text(json.dumps(results, indent=2))
    if cfg.report:
        write_report(results, out)
    return results


def collect_metrics(out: Path, variants: list[str], infos: dict[str, Any], cfg: JobConfig) -> dict[str, Any]:
    """Metrics of every variant from its shard files; agreement and McNemar against `cfg.base`."""
    frames = {v: read_predictions(out / "predictions" / v) for v in variants}
    rows = len(frames[cfg.base])
    for variant, frame in frames.items():  # the fingerprint should make this impossible; cheap to check
        if frame["index"].tolist() != list(range(rows)):
            raise ValueError(f"predictions of {variant!r} in {out} must cover rows 0-{rows - 1} once each")
    base = frames.get(cfg.base)
    results: dict[str, Any] = {"variants": {}}
    for variant in variants:
        labels = model_labels(cfg.model_dir(variant))
        metrics = variant_metrics(
            frames[variant],
            labels,
            None if variant == cfg.base else base,
            resamples=cfg.bootstrap_resamples,
            seed=cfg.seed,
        )
        info = infos[variant]
        metrics["size_bytes"] = info.size_bytes
        metrics["weights_bytes"] = info.weights_bytes
        metrics["method"] = info.method
        metrics["parameters"] = info.parameters
        results["variants"][variant] = metrics
    sizes = {v: m["size_bytes"] for v, m in results["variants"].items()}
    for metrics in results["variants"].values():
        for ref in (cfg.base, "quant"):
            if sizes.get(ref):
                metrics[f"size_vs_{'base' if ref == cfg.base else ref}"] = metrics["size_bytes"] / sizes[ref]
    return results


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v.value if hasattr(v, "value") else list(v) if isinstance(v, tuple) else v)
        for k, v in data.items()
    }


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The --data family of options (shared with the sweep)."""
    parser.add_argument("--data", default=None, help="CSV/Parquet/JSONL file (default: Dreaddit test split)")
    parser.add_argument("--text-column", default="text", help="column with the texts (PANDORA: body)")
    parser.add_argument("--label-column", default="label", help="column with the labels")
    parser.add_argument("--label-names", default=None, help="rename raw labels, e.g. '0=negative,1=positive'")
    parser.add_argument(
        "--profiles", default=None, help="PANDORA author profiles; --data is then the comments"
    )
    parser.add_argument("--sample", type=int, default=None, help="evaluate a balanced sample of N rows")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample and the bootstrap")


def data_spec(args: argparse.Namespace) -> DataSpec:
    return DataSpec(
        data=args.data,
        text_column=args.text_column,
        label_column=args.label_column,
        label_names=args.label_names,
        profiles=args.profiles,
        sample=args.sample,
        seed=args.seed,
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evaluation.job", description=__doc__.split("\n\n")[0])
    add_data_arguments(parser)
    parser.add_argument("--variants", default="base,quant", help="comma-separated variant names")
    parser.add_argument("--model-root", default="artifacts", help="folder holding one folder per variant")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-rows", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--int8-kernel", choices=[k.value for k in Int8Kernel], default="auto")
    parser.add_argument("--sparse-kernel", choices=[k.value for k in SparseKernel], default="shared")
    parser.add_argument("--max-worker-losses", type=int, default=3)
    parser.add_argument("--out", default="reports/evaluation")
    parser.add_argument("--no-report", action="store_true", help="metrics.json only")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        spec = data_spec(args)
        cfg = JobConfig(
            variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()),
            out=args.out,
            model_root=args.model_root,
            workers=args.workers,
            cpus_per_worker=args.cpus_per_worker,
            batch_size=args.batch_size,
            shard_rows=args.shard_rows,
            max_tokens=args.max_tokens,
            int8_kernel=args.int8_kernel,
            sparse_kernel=args.sparse_kernel,
            max_worker_losses=args.max_worker_losses,
            seed=args.seed,
            report=not args.no_report,
        )
        results = run_job(spec, cfg)
    except (DataError, ArtifactError, ValueError, WorkerLostError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    for name, m in results["variants"].items():
        low, high = m["accuracy_ci95"]
        logger.info(
            "%-18s acc %.4f [%.4f, %.4f]  F1 %.4f  AUC %s  %.1f MB",
            name,
            m["accuracy"],
            low,
            high,
            m["f1_macro"],
            "-" if m["auc"] is None else f"{m['auc']:.4f}",
            m["size_bytes"] / 1e6,
        )
    logger.info("wrote %s", Path(args.out) / METRICS_FILE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
