"""What each compressed variant costs: bytes on disk, bytes in the object store, replica memory, latency.

    python -m benchmarks.variant_costs --json     # both models, ~30-45 min on 2 shared cores; JSON last
    python -m benchmarks.variant_costs --quick    # smoke test: default model, served variants, batch 8

For each model (`default` = `artifacts/base`, the MiniLM-L6 classifier; `bert-base` = `BertConfig()`
with 2 labels and random weights) the variants base, quant, pruned-{60..95} and pruned-quant-{60..95}
(L1 unstructured) are built into a temp folder and measured:

- disk: `variant.json` size_bytes and weights_bytes, as a ratio to base (pruned-quant also to quant);
- object store: the bytes of the weight arena the model store holds for the variant;
- replica memory: k fresh Ray actors attach the variant one after another (each keeps it while the
  next joins) and run one forward; each reports its USS and RSS growth from a baseline taken after a
  warm-up attach of a tiny model of the same variant kind, so imports and lazy kernel set-up don't count;
- latency: one batch (32 texts x 128 random token ids, attention mask all ones) in an actor that
  attached the variant exactly as a replica does; median of 3 after a warm-up round, per torch thread
  count. Options are timed in interleaved rounds so that load from other jobs hits them all alike.

Memory and latency are measured for every kernel option `loading.store.attach` offers the variant:
`int8_kernel` shared/fbgemm for int8 variants and, when `attach` takes one, `sparse_kernel` for pruned ones.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from compression import Int8DynamicQuantConfig, parse_variant
from loading.host import machine_info, set_worker_env
from loading.memory import trim_heap

__all__ = ["MODELS", "VariantBenchConfig", "kernel_options", "main", "measure_model", "run_benchmark"]

logger = logging.getLogger(__name__)

MODELS = ("default", "bert-base")
_AMOUNTS = range(60, 100, 5)
_ALL_VARIANTS = ("base", "quant", *(f"pruned-{n}" for n in _AMOUNTS))
_ALL_VARIANTS += tuple(f"pruned-quant-{n}" for n in _AMOUNTS)
_SERVED = ("base", "quant", "pruned-75", "pruned-quant-75")  # the apps in serve_config.yaml
# ~5 s per BERT-base forward at 1 thread: time a spread of amounts, not all sixteen.
_BERT_BASE_LATENCY = ("base", "quant", "pruned-60", "pruned-75", "pruned-90", "pruned-95")
_BERT_BASE_LATENCY += ("pruned-quant-75", "pruned-quant-90")
_SERVE_CONFIG = Path(__file__).resolve().parents[1] / "serve_config.yaml"
_PROJECT_ROOT = Path(__file__).resolve().parents[1]
_DEFAULT_ARTIFACT = _PROJECT_ROOT / "artifacts" / "base"


@dataclass(frozen=True)
class VariantBenchConfig:
    """What to build and measure."""

    models: tuple[str, ...] = MODELS  # "default" (MiniLM classifier) and/or "bert-base" (110M)
    variants: tuple[str, ...] = _ALL_VARIANTS  # built and sized; must include base
    latency_variants: tuple[str, ...] | None = None  # None: all (default model), a spread (bert-base)
    memory_variants: tuple[str, ...] = _SERVED  # replica-memory runs are slow: the served ones
    threads: tuple[int, ...] = (1, 2)  # torch threads for the latency runs
    replicas: int = 3  # replicas started one after another per memory run
    batch_size: int = 32  # texts per timed forward
    seq_len: int = 128  # tokens per text
    repeats: int = 3  # timed forwards (after one warm-up); the median is reported
    slower_tolerance: float = 0.05  # "slower than base" means by more than this share (run noise)
    served_kernels_only: bool = False  # replica memory with serve_config.yaml's kernels only (quick)

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if not self.models or unknown or len(set(self.models)) != len(self.models):
            raise ValueError(f"models must be distinct names from {MODELS}, got {self.models}")
        for name in self.variants:
            parse_variant(name)  # raises ValueError on an unknown name
        if "base" not in self.variants:
            raise ValueError(f"variants must include base (ratios are to it), got {self.variants}")
        for field_name in ("latency_variants", "memory_variants"):
            extra = set(getattr(self, field_name) or ()) - set(self.variants)
            if extra:
                raise ValueError(f"{field_name} must be among variants, got {sorted(extra)}")
        if not self.threads or any(t < 1 for t in self.threads):
            raise ValueError(f"threads must be one or more counts >= 1, got {self.threads}")
        for field_name in ("replicas", "batch_size", "seq_len", "repeats"):
            if getattr(self, field_name) < 1:
                raise ValueError(f"{field_name} must be >= 1, got {getattr(self, field_name)}")
        if self.slower_tolerance < 0:
            raise ValueError(f"slower_tolerance must be >= 0, got {self.slower_tolerance}")


def kernel_options(variant: str) -> list[dict[str, str]]:
    """Every combination of `attach` kernel arguments that changes how `variant` runs ([{}] if none)."""
    from loading.store import Int8Kernel, SparseKernel

    chain = parse_variant(variant)
    quantized = any(isinstance(c, Int8DynamicQuantConfig) for c in chain)
    pruned = any(not isinstance(c, Int8DynamicQuantConfig) for c in chain)
    concrete = [k for k in Int8Kernel if k is not Int8Kernel.AUTO]  # auto is one of these on each CPU
    int8 = [{"int8_kernel": k.value} for k in concrete] if quantized else [{}]
    sparse = [{"sparse_kernel": k.value} for k in SparseKernel] if pruned else []
    return [{**a, **b} for a, b in itertools.product(int8, sparse or [{}])]


def _label(kernels: dict[str, str]) -> str:
    """The name of a kernel option, e.g. `int8=fbgemm,sparse=shared`; `default` for none."""
    return ",".join(f"{k.split('_')[0]}={v}" for k, v in sorted(kernels.items())) or "default"


# --- inside a fresh Ray actor ---------------------------------------------------------------------


class _Replica:
    """A fresh Ray worker that attaches variants as a Serve replica does, and measures itself."""

    def __init__(self) -> None:
        import transformers

        import loading.store  # noqa: F401  Ray's client side, the zero-copy code, compression

        transformers.utils.logging.set_verbosity_error()
        self._held: dict[str, Any] = {}  # label -> AttachedModel

    @staticmethod
    def _memory() -> tuple[int, int]:
        import psutil

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
        self.release()
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

    def release(self) -> None:
        self._held.clear()
        gc.collect()
        trim_heap()


# --- the driver ------------------------------------------------------------------------------------


def _new_actor() -> Any:
    """A fresh worker with the environment `serve_config.yaml` gives replicas (e.g. malloc settings)."""
    import ray

    return ray.remote(num_cpus=0)(_Replica).options(runtime_env={"env_vars": served_env_vars()}).remote()


def _latency(entries: dict[str, tuple[str, str, dict[str, str]]], cfg: VariantBenchConfig) -> dict[str, Any]:
    """Batch latency of every (variant, kernel option) in `entries` (label -> key, dir, kernels).

    One actor holds them all and times them in rounds, one forward of each per round, so a noisy
    neighbour slows every option alike instead of whichever happened to run at the time.
    """
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
                if i == 0:
                    continue  # the warm-up round
                for label, ms in times.items():
                    runs[label].append(ms)
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
    """USS/RSS growth of `cfg.replicas` fresh actors attaching `key` in turn, each keeping it."""
    import ray

    actors = [_new_actor() for _ in range(cfg.replicas)]
    try:
        # Warm up with the tiny model (same kernels), then attach one at a time: the i-th replica
        # joins while the ones before it hold the variant, as when Serve scales up.
        ray.get([a.join.remote(*warm, kernels, cfg.seq_len) for a in actors])
        rows = [ray.get(a.join.remote(key, model_dir, kernels, cfg.seq_len)) for a in actors]
    finally:
        for actor in actors:
            ray.kill(actor)
    return {"replicas": rows}


def _memory_summary(run: dict[str, Any], weights_bytes: int) -> dict[str, Any]:
    uss = [r["uss_growth_bytes"] for r in run["replicas"]]
    added = max(uss[1:]) if len(uss) > 1 else None
    return {
        **run,
        "first_uss_bytes": uss[0],
        "added_max_uss_bytes": added,
        "added_vs_weights": None if added is None else round(added / weights_bytes, 4),
    }


def _is_shared(kernels: dict[str, str]) -> bool:
    return all(v == "shared" for v in kernels.values())


def _served_apps(config_path: str | Path = _SERVE_CONFIG) -> list[dict[str, Any]]:
    import yaml

    apps = yaml.safe_load(Path(config_path).read_text()).get("applications") or []
    return [a for a in apps if "variant" in (a.get("args") or {})]  # not the catch-all 404 app


def served_env_vars(config_path: str | Path = _SERVE_CONFIG) -> dict[str, str]:
    """The environment variables the apps of a Serve config give their replicas (all apps share one)."""
    envs = [(app.get("runtime_env") or {}).get("env_vars") or {} for app in _served_apps(config_path)]
    if any(env != envs[0] for env in envs):
        raise ValueError(f"apps in {config_path} must share one runtime_env env_vars, got {envs}")
    return {str(k): str(v) for k, v in (envs[0] if envs else {}).items()}


def served_kernels(config_path: str | Path = _SERVE_CONFIG) -> dict[str, dict[str, str]]:
    """The kernel options each app of a Serve config runs with: {variant: {"int8_kernel": ...}}.

    Options an app leaves out get the deployment's defaults; `auto` is resolved for this CPU.
    """
    from loading.store import Int8Kernel

    defaults = _deployment_kernel_defaults()
    apps = _served_apps(config_path)
    served = {}
    for app in apps:
        args = app.get("args") or {}
        kernels = {k: str(args.get(k, v)) for k, v in defaults.items()}
        kernels["int8_kernel"] = Int8Kernel(kernels["int8_kernel"]).resolve().value
        served[str(args.get("variant", app.get("name")))] = kernels
    return served


def _deployment_kernel_defaults() -> dict[str, str]:
    from deployments.classifier import ClassifierArgs

    fields = ClassifierArgs.model_fields
    return {k: str(fields[k].default.value) for k in ("int8_kernel", "sparse_kernel")}


def _is_served(variant: str, kernels: dict[str, str], served: dict[str, dict[str, str]]) -> bool:
    """Whether `kernels` (the options that matter for `variant`) is what serving runs `variant` with."""
    return variant in served and all(served[variant][k] == v for k, v in kernels.items())


def measure_model(
    model_dir: str | Path,
    out_root: str | Path,
    cfg: VariantBenchConfig,
    *,
    latency_variants: tuple[str, ...] | None = None,
    tag: str = "model",
) -> dict[str, Any]:
    """Build `cfg.variants` of the model in `model_dir` under `out_root` and measure each one.

    Needs a running Ray session; the model store gets run-unique keys, dropped again at the end.
    `latency_variants` (default `cfg.latency_variants`, else every variant) are timed.
    """
    import ray

    from loading.artifact import read_variant_info
    from loading.build import build_variants
    from loading.model_store import model_store

    if not ray.is_initialized():
        raise RuntimeError("measure_model needs a running Ray session (ray.init first)")
    model_dir, out_root = Path(model_dir).resolve(), Path(out_root).resolve()
    timed = latency_variants or cfg.latency_variants or cfg.variants
    built = [v for v in cfg.variants if v != "base"]
    logger.info("%s: building %d variants in %s", tag, len(built), out_root)
    seconds = {"start": time.perf_counter()}
    build_variants(model_dir, built, out_root, if_missing=True)
    seconds["build"] = time.perf_counter()
    dirs = {v: str(model_dir if v == "base" else out_root / v) for v in cfg.variants}
    warm_dirs = _warmup_artifacts(out_root.parent / f"warmup-{out_root.name}", cfg.memory_variants)
    infos = {v: read_variant_info(d) for v, d in dirs.items()}
    base, quant = infos["base"], infos.get("quant")
    served = served_kernels()
    prefix = f"vbench-{uuid.uuid4().hex[:8]}-{tag}"  # store keys: unique per run
    store = model_store()
    rows: dict[str, Any] = {}
    try:
        for variant in tqdm(cfg.variants, desc=f"{tag}: object store", unit="variant"):
            info = infos[variant]
            rows[variant] = row = {
                "size_bytes": info.size_bytes,
                "weights_bytes": info.weights_bytes,
                "weights_vs_base": round(info.weights_bytes / base.weights_bytes, 4),
                "size_vs_base": round(info.size_bytes / base.size_bytes, 4),
                "dense_sparsity": info.parameters.get("dense_sparsity"),
            }
            if variant.startswith("pruned-quant") and quant is not None:
                row["weights_vs_quant"] = round(info.weights_bytes / quant.weights_bytes, 4)
            stored = ray.get(store.ensure.remote(f"{prefix}-{variant}", dirs[variant]))
            row["store_arena_bytes"] = stored["arena_bytes"]
            row["store_tensor_bytes"] = stored["tensor_bytes"]
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
            warm = (f"{prefix}-warmup-{variant}", str(warm_dirs[variant]))
            ray.get(store.ensure.remote(*warm))
            memory = rows[variant]["memory"] = {}
            for kernels in kernel_options(variant):
                if cfg.served_kernels_only and not _is_served(variant, kernels, served):
                    continue
                try:
                    run = _replica_memory(f"{prefix}-{variant}", dirs[variant], warm, kernels, cfg)
                    summary = _memory_summary(run, infos[variant].weights_bytes)
                except ray.exceptions.RayError as exc:  # one broken kernel must not sink the run
                    logger.error("%s %s memory failed: %s", variant, _label(kernels), exc)
                    summary = {"error": str(exc)[-500:]}
                summary.update(
                    kernels=kernels, served=_is_served(variant, kernels, served), shared=_is_shared(kernels)
                )
                memory[_label(kernels)] = summary
                logger.info("%s %s %s memory %s", tag, variant, _label(kernels), summary)
    finally:
        for variant in cfg.variants:
            ray.get(store.drop.remote(f"{prefix}-{variant}"))
            ray.get(store.drop.remote(f"{prefix}-warmup-{variant}"))
    seconds["memory"] = time.perf_counter()
    phases, marks = list(seconds), list(seconds.values())  # each phase's end time, in order
    result = {
        "model_dir": str(model_dir),
        "num_parameters": base.num_parameters,
        "latency_variants": list(timed),
        "seconds": {phases[i]: round(marks[i] - marks[i - 1], 1) for i in range(1, len(marks))},
        "variants": rows,
    }
    result["targets"], result["target_values"] = _targets(rows, cfg)
    return result


def _warmup_artifacts(out_root: Path, variants: tuple[str, ...]) -> dict[str, Path]:
    """A 2-layer, hidden-32 random BERT and its variants: attached first so imports don't count."""
    from transformers import BertConfig, BertForSequenceClassification

    from loading.artifact import default_encoder_dir, load_tokenizer, save_artifact
    from loading.build import build_variants

    base_dir = out_root / "base"
    if not base_dir.exists():
        torch.manual_seed(0)
        config = BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=2
        )
        model = BertForSequenceClassification(config).eval()
        save_artifact(
            model, load_tokenizer(default_encoder_dir()), base_dir, name="base", method="random-init"
        )
    built = [v for v in variants if v != "base"]
    build_variants(base_dir, built, out_root, if_missing=True)
    return {v: (base_dir if v == "base" else out_root / v).resolve() for v in variants}


