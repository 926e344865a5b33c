"""Variant names <-> config chains."""

from __future__ import annotations

import re

import pytest
from torch import nn

from compression import (
    Int8DynamicQuantConfig,
    L1UnstructuredPruneConfig,
    PruneScope,
    RandomStructuredPruneConfig,
    RandomUnstructuredPruneConfig,
    build_variant,
    parse_variant,
    sparsity_report,
    variant_name,
)
from tests.compression.conftest import assert_unchanged, snapshot

Q = Int8DynamicQuantConfig()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("base", []),
        ("quant", [Q]),
        ("pruned-75", [L1UnstructuredPruneConfig(amount=0.75)]),
        ("pruned-0", [L1UnstructuredPruneConfig(amount=0.0)]),
        ("pruned-99", [L1UnstructuredPruneConfig(amount=0.99)]),
        ("pruned-quant-70", [L1UnstructuredPruneConfig(amount=0.7), Q]),
        ("pruned-random-60", [RandomUnstructuredPruneConfig(amount=0.6)]),
        ("pruned-structured-30", [RandomStructuredPruneConfig(amount=0.3)]),
        ("pruned-random-quant-50", [RandomUnstructuredPruneConfig(amount=0.5), Q]),
        ("pruned-structured-quant-5", [RandomStructuredPruneConfig(amount=0.05), Q]),
        ("pruned-75-global", [L1UnstructuredPruneConfig(amount=0.75, scope=PruneScope.GLOBAL)]),
        ("pruned-random-quant-40-global", [RandomUnstructuredPruneConfig(amount=0.4, scope="global"), Q]),
    ],
)
def test_parse_and_name_are_inverses(name, expected):
    assert parse_variant(name) == expected
    assert variant_name(expected) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "pruned",
        "pruned-100",
        "pruned-075",
        "pruned-l1-50",
        "pruned-quant",
        "quant-pruned-50",
        "pruned-50-quant",
        "Pruned-50",
        "pruned-50%",
        "pruned-magnitude-50",
    ],
)
def test_unknown_names_raise(name):
    with pytest.raises(
        ValueError, match=rf"unknown variant '{re.escape(name)}': expected base, quant, pruned-<N>"
    ):
        parse_variant(name)


def test_structured_global_name_raises():
    with pytest.raises(
        ValueError, match="unknown variant 'pruned-structured-50-global': scope must be 'layer'"
    ):
        parse_variant("pruned-structured-50-global")


def test_name_must_be_a_string():
    with pytest.raises(TypeError, match="variant name must be a str"):
        parse_variant(75)


def test_unnamed_chains_raise():
    with pytest.raises(ValueError, match="configs must be a chain that a variant name describes"):
        variant_name([L1UnstructuredPruneConfig(amount=0.5, seed=3)])
    with pytest.raises(ValueError, match="configs must be a chain"):
        variant_name([Q, L1UnstructuredPruneConfig()])


def test_build_variant(model):
    before = snapshot(model)
    out = build_variant(model, "pruned-quant-50")
    floats = [fqn for fqn, m in out.named_modules() if type(m) is nn.Linear]
    assert floats == ["bert.encoder.layer.0.output.dense", "bert.encoder.layer.1.output.dense"]  # fp32_layers
    assert sparsity_report(out)["dense"]["sparsity"] >= 0.5
    assert_unchanged(model, before)
    assert build_variant(model, "base") is not model
