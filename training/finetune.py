"""Fine-tune a BERT-family encoder into a text classifier artifact: `python -m training.finetune`.

A plain PyTorch loop (AdamW, linear warmup then decay, gradient clipping) rather than a trainer
framework, so every step is visible and two runs with the same seed give bit-identical weights.
Batches are padded to their longest text, not to `max_length`, which keeps short texts cheap.
With no `--data` it trains on the offline Dreaddit set (stress vs not) and writes `artifacts/base`;
`--data rotten-tomatoes` names another offline set (sentiment), and `--data COMMENTS --profiles
PROFILES` reads PANDORA's two files and trains on the authors' self-reported gender.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from loading.accuracy import AccuracyRecord, record_accuracy
from loading.artifact import (
    ArtifactError,
    VariantInfo,
    default_encoder_dir,
    load_tokenizer,
    read_variant_info,
    save_artifact,
)
from training.data import DataError, parse_label_names
from training.loop import (
    collate,
    cpu_count,
    encode,
    optimizer_for,
    predict_labels,
    scores,
    warmup_then_linear,
)
from training.sources import SOURCES
from training.splits import Splits, load_splits

__all__ = [
    "FinetuneConfig",
    "Splits",
    "evaluate",
    "finetune",
    "load_encoder",
    "load_splits",
    "main",
    "splits_of",
]

logger = logging.getLogger(__name__)

DEFAULT_OUT = "artifacts/base"


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that decides the fine-tuned weights; recorded in `variant.json`."""

    # training table, or a name in training.data.SOURCES; None = Dreaddit train (and its test file)
    data: str | None = None
    test_data: str | None = None  # test table; None = hold out `test_fraction` of `data`
    text_column: str = "text"
    label_column: str = "label"
    label_names: dict[str, str] | None = None  # raw label -> name; None = raw values (Dreaddit: named)
    # PANDORA author profiles (author, gender): `data` (and `test_data`) are then its comments, whose
    # text column defaults to "body", and the label is the author's gender (m/f)
    profiles: str | None = None
    model: str | None = None  # encoder or checkpoint folder; None = the offline MiniLM package
    out: str = DEFAULT_OUT
    name: str = "base"  # variant name in variant.json: the serving route
    epochs: int = 1  # one pass already gets MiniLM to ~0.72 on Dreaddit; more mostly overfits
    batch_size: int = 16  # small batches suit 2 CPU cores and the short Reddit posts
    lr: float = 5e-5  # the usual BERT fine-tuning rate (Devlin et al. range 2e-5..5e-5)
    max_length: int = 128  # tokens per text; longer texts are truncated (most posts fit)
    seed: int = 0  # seeds weights of the new head, dropout, data order and the hold-out split
    test_fraction: float = 0.1  # share held out for testing when there is no test_data
    # Share of the training rows held out to choose hyperparameters on (compression recovery
    # too): the test split then only reports and gates, never tunes.
    validation_fraction: float = 0.1
    max_rows: int | None = None  # cap on rows taken from each table (stratified), for quick runs
    warmup_fraction: float = 0.1  # share of steps with rising lr: the random head must not wreck the encoder
    weight_decay: float = 0.01  # AdamW decay on weight matrices (not biases or LayerNorm)
    max_grad_norm: float = 1.0  # clip gradients: rare long-text batches otherwise spike the loss
    eval_batch_size: int = 64  # no gradients at test time, so bigger batches fit

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.max_rows is not None and self.max_rows < 2:
            raise ValueError(f"max_rows must be >= 2, got {self.max_rows}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if not self.text_column or not self.label_column:
            raise ValueError("text_column and label_column must be non-empty column names")
        if self.test_data is not None and self.data is None:
            raise ValueError("test_data must come with data (the training file), got only test_data")
        if self.profiles is not None and (self.data is None or self.data in SOURCES):
            raise ValueError(
                f"profiles (PANDORA) must come with data, its comments file, got data={self.data}"
            )
        if not self.name or "/" in self.name:
            raise ValueError(f"name must be a non-empty path-free string, got {self.name!r}")


_SPLIT_FIELDS = (
    "data",
    "test_data",
    "text_column",
    "label_column",
    "label_names",
    "profiles",
    "seed",
    "test_fraction",
    "validation_fraction",
    "max_rows",
)


def splits_of(info: VariantInfo) -> Splits:
    """The splits a fine-tuned artifact was trained, validated and tested on, read again from disk.

    Compression recovery trains on the same training rows and gates on the same test rows.
    """
    recorded = info.parameters.get("split_config")
    if not isinstance(recorded, dict):
        raise DataError(
            f"artifact {info.name!r} does not record its data splits (not made by training.finetune, "
            "or by an older version); pass --data (and --test-data) explicitly"
        )
    return load_splits(FinetuneConfig(**{k: recorded[k] for k in _SPLIT_FIELDS if k in recorded}))


def load_encoder(model_dir: str | Path, classes: tuple[str, ...], max_length: int) -> tuple[nn.Module, Any]:
    """The encoder with a fresh `len(classes)`-way head, and its tokenizer.

    A checkpoint that already has a head of another size gets a new one (transformers warns).
    """
    from transformers import AutoModelForSequenceClassification

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ArtifactError(f"model folder {model_dir} does not exist or has no config.json")
    tokenizer = load_tokenizer(model_dir)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir),
            num_labels=len(classes),
            id2label=dict(enumerate(classes)),
            label2id={name: i for i, name in enumerate(classes)},
            use_safetensors=True,
            local_files_only=True,
            ignore_mismatched_sizes=True,
        )
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot load an encoder from {model_dir}: {exc}") from exc
    positions = int(getattr(model.config, "max_position_embeddings", max_length))
    if max_length > positions:
        raise ValueError(f"max_length must be <= the model's {positions} positions, got {max_length}")
    return model, tokenizer


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _train(model: nn.Module, tokenizer: Any, splits: Splits, cfg: FinetuneConfig) -> float:
    """Fine-tune in place; returns the mean training loss of the last epoch."""
    encoded = encode(tokenizer, splits.train.texts, cfg.max_length)
    labels = torch.tensor(splits.ids(splits.train), dtype=torch.long)
    steps_per_epoch = math.ceil(len(encoded) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = int(cfg.warmup_fraction * total_steps)
    optimizer = optimizer_for(model, cfg.lr, cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_linear(total_steps, warmup_steps))
    order_rng = torch.Generator().manual_seed(cfg.seed)  # data order independent of dropout draws
    model.train()
    epoch_loss = 0.0
    with tqdm(total=total_steps, desc="train", unit="step") as bar:
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(encoded), generator=order_rng).tolist()
            losses = []
            for start in range(0, len(order), cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                batch = collate([encoded[i] for i in idx], tokenizer.pad_token_id)
                loss = model(**batch, labels=labels[idx]).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
            epoch_loss = float(np.mean(losses))
            logger.info("epoch %d/%d: mean training loss %.4f", epoch + 1, cfg.epochs, epoch_loss)
    model.eval()
    return epoch_loss


def evaluate(
    model: nn.Module,
    tokenizer: Any,
    texts: list[str],
    label_ids: list[int],
    max_length: int | None = None,
    batch_size: int = 64,
) -> dict[str, float]:
    """Accuracy and macro F1 of `model` on the texts, predicted as served (`training.loop.predict_labels`)."""
    return scores(label_ids, predict_labels(model, tokenizer, texts, max_length, batch_size))


def _run(
    cfg: FinetuneConfig, splits: Splits, model_dir: Path, model: nn.Module, tokenizer: Any
) -> VariantInfo:
    """Train, test and write the artifact; `model` must be freshly loaded after seeding."""
    started = time.perf_counter()
    final_loss = _train(model, tokenizer, splits, cfg)
    train_s = time.perf_counter() - started
    test_ids = splits.ids(splits.test)
    # scored as served: texts cut at the model's maximum, not at the training max_length
    metrics = evaluate(model, tokenizer, splits.test.texts, test_ids, None, cfg.eval_batch_size)
    majority = Counter(splits.ids(splits.train)).most_common(1)[0][0]
    metrics["majority_accuracy"] = sum(i == majority for i in test_ids) / len(test_ids)
    if len(splits.validation):
        validation = evaluate(
            model,
            tokenizer,
            splits.validation.texts,
            splits.ids(splits.validation),
            cfg.max_length,
            cfg.eval_batch_size,
        )
        metrics["validation_accuracy"] = validation["accuracy"]
    logger.info(
        "test accuracy %.4f, macro F1 %.4f on %d rows (majority class %.4f); training took %.1f s",
        metrics["accuracy"],
        metrics["macro_f1"],
        len(test_ids),
        metrics["majority_accuracy"],
        train_s,
    )
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("out", "name")}
    parameters = {
        **settings,
        "model": str(model_dir),
        "data": str(splits.train.path),
        "test_data": str(splits.test.path) if cfg.data is None or cfg.test_data else None,
        "labels": list(splits.classes),
        "split_config": {k: getattr(cfg, k) for k in _SPLIT_FIELDS},
        "train_rows": len(splits.train),
        "validation_rows": len(splits.validation),
        "test_rows": len(splits.test),
        # per file: a held-out test set shares its file (and its skipped rows) with training
        "skipped_rows": {str(t.path): t.skipped_rows for t in (splits.train, splits.test)},
        "final_train_loss": final_loss,
        "train_seconds": round(train_s, 1),
        "metrics": metrics,
    }
    save_artifact(model, tokenizer, cfg.out, name=cfg.name, method="finetune", parameters=parameters)
    validation = {"rows": len(splits.validation), "accuracy": metrics.get("validation_accuracy")}
    record = AccuracyRecord.of_base(cfg.name, splits.test_name, len(test_ids), metrics, validation)
    return record_accuracy(cfg.out, record)


