"""Build the variants of one model and measure each (the protocol: `benchmarks.variant_costs`)."""

from __future__ import annotations

import gc
import itertools
import logging
import os
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch
from tqdm import tqdm

from benchmarks.harness.models import build_random_bert
from compression import Int8DynamicQuantConfig, parse_variant
from deployments.serve_config import ServeConfig, load_serve_config
from loading.memory import trim_heap

__all__ = ["MODELS", "SERVED", "VariantBenchConfig", "kernel_options", "measure_model", "served_kernels"]

logger = logging.getLogger(__name__)

MODELS = ("default", "bert-base")
_AMOUNTS = range(60, 100, 5)
ALL_VARIANTS = ("base", "quant", *(f"pruned-{n}" for n in _AMOUNTS), *(f"pruned-quant-{n}" for n in _AMOUNTS))
SERVED = ("base", "quant", "pruned-75", "pruned-quant-75")  # the apps in serve_config.yaml


@dataclass(frozen=True)
class VariantBenchConfig:
    """What to build and measure."""

    models: tuple[str, ...] = MODELS  # "default" (MiniLM classifier) and/or "bert-base" (110M)
    variants: tuple[str, ...] = ALL_VARIANTS  # built and sized; must include base
    latency_variants: tuple[str, ...] | None = None  # None: all (default model), a spread (bert-base)
    memory_variants: tuple[str, ...] = SERVED  # replica-memory runs are slow: the served ones
    threads: tuple[int, ...] = (1, 2)  # torch threads for the latency runs
    replicas: int = 3  # replicas started one after another per memory run
    batch_size: int = 32  # texts per timed forward
    seq_len: int = 128  # tokens per text
    repeats: int = 3  # timed forwards (after one warm-up); the median is reported
    slower_tolerance: float = 0.05  # "slower than base" means by more than this share (run noise)
    served_kernels_only: bool = False  # replica memory with serve_config.yaml's kernels only (quick)

    def __post_init__(self) -> None:
        if not self.models or set(self.models) - set(MODELS) or len(set(self.models)) != len(self.models):
            raise ValueError(f"models must be distinct names from {MODELS}, got {self.models}")
        for name in self.variants:
            parse_variant(name)  # raises ValueError on an unknown name
        if "base" not in self.variants:
            raise ValueError(f"variants must include base (ratios are to it), got {self.variants}")
        for field_name in ("latency_variants", "memory_variants"):
            if extra := set(getattr(self, field_name) or ()) - set(self.variants):
                raise ValueError(f"{field_name} must be among variants, got {sorted(extra)}")
        if not self.threads or min(self.threads) < 1:
            raise ValueError(f"threads must be one or more counts >= 1, got {self.threads}")
        for field_name in ("replicas", "batch_size", "seq_len", "repeats"):
            if getattr(self, field_name) < 1:
                raise ValueError(f"{field_name} must be >= 1, got {getattr(self, field_name)}")


def kernel_options(variant: str) -> list[dict[str, str]]:
    """Every combination of `attach` kernel arguments that changes how `variant` runs ([{}] if none)."""
    from loading.store import Int8Kernel, SparseKernel

    chain = parse_variant(variant)
    quantized = any(isinstance(c, Int8DynamicQuantConfig) for c in chain)
    pruned = any(not isinstance(c, Int8DynamicQuantConfig) for c in chain)
    concrete = [k for k in Int8Kernel if k is not Int8Kernel.AUTO]  # auto is one of these on each CPU
    int8 = [{"int8_kernel": k.value} for k in concrete] if quantized else [{}]
    sparse = [{"sparse_kernel": k.value} for k in SparseKernel] if pruned else [{}]
    return [{**a, **b} for a, b in itertools.product(int8, sparse)]


def served_kernels(config: ServeConfig | None = None) -> dict[str, dict[str, str]]:
    """The kernel options each classifier app runs with, {variant: {"int8_kernel": ..., ...}}: the
    deployment's defaults where the app leaves one out, `auto` resolved for this CPU."""
    config = config or load_serve_config()
    args = {variant: config.validated_args(app) for variant, app in config.classifier_apps().items()}
    return {
        v: {"int8_kernel": a.int8_kernel.resolve().value, "sparse_kernel": a.sparse_kernel.value}
        for v, a in args.items()
    }


