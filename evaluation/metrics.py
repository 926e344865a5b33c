"""Classification metrics of one variant, and how it differs from base beyond noise.

Everything is computed from predictions (labels and probabilities), with scikit-learn where it has
the metric. Two additions tell a real loss from noise on a finite test set: a bootstrap 95%
interval for accuracy, and McNemar's exact test on the rows where base and the variant disagree in
correctness (paired: both saw the same rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn import metrics as skm

__all__ = [
    "PROB_PREFIX",
    "bootstrap_accuracy_ci",
    "classification_metrics",
    "compare_to_base",
    "mcnemar",
    "variant_metrics",
]

PROB_PREFIX = "prob_"  # prediction files hold one probability column per model label: prob_<label>


def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], probabilities: np.ndarray, labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, precision/recall/F1 (macro and per label), confusion matrix, ROC curves and AUC.

    `probabilities` is (N, len(labels)) in `labels` order. Binary sets get one ROC curve for
    `labels[1]` as the positive class; more labels get one-vs-rest curves and their mean (macro) AUC.
    AUC is None when no label has both positive and negative rows (it is undefined there).
    """
    labels = list(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape != (len(y_true), len(labels)):
        raise ValueError(f"probabilities must be ({len(y_true)}, {len(labels)}), got {probabilities.shape}")
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    counts = skm.confusion_matrix(y_true, y_pred, labels=labels)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    result: dict[str, Any] = {
        "rows": len(y_true),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision_macro": float(np.mean(precision)),
        "recall_macro": float(np.mean(recall)),
        "f1_macro": float(np.mean(f1)),
        "per_label": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for name, p, r, f, n in zip(labels, precision, recall, f1, support, strict=True)
        },
        "labels": labels,
        "confusion_counts": counts.tolist(),  # rows: true label, columns: predicted
        "confusion_rates": rates.tolist(),  # each row sums to 1
        "roc": {},
        "auc": None,
    }
    truth = np.asarray(y_true)
    classes = labels[1:] if len(labels) == 2 else labels  # binary: one curve, labels[1] positive
    for name in classes:
        positive = truth == name
        if positive.all() or not positive.any():
            continue  # a curve needs both positives and negatives
        fpr, tpr, _ = skm.roc_curve(positive, probabilities[:, labels.index(name)])
        auc = float(skm.auc(fpr, tpr))  # trapezoid rule, as the study computed it
        result["roc"][name] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": auc}
    if result["roc"]:
        result["auc"] = float(np.mean([curve["auc"] for curve in result["roc"].values()]))
    return result


def bootstrap_accuracy_ci(
    y_true: Sequence[str], y_pred: Sequence[str], resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of accuracy over `resamples` bootstrap resamples of the rows."""
    correct = np.asarray(y_true) == np.asarray(y_pred)
    if resamples < 1 or len(correct) == 0:
        raise ValueError(f"resamples and rows must be >= 1, got {resamples} and {len(correct)}")
    rng = np.random.default_rng(seed)
    block = max(1, 2_000_000 // len(correct))  # resamples per draw: bounds memory on 70k-row sets
    means = np.concatenate(
        [
            correct[rng.integers(0, len(correct), size=(min(block, resamples - done), len(correct)))].mean(
                axis=1
            )
            for done in range(0, resamples, block)
        ]
    )
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def mcnemar(y_true: Sequence[str], base_pred: Sequence[str], pred: Sequence[str]) -> dict[str, Any]:
    """McNemar's exact test: do base and the variant err on different rows more than chance says?

    `base_only` = rows base gets right and the variant wrong, `variant_only` the reverse; under the
    null both are equally likely, so the two-sided p-value is a binomial test on them.
    """
    truth, base, other = (np.asarray(x) for x in (y_true, base_pred, pred))
    base_only = int(((base == truth) & (other != truth)).sum())
    variant_only = int(((base != truth) & (other == truth)).sum())
    discordant = base_only + variant_only
    p_value = 1.0 if discordant == 0 else float(binomtest(base_only, discordant, 0.5).pvalue)
    return {"base_only_correct": base_only, "variant_only_correct": variant_only, "p_value": p_value}


def compare_to_base(y_true: Sequence[str], base_pred: Sequence[str], pred: Sequence[str]) -> dict[str, Any]:
    """Agreement with base's predictions and McNemar's test against base."""
    agreement = float(np.mean(np.asarray(base_pred) == np.asarray(pred)))
    return {"agreement_with_base": agreement, "mcnemar": mcnemar(y_true, base_pred, pred)}


def variant_metrics(
    predictions: pd.DataFrame,
    labels: Sequence[str],
    base: pd.DataFrame | None = None,
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric of one variant from its prediction table (columns label, predicted, prob_<label>).

    `base`: base's predictions on the same rows in the same order, for agreement and McNemar.
    """
    y_true = predictions["label"].tolist()
    y_pred = predictions["predicted"].tolist()
    probabilities = predictions[[f"{PROB_PREFIX}{name}" for name in labels]].to_numpy()
    result = classification_metrics(y_true, y_pred, probabilities, labels)
    low, high = bootstrap_accuracy_ci(y_true, y_pred, resamples, seed)
    result["accuracy_ci95"] = [low, high]
    if base is not None:
        if not np.array_equal(base["index"].to_numpy(), predictions["index"].to_numpy()):
            raise ValueError("base must hold predictions for the same rows in the same order")
        result.update(compare_to_base(y_true, base["predicted"].tolist(), y_pred))
    return result
