"""What each int8 choice does to agreement with base and to speed: `python -m benchmarks.quant_choices`.

Every choice is an `Int8DynamicQuantConfig`, built as `loading.build` builds `quant` (compress,
`to_int8_linear`, `pack_state_dict`, an artifact in a temp folder) and loaded as it is served
(`loading.checkpoint.load_model`). Each then runs the Dreaddit test split (715 rows) through
`loading.predict.Predictor` with every int8 kernel a replica can serve it with:

- `int_mm`: `int8_linear`'s int8 x int8 matmul from the shared weights (`torch._int_mm`, each token
  row quantized with its own scale): what a CPU with VNNI/AMX serves;
- `dequant`: `int8_linear`'s weight-only path (fp32 matmul of the dequantized weights);
- `fbgemm`: `to_dynamic_quant_`, FBGEMM's packed private copy (activations quantized per batch, 7-bit):
  what `int8_kernel: auto` serves on an AVX2-only CPU.

Per choice and kernel: agreement of the argmax with base's, accuracy, texts/s over the split, and
the best-of-N ms of one batch of 32 texts (at most 128 tokens), all side by side with base in one
run at `--threads` (1: the served `num_cpus: 0.5`). `--keep-each` adds one choice per Linear layer
kept fp32 (the rest as the default), to find the sensitive ones. `--quick` runs a tiny random model
on a few rows (the test).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.harness.cli import emit, listed, parser, positive_int, setup_logging
from compression import (
    Int8DynamicQuantConfig,
    compress,
    int8_matmul_is_fast,
    pack_state_dict,
    to_dynamic_quant,
    to_int8_linear,
)
from compression import quantize as q
from loading.artifact import COMPRESSED_METHOD, load_tokenizer, save_artifact
from loading.checkpoint import load_model
from loading.host import machine_info
from loading.predict import Predictor

__all__ = ["CHOICES", "main", "measure"]

logger = logging.getLogger(__name__)

_HEAD = ("classifier",)
_POOLER = ("*pooler.dense",)
_LAST_FFN_OUT = ("*encoder.layer.5.output.dense",)  # MiniLM-L6's last layer
_TODAY = Int8DynamicQuantConfig(fp32_layers=())  # quant before issue 18
CHOICES: dict[str, Int8DynamicQuantConfig] = {
    "per-tensor": replace(_TODAY, per_channel=False),
    "per-channel (before)": _TODAY,
    "fp32 embeddings": replace(_TODAY, embeddings=False),
    "fp32 head": replace(_TODAY, fp32_layers=_HEAD),
    "fp32 head+pooler": replace(_TODAY, fp32_layers=_HEAD + _POOLER),
    "fp32 last FFN out": replace(_TODAY, fp32_layers=_LAST_FFN_OUT),
    "fp32 head+pooler+last FFN out": replace(_TODAY, fp32_layers=_HEAD + _POOLER + _LAST_FFN_OUT),
    "fp32 every FFN out": replace(_TODAY, fp32_layers=Int8DynamicQuantConfig().fp32_layers),
    "fp32 every Q,K,V": replace(_TODAY, fp32_layers=("*.attention.self.*",)),
    "default (now)": Int8DynamicQuantConfig(),
}
KERNELS = ("int_mm", "dequant", "fbgemm")
_BATCH = 32  # texts per timed batch, and per pass over the split (the evaluation job's batch)
_BATCH_TOKENS = 128


def _dreaddit(rows: int | None) -> tuple[list[str], list[str]]:
    from training.data import load_table
    from training.sources import DREADDIT_LABEL_NAMES, dreaddit_paths

    table = load_table(dreaddit_paths()[1], "text", "label", DREADDIT_LABEL_NAMES)
    return table.texts[:rows], table.labels[:rows]


def _served(base_dir: Path, base: nn.Module, cfg: Int8DynamicQuantConfig, folder: Path) -> nn.Module:
    """`cfg` applied to `base`, written as `loading.build` writes a variant and loaded as it is served."""
    storable = to_int8_linear(compress(base, cfg))
    save_artifact(
        storable,
        load_tokenizer(base_dir),
        folder,
        name=folder.name,
        parent="base",
        method=COMPRESSED_METHOD,
        tensors=pack_state_dict(storable),
    )
    return load_model(folder)


@contextmanager
def _kernel(kernel: str) -> Iterator[None]:
    """Force `int8_linear`'s matmul for `int_mm` / `dequant` (what `$BERTSERVE_INT8_MATMUL` does)."""
    before = os.environ.get(q.INT8_MATMUL_ENV)
    os.environ[q.INT8_MATMUL_ENV] = "dequant" if kernel == "dequant" else "int_mm"
    int8_matmul_is_fast.cache_clear()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(q.INT8_MATMUL_ENV)
        else:
            os.environ[q.INT8_MATMUL_ENV] = before
        int8_matmul_is_fast.cache_clear()


