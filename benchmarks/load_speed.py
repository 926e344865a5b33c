"""How long a fresh process takes to get a ready-to-run classifier: pickle, safetensors, zero-copy.

Repeats the study's loading protocol (Figures 4.1-4.4: N consecutive loads, N in 10, 25, 50, 100)
for three methods:

- `torch_load`: `torch.load(weights_only=False)` of a whole pickled model, the study's baseline. The
  pickles are made here, from our own model, in a temp folder: loading a foreign pickle runs its code.
- `from_pretrained`: Hugging Face `from_pretrained` from a safetensors artifact folder.
- `zerocopy`: `loading.store.attach`, which maps the weight arena the model store put in Ray's
  object store. The first attach in a process asks the store, unpickles the skeleton and wraps the
  arena; later ones clone that module tree, sharing its tensors (what a replica pays to re-attach).
- `zerocopy_remap`: the same, but every load forgets the process's mapping first, so each one pays
  the store round trip, the skeleton unpickle and the tensor wrapping again.

Every (model, method, N) run happens in a process that never loaded that model: a fresh
`python -m benchmarks.load_speed --worker ...` subprocess, or a fresh Ray actor for `zerocopy`. Imports
happen before the clock starts, so the numbers are loading, not importing. The first load of a run
is reported apart from the median of the rest, since it alone pays for cold caches and lazy setup.
Ray's start and the store's one-off read of each model are reported too: the study counted them.

    python -m benchmarks.load_speed --json            # full run, one JSON line last on stdout
    python -m benchmarks.load_speed --quick --json    # smoke test: default model, 3 loads
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from loading.host import WORKER_ENV, machine_info, set_worker_env

__all__ = ["METHODS", "MODELS", "BenchConfig", "main", "run_benchmark"]

logger = logging.getLogger(__name__)

METHODS = ("torch_load", "from_pretrained", "zerocopy", "zerocopy_remap")
MODELS = ("default", "bert-base")
_PROJECT_ROOT = Path(__file__).resolve().parents[1]
_BASE_ARTIFACT = _PROJECT_ROOT / "artifacts" / "base"
_PROBE_IDS = [[101, 7592, 2088, 102]]  # "[CLS] hello world [SEP]": enough to prove a forward runs
_WORKER_TIMEOUT_S = 900  # one subprocess run of 100 bert-base pickle loads takes ~1 min here
# Bar: the study's ~99% cut against its production loader, and half the public write-up's ~340x.
_TARGET_SPEEDUP_VS_FROM_PRETRAINED = 50.0
_TARGET_SAVING_VS_TORCH_LOAD_PCT = 99.0


@dataclass(frozen=True)
class BenchConfig:
    """What to time."""

    loads: tuple[int, ...] = (10, 25, 50, 100)  # consecutive loads per run, as in the study
    models: tuple[str, ...] = MODELS  # "default" (MiniLM classifier) and/or "bert-base" (110M)
    json_only: bool = False  # print one JSON line on stdout instead of logging a table

    def __post_init__(self) -> None:
        if not self.loads or any(n < 2 for n in self.loads):
            raise ValueError(f"loads must be one or more counts >= 2, got {self.loads}")
        unknown = [m for m in self.models if m not in MODELS]
        if not self.models or unknown or len(set(self.models)) != len(self.models):
            raise ValueError(f"models must be distinct names from {MODELS}, got {self.models}")


@dataclass(frozen=True)
class _Prepared:
    """One benchmark model on disk in both formats, and registered under a store variant."""

    name: str
    model_dir: Path  # safetensors artifact folder (from_pretrained, the store)
    pickle_path: Path  # whole-model pickle (torch_load)
    variant: str  # store key, unique per run so an existing store is never confused
    params: int
    weights_bytes: int  # bytes of the safetensors weights file
    pickle_bytes: int


# --- inside the fresh process ------------------------------------------------------------------


def _import_model_code() -> None:
    """Pay every import a load needs before timing, and silence per-load progress output."""
    import transformers
    import transformers.models.bert.modeling_bert  # noqa: F401  unpickling needs the classes
    from transformers import AutoModelForSequenceClassification  # noqa: F401

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _loader(method: str, target: str, variant: str = "") -> Callable[[], nn.Module]:
    """A zero-argument function doing one load with `method`, returning the model in eval mode."""
    if method == "torch_load":
        return lambda: torch.load(target, weights_only=False).eval()
    if method == "from_pretrained":
        from transformers import AutoModelForSequenceClassification

        return lambda: AutoModelForSequenceClassification.from_pretrained(
            target, use_safetensors=True, local_files_only=True
        ).eval()
    if method == "zerocopy":
        from loading.store import attach

        # The model alone, like the other two methods (a replica fetches its tokenizer once).
        return lambda: attach(variant, target, with_tokenizer=False).model
    if method == "zerocopy_remap":
        from loading.store import attach, forget_attached

        def load() -> nn.Module:
            forget_attached()
            return attach(variant, target, with_tokenizer=False).model

        return load
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _timed_loads(method: str, target: str, loads: int, variant: str = "") -> dict[str, Any]:
    """`loads` consecutive timed loads in this process, then one untimed forward of the last model."""
    _import_model_code()
    load = _loader(method, target, variant)
    # Park the import-time heap out of the collector's reach: a full collection between loads then
    # takes microseconds instead of ~250 ms, and one inside a load costs every method alike.
    gc.collect()
    gc.freeze()
    times_ms: list[float] = []
    model: nn.Module | None = None
    for _ in range(loads):
        model = None  # free the previous copy, and collect its garbage, outside the timed region
        gc.collect()
        start = time.perf_counter()
        model = load()
        times_ms.append((time.perf_counter() - start) * 1e3)
        assert not model.training, f"{method} returned a model in training mode"
    assert model is not None
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor(_PROBE_IDS)).logits  # (1, num_labels)
    if not torch.isfinite(logits).all():
        raise RuntimeError(f"{method} loaded a model whose forward gives non-finite logits")
    return {"loads_ms": times_ms, "pid": os.getpid(), "logits_shape": list(logits.shape)}


class _LoadActor:
    """A fresh Ray worker process that attaches from the store, as a new Serve replica would."""

    def __init__(self) -> None:
        _import_model_code()
        import loading.store  # noqa: F401  imports ray's client side and the zero-copy code

    def run(self, method: str, variant: str, model_dir: str, loads: int) -> dict[str, Any]:
        return _timed_loads(method, model_dir, loads, variant)


# --- the driver ---------------------------------------------------------------------------------


def _run_subprocess(method: str, target: Path, loads: int) -> dict[str, Any]:
    """One run in a brand-new Python process; its last stdout line is the result."""
    cmd = [sys.executable, "-m", "benchmarks.load_speed", "--worker", method, "--target", str(target)]
    cmd += ["--loads", str(loads)]
    env = {**os.environ, **WORKER_ENV}
    proc = subprocess.run(
        cmd, cwd=_PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=_WORKER_TIMEOUT_S
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {method} x{loads} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _run_actor(method: str, prepared: _Prepared, loads: int) -> dict[str, Any]:
    """One zero-copy run in a brand-new Ray actor process, killed afterwards."""
    import ray

    actor = ray.remote(num_cpus=1)(_LoadActor).remote()
    try:
        result = ray.get(actor.run.remote(method, prepared.variant, str(prepared.model_dir), loads))
    finally:
        ray.kill(actor)
    return result


def _prepare(name: str, out_dir: Path) -> _Prepared:
    """Write `name` as a safetensors artifact (unless `artifacts/base` is the default) and a pickle."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig
    from transformers import BertForSequenceClassification as Bert

    from loading.artifact import WEIGHTS_FILE, default_encoder_dir, save_artifact
    from loading.checkpoint import load_model

    minilm = default_encoder_dir()
    torch.manual_seed(0)
    if name == "default" and (_BASE_ARTIFACT / WEIGHTS_FILE).is_file():
        model_dir = _BASE_ARTIFACT
        model = load_model(model_dir)
    else:
        if name == "default":  # the MiniLM encoder with a fresh, untrained 2-label head
            model = AutoModelForSequenceClassification.from_pretrained(
                minilm, num_labels=2, local_files_only=True
            ).eval()
        else:  # BERT-base shape (12 x 768), random weights: loading cost depends on bytes, not values
            model = Bert(BertConfig(num_labels=2)).eval()
        model_dir = out_dir / name
        tokenizer = AutoTokenizer.from_pretrained(minilm, local_files_only=True)
        how = {"method": "random-init"} if name == "bert-base" else {"method": "import", "parent": "minilm"}
        save_artifact(model, tokenizer, model_dir, name=f"bench-{name}", **how)
    pickle_path = out_dir / f"{name}.pt"
    torch.save(model, pickle_path)
    params = sum(p.numel() for p in model.parameters())
    del model
    gc.collect()
    return _Prepared(
        name=name,
        model_dir=model_dir.resolve(),  # attach() resolves too; the store insists they match
        pickle_path=pickle_path,
        variant=f"bench-{name}-{uuid.uuid4().hex[:8]}",
        params=params,
        weights_bytes=(model_dir / WEIGHTS_FILE).stat().st_size,
        pickle_bytes=pickle_path.stat().st_size,
    )


