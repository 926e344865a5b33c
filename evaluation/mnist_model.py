"""The study's MNIST net, its training, and the measures of the sweep: accuracy, saved bytes, pruning."""

from __future__ import annotations

import io
import logging
from enum import StrEnum
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

import compression
from evaluation.mnist_data import CLASSES, PIXELS, MnistDataError

__all__ = ["MnistMLP", "PruneMethod", "accuracy", "load_weights_", "prune", "saved_bytes", "train_"]

logger = logging.getLogger(__name__)

_EVAL_BATCH = 1000  # rows per forward pass when measuring accuracy; only memory depends on it


class PruneMethod(StrEnum):
    """The three pruning methods of the study's sweep, as named in results.csv."""

    RANDOM_UNSTRUCTURED = "random_unstructured"
    RANDOM_STRUCTURED = "random_structured"
    L1_UNSTRUCTURED = "l1_unstructured"


_PRUNE_CONFIGS = {
    PruneMethod.RANDOM_UNSTRUCTURED: compression.RandomUnstructuredPruneConfig,
    PruneMethod.RANDOM_STRUCTURED: compression.RandomStructuredPruneConfig,
    PruneMethod.L1_UNSTRUCTURED: compression.L1UnstructuredPruneConfig,
}


class MnistMLP(nn.Module):
    """The study's fully connected net, laid out so `compression`'s pruning finds its layers.

    `compression.prune` targets Linear layers under a module named `encoder` (BERT's layout) plus the
    one named `classifier` when `include_classifier=True`, so the hidden layers live in `encoder`.
    """

    def __init__(self, hidden: tuple[int, ...] = (1200, 840, 300), num_classes: int = CLASSES) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = PIXELS
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.encoder = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))  # (B, 784) -> (B, 10) logits; softmax is in the loss


def _scale(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float().div_(255.0)  # (B, 784) uint8 -> float in [0, 1]


def train_(
    model: nn.Module,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> list[float]:
    """Train in place with Adam on cross-entropy (the study's recipe); returns the mean loss of each epoch."""
    loader = DataLoader(
        TensorDataset(pixels, labels),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),  # the same batches on every rerun
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()  # log-softmax + NLL: the study's softmax with cross-entropy
    model.train()
    epoch_losses = []
    with tqdm(total=epochs * len(loader), desc="train", unit="batch") as bar:
        for epoch in range(epochs):
            total = 0.0
            for x, y in loader:
                loss = loss_fn(model(_scale(x)), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item()
                bar.update()
            epoch_losses.append(total / len(loader))
            bar.set_postfix(loss=f"{epoch_losses[-1]:.4f}")
            logger.info("epoch %d/%d: mean loss %.4f", epoch + 1, epochs, epoch_losses[-1])
    model.eval()
    return epoch_losses


@torch.inference_mode()
def accuracy(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of `labels` the model predicts, in batches of rows (pixels uint8, scaled here)."""
    correct = 0
    for start in range(0, len(labels), _EVAL_BATCH):
        logits = model(_scale(pixels[start : start + _EVAL_BATCH]))
        correct += int((logits.argmax(dim=1) == labels[start : start + _EVAL_BATCH]).sum())
    return correct / len(labels)


def saved_bytes(model: nn.Module) -> int:
    """Bytes of `torch.save(model.state_dict())`: one measure for fp32 and dynamic-int8 models alike."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def prune(
    model: nn.Module, method: PruneMethod | str, amount: float, seed: int = 0, include_classifier: bool = True
) -> nn.Module:
    """A copy of `model` with `amount` of each layer's weights zeroed by `method`.

    `include_classifier=True` prunes the 300->10 output layer too: the study pruned every layer.
    """
    config_type = _PRUNE_CONFIGS[PruneMethod(method)]
    return compression.compress(
        model, config_type(amount=amount, seed=seed, include_classifier=include_classifier)
    )


def load_weights_(model: nn.Module, path: Path) -> None:
    """Load a model.safetensors of an earlier run into `model`; MnistDataError if it is not one."""
    if not path.is_file():
        raise MnistDataError(f"--weights must be a safetensors file, got {path} (not found)")
    try:
        model.load_state_dict(load_file(path))
    except (RuntimeError, OSError, ValueError) as exc:  # wrong shapes or keys, or not safetensors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MnistDataError(f"{path}: not weights of this network: {first}") from exc
