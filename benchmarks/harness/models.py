"""The random-weight BERT classifiers measurements build: loading cost, memory and speed depend on
the shape and the bytes, not on the values, so no checkpoint is needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from benchmarks.harness import ROOT

__all__ = ["BERT_BASE_DIR", "build_random_bert", "random_bert"]

BERT_BASE_DIR = ROOT / "artifacts" / "bert-base-random"  # built once, shared by the Serve benchmarks
_LABELS = ("not_stress", "stress")


def random_bert(seed: int = 0, **config: Any) -> nn.Module:
    """A 2-label `BertForSequenceClassification` in eval mode: BERT-base (12 x 768) unless `config`
    overrides `BertConfig`'s fields."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    labels = {"id2label": dict(enumerate(_LABELS)), "label2id": {k: i for i, k in enumerate(_LABELS)}}
    return BertForSequenceClassification(BertConfig(num_labels=2, **labels, **config)).eval()


def build_random_bert(out_dir: Path, **config: Any) -> Path:
    """`random_bert(**config)` as an artifact (with the default model's tokenizer) at `out_dir`,
    unless one is there already."""
    from loading.artifact import default_encoder_dir, load_tokenizer, save_artifact

    if not (out_dir / "variant.json").exists():
        tokenizer = load_tokenizer(default_encoder_dir())
        save_artifact(random_bert(**config), tokenizer, out_dir, name="base", method="random-init")
    return out_dir