def _label(kernels: dict[str, str]) -> str:
    """The name of a kernel option, e.g. `int8=fbgemm,sparse=shared`; `default` for none."""
    return ",".join(f"{k.split('_')[0]}={v}" for k, v in sorted(kernels.items())) or "default"


class _Replica:
    """A fresh Ray worker that attaches variants as a Serve replica does, and measures itself."""

    def __init__(self) -> None:
        import transformers

        import loading.store  # noqa: F401  Ray's client side, the zero-copy code, compression

        transformers.utils.logging.set_verbosity_error()
        self._held: dict[str, Any] = {}  # label -> AttachedModel

    @staticmethod
    def _memory() -> tuple[int, int]:
        gc.collect()
        info = psutil.Process().memory_full_info()
        return info.uss, info.rss

    def _forward(self, label: str, batch_size: int, seq_len: int) -> float:
        """ms of one forward of `batch_size` random texts of `seq_len` tokens."""
        model = self._held[label].model
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(1000, model.config.vocab_size, (batch_size, seq_len), generator=gen)  # (B, T)
        start = time.perf_counter()
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits  # (B, labels)
        elapsed_ms = (time.perf_counter() - start) * 1e3
        assert torch.isfinite(logits).all(), "the forward gave non-finite logits"
        return elapsed_ms

    def hold(self, label: str, variant: str, model_dir: str, kernels: dict[str, str]) -> str:
        """Attach `variant` with `kernels` and keep it under `label`; returns how it was loaded."""
        from loading.store import attach

        self._held[label] = attach(variant, model_dir, keep_for_reattach=False, **kernels)
        return self._held[label].loaded_from

    def join(self, variant: str, model_dir: str, kernels: dict[str, str], seq_len: int) -> dict[str, Any]:
        """Attach `variant` as a new replica and run one (1, seq_len) forward; return the memory added."""
        torch.set_num_threads(1)  # as a served replica (num_cpus 0.5 -> 1 thread)
        self._held.clear()  # the warm-up model, if any
        gc.collect()
        trim_heap()
        uss0, rss0 = self._memory()
        loaded_from = self.hold("replica", variant, model_dir, kernels)
        trim_heap()  # as a Serve replica does after attaching and after each batch
        uss1, _ = self._memory()
        self._forward("replica", 1, seq_len)
        trim_heap()
        uss2, rss2 = self._memory()
        return {
            "pid": os.getpid(),
            "uss_growth_bytes": uss2 - uss0,
            "uss_growth_attach_bytes": uss1 - uss0,  # before the forward
            "rss_growth_bytes": rss2 - rss0,
            "attach_ms": round(self._held["replica"].attach_ms, 2),
            "loaded_from": loaded_from,
        }

    def time_round(self, labels: list[str], threads: int, batch_size: int, seq_len: int) -> dict[str, float]:
        """ms of one forward of each held model, one after another."""
        torch.set_num_threads(threads)
        return {label: round(self._forward(label, batch_size, seq_len), 1) for label in labels}


def _new_actor() -> Any:
    """A fresh worker with the environment `serve_config.yaml` gives replicas (e.g. malloc settings)."""
    import ray

    env = {"env_vars": load_serve_config().env_vars()}
    return ray.remote(num_cpus=0)(_Replica).options(runtime_env=env).remote()


def _latency(entries: dict[str, tuple[str, str, dict[str, str]]], cfg: VariantBenchConfig) -> dict[str, Any]:
    """Batch latency of each entry (label -> store key, dir, kernels), all held by one actor and
    timed in interleaved rounds after a warm-up round."""
    import ray

    out: dict[str, Any] = {}
    actor = _new_actor()
    try:
        held = []
        for label, (key, model_dir, kernels) in entries.items():
            try:
                ray.get(actor.hold.remote(label, key, model_dir, kernels))
                held.append(label)
            except ray.exceptions.RayTaskError as exc:  # one broken kernel must not sink the run
                logger.error("%s: attach failed: %s", label, exc)
                out[label] = {"error": str(exc)[-500:]}
        for n in cfg.threads:
            runs: dict[str, list[float]] = {label: [] for label in held}
            for i in tqdm(range(cfg.repeats + 1), desc=f"latency rounds, {n} threads", unit="round"):
                times = ray.get(actor.time_round.remote(held, n, cfg.batch_size, cfg.seq_len))
                for label, ms in times.items():
                    runs[label] += [ms] if i else []  # round 0 warms up
            for label, ms in runs.items():
                median = statistics.median(ms)
                per_s = round(cfg.batch_size / median * 1e3, 2)
                out.setdefault(label, {})[str(n)] = {"median_ms": median, "runs_ms": ms, "seq_per_s": per_s}
                logger.info("%s at %d threads: %s ms", label, n, ms)
    except ray.exceptions.RayActorError as exc:  # e.g. a kernel crashed the process
        logger.error("the latency actor died: %s", exc)
        for label in entries:
            out.setdefault(label, {}).update(error=str(exc)[-500:])
    finally:
        ray.kill(actor)
    return out


