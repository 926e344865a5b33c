"""compress / compress_chain / register and the module-swapping helper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
from torch import nn

from compression import (
    Int8DynamicQuantConfig,
    L1UnstructuredPruneConfig,
    RandomStructuredPruneConfig,
    RandomUnstructuredPruneConfig,
    compress,
    compress_chain,
    register,
    registered_configs,
)
from compression.registry import _find_modules, _swap_modules_
from tests.compression.conftest import assert_unchanged, logits, snapshot

CONFIGS = [
    Int8DynamicQuantConfig(),
    L1UnstructuredPruneConfig(amount=0.5),
    RandomUnstructuredPruneConfig(amount=0.5),
    RandomStructuredPruneConfig(amount=0.5),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.NAME)
def test_compress_returns_a_new_model_and_leaves_the_input_alone(model, config):
    before = snapshot(model)
    out = compress(model, config)
    assert out is not model
    assert_unchanged(model, before)


def test_registered_names():
    assert {"quant", "l1", "random", "structured"} <= registered_configs().keys()


def test_empty_chain_is_a_copy(model, batch):
    out = compress_chain(model, [])
    assert out is not model
    assert logits(out, batch).equal(logits(model, batch))


def test_unknown_config_raises(model):
    with pytest.raises(TypeError, match="config must be one of"):
        compress(model, {"amount": 0.5})


def test_chain_checks_every_config_before_working(model):
    with pytest.raises(TypeError, match="config must be one of"):
        compress_chain(model, [L1UnstructuredPruneConfig(), "quant"])


def test_model_must_be_a_module():
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        compress("bert", Int8DynamicQuantConfig())


def test_register_rejects_bad_and_duplicate_types():
    with pytest.raises(TypeError, match="config_type must be a class with a str NAME"):
        register(int)

    @dataclass(frozen=True)
    class _Identity:
        NAME: ClassVar[str] = "identity-test"

    register(_Identity)(lambda m, c: m)
    with pytest.raises(ValueError, match="registered once"):
        register(_Identity)(lambda m, c: m)


def test_swap_modules_replaces_matches_in_place():
    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    _swap_modules_(net, lambda m, _: isinstance(m, nn.Linear), lambda m, _: nn.Identity())
    assert [fqn for fqn, _ in _find_modules(net, lambda m, _: isinstance(m, nn.Identity))] == ["0", "1.0"]
    with pytest.raises(ValueError, match="match must not select the root module"):
        _swap_modules_(net, lambda m, fqn: fqn == "", lambda m, _: nn.Identity())