def _targets(rows: dict[str, Any], cfg: VariantBenchConfig) -> tuple[dict[str, bool], dict[str, Any]]:
    """The project's targets as booleans, and the numbers they were judged on."""
    ok: dict[str, bool] = {}
    values: dict[str, Any] = {}
    for name, key, limit in (
        ("quant_le_42pct_of_base", ("quant", "weights_vs_base"), 0.42),
        ("pruned75_le_50pct_of_base", ("pruned-75", "weights_vs_base"), 0.50),
        ("pruned_quant75_le_60pct_of_quant", ("pruned-quant-75", "weights_vs_quant"), 0.60),
    ):
        value = rows.get(key[0], {}).get(key[1])
        if value is not None:
            ok[name], values[name] = value <= limit, value
    base_stats = rows["base"].get("latency", {}).get("default", {})
    base_ms = {} if "error" in base_stats else {n: s["median_ms"] for n, s in base_stats.items()}
    if base_ms:
        slower = {}  # variant -> {threads: best latency / base latency}, where over the tolerance
        for variant, row in rows.items():
            for n, ms in base_ms.items():
                best = min(
                    (s[n]["median_ms"] for s in row.get("latency", {}).values() if "error" not in s),
                    default=None,
                )
                if best is not None and best > ms * (1 + cfg.slower_tolerance):
                    slower.setdefault(variant, {})[n] = round(best / ms, 3)
        ok["no_variant_slower_than_base"] = not slower
        values["no_variant_slower_than_base"] = slower
    for name in ("served", "shared"):
        worst = {}  # variant -> added-replica USS / weights bytes with that kernel option
        for variant, row in rows.items():
            for summary in row.get("memory", {}).values():
                if summary.get(name) and summary.get("added_vs_weights") is not None:
                    worst[variant] = summary["added_vs_weights"]
        if worst:
            ok[f"added_replica_lt_25pct_of_weights_{name}_kernels"] = max(worst.values()) < 0.25
            values[f"added_replica_lt_25pct_of_weights_{name}_kernels"] = worst
    return ok, values