def _replica_memory(
    key: str, model_dir: str, warm: tuple[str, str], kernels: dict[str, str], cfg: VariantBenchConfig
) -> dict[str, Any]:
    """USS/RSS growth of `cfg.replicas` fresh actors attaching `key` one after another, each first
    warmed up on the tiny `warm` model with the same kernels."""
    import ray

    actors = [_new_actor() for _ in range(cfg.replicas)]
    try:
        ray.get([a.join.remote(*warm, kernels, cfg.seq_len) for a in actors])
        rows = [ray.get(a.join.remote(key, model_dir, kernels, cfg.seq_len)) for a in actors]
    finally:
        for actor in actors:
            ray.kill(actor)
    uss = [r["uss_growth_bytes"] for r in rows]
    return {"replicas": rows, "first_uss_bytes": uss[0], "added_max_uss_bytes": max(uss[1:], default=None)}


def measure_model(
    model_dir: str | Path, out_root: str | Path, cfg: VariantBenchConfig, tag: str = "model"
) -> dict[str, Any]:
    """Build `cfg.variants` of the model in `model_dir` under `out_root` and measure each one.

    Needs a running Ray session; the model store gets run-unique keys, dropped again at the end.
    """
    import ray

    from loading.artifact import read_variant_info
    from loading.build import build_variants
    from loading.model_store import model_store

    if not ray.is_initialized():
        raise RuntimeError("measure_model needs a running Ray session (ray.init first)")
    model_dir, out_root = Path(model_dir).resolve(), Path(out_root).resolve()
    timed = cfg.latency_variants or cfg.variants
    logger.info("%s: building %d variants in %s", tag, len(cfg.variants) - 1, out_root)
    seconds = {"start": time.perf_counter()}  # each phase's end time, in order
    build_variants(model_dir, [v for v in cfg.variants if v != "base"], out_root, if_missing=True)
    seconds["build"] = time.perf_counter()
    dirs = {v: str(model_dir if v == "base" else out_root / v) for v in cfg.variants}
    # A 2-layer, hidden-32 random BERT's variants: attached first so imports don't count in memory.
    warm_root = out_root.parent / f"warmup-{out_root.name}"
    tiny = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    warm_built = [v for v in cfg.memory_variants if v != "base"]
    build_variants(build_random_bert(warm_root / "base", **tiny), warm_built, warm_root, if_missing=True)
    infos = {v: read_variant_info(d) for v, d in dirs.items()}
    base, quant = infos["base"], infos.get("quant")
    served = served_kernels()
    prefix = f"vbench-{uuid.uuid4().hex[:8]}-{tag}"  # store keys: unique per run
    store = model_store()
    rows: dict[str, Any] = {}
    try:
        for variant in tqdm(cfg.variants, desc=f"{tag}: object store", unit="variant"):
            info = infos[variant]
            stored = ray.get(store.ensure.remote(f"{prefix}-{variant}", dirs[variant]))
            rows[variant] = row = {
                "size_bytes": info.size_bytes,
                "weights_bytes": info.weights_bytes,
                "weights_vs_base": round(info.weights_bytes / base.weights_bytes, 4),
                "size_vs_base": round(info.size_bytes / base.size_bytes, 4),
                "dense_sparsity": info.parameters.get("dense_sparsity"),
                "store_arena_bytes": stored["arena_bytes"],
                "store_tensor_bytes": stored["tensor_bytes"],
            }
            if variant.startswith("pruned-quant") and quant is not None:
                row["weights_vs_quant"] = round(info.weights_bytes / quant.weights_bytes, 4)
            if variant not in timed and variant not in cfg.memory_variants:
                ray.get(store.drop.remote(f"{prefix}-{variant}"))  # BERT-base arenas are 0.2-0.4 GB
        seconds["store"] = time.perf_counter()
        entries = {
            f"{v}/{_label(k)}": (f"{prefix}-{v}", dirs[v], k) for v in timed for k in kernel_options(v)
        }
        logger.info("%s: timing %d (variant, kernel) options", tag, len(entries))
        for label, stats in _latency(entries, cfg).items():
            variant, kernel = label.split("/")
            rows[variant].setdefault("latency", {})[kernel] = stats
        seconds["latency"] = time.perf_counter()
        for variant in tqdm(cfg.memory_variants, desc=f"{tag}: replica memory", unit="variant"):
            warm = (f"{prefix}-warmup-{variant}", str((warm_root / variant).resolve()))
            ray.get(store.ensure.remote(*warm))
            memory = rows[variant]["memory"] = {}
            for kernels in kernel_options(variant):
                label = _label(kernels)
                is_served = variant in served and all(served[variant][k] == v for k, v in kernels.items())
                if cfg.served_kernels_only and not is_served:
                    continue
                try:
                    summary = _replica_memory(f"{prefix}-{variant}", dirs[variant], warm, kernels, cfg)
                    added = summary["added_max_uss_bytes"]
                    summary["added_vs_weights"] = added and round(added / infos[variant].weights_bytes, 4)
                except ray.exceptions.RayError as exc:  # one broken kernel must not sink the run
                    logger.error("%s %s memory failed: %s", variant, label, exc)
                    summary = {"error": str(exc)[-500:]}
                shared = all(v == "shared" for v in kernels.values())
                memory[label] = summary | {"kernels": kernels, "served": is_served, "shared": shared}
                logger.info("%s %s %s memory %s", tag, variant, label, memory[label])
    finally:
        for variant in cfg.variants:
            ray.get(store.drop.remote(f"{prefix}-{variant}"))
            ray.get(store.drop.remote(f"{prefix}-warmup-{variant}"))
    seconds["memory"] = time.perf_counter()
    result = {
        "model_dir": str(model_dir),
        "num_parameters": base.num_parameters,
        "latency_variants": list(timed),
        "seconds": {b: round(seconds[b] - seconds[a], 1) for a, b in itertools.pairwise(seconds)},
        "variants": rows,
    }
    result["targets"], result["target_values"] = _targets(rows, cfg)
    return result