def _summary(loads_ms: Sequence[float]) -> dict[str, float]:
    """The first load, the median of the others, and the total of all (the study's figures)."""
    return {
        "median_ms": round(statistics.median(loads_ms[1:]), 3),
        "total_s": round(sum(loads_ms) / 1e3, 4),
        "first_ms": round(loads_ms[0], 3),
    }


def _ratios(model: dict[str, Any], once_s: float) -> dict[str, Any]:
    """Zero-copy's speed-ups; `once_s` is what starting Ray and filling the store cost once.

    Per-load ratios use the medians pooled over every run (first loads excluded), which a noisy
    neighbour sways less than any single run; the with-Ray saving uses the longest run's totals.
    """
    pooled = model["pooled"]
    zc, fp, tl, remap = (
        pooled[m]["median_ms"] for m in ("zerocopy", "from_pretrained", "torch_load", "zerocopy_remap")
    )
    n = max(model["runs"], key=int)
    totals = {m: s["total_s"] for m, s in model["runs"][n].items()}
    ratios = {
        "from_pretrained_over_zerocopy": round(fp / zc, 2),
        "torch_load_over_zerocopy": round(tl / zc, 2),
        "zerocopy_saving_vs_torch_load_pct": round(100 * (1 - zc / tl), 2),
        "zerocopy_saving_vs_from_pretrained_pct": round(100 * (1 - zc / fp), 2),
        # every load through the store, unpickling and wrapping anew
        "from_pretrained_over_zerocopy_remap": round(fp / remap, 2),
        "zerocopy_remap_saving_vs_torch_load_pct": round(100 * (1 - remap / tl), 2),
        # the study's "even counting Ray": N loads plus starting Ray and filling the store once
        "incl_ray_at_loads": int(n),
        "zerocopy_saving_vs_torch_load_incl_ray_pct": round(
            100 * (1 - (totals["zerocopy"] + once_s) / totals["torch_load"]), 2
        ),
    }
    return ratios


