"""Pure parts of the Locust file: load shapes and answer checks (no Locust import, so tests and
other tools can use them without gevent's monkey-patching)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["SHAPES", "ShapeConfig", "answer_problem", "users_at"]

SHAPES = ("constant", "step", "spike")


@dataclass(frozen=True)
class ShapeConfig:
    """A load shape over time; `users` and `spawn_rate` are Locust's -u and -r."""

    shape: str = "constant"
    users: int = 1
    spawn_rate: float = 1.0
    step_users: int = 5  # step: users added per step
    step_seconds: float = 30.0  # step: seconds per step
    spike_at: float = 20.0  # spike: seconds before the spike
    spike_seconds: float = 20.0  # spike: its length

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if self.users < 1 or self.spawn_rate <= 0 or self.step_users < 1 or self.step_seconds <= 0:
            raise ValueError(f"users, step_users must be >= 1 and rates/seconds > 0, got {self}")


def users_at(cfg: ShapeConfig, run_time: float) -> tuple[int, float]:
    """(users, spawn rate) at `run_time` seconds.

    constant: `users` throughout; step: `step_users` more every `step_seconds`, up to `users`;
    spike: a fifth of `users` (at least 1), then all of them for `spike_seconds`, then back.
    """
    if cfg.shape == "step":
        return min(cfg.users, cfg.step_users * (1 + int(run_time // cfg.step_seconds))), cfg.spawn_rate
    if cfg.shape == "spike":
        if cfg.spike_at <= run_time < cfg.spike_at + cfg.spike_seconds:
            return cfg.users, float(cfg.users)  # everyone at once: that is the spike
        return max(1, cfg.users // 5), cfg.spawn_rate
    return cfg.users, cfg.spawn_rate


def answer_problem(body: Any, sent: int, variant: str) -> str | None:
    """What is wrong with an answer to `sent` texts from the route `variant` (`base`, `stress/base`,
    `pool/base`, `pool/sentiment/base`), or None if it is the API's answer."""
    *prefix, name = variant.split("/")
    model = [p for p in prefix if p != "pool"]
    wrong_model = bool(model) and isinstance(body, dict) and body.get("model") != model[-1]
    if not isinstance(body, dict) or body.get("variant") != name or wrong_model:
        return f"body is not an answer from {variant}: {str(body)[:200]}"
    predictions = body.get("predictions")
    if not isinstance(predictions, list) or len(predictions) != sent:
        return f"expected {sent} predictions, got {None if predictions is None else len(predictions)}"
    for p in predictions:
        probabilities = p.get("probabilities") if isinstance(p, dict) else None
        if not isinstance(probabilities, dict) or p.get("label") not in probabilities:
            return f"malformed prediction: {str(p)[:200]}"
    return None
