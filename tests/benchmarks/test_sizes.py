"""Byte counts of the variants: a BERT-base-shaped layer (fast) and the whole model (slow)."""

from __future__ import annotations

import json

import pytest

from benchmarks.sizes import layer_sizes, main, model_sizes
from tests.conftest import tiny_classifier


def test_bert_base_layer_sizes():
    sizes = layer_sizes(768, 3072, amount=0.75)
    numel = 768 * 3072
    nnz = numel // 4
    assert sizes["dense_fp32"] == numel * 4
    assert sizes["int8"] == numel + 768 * 4  # int8 values + one fp32 scale per row
    assert sizes["pruned_fp32"]["bitmask"] == numel // 8 + nnz * 4
    assert sizes["pruned_fp32"]["csr"] == 4 * 769 + nnz * (2 + 4)
    assert sizes["pruned_int8"]["auto"] == sizes["pruned_int8"]["bitmask"] < sizes["pruned_int8"]["csr"]
    assert sizes["ratios"]["pruned_auto/dense"] <= 0.5
    assert sizes["ratios"]["pruned_int8_auto/int8"] <= 0.6


def test_model_sizes_on_the_tiny_model():
    sizes = model_sizes(tiny_classifier(), amount=0.75)
    assert sizes["quant"] < sizes["base"]
    assert sizes["pruned-75"]["auto"] == min(sizes["pruned-75"].values()) < sizes["base"]
    assert sizes["pruned-quant-75"]["auto"] < sizes["quant"]
    assert sizes["ratios"]["pruned-quant-75/quant, embeddings excluded"] <= 0.6


def test_main_prints_the_record_last(capsys):
    assert main(["--skip-model", "--rows", "64", "--cols", "96", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert record["layer"]["shape"] == [64, 96] and "bert_base" not in record


@pytest.mark.slow
def test_bert_base_targets():
    from benchmarks.harness.models import random_bert

    sizes = model_sizes(random_bert(seed=0), amount=0.75)
    # The study's 60% cut (<= 0.42) held until quant kept the FFN output projections fp32 for >= 99%
    # agreement with base (issue 18, docs/COMPRESSION.md): 0.446 on BERT-base, a decision left open.
    assert sizes["ratios"]["quant/base"] <= 0.45
    assert sizes["ratios"]["pruned-75/base"] <= 0.50
    # The fp32 embeddings (95 MB, 52% of quant) alone rule out 60% of quant for the whole model;
    # the compressible part must meet it.
    assert sizes["ratios"]["pruned-quant-75/quant, embeddings excluded"] <= 0.60