def _log_table(result: dict[str, Any]) -> None:
    """The result for a person: median ms per run (first load in brackets), pooled medians, ratios."""
    lines = [f"{'model':<10} {'N':>6} " + " ".join(f"{m:>22}" for m in METHODS)]
    for name, model in result["models"].items():
        for n, run in model["runs"].items():
            cells = [f"{run[m]['median_ms']:9.2f} (1st {run[m]['first_ms']:7.1f})" for m in METHODS]
            lines.append(f"{name:<10} {n:>6} " + " ".join(f"{c:>22}" for c in cells))
        pooled = [f"{model['pooled'][m]['median_ms']:9.2f}" for m in METHODS]
        lines.append(f"{name:<10} {'pooled':>6} " + " ".join(f"{c:>22}" for c in pooled))
    lines.append(f"ray.init {result['ray_init_s']} s, store start {result['store_start_s']} s, ")
    lines[-1] += f"store put {result['store_put_s']} s"
    for name, ratios in result["ratios"].items():
        lines.append(f"{name}: {ratios}")
    lines.append(f"targets (bert-base): {result['targets']}")
    logger.info("median load time in ms per method\n%s", "\n".join(lines))


def run_benchmark(cfg: BenchConfig) -> dict[str, Any]:
    """Prepare the models, start Ray and the store, time every run; return the JSON-ready result."""
    import ray

    from loading.model_store import model_store

    set_worker_env()
    _import_model_code()  # also quiets the load reports of building the models
    result: dict[str, Any] = {
        "machine": machine_info(),
        "config": asdict(cfg),
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="loading-bench-") as tmp:
        prepared = {}
        for name in cfg.models:
            prepared[name] = _prepare(name, Path(tmp))
            logger.info("prepared %s: %s", name, prepared[name])
        own_ray = not ray.is_initialized()  # reuse a caller's session, and leave it running
        start = time.perf_counter()
        if own_ray:  # "local": never join a cluster someone else started on this machine
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        result["ray_init_s"] = round(time.perf_counter() - start, 3) if own_ray else None
        store = model_store()
        try:
            start = time.perf_counter()
            ray.get(store.variants.remote())
            result["store_start_s"] = round(time.perf_counter() - start, 3)
            result["store_put_s"] = {}
            for name, p in prepared.items():
                start = time.perf_counter()
                ray.get(store.ensure.remote(p.variant, str(p.model_dir)))
                result["store_put_s"][name] = round(time.perf_counter() - start, 3)
            for name, p in prepared.items():
                result["models"][name] = _run_model(cfg, p)
        finally:
            if own_ray:
                ray.kill(store)  # detached: it would outlive us and keep the arenas
                ray.shutdown()
            else:
                for p in prepared.values():
                    ray.get(store.drop.remote(p.variant))
    ray_s = (result["ray_init_s"] or 0.0) + result["store_start_s"]
    result["ratios"] = {
        name: _ratios(model, ray_s + result["store_put_s"][name]) for name, model in result["models"].items()
    }
    big = result["ratios"].get("bert-base")  # None (not judged) when bert-base was not run
    result["targets"] = {
        "zerocopy_50x_from_pretrained": big
        and big["from_pretrained_over_zerocopy"] >= _TARGET_SPEEDUP_VS_FROM_PRETRAINED,
        "zerocopy_99pct_faster_than_torch_load": big
        and big["zerocopy_saving_vs_torch_load_pct"] >= _TARGET_SAVING_VS_TORCH_LOAD_PCT,
    }
    return result


