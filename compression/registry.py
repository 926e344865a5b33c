"""One verb for every compression method: `compress(model, config) -> nn.Module`.

Each method is a private function registered against its config type with `@register(Config)`.
`compress` deep-copies the model and hands the copy to that function, which may change it freely:
the caller's model is never touched. `compress_chain` applies several configs in order (prune, then
quantize) to a single copy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from torch import nn

__all__ = ["compress", "compress_chain", "register", "registered_configs"]

_Fn = TypeVar("_Fn", bound=Callable[[nn.Module, Any], nn.Module])
_REGISTRY: dict[type, Callable[[nn.Module, Any], nn.Module]] = {}


def register(config_type: type) -> Callable[[_Fn], _Fn]:
    """Register the decorated `fn(model, config) -> nn.Module` as the method for `config_type`.

    The function receives a private copy of the model and may modify it in place.
    """
    if not isinstance(config_type, type) or not isinstance(getattr(config_type, "NAME", None), str):
        raise TypeError(f"config_type must be a class with a str NAME, got {config_type!r}")

    def decorator(fn: _Fn) -> _Fn:
        if config_type in _REGISTRY:
            raise ValueError(f"config_type must be registered once, got a second {config_type.__name__}")
        _REGISTRY[config_type] = fn
        return fn

    return decorator


def registered_configs() -> dict[str, type]:
    """Config classes by their `NAME`, e.g. {"quant": Int8DynamicQuantConfig, "l1": ...}."""
    return {cfg.NAME: cfg for cfg in _REGISTRY}


def _method_for(config: Any) -> Callable[[nn.Module, Any], nn.Module]:
    fn = _REGISTRY.get(type(config))
    if fn is None:
        known = ", ".join(sorted(c.__name__ for c in _REGISTRY))
        raise TypeError(f"config must be one of {known}, got {type(config).__name__}")
    return fn


def compress(model: nn.Module, config: Any) -> nn.Module:
    """Return a compressed copy of `model`; `model` itself is left unchanged."""
    return compress_chain(model, [config])


def compress_chain(model: nn.Module, configs: Iterable[Any]) -> nn.Module:
    """Apply `configs` in order (e.g. prune, then quantize) to one copy of `model`.

    An empty chain returns a plain copy. Every config is checked before any work is done.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    steps = [(_method_for(cfg), cfg) for cfg in configs]
    out = copy.deepcopy(model)
    for fn, cfg in steps:
        out = fn(out, cfg)
    return out


def _find_modules(model: nn.Module, match: Callable[[nn.Module, str], bool]) -> list[tuple[str, nn.Module]]:
    """(fqn, module) for every module where `match(module, fqn)`, outermost first, not below a match."""
    found: list[tuple[str, nn.Module]] = []
    for fqn, module in model.named_modules():
        if any(fqn.startswith(f"{done}.") for done, _ in found if done):
            continue
        if match(module, fqn):
            found.append((fqn, module))
    return found


def _swap_modules_(
    model: nn.Module,
    match: Callable[[nn.Module, str], bool],
    replace: Callable[[nn.Module, str], nn.Module],
) -> None:
    """Replace, in place, every module where `match(module, fqn)` by `replace(module, fqn)`."""
    for fqn, module in _find_modules(model, match):
        if not fqn:
            raise ValueError("match must not select the root module, got a match for ''")
        parent_name, _, attr = fqn.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, replace(module, fqn))