def _predict(predictor: Predictor, texts: list[str]) -> dict[str, Any]:
    """Argmax over `texts` as served, and texts/s of that one pass."""
    start = time.perf_counter()
    probs, _ = predictor.probabilities(texts, batch_size=_BATCH)
    seconds = time.perf_counter() - start
    return {"probs": probs, "pred": probs.argmax(dim=1), "texts_per_s": len(texts) / seconds}


def _batch_ms(
    models: dict[tuple[str, str], nn.Module], batch: dict[str, torch.Tensor], rounds: int
) -> dict[tuple[str, str], float]:
    """Best ms of one batch per (choice, kernel), all taking turns each round so load hits all alike."""
    best = dict.fromkeys(models, float("inf"))
    with torch.inference_mode():
        for round_ in range(rounds + 1):  # round 0 warms up
            for key, model in models.items():
                with _kernel(key[1]):
                    start = time.perf_counter()
                    model(**batch)
                    ms = 1e3 * (time.perf_counter() - start)
                if round_:
                    best[key] = min(best[key], ms)
    return best


def _row(run: dict[str, Any], base: dict[str, Any], labels: torch.Tensor) -> dict[str, Any]:
    return {
        "agreement": float((run["pred"] == base["pred"]).float().mean()),
        "accuracy": float((run["pred"] == labels).float().mean()),
        "prob_mae": float((run["probs"] - base["probs"]).abs().mean()),  # mean |p - p_base| per class
        "texts_per_s": run["texts_per_s"],
        "vs_base_texts_per_s": run["texts_per_s"] / base["texts_per_s"],
    }


def _keep_each(model: nn.Module) -> dict[str, Int8DynamicQuantConfig]:
    """One choice per Linear layer: that layer fp32, everything else as the default config."""
    default = Int8DynamicQuantConfig()
    return {
        f"fp32 {fqn}": replace(default, fp32_layers=(fqn,))
        for fqn, m in model.named_modules()
        if type(m) is nn.Linear and not default.keeps_fp32(fqn)
    }


def measure(
    base_dir: Path,
    choices: dict[str, Int8DynamicQuantConfig],
    kernels: tuple[str, ...],
    rows: int | None,
    rounds: int,
    on_row: Callable[[str, str, dict[str, Any]], None] = lambda *_: None,
) -> dict[str, Any]:
    """Agreement, accuracy and speed of every choice x kernel, with base's, in one process."""
    texts, label_names = _dreaddit(rows)
    base = load_model(base_dir)
    labels = torch.tensor([base.config.label2id[name] for name in label_names])
    tokenizer = load_tokenizer(base_dir)
    base_run = _predict(Predictor(base, tokenizer), texts)
    result: dict[str, Any] = {"rows": len(texts), "base": _row(base_run, base_run, labels), "choices": {}}
    models = {("base", "fp32"): base}
    with tempfile.TemporaryDirectory(prefix="quant_choices.") as tmp:
        for i, (name, cfg) in enumerate(choices.items()):
            served = _served(base_dir, base, cfg, Path(tmp) / f"choice-{i}")
            result["choices"][name] = {"config": vars(cfg), "kernels": {}}
            for kernel in kernels:
                with _kernel(kernel):
                    models[name, kernel] = to_dynamic_quant(served) if kernel == "fbgemm" else served
                    run = _predict(Predictor(models[name, kernel], tokenizer), texts)
                result["choices"][name]["kernels"][kernel] = _row(run, base_run, labels)
                on_row(name, kernel, result["choices"][name]["kernels"][kernel])
    batch = Predictor(base, tokenizer).encoder(texts[:_BATCH], _BATCH_TOKENS)  # (32, <=128)
    ms = _batch_ms(models, batch, rounds)
    for (name, kernel), value in ms.items():
        row = result["base"] if name == "base" else result["choices"][name]["kernels"][kernel]
        row.update(batch_ms=value, vs_base_batch_ms=value / ms["base", "fp32"])
    return result


