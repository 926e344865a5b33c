"""Served throughput and latency of each variant next to the same model without Serve:
`python -m benchmarks.throughput --json`.

Each variant's one replica (the config's deployment at 1 replica: one torch thread) is loaded by
Locust's closed-loop users sending single real texts, at each user count; requests/s and p50/p95/p99
are Locust's, after its stats reset. Beside it, in this process at one thread, the same model code
(`Predictor`) predicts the same texts in the same batch size with no serving stack, and for base a
Hugging Face `pipeline("text-classification")` does too. served / plain is the share of the model's
own speed that survives serving. `--plot`: requests/s and p95 vs users (PNG). `--quick`: base only,
one user count, short runs (< 1 minute).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import ROOT
from benchmarks.harness.cli import emit, parser, setup_logging
from benchmarks.harness.load import random_texts, wait_serving
from benchmarks.harness.locust import run_locust
from benchmarks.harness.session import ServeSession, app_entry
from deployments.run import INGRESSES
from deployments.serve_config import load_serve_config
from loading.artifact import load_tokenizer, resolve_model_dir
from loading.host import machine_info
from loading.memory import trim_heap
from loading.predict import Predictor

__all__ = ["hf_pipeline_rate", "main", "plain_rate", "texts_per_s"]

logger = logging.getLogger(__name__)


def texts_per_s(predictor: Predictor, texts: list[str], batch: int, trim: bool = False) -> float:
    """Texts/s predicting `texts` in consecutive batches of `batch` (arrival order) after one warm-up
    batch (allocations, kernel choices); `trim`: `malloc_trim` after every batch."""
    predictor.predict(texts[:batch], batch)
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        predictor.predict(texts[i : i + batch], batch)
        if trim:
            trim_heap()
    return len(texts) / (time.perf_counter() - start)


def plain_rate(model_dir: Path, texts: list[str], batch: int, cfg: dict[str, Any]) -> float:
    """Texts/s of the served model code in this process, at one thread."""
    from loading.store import load_from_disk

    torch.set_num_threads(1)
    kernels = {
        "int8_kernel": cfg.get("int8_kernel", "auto"),
        "sparse_kernel": cfg.get("sparse_kernel", "shared"),
    }
    loaded = load_from_disk(model_dir, **kernels)
    return texts_per_s(Predictor(loaded.model, loaded.tokenizer, cfg.get("max_tokens")), texts, batch)


def hf_pipeline_rate(model_dir: Path, texts: list[str], batch: int) -> float:
    """Texts/s of `transformers.pipeline("text-classification")` on the same texts and batch size."""
    from transformers import AutoModelForSequenceClassification, pipeline

    torch.set_num_threads(1)
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), local_files_only=True)
    classify = pipeline("text-classification", model=model, tokenizer=load_tokenizer(model_dir), device="cpu")
    kwargs = {"batch_size": batch, "truncation": True}
    classify(texts[:batch], **kwargs)
    start = time.perf_counter()
    classify(texts, **kwargs)
    return len(texts) / (time.perf_counter() - start)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rate, ax_p95) = plt.subplots(1, 2, figsize=(11, 4.2))
    for variant, r in results.items():
        users = [x["users"] for x in r["served"]]
        ax_rate.plot(users, [x["requests_per_s"] for x in r["served"]], marker="o", label=variant)
        ax_p95.plot(users, [x["p95_ms"] for x in r["served"]], marker="o", label=variant)
        ax_rate.axhline(r["plain_texts_per_s"], ls=":", lw=1, color=ax_rate.lines[-1].get_color())
    ax_rate.set(ylabel="requests/s (1 text each)", title="Served throughput, 1 replica")
    ax_p95.set(ylabel="p95 latency (ms)", title="p95 latency")
    ax_rate.text(0.02, 0.02, "dotted: same model, no serving", transform=ax_rate.transAxes, fontsize=8)
    users = sorted({x["users"] for r in results.values() for x in r["served"]})
    for ax in (ax_rate, ax_p95):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent users")
        ax.set_xticks(users, [str(u) for u in users])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = parser("benchmarks.throughput", __doc__, serve_port=8100)
    p.add_argument("--variants", default=None, help="default: every variant in the config")
    p.add_argument("--users", default="1,8,32,64", help="user counts; the last one is the fixed one")
    p.add_argument("--fixed-users", type=int, default=32, help="concurrency for the targets")
    p.add_argument("--seconds", type=float, default=30.0, help="per Locust run, after a reset")
    p.add_argument("--plain-texts", type=int, default=960, help="texts timed unserved (320: 18%% spread)")
    p.add_argument("--ingress", choices=INGRESSES, help="default: $BERTSERVE_INGRESS, else haproxy")
    p.add_argument("--plot", type=Path, default=None, help="write requests/s and p95 vs users here (PNG)")
    p.add_argument("--quick", action="store_true", help="base only, 32 users, short runs: < 1 minute")
    args = p.parse_args(argv)
    setup_logging()
    config = load_serve_config(args.config)
    variants = ["base"] if args.quick else (args.variants or ",".join(config.classifier_apps())).split(",")
    users = sorted({int(u) for u in args.users.split(",")} | {args.fixed_users})
    if args.quick:
        users, args.seconds, args.plain_texts = [args.fixed_users], 8.0, 48
    texts = random_texts(args.plain_texts, seed=0)
    out: dict[str, Any] = {"machine": machine_info(), "quick": args.quick, "fixed_users": args.fixed_users}
    results: dict[str, Any] = {}
    fixed: dict[str, dict[str, Any]] = {}  # each variant's Locust stats at --fixed-users
    summary = []
    with tempfile.TemporaryDirectory() as tmp, ServeSession(config, args.port, args.ingress) as s:
        for variant in variants:
            app = app_entry(config, variant)
            batch = int(app["deployments"][0].get("user_config", {}).get("max_batch_size", 16))
            plain = plain_rate(resolve_model_dir(ROOT / app["args"]["model_dir"]), texts, batch, app["args"])
            s.deploy([app_entry(config, variant, replicas=1)])
            wait_serving(s.url, variant)
            run_locust(s.url, variant, args.fixed_users, min(5.0, args.seconds), Path(tmp))  # warm-up
            served = [run_locust(s.url, variant, u, args.seconds, Path(tmp)) for u in users]
            f = fixed[variant] = next(x for x in served if x["users"] == args.fixed_users)
            results[variant] = {
                "batch_size": batch,
                "plain_texts_per_s": plain,
                "served": served,
                "served_over_plain": f["requests_per_s"] / plain,
            }
            summary.append(
                f"{variant:>16}: plain {plain:.1f} texts/s; served at {args.fixed_users} users "
                f"{f['requests_per_s']:.1f} req/s ({f['requests_per_s'] / plain:.0%} of plain), "
                f"p50/p95/p99 {f['p50_ms']:.0f}/{f['p95_ms']:.0f}/{f['p99_ms']:.0f} ms, "
                f"{f['failures']} failures"
            )
            logger.info(summary[-1])
    out |= {"ingress": s.ingress, "variants": results}
    if "base" in results:
        base_dir = resolve_model_dir(ROOT / app_entry(config, "base")["args"]["model_dir"])
        hf = hf_pipeline_rate(base_dir, texts, results["base"]["batch_size"])
        base = fixed["base"]
        out["hf_pipeline_texts_per_s"] = hf
        out["base_served_over_hf_pipeline"] = base["requests_per_s"] / hf
        summary.append(
            f"HF pipeline (base, 1 thread): {hf:.1f} texts/s; served base / pipeline = "
            f"{out['base_served_over_hf_pipeline']:.2f}x"
        )
        for variant, r in results.items():
            r["requests_per_s_over_base"] = fixed[variant]["requests_per_s"] / base["requests_per_s"]
            r["p95_over_base"] = fixed[variant]["p95_ms"] / base["p95_ms"]
            summary.append(
                f"{variant:>16}: {r['requests_per_s_over_base']:.2f}x base req/s, "
                f"p95 {r['p95_over_base']:.2f}x base"
            )
    out["machine_after"] = machine_info()
    if args.plot:
        plot(results, args.plot)
    emit(out, args.json, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
