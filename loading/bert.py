"""BERT-family sequence classifiers in plain torch: the forward pass replicas serve, no transformers.

Importing transformers costs a replica ~4 s and ~120 MiB before it has loaded a single weight; this
file is the whole BERT classifier forward instead (inference only: no dropout, no loss, no cache).
Every module attribute mirrors Hugging Face's `BertForSequenceClassification`, so its safetensors
checkpoints load unchanged (`bert.encoder.layer.0.attention.self.query.weight`, ...) and the
compression swaps (`Int8Linear`, `SparseLinear`, `Int8Embedding`) find the same layers by the same
names. tests/loading/test_bert.py compares the logits with transformers' implementation.

Shapes: B batch, T tokens, H hidden size, A attention width (heads x head size), I feed-forward width.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BertConfig", "BertForSequenceClassification", "ClassifierOutput", "checkpoint_names"]

_ACTIVATIONS = ("gelu",)  # HF's "gelu" is the exact (erf) GELU, which F.gelu computes
_PROBLEM_TYPES = (None, "single_label_classification")
_IGNORED_BUFFERS = ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids")  # recomputed here
_LEGACY_NAMES = (("LayerNorm.gamma", "LayerNorm.weight"), ("LayerNorm.beta", "LayerNorm.bias"))  # TF era


@dataclass(frozen=True)
class BertConfig:
    """The facts of a BERT `config.json` that the forward pass needs; everything else is kept as is."""

    vocab_size: int = 30522  # rows of the word embedding table
    hidden_size: int = 768  # H: width of each token's vector between blocks
    num_hidden_layers: int = 12  # transformer layers in the encoder
    num_attention_heads: int = 12  # heads per layer; head size = hidden_size // num_attention_heads
    intermediate_size: int = 3072  # I: width of the feed-forward block
    hidden_act: str = "gelu"  # feed-forward activation; only the exact GELU is implemented
    max_position_embeddings: int = 512  # longest input in tokens (rows of the position table)
    type_vocab_size: int = 2  # segment ids (token_type_ids) the model knows
    layer_norm_eps: float = 1e-12  # added to the variance in every LayerNorm
    pad_token_id: int = 0  # id of the padding token (attention_mask hides it; kept for the record)
    # Label name of each output index; label2id and num_labels follow from it.
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})
    problem_type: str | None = None  # softmax over labels only: no regression, no multi-label
    position_embedding_type: str = "absolute"  # learned absolute positions only (no relative keys)
    # Structured pruning leaves layers of different widths: the heads and feed-forward width each
    # layer kept (None: every layer has num_attention_heads and intermediate_size).
    layer_heads: tuple[int, ...] | None = None
    layer_intermediate_sizes: tuple[int, ...] | None = None
    # The whole config.json it came from, written back by `to_dict` so saving loses nothing.
    source: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {_ACTIVATIONS}, got {self.hidden_act!r}")
        if self.problem_type not in _PROBLEM_TYPES:
            raise ValueError(
                f"problem_type must be 'single_label_classification' or unset, got {self.problem_type!r}"
            )
        if self.position_embedding_type != "absolute":
            raise ValueError(
                f"position_embedding_type must be 'absolute', got {self.position_embedding_type!r}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size must be a multiple of num_attention_heads ({self.num_attention_heads}), "
                f"got {self.hidden_size}"
            )
        if sorted(self.id2label) != list(range(len(self.id2label))) or not self.id2label:
            raise ValueError(f"id2label must number its labels 0..n-1, got keys {sorted(self.id2label)}")
        for name, most in (("layer_heads", self.num_attention_heads), ("layer_intermediate_sizes", None)):
            widths = getattr(self, name)
            if widths is None:
                continue
            widths = tuple(int(w) for w in widths)  # JSON gives a list
            object.__setattr__(self, name, widths)
            if len(widths) != self.num_hidden_layers or not all(1 <= w <= (most or w) for w in widths):
                bound = f"1..{most}" if most else ">= 1"
                raise ValueError(
                    f"{name} must give each of the {self.num_hidden_layers} layers a width in {bound}, "
                    f"got {list(widths)}"
                )

    def heads(self, layer: int) -> int:
        """Attention heads of layer `layer`."""
        return self.layer_heads[layer] if self.layer_heads else self.num_attention_heads

    def intermediate(self, layer: int) -> int:
        """Feed-forward width of layer `layer`."""
        return (
            self.layer_intermediate_sizes[layer] if self.layer_intermediate_sizes else self.intermediate_size
        )

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in self.id2label.items()}

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> BertConfig:
        """From a parsed `config.json` (as Hugging Face writes it: string keys in id2label)."""
        if config.get("model_type") != "bert":
            raise ValueError(f"model_type must be 'bert', got {config.get('model_type')!r}")
        if config.get("is_decoder") or config.get("add_cross_attention"):
            raise ValueError("is_decoder and add_cross_attention must be false: an encoder classifier")
        if "id2label" in config:
            id2label = {int(k): str(v) for k, v in config["id2label"].items()}
        else:  # HF names unnamed labels LABEL_i
            id2label = {i: f"LABEL_{i}" for i in range(int(config.get("num_labels", 2)))}
        if "num_labels" in config and int(config["num_labels"]) != len(id2label):
            raise ValueError(f"num_labels must match id2label ({len(id2label)}), got {config['num_labels']}")
        known = {f.name for f in fields(cls)} - {"id2label", "source"}
        values = {k: v for k, v in config.items() if k in known and v is not None}
        values["problem_type"] = config.get("problem_type")
        return cls(**values, id2label=id2label, source=dict(config))

    def to_dict(self) -> dict[str, Any]:
        """The `config.json` content: the source dict with this config's values on top."""
        ours = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("source", "id2label")}
        widths = ("layer_heads", "layer_intermediate_sizes")  # written only for pruned layers
        ours = {k: list(v) if k in widths and v is not None else v for k, v in ours.items()}
        merged = {**self.source, **ours}
        return {
            **{k: v for k, v in merged.items() if k not in widths or v is not None},
            "model_type": "bert",
            "id2label": {str(i): label for i, label in self.id2label.items()},
            "label2id": self.label2id,
        }