def _run_model(cfg: BenchConfig, p: _Prepared) -> dict[str, Any]:
    """Every (N, method) run of one model, methods interleaved so background load hits all alike."""
    out: dict[str, Any] = {
        "params": p.params,
        "bytes": p.weights_bytes,
        "pickle_bytes": p.pickle_bytes,
        "source": str(p.model_dir) if p.model_dir == _BASE_ARTIFACT.resolve() else "built",
        "runs": {},
    }
    pids: set[int] = set()
    rest_ms: dict[str, list[float]] = {m: [] for m in METHODS}  # every load but each run's first
    for n in cfg.loads:
        runs = {}
        for method in METHODS:
            if method.startswith("zerocopy"):
                raw = _run_actor(method, p, n)
            else:
                target = p.pickle_path if method == "torch_load" else p.model_dir
                raw = _run_subprocess(method, target, n)
            assert raw["pid"] not in pids, "a run reused a process that had loaded the model"
            pids.add(raw["pid"])
            runs[method] = _summary(raw["loads_ms"])
            rest_ms[method].extend(raw["loads_ms"][1:])
            logger.info("%s x%d %s: %s", p.name, n, method, runs[method])
        out["runs"][str(n)] = runs
    out["pooled"] = {
        m: {"median_ms": round(statistics.median(v), 3), "loads": len(v)} for m, v in rest_ms.items()
    }
    return out


def _parse_loads(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--loads must be comma-separated integers, got {text!r}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line, last")
    parser.add_argument("--loads", type=_parse_loads, default=BenchConfig.loads, help="e.g. 10,25,50,100")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {MODELS}")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 loads of the default model")
    parser.add_argument("--worker", choices=METHODS[:2], help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # we are the fresh process of one run: time it, report on stdout, exit
        if not args.target or len(args.loads) != 1:
            parser.error("--worker needs --target and a single --loads count")
        print(json.dumps(_timed_loads(args.worker, args.target, args.loads[0])), flush=True)
        return 0

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    try:
        if args.quick:
            cfg = BenchConfig(loads=(3,), models=("default",), json_only=args.json)
        else:
            cfg = BenchConfig(loads=args.loads, models=models, json_only=args.json)
    except ValueError as exc:
        parser.error(str(exc))
    result = run_benchmark(cfg)
    if cfg.json_only:
        print(json.dumps(result), flush=True)
    else:
        _log_table(result)
    return 0


if __name__ == "__main__":
    # Re-enter through the package name so Ray pickles `_LoadActor` by reference, not as `__main__`.
    from benchmarks.load_speed import main as _main

    sys.exit(_main())
