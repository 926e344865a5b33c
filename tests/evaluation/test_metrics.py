"""Metrics on hand-checked predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from evaluation.metrics import bootstrap_accuracy_ci, classification_metrics, mcnemar, variant_metrics

TRUE = ["a", "a", "a", "b", "b", "b", "b", "a"]
PRED = ["a", "b", "a", "b", "b", "a", "b", "a"]
P_B = np.array([0.1, 0.6, 0.2, 0.9, 0.7, 0.4, 0.8, 0.3])


def _frame(pred, p_b):
    return pd.DataFrame(
        {"index": range(len(TRUE)), "label": TRUE, "predicted": pred, "prob_a": 1 - p_b, "prob_b": p_b}
    )


def test_binary_metrics_match_hand_counts():
    m = classification_metrics(TRUE, PRED, np.stack([1 - P_B, P_B], axis=1), ["a", "b"])
    assert m["accuracy"] == 6 / 8
    assert m["confusion_counts"] == [[3, 1], [1, 3]]
    assert m["confusion_rates"] == [[0.75, 0.25], [0.25, 0.75]]
    assert m["per_label"]["b"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    # AUC: of the 16 (b, a) pairs, b scores higher in 15 (0.4 < 0.6 is the one miss)
    assert m["auc"] == pytest.approx(15 / 16)
    assert m["roc"]["b"]["tpr"][-1] == 1.0 and m["roc"]["b"]["fpr"][0] == 0.0


def test_multiclass_auc_is_the_mean_one_vs_rest():
    truth = ["x", "y", "z", "x", "y", "z"]
    probs = np.array(
        [[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.2, 0.5, 0.3], [0.4, 0.4, 0.2], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]
    )
    m = classification_metrics(truth, ["x", "y", "y", "x", "y", "z"], probs, ["x", "y", "z"])
    assert set(m["roc"]) == {"x", "y", "z"}
    assert m["auc"] == pytest.approx(roc_auc_score(truth, probs, multi_class="ovr"))
    assert m["confusion_counts"] == [[2, 0, 0], [0, 2, 0], [0, 1, 1]]


def test_single_label_set_has_no_auc():
    m = classification_metrics(["a", "a"], ["a", "b"], np.array([[0.9, 0.1], [0.2, 0.8]]), ["a", "b"])
    assert m["auc"] is None and m["accuracy"] == 0.5


def test_mcnemar_counts_discordant_rows_and_tests_them():
    base = ["a", "a", "a", "b", "b", "b", "b", "b"]  # wrong on rows 1 and 7
    result = mcnemar(TRUE, base, PRED)
    assert result == {"base_only_correct": 2, "variant_only_correct": 1, "p_value": pytest.approx(1.0)}
    assert mcnemar(TRUE, PRED, PRED)["p_value"] == 1.0
    # 10 rows base gets right and the variant wrong, none the other way: 2 * 0.5**10
    truth = ["a"] * 10
    assert mcnemar(truth, truth, ["b"] * 10)["p_value"] == pytest.approx(2 * 0.5**10)


def test_bootstrap_interval_brackets_accuracy_and_is_seeded():
    truth = ["a"] * 1000
    pred = ["a"] * 800 + ["b"] * 200
    low, high = bootstrap_accuracy_ci(truth, pred, seed=3)
    # the normal approximation: 0.8 +- 1.96 * sqrt(0.8 * 0.2 / 1000) = 0.8 +- 0.0248
    assert low == pytest.approx(0.775, abs=0.006) and high == pytest.approx(0.825, abs=0.006)
    assert bootstrap_accuracy_ci(truth, pred, seed=3) == (low, high)
    assert bootstrap_accuracy_ci(truth, pred, seed=4) != (low, high)


def test_variant_metrics_compares_with_base_on_the_same_rows():
    base = _frame(np.array(TRUE), np.where(np.array(TRUE) == "b", 0.9, 0.1))
    m = variant_metrics(_frame(PRED, P_B), ["a", "b"], base, resamples=200)
    assert m["agreement_with_base"] == 6 / 8
    assert m["mcnemar"]["base_only_correct"] == 2 and m["mcnemar"]["variant_only_correct"] == 0
    assert m["accuracy_ci95"][0] <= m["accuracy"] <= m["accuracy_ci95"][1]
    with pytest.raises(ValueError, match="same rows"):
        variant_metrics(_frame(PRED, P_B), ["a", "b"], base.iloc[::-1].reset_index(drop=True))


def test_probabilities_must_match_rows_and_labels():
    with pytest.raises(ValueError, match="probabilities must be"):
        classification_metrics(TRUE, PRED, np.zeros((8, 3)), ["a", "b"])