def _targets(rows: dict[str, Any], cfg: VariantBenchConfig) -> tuple[dict[str, bool], dict[str, Any]]:
    """The project's targets as booleans, and the numbers they were judged on."""
    ok: dict[str, bool] = {}
    values: dict[str, Any] = {}
    for name, variant, key, limit in (
        ("quant_le_42pct_of_base", "quant", "weights_vs_base", 0.42),
        ("pruned75_le_50pct_of_base", "pruned-75", "weights_vs_base", 0.50),
        ("pruned_quant75_le_60pct_of_quant", "pruned-quant-75", "weights_vs_quant", 0.60),
    ):
        if (value := rows.get(variant, {}).get(key)) is not None:
            ok[name], values[name] = value <= limit, value
    base_stats = rows["base"].get("latency", {}).get("default", {})
    base_ms = {} if "error" in base_stats else {n: s["median_ms"] for n, s in base_stats.items()}
    if base_ms:
        slower = {}  # variant -> {threads: best latency / base latency}, where over the tolerance
        for variant, row in rows.items():
            ok_stats = [s for s in row.get("latency", {}).values() if "error" not in s]
            for n, ms in base_ms.items():
                best = min((s[n]["median_ms"] for s in ok_stats), default=None)
                if best is not None and best > ms * (1 + cfg.slower_tolerance):
                    slower.setdefault(variant, {})[n] = round(best / ms, 3)
        ok["no_variant_slower_than_base"] = not slower
        values["no_variant_slower_than_base"] = slower
    for kind in ("served", "shared"):
        name = f"added_replica_lt_25pct_of_weights_{kind}_kernels"
        worst = {  # variant -> added-replica USS / weights bytes with that kind of kernel option
            variant: s["added_vs_weights"]
            for variant, row in rows.items()
            for s in row.get("memory", {}).values()
            if s.get(kind) and s.get("added_vs_weights") is not None
        }
        if worst:
            ok[name], values[name] = max(worst.values()) < 0.25, worst
    return ok, values
