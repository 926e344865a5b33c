"""Build variants and record their scores: `python -m training.build --model artifacts/base --variants ...`.

One command for every variant name: the one-shot ones (`quant`, `pruned-75`, ...: loading/build.py,
the study's protocol) and the ones trained with recovery (`pruned-kd-80`,
`pruned-kd-structured-quant-50-3layers`, ...: training/recover.py). Then each variant, and the base,
is scored on the base's test rows, which trained and pruned nothing, in the form it is served
(int8 and sparse layers from the artifact), and the score goes into its `variant.json`
(`loading.accuracy.AccuracyRecord`): accuracy, macro F1 and agreement with the parent. Preflight
refuses to serve a variant more than the budget below base, or one with no record.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

from compression import Int8Linear, SparseLinear, densify_, int8_matmul_is_fast, parse_variant
from loading.accuracy import ACCURACY_BUDGET_POINTS, AccuracyRecord, read_accuracy, record_accuracy
from loading.artifact import ArtifactError, VariantInfo, load_tokenizer, verify_artifact
from loading.build import build_variants
from loading.checkpoint import load_model
from training.data import DataError
from training.finetune import FinetuneConfig, splits_of
from training.loop import cpu_count, predict_labels, scores
from training.recover import RecoveryConfig, RecoverySpec, recover, save_recovered
from training.splits import Splits, load_splits

__all__ = ["build", "main", "score_variants"]

logger = logging.getLogger(__name__)


def _int8_kernel(model: torch.nn.Module) -> str | None:
    layers = [m for m in model.modules() if isinstance(m, Int8Linear | SparseLinear)]
    if not any(isinstance(m, Int8Linear) or m.scale is not None for m in layers):
        return None
    return "int_mm" if int8_matmul_is_fast() else "dequant"


def score_variants(
    base_dir: Path, variant_dirs: dict[str, Path], splits: Splits, *, rescore: bool
) -> dict[str, AccuracyRecord]:
    """Score the base and each variant on `splits.test` and record it; kept records are reused
    unless `rescore` (a record on other rows is always redone)."""
    base_info = verify_artifact(base_dir)
    tokenizer = load_tokenizer(base_dir)
    texts, labels = splits.test.texts, splits.ids(splits.test)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    base_pred = predict_labels(load_model(base_dir), tokenizer, texts)
    base_scores = scores(labels, base_pred)
    kept = read_accuracy(base_info)
    validation = kept.validation if kept else None
    base_record = AccuracyRecord.of_base(
        base_info.name, splits.test_name, len(texts), base_scores, validation
    )
    record_accuracy(base_dir, base_record)
    records = {base_info.name: base_record}
    for name, folder in variant_dirs.items():
        info = verify_artifact(folder)  # hashes the weights: once per variant
        old = read_accuracy(info)
        same_rows = old and (old.split, old.rows, old.base_accuracy) == (
            base_record.split,
            base_record.rows,
            base_record.accuracy,
        )
        if same_rows and not rescore:
            records[name] = old
            continue
        model = load_model(folder)
        predicted = predict_labels(model, tokenizer, texts)
        s = scores(labels, predicted, reference=base_pred)
        records[name] = record = AccuracyRecord(
            split=splits.test_name,
            rows=len(texts),
            accuracy=s["accuracy"],
            macro_f1=s["macro_f1"],
            base=base_info.name,
            base_accuracy=base_record.accuracy,
            parent=base_info.name,
            agreement=s["agreement"],
            int8_kernel=_int8_kernel(model),
            evaluated=now,
            validation=_final_validation(info),
        )
        record_accuracy(folder, record)
    return records


def _final_validation(info: VariantInfo) -> dict | None:
    history = info.parameters.get("validation")
    return history[-1] if isinstance(history, list) and history else None


def build(
    base_dir: Path, names: list[str], out_root: Path, splits: Splits, *, if_missing: bool, cfg: RecoveryConfig
) -> dict[str, AccuracyRecord]:
    """Build every named variant (recovery or one-shot), then score and record them all."""
    specs = {name: RecoverySpec.from_name(name) for name in names}  # malformed names fail first
    for name, spec in specs.items():
        if spec is None:
            parse_variant(name)
    base_hash = verify_artifact(base_dir).content_hash
    one_shot = [name for name, spec in specs.items() if spec is None and name != "base"]
    if one_shot:
        build_variants(base_dir, one_shot, out_root, if_missing=if_missing)
    students: dict[tuple, list[str]] = {}  # `pruned-kd-80` and `pruned-kd-quant-80` share one training
    for name, spec in specs.items():
        if spec is not None and not (if_missing and _usable(out_root / name)):
            students.setdefault(spec.student, []).append(name)
    for names_of_student in students.values():
        trained = _trained_sibling(out_root, specs[names_of_student[0]], names_of_student, base_hash)
        student, parameters = trained or recover(base_dir, specs[names_of_student[0]], splits, cfg)
        for name in names_of_student:
            save_recovered(base_dir, student, parameters, name, out_root / name)
    variants = {name: out_root / name for name in names if name != "base"}
    return score_variants(base_dir, variants, splits, rescore=not if_missing)


def _trained_sibling(
    out_root: Path, spec: RecoverySpec, names: list[str], base_hash: str
) -> tuple[torch.nn.Module, dict] | None:
    """The float student already on disk (`pruned-kd-80` for `pruned-kd-quant-80`), when only int8
    versions are missing: quantizing it again costs seconds, training it again minutes."""
    float_name = spec.name.replace("-quant", "")
    folder = out_root / float_name
    if float_name in names or not folder.exists():
        return None
    try:
        info = verify_artifact(folder)
    except ArtifactError:
        return None
    if info.parameters.get("parent_hash") != base_hash:
        return None
    model = load_model(folder)
    densify_(model)  # pruned weights back to plain Linear layers, which quantization takes
    logger.info("%s: quantizing the trained %s instead of training again", spec.name, float_name)
    return model, info.parameters


def _usable(folder: Path) -> bool:
    if not folder.exists():
        return False
    try:
        verify_artifact(folder)
    except ArtifactError:
        logger.warning("%s is damaged; rebuilding it", folder)
        return False
    logger.info("%s exists; skipped", folder)
    return True


def _summary(records: dict[str, AccuracyRecord], budget: float) -> str:
    lines = [f"{'variant':40} {'accuracy':>9} {'vs base':>8} {'agreement':>9}  gate ({budget:g} points)"]
    for name, r in records.items():
        agree = f"{100 * r.agreement:.1f}%" if r.agreement is not None else "-"
        verdict = "pass" if r.points_below_base <= budget + 1e-9 else "REFUSED"
        lines.append(f"{name:40} {100 * r.accuracy:8.2f}% {-r.points_below_base:+8.2f} {agree:>9}  {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    d = RecoveryConfig()
    parser = argparse.ArgumentParser(prog="python -m training.build", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="artifacts/base", help="base artifact folder")
    parser.add_argument("--variants", required=True, help="comma-separated, e.g. quant,pruned-kd-80")
    parser.add_argument("--out", help="folder for the variants (default: beside --model)")
    parser.add_argument("--if-missing", action="store_true", help="skip variants already built and scored")
    parser.add_argument("--data", help="training table; default: the rows the base was fine-tuned on")
    parser.add_argument("--test-data", help="test table; default: hold out a share of --data")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--epochs", type=int, default=d.epochs, help="recovery epochs")
    parser.add_argument("--lr", type=float, default=d.lr, help="recovery learning rate")
    parser.add_argument("--kd-weight", type=float, default=d.kd_weight, help="share of the teacher's loss")
    parser.add_argument("--temperature", type=float, default=d.temperature)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    if not names:
        parser.error("--variants must name at least one variant, got none")
    base_dir = Path(args.model)
    out_root = Path(args.out) if args.out else base_dir.resolve().parent
    torch.set_num_threads(cpu_count())
    try:
        knobs = ("epochs", "lr", "kd_weight", "temperature")
        cfg = RecoveryConfig(**{k: getattr(args, k) for k in knobs})
        if args.data:
            columns = {"text_column": args.text_column, "label_column": args.label_column}
            splits = load_splits(FinetuneConfig(data=args.data, test_data=args.test_data, **columns))
        else:
            splits = splits_of(verify_artifact(base_dir))
        records = build(base_dir, names, out_root, splits, if_missing=args.if_missing, cfg=cfg)
    except (ArtifactError, DataError, ValueError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    print(_summary(records, ACCURACY_BUDGET_POINTS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