class ClassifierOutput(NamedTuple):
    """What the classifier returns; `.logits` as in transformers, so callers work with either."""

    logits: torch.Tensor  # (B, num_labels)


class BertEmbeddings(nn.Module):
    """Word + segment + position embeddings, then LayerNorm."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = _embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = _embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = _embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.size(1), device=input_ids.device)  # (T,)
        # Called as modules, not through `.weight`: an Int8Embedding stands in for a quantized table.
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)  # (B, T, H)
        x = x + self.position_embeddings(positions)  # (T, H) broadcast over B; HF's order of sums
        return self.LayerNorm(x)


def _embedding(rows: int, dim: int) -> nn.Embedding:
    """A zero table, not a random one: the weights always come from a checkpoint, and under
    `torch.device("meta")` the random init (`normal_`) would import torch._dynamo (~2 s)."""
    return nn.Embedding(rows, dim, _weight=torch.zeros(rows, dim))


class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product attention over all (unmasked) tokens."""

    def __init__(self, config: BertConfig, layer: int) -> None:
        super().__init__()
        self.head_size = config.hidden_size // config.num_attention_heads
        width = config.heads(layer) * self.head_size  # A
        self.query = nn.Linear(config.hidden_size, width)
        self.key = nn.Linear(config.hidden_size, width)
        self.value = nn.Linear(config.hidden_size, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, _ = x.shape  # (B, T, H)
        q, k, v = self.query(x), self.key(x), self.value(x)  # (B, T, A) each
        # Heads counted from the layer's own width: a layer whose heads were cut (narrower query, key,
        # value) runs unchanged.
        n_head = q.size(-1) // self.head_size
        q, k, v = (t.view(B, T, n_head, self.head_size).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        # The scale passed as transformers passes it, so both take the same kernel path.
        scale = self.head_size**-0.5
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)  # (B, nh, T, hs)
        return y.transpose(1, 2).reshape(B, T, n_head * self.head_size)  # (B, T, A)


class BertSelfOutput(nn.Module):
    """Attention output projection, residual, LayerNorm."""

    def __init__(self, config: BertConfig, layer: int) -> None:
        super().__init__()
        self.dense = nn.Linear(
            config.heads(layer) * config.hidden_size // config.num_attention_heads, config.hidden_size
        )
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # y (B, T, A), x (B, T, H)
        return self.LayerNorm(self.dense(y) + x)  # (B, T, H)


class BertAttention(nn.Module):
    """Self-attention plus its output block (HF's nesting: `attention.self`, `attention.output`)."""

    def __init__(self, config: BertConfig, layer: int) -> None:
        super().__init__()
        self.self = BertSelfAttention(config, layer)
        self.output = BertSelfOutput(config, layer)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.output(self.self(x, mask), x)  # (B, T, H)


class BertIntermediate(nn.Module):
    """The feed-forward block's expansion and GELU."""

    def __init__(self, config: BertConfig, layer: int) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate(layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # (B, T, I)


class BertOutput(nn.Module):
    """The feed-forward block's projection back to H, residual, LayerNorm."""

    def __init__(self, config: BertConfig, layer: int) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate(layer), config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # h (B, T, I), x (B, T, H)
        return self.LayerNorm(self.dense(h) + x)  # (B, T, H)


class BertLayer(nn.Module):
    """One transformer layer: attention, then feed-forward, each with residual and post-LayerNorm."""

    def __init__(self, config: BertConfig, layer: int) -> None:
        super().__init__()
        self.attention = BertAttention(config, layer)
        self.intermediate = BertIntermediate(config, layer)
        self.output = BertOutput(config, layer)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attention(x, mask)  # (B, T, H)
        return self.output(self.intermediate(x), x)  # (B, T, H)


class BertEncoder(nn.Module):
    """The stack of layers."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config, i) for i in range(config.num_hidden_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, mask)
        return x  # (B, T, H)


class BertPooler(nn.Module):
    """The [CLS] token's vector through a dense layer and tanh."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x[:, 0]))  # (B, H)


class BertModel(nn.Module):
    """Embeddings, encoder and pooler: texts to one pooled vector each."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        return self.pooler(self.encoder(x, _additive_mask(attention_mask, x.dtype)))  # (B, H)


def _additive_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, T) 1 = token, 0 = padding -> (B, 1, 1, T) 0 / most-negative, added to every query's scores.

    None when nothing is padded: SDPA then needs no mask at all.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    keep = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, T)
    return (1.0 - keep) * torch.finfo(dtype).min


class BertForSequenceClassification(nn.Module):
    """BERT with a linear head on the pooled [CLS] vector: token ids to label logits."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> ClassifierOutput:
        """Logits for `input_ids` (B, T); a missing mask means no padding, missing segments all 0."""
        if input_ids.size(1) > self.config.max_position_embeddings:
            raise ValueError(
                f"input_ids must have at most {self.config.max_position_embeddings} tokens, "
                f"got {input_ids.size(1)}"
            )
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        pooled = self.bert(input_ids, attention_mask, token_type_ids)  # (B, H)
        return ClassifierOutput(self.classifier(pooled))  # (B, num_labels)


def checkpoint_names(names: Iterable[str]) -> dict[str, str | None]:
    """This model's state-dict name for each tensor name in a BERT checkpoint; None: not a weight.

    What Hugging Face's loader accepts for BERT: the bare encoder's names (`embeddings...` without
    `bert.`), TF-era LayerNorm names (`gamma` / `beta`), and the position / segment id buffers that
    older versions saved (recomputed here, so dropped).
    """
    names = list(names)
    bare = not any(n.startswith("bert.") for n in names)
    renamed: dict[str, str | None] = {}
    for name in names:
        new = name
        for old, current in _LEGACY_NAMES:
            if new.endswith(old):
                new = new[: -len(old)] + current
        if bare and not new.startswith("classifier."):
            new = f"bert.{new}"
        renamed[name] = None if new in _IGNORED_BUFFERS else new
    return renamed
