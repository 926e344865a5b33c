"""Structured pruning of BERT layers: whole attention heads and feed-forward neurons, then smaller Linears.

Zeroing scattered weights leaves every matrix its full shape, and a CPU multiplies the zeros too
(one-shot pruned variants ran slower than base). Removing a head takes its rows out of the query,
key and value projections and its columns out of the attention output; removing a feed-forward
neuron takes a row out of the expansion and a column out of the projection. The matrices get
physically smaller, which is what makes them faster.

While training, pruned structures are only masked (zero rows and columns), so the optimizer's
tensors keep their shapes; `shrink_` cuts them out at the end. A masked head contributes exactly
zero: its value rows and bias are zero, so its attention output is zero whatever its scores.
Importance is first-order (Molchanov et al., 2019): |sum of weight x gradient| over a structure's
weights, summed over the steps since training began. Works on any module tree with Hugging Face's
BERT names (`encoder.layer.N.attention.self.query`, ..., `intermediate.dense`, `output.dense`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["StructuredPruner", "keep_layers_"]


@dataclass
class _Layer:
    """One encoder layer's prunable Linears, its masks and the importance gathered so far."""

    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attn_out: nn.Linear  # attention.output.dense: columns are head outputs
    ffn_in: nn.Linear  # intermediate.dense: rows are neurons
    ffn_out: nn.Linear  # output.dense: columns are neurons
    head_size: int
    heads: torch.Tensor  # (n_heads,) bool, True = kept
    neurons: torch.Tensor  # (I,) bool
    head_score: torch.Tensor  # (n_heads,) float
    neuron_score: torch.Tensor  # (I,) float

    def head_rows(self) -> torch.Tensor:
        """(A,) bool: the query/key/value rows (and attention-output columns) of kept heads."""
        return self.heads.repeat_interleave(self.head_size)


def _linear(layer: nn.Module, path: str) -> nn.Linear:
    module = layer.get_submodule(path)
    if not isinstance(module, nn.Linear):
        raise TypeError(
            f"{path} must be a float nn.Linear (prune before quantizing), got {type(module).__name__}"
        )
    return module


def _encoder_layers(model: nn.Module) -> nn.ModuleList:
    found = [
        m
        for name, m in model.named_modules()
        if name.endswith("encoder.layer") and isinstance(m, nn.ModuleList)
    ]
    if len(found) != 1:
        raise ValueError(f"model must have one `encoder.layer` ModuleList (BERT names), found {len(found)}")
    return found[0]


def keep_layers_(model: nn.Module, count: int) -> None:
    """Keep the bottom `count` encoder layers and drop the rest (Sajjad et al.: top layers go first)."""
    layers = _encoder_layers(model)
    if not 1 <= count <= len(layers):
        raise ValueError(f"count must be in 1..{len(layers)}, got {count}")
    del layers[count:]