def _line(name: str, kernel: str, row: dict[str, Any]) -> str:
    batch = f"  batch {row['batch_ms']:7.1f} ms ({row['vs_base_batch_ms']:.2f}x)" if "batch_ms" in row else ""
    speed = f"{row['texts_per_s']:6.1f} texts/s ({row['vs_base_texts_per_s']:.2f}x)"
    return (
        f"{name:<44} {kernel:<8} agree {100 * row['agreement']:6.2f}%  acc {100 * row['accuracy']:5.1f}%  "
        f"|dp| {row['prob_mae']:.4f}  {speed}{batch}"
    )


def _tiny_base(folder: Path) -> Path:
    """A tiny random BERT classifier artifact (for `--quick`: the script's path, not its numbers)."""
    from benchmarks.harness.models import random_bert
    from loading.artifact import default_encoder_dir

    config = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    save_artifact(random_bert(**config), load_tokenizer(default_encoder_dir()), folder, method="random-init")
    return folder


def main(argv: list[str] | None = None) -> int:
    p = parser(__name__, __doc__)
    p.add_argument("--model", type=Path, default=Path("artifacts/base"), help="the base artifact")
    p.add_argument("--choices", type=listed(), help=f"a subset of: {', '.join(CHOICES)}")
    p.add_argument(
        "--kernels", type=listed(), default=KERNELS, help="comma-separated, of int_mm,dequant,fbgemm"
    )
    p.add_argument("--rows", type=positive_int, help="only the first N test rows (default: all 715)")
    p.add_argument("--rounds", type=positive_int, default=5, help="timed batches per model (best kept)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads (1: as served)")
    p.add_argument("--keep-each", action="store_true", help="also one choice per Linear kept fp32")
    p.add_argument("--quick", action="store_true", help="tiny random model, 24 rows, two choices")
    args = p.parse_args(argv)
    setup_logging()
    unknown = sorted(set(args.choices or ()) - set(CHOICES)) + sorted(set(args.kernels) - set(KERNELS))
    if unknown:
        p.error(f"unknown choices or kernels: {', '.join(unknown)}")
    torch.set_num_threads(args.threads)
    names = args.choices or (("per-channel (before)", "default (now)") if args.quick else tuple(CHOICES))
    with tempfile.TemporaryDirectory(prefix="quant_choices_base.") as tmp:
        model_dir = _tiny_base(Path(tmp) / "base") if args.quick else args.model
        choices = {name: CHOICES[name] for name in names}
        if args.keep_each:
            choices.update(_keep_each(load_model(model_dir)))
        record = {
            "machine": machine_info(),
            "threads": args.threads,
            "model": str(args.model) if not args.quick else "tiny-random",
            "int8_matmul_is_fast": int8_matmul_is_fast(),  # what `int8_kernel: auto` serves here
            **measure(
                model_dir,
                choices,
                tuple(args.kernels),
                24 if args.quick else args.rows,
                1 if args.quick else args.rounds,
                on_row=lambda *row: logger.info(_line(*row)),
            ),
        }
    summary = [_line("base", "fp32", record["base"])]
    for name, choice in record["choices"].items():
        summary += [_line(name, kernel, row) for kernel, row in choice["kernels"].items()]
    emit(record, args.json, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