def _prepare(cfg: FinetuneConfig) -> tuple[Splits, Path, nn.Module, Any]:
    """Everything the user can get wrong is found here, before any training (raises ValueError)."""
    splits = load_splits(cfg)
    model_dir = Path(cfg.model) if cfg.model else default_encoder_dir()
    _seed_everything(cfg.seed)  # before loading: the new head's initial weights come from torch's RNG
    model, tokenizer = load_encoder(model_dir, splits.classes, cfg.max_length)
    logger.info(
        "training on %d rows, testing on %d, labels %s, from %s",
        len(splits.train),
        len(splits.test),
        list(splits.classes),
        model_dir,
    )
    return splits, model_dir, model, tokenizer


def finetune(cfg: FinetuneConfig) -> VariantInfo:
    """Fine-tune as configured and write the artifact to `cfg.out`."""
    return _run(cfg, *_prepare(cfg))


def _label_names_arg(spec: str) -> dict[str, str]:
    try:
        return parse_label_names(spec)
    except DataError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _build_parser() -> argparse.ArgumentParser:
    d = FinetuneConfig()
    p = argparse.ArgumentParser(prog="python -m training.finetune", description=__doc__.splitlines()[0])
    p.add_argument(
        "--data",
        help=f"training table (.csv[.gz|.bz2], .parquet, .jsonl) or an offline set ({', '.join(SOURCES)}); "
        "default: Dreaddit",
    )
    p.add_argument("--test-data", help="test table; default: hold out --test-fraction of --data")
    p.add_argument("--profiles", help="PANDORA author profiles (author, gender); --data is then its comments")
    p.add_argument("--text-column", default=d.text_column, help="column with the texts (PANDORA: body)")
    p.add_argument("--label-column", default=d.label_column)
    p.add_argument("--label-names", type=_label_names_arg, help="rename labels, e.g. 0=not_stress,1=stress")
    p.add_argument("--model", help="encoder or checkpoint folder; default: the offline MiniLM package")
    p.add_argument("--out", default=d.out, help=f"artifact folder (default {d.out})")
    p.add_argument("--name", default=d.name, help="variant name recorded in variant.json")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--max-length", type=int, default=d.max_length, help="tokens per text")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--test-fraction", type=float, default=d.test_fraction)
    p.add_argument("--validation-fraction", type=float, default=d.validation_fraction)
    p.add_argument("--max-rows", type=int, help="cap rows per table (stratified), for quick runs")
    p.add_argument("--if-missing", action="store_true", help="do nothing if --out already holds an artifact")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # every config field that has a flag of the same name; the rest keep their defaults
    settings = {f.name: getattr(args, f.name) for f in fields(FinetuneConfig) if f.name in args}
    try:
        cfg = FinetuneConfig(**settings)
    except ValueError as exc:
        parser.error(str(exc))
    if args.if_missing:
        try:
            read_variant_info(cfg.out)
            logger.info("%s exists; not fine-tuning (drop --if-missing to retrain)", cfg.out)
            return 0
        except ArtifactError as exc:
            logger.info("no usable artifact yet (%s); fine-tuning", exc)
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        parser.exit(2, f"{parser.prog}: error: --out must be a folder, got the file {cfg.out}\n")

    torch.set_num_threads(cpu_count())
    try:
        prepared = _prepare(cfg)
    except ValueError as exc:  # DataError and ArtifactError: bad input, not bad usage, so no usage text
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    _run(cfg, *prepared)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