class StructuredPruner:
    """Masks, importance and the final cut of heads and feed-forward neurons, the same share per layer."""

    def __init__(self, model: nn.Module, head_size: int) -> None:
        self.layers: list[_Layer] = []
        for layer in _encoder_layers(model):
            query = _linear(layer, "attention.self.query")
            ffn_in = _linear(layer, "intermediate.dense")
            if query.out_features % head_size:
                raise ValueError(
                    f"head_size must divide the attention width {query.out_features}, got {head_size}"
                )
            n_heads, width = query.out_features // head_size, ffn_in.out_features
            self.layers.append(
                _Layer(
                    query=query,
                    key=_linear(layer, "attention.self.key"),
                    value=_linear(layer, "attention.self.value"),
                    attn_out=_linear(layer, "attention.output.dense"),
                    ffn_in=ffn_in,
                    ffn_out=_linear(layer, "output.dense"),
                    head_size=head_size,
                    heads=torch.ones(n_heads, dtype=torch.bool),
                    neurons=torch.ones(width, dtype=torch.bool),
                    head_score=torch.zeros(n_heads),
                    neuron_score=torch.zeros(width),
                )
            )

    @torch.no_grad()
    def accumulate_(self) -> None:
        """Add this step's first-order importance; call after `backward()`, before the optimizer step."""
        for ly in self.layers:
            if ly.value.weight.grad is None or ly.ffn_in.weight.grad is None:
                continue
            per_row = sum(_wg_rows(m) for m in (ly.query, ly.key, ly.value))  # (A,)
            per_row = per_row + _wg_cols(ly.attn_out)  # (A,)
            ly.head_score += per_row.view(-1, ly.head_size).sum(1).abs()
            ly.neuron_score += (_wg_rows(ly.ffn_in) + _wg_cols(ly.ffn_out)).abs()

    @torch.no_grad()
    def prune_to_(self, share: float) -> None:
        """Mask the least important heads and neurons until `share` of each layer's are gone.

        At least one head and one neuron stay in every layer; pruned structures never come back.
        """
        if not 0.0 <= share < 1.0:
            raise ValueError(f"share must be in [0, 1), got {share}")
        for ly in self.layers:
            ly.heads = _keep_top(ly.head_score, ly.heads, share)
            ly.neurons = _keep_top(ly.neuron_score, ly.neurons, share)
        self.apply_masks_()

    @torch.no_grad()
    def apply_masks_(self) -> None:
        """Zero the masked rows and columns again (the optimizer moves them)."""
        for ly in self.layers:
            rows = ly.head_rows()
            for m in (ly.query, ly.key, ly.value):
                m.weight[~rows] = 0.0
                m.bias[~rows] = 0.0
            ly.attn_out.weight[:, ~rows] = 0.0
            ly.ffn_in.weight[~ly.neurons] = 0.0
            ly.ffn_in.bias[~ly.neurons] = 0.0
            ly.ffn_out.weight[:, ~ly.neurons] = 0.0

    @torch.no_grad()
    def shrink_(self, model: nn.Module) -> tuple[list[int], list[int]]:
        """Replace every pruned Linear by one of its kept shape; returns (heads, FFN width) per layer.

        Exact: the removed rows and columns only ever multiplied zeros.
        """
        self.apply_masks_()
        heads, widths = [], []
        for layer, ly in zip(_encoder_layers(model), self.layers, strict=True):
            rows = ly.head_rows().nonzero().squeeze(1)
            neurons = ly.neurons.nonzero().squeeze(1)
            for path, m in (
                ("attention.self.query", ly.query),
                ("attention.self.key", ly.key),
                ("attention.self.value", ly.value),
            ):
                _set(layer, path, _cut(m, rows=rows))
            _set(layer, "attention.output.dense", _cut(ly.attn_out, cols=rows))
            _set(layer, "intermediate.dense", _cut(ly.ffn_in, rows=neurons))
            _set(layer, "output.dense", _cut(ly.ffn_out, cols=neurons))
            heads.append(int(ly.heads.sum()))
            widths.append(int(ly.neurons.sum()))
        return heads, widths


def _wg_rows(m: nn.Linear) -> torch.Tensor:
    """(out,) sum over each output row of weight x gradient, bias included."""
    return (m.weight * m.weight.grad).sum(1) + m.bias * m.bias.grad


def _wg_cols(m: nn.Linear) -> torch.Tensor:
    """(in,) sum over each input column of weight x gradient."""
    return (m.weight * m.weight.grad).sum(0)


def _keep_top(score: torch.Tensor, kept: torch.Tensor, share: float) -> torch.Tensor:
    n_keep = max(1, len(kept) - int(round(share * len(kept))))
    if n_keep >= int(kept.sum()):
        return kept
    ranked = score.masked_fill(~kept, float("-inf"))
    out = torch.zeros_like(kept)
    out[torch.topk(ranked, n_keep).indices] = True
    return out


def _cut(m: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    weight = m.weight if rows is None else m.weight[rows]
    weight = weight if cols is None else weight[:, cols]
    bias = None if m.bias is None else (m.bias if rows is None else m.bias[rows])
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    out.weight = nn.Parameter(weight.detach().clone(), requires_grad=m.weight.requires_grad)
    if bias is not None:
        out.bias = nn.Parameter(bias.detach().clone(), requires_grad=m.bias.requires_grad)
    return out


def _set(layer: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(layer.get_submodule(parent), attr, module)
