"""Served throughput and latency of each variant next to the same model without Serve:
`python -m benchmarks.throughput --json`.

For each variant, one replica (the config's deployment, fixed at 1 replica: one torch thread) is
loaded by Locust (`benchmarks/locustfile.py`, single real texts, closed-loop users) at each user
count; Locust's requests/s and p50/p95/p99 are read from its CSV after its stats reset once every
user is running. Beside it, in this process with one torch thread, the same model predicts the same
texts in the same batch size with no serving stack (`Predictor`, as a replica runs it), and a plain
Hugging Face `pipeline("text-classification")` does the same for base. served / plain is the share of
the model's own speed that survives serving; the rest is serving overhead.

The last stdout line is one JSON object; `--plot` writes requests/s and p95 vs users as a PNG.
`--quick`: base only, one user count, short runs (< 1 minute).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from deployments.run import INGRESSES
from loading.artifact import load_tokenizer, resolve_model_dir
from loading.host import machine_info
from benchmarks.harness.locust import locust_command
from benchmarks.harness.session import (
    ROOT,
    ServeSession,
    app_entry,
    load_serve_config,
    post_text,
    variant_apps,
    wait_until,
)

__all__ = ["hf_pipeline_rate", "main", "plain_rate", "random_texts", "run_locust"]

logger = logging.getLogger(__name__)


def random_texts(count: int, seed: int) -> list[str]:
    """`count` Dreaddit test texts in a seeded random order (the order a load test sends them in)."""
    from training.data import dreaddit_paths, read_frame

    texts = [t for t in read_frame(dreaddit_paths()[1])["text"].tolist() if isinstance(t, str) and t.strip()]
    rng = random.Random(seed)
    return [rng.choice(texts) for _ in range(count)]


def _groups(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def plain_rate(model_dir: Path, texts: list[str], batch: int, cfg: dict[str, Any]) -> float:
    """Texts/s of the served model code in this process, batches of `batch` in arrival order."""
    from loading.predict import Predictor
    from loading.store import load_from_disk

    torch.set_num_threads(1)
    loaded = load_from_disk(
        model_dir,
        int8_kernel=cfg.get("int8_kernel", "auto"),
        sparse_kernel=cfg.get("sparse_kernel", "shared"),
    )
    predictor = Predictor(loaded.model, loaded.tokenizer, cfg.get("max_tokens"))
    predictor.predict(texts[:batch], batch)  # first call: allocations and kernel choices
    start = time.perf_counter()
    for group in _groups(texts, batch):
        predictor.predict(group, len(group))
    return len(texts) / (time.perf_counter() - start)


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


def run_locust(url: str, variant: str, users: int, seconds: float, folder: Path) -> dict[str, float]:
    """One headless Locust run of single texts at `users` closed-loop users; its aggregated stats."""
    prefix = folder / f"{variant}-{users}"
    cmd = locust_command(url, variant, users, seconds, options=["--csv", str(prefix), "--reset-stats"])
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 120)
    stats = Path(f"{prefix}_stats.csv")
    if not stats.exists():
        raise RuntimeError(f"locust wrote no stats (exit {done.returncode}): {done.stderr[-2000:]}")
    with stats.open() as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    return {
        "users": users,
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "requests_per_s": float(row["Requests/s"]),
        # Locust writes N/A when no request finished in the run (a variant far too slow): NaN, not a crash.
        **{f"p{q}_ms": float("nan") if row[f"{q}%"] == "N/A" else float(row[f"{q}%"]) for q in (50, 95, 99)},
    }


def serve_variant(session: ServeSession, variant: str, timeout_s: float = 180) -> None:
    """Deploy `variant` alone at one replica and wait until it answers."""
    session.deploy([app_entry(session.config, variant, replicas=1)])
    with httpx.Client() as client:
        wait_until(
            lambda: (r := post_text(client, session.url, variant)) is not None and r.status_code == 200,
            timeout_s,
            f"{variant} serving",
        )


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
    ax_rate.set(
        xlabel="concurrent users", ylabel="requests/s (1 text each)", title="Served throughput, 1 replica"
    )
    ax_p95.set(xlabel="concurrent users", ylabel="p95 latency (ms)", title="p95 latency")
    ax_rate.text(0.02, 0.02, "dotted: same model, no serving", transform=ax_rate.transAxes, fontsize=8)
    users = sorted({x["users"] for r in results.values() for x in r["served"]})
    for ax in (ax_rate, ax_p95):
        ax.set_xscale("log", base=2)
        ax.set_xticks(users, [str(u) for u in users])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--config", default="serve_config.yaml")
    parser.add_argument("--variants", default=None, help="default: every variant in the config")
    parser.add_argument("--users", default="1,8,32,64", help="user counts; the last one is the fixed one")
    parser.add_argument("--fixed-users", type=int, default=32, help="concurrency for the targets")
    parser.add_argument("--seconds", type=float, default=30.0, help="per Locust run, after a reset")
    parser.add_argument(
        "--plain-texts",
        type=int,
        default=960,
        help="texts timed without serving (with 320, runs differed by up to 18 percent)",
    )
    parser.add_argument("--port", type=int, default=8100, help="their own Serve (8000 may be `make serve`)")
    parser.add_argument(
        "--ingress",
        choices=INGRESSES,
        default=None,
        help="HTTP ingress (default: $BERTSERVE_INGRESS, else haproxy, as `make serve`)",
    )
    parser.add_argument("--plot", default=None, help="write requests/s and p95 vs users here (PNG)")
    parser.add_argument("--quick", action="store_true", help="base only, 32 users, short runs: < 1 minute")
    parser.add_argument("--json", action="store_true", help="(the last line is always the JSON object)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_serve_config(args.config)
    every = list(variant_apps(config))
    variants = ["base"] if args.quick else (args.variants or ",".join(every)).split(",")
    users = sorted({int(u) for u in args.users.split(",")} | {args.fixed_users})
    if args.quick:
        users, args.seconds, args.plain_texts = [args.fixed_users], 8.0, 48
    texts = random_texts(args.plain_texts, seed=0)
    before = machine_info()
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="throughput-") as tmp,
        ServeSession(config, args.port, args.ingress) as session,
    ):
        for variant in variants:
            app = app_entry(config, variant)
            batch = int(app["deployments"][0].get("user_config", {}).get("max_batch_size", 16))
            model_dir = resolve_model_dir(ROOT / app["args"]["model_dir"])
            plain = plain_rate(model_dir, texts, batch, app["args"])
            serve_variant(session, variant)
            run_locust(session.url, variant, args.fixed_users, min(5.0, args.seconds), Path(tmp))  # warm-up
            served = [run_locust(session.url, variant, u, args.seconds, Path(tmp)) for u in users]
            fixed = next(s for s in served if s["users"] == args.fixed_users)
            results[variant] = {
                "batch_size": batch,
                "plain_texts_per_s": plain,
                "served": served,
                "served_over_plain": fixed["requests_per_s"] / plain,
            }
            print(
                f"{variant:>16}: plain {plain:.1f} texts/s; served at {args.fixed_users} users "
                f"{fixed['requests_per_s']:.1f} req/s ({fixed['requests_per_s'] / plain:.0%} of plain), "
                f"p50/p95/p99 {fixed['p50_ms']:.0f}/{fixed['p95_ms']:.0f}/{fixed['p99_ms']:.0f} ms, "
                f"{fixed['failures']} failures",
                flush=True,
            )
    out: dict[str, Any] = {"machine": before, "quick": args.quick, "fixed_users": args.fixed_users}
    out["ingress"] = session.ingress
    out["variants"] = results
    if "base" in results:
        base_dir = resolve_model_dir(ROOT / app_entry(config, "base")["args"]["model_dir"])
        hf = hf_pipeline_rate(base_dir, texts, results["base"]["batch_size"])
        base_fixed = next(s for s in results["base"]["served"] if s["users"] == args.fixed_users)
        out["hf_pipeline_texts_per_s"] = hf
        out["base_served_over_hf_pipeline"] = base_fixed["requests_per_s"] / hf
        print(
            f"HF pipeline (base, 1 thread): {hf:.1f} texts/s; served base / pipeline = "
            f"{out['base_served_over_hf_pipeline']:.2f}x"
        )
        for variant, r in results.items():
            fixed = next(s for s in r["served"] if s["users"] == args.fixed_users)
            r["requests_per_s_over_base"] = fixed["requests_per_s"] / base_fixed["requests_per_s"]
            r["p95_over_base"] = fixed["p95_ms"] / base_fixed["p95_ms"]
            print(
                f"{variant:>16}: {r['requests_per_s_over_base']:.2f}x base req/s, "
                f"p95 {r['p95_over_base']:.2f}x base"
            )
    out["machine_after"] = machine_info()
    if args.plot:
        plot(results, Path(args.plot))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