def _prepare_bert_base(out_dir: Path) -> Path:
    """`BertConfig()` with 2 labels and random weights, as an artifact with the MiniLM tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    from loading.artifact import default_encoder_dir, load_tokenizer, save_artifact

    model_dir = out_dir / "base"
    if (model_dir / "variant.json").exists():
        return model_dir
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_labels=2)).eval()
    save_artifact(model, load_tokenizer(default_encoder_dir()), model_dir, name="base", method="random-init")
    return model_dir


def run_benchmark(cfg: VariantBenchConfig, out_dir: str | Path) -> dict[str, Any]:
    """Start Ray unless running, measure every model, return the JSON-ready result."""
    import ray
    import transformers

    from loading.model_store import model_store
    from loading.store import SparseKernel

    set_worker_env()
    transformers.utils.logging.set_verbosity_error()
    result: dict[str, Any] = {
        "machine": machine_info(),
        "config": asdict(cfg),
        "kernels": {"sparse": [k.value for k in SparseKernel], "served": served_kernels()},
        "replica_env_vars": served_env_vars(),
        "models": {},
    }
    own_ray = not ray.is_initialized()
    if own_ray:  # "local": never join a cluster someone else started on this machine
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for name in cfg.models:
            start = time.perf_counter()
            if name == "default":
                if not (_DEFAULT_ARTIFACT / "variant.json").exists():
                    raise FileNotFoundError(f"{_DEFAULT_ARTIFACT} is missing; run `make artifacts` first")
                model_dir = _DEFAULT_ARTIFACT
                latency = None
            else:
                model_dir = _prepare_bert_base(Path(out_dir) / name)
                latency = None if cfg.latency_variants else _BERT_BASE_LATENCY
            latency = tuple(v for v in latency if v in cfg.variants) if latency else None
            result["models"][name] = measure_model(
                model_dir, Path(out_dir) / name, cfg, latency_variants=latency, tag=name
            )
            result["models"][name]["seconds"]["total"] = round(time.perf_counter() - start, 1)
    finally:
        if own_ray:
            ray.kill(model_store())  # detached: it would outlive us
            ray.shutdown()
    result["machine"]["load_avg_1_5_15m_end"] = [round(x, 2) for x in os.getloadavg()]
    big = result["models"].get("bert-base")
    result["targets"] = big["targets"] if big else None  # judged on the BERT-base shape only
    return result


def _log_table(result: dict[str, Any]) -> None:
    lines = []
    for name, model in result["models"].items():
        lines.append(f"{name}: {'variant':<16} {'weights MB':>10} {'vs base':>8} {'store MB':>9}  latency ms")
        for variant, row in model["variants"].items():
            lat = {
                k: "/".join(str(s[n]["median_ms"]) for n in sorted(s)) if "error" not in s else "error"
                for k, s in row.get("latency", {}).items()
            }
            lines.append(
                f"{name}: {variant:<16} {row['weights_bytes'] / 1e6:10.1f} {row['weights_vs_base']:8.3f} "
                f"{row['store_arena_bytes'] / 1e6:9.1f}  {lat}"
            )
        lines.append(f"{name}: targets {model['targets']} {model['target_values']}")
    logger.info("variant costs\n%s", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    prog = "python -m benchmarks.variant_costs"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line, last")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {MODELS}")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: default model, served variants, batch 8"
    )
    parser.add_argument("--all-latency", action="store_true", help="time every bert-base variant too")
    parser.add_argument("--out-dir", help="keep (and reuse) the built variants here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    try:
        if args.quick:
            cfg = VariantBenchConfig(
                models=("default",),
                variants=_SERVED,
                memory_variants=("quant", "pruned-quant-75"),  # the int8 and the sparse+int8 code paths
                threads=(1,),
                replicas=2,
                batch_size=8,
                served_kernels_only=True,
            )
        else:
            latency = _ALL_VARIANTS if args.all_latency else None
            cfg = VariantBenchConfig(models=models, latency_variants=latency)
    except ValueError as exc:
        parser.error(str(exc))
    out_dir = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="variant-bench-"))
    try:
        result = run_benchmark(cfg, out_dir.resolve())
    finally:
        if not args.out_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
    _log_table(result)
    if args.json:
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    # Re-enter through the package name so Ray pickles `_Replica` by reference, not as `__main__`.
    from benchmarks.variant_costs import main as _main

    sys.exit(_main())
