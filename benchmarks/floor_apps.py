"""Reference replicas for `benchmarks.replica_floor`: what any torch replica costs, and the docs' way.

- `Floor`: imports torch and answers a constant. Nothing a torch replica can do starts faster or
  holds less, so ours minus this is what our own code and model cost.
- `Pipeline`: the replica the Ray Serve docs show, a transformers `pipeline("text-classification")`
  built in `__init__`.

Both answer any request with their pid, process start and construction times and a replica id, so
the benchmark can tell a new replica from the old one.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ray import serve
from ray.serve import Application
from starlette.requests import Request

from loading.host import process_start_time

__all__ = ["Floor", "Pipeline", "floor_app", "pipeline_app"]


def _replica_facts(constructed: float) -> dict[str, Any]:
    return {
        "replica_id": serve.get_replica_context().replica_id.unique_id,
        "pid": os.getpid(),
        "process_started": process_start_time(),
        "constructed": constructed,
    }


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class Floor:
    """Imports torch, answers a constant: the floor of a torch replica's start and memory."""

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)
        self.facts = _replica_facts(time.time())

    async def __call__(self, request: Request) -> dict[str, Any]:
        return {**self.facts, "label": "stress", "score": 1.0}


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class Pipeline:
    """A transformers text-classification pipeline built in `__init__`, as the Ray Serve docs show."""

    def __init__(self, model_dir: str) -> None:
        import torch
        from transformers import pipeline

        torch.set_num_threads(1)
        self.classify = pipeline("text-classification", model=model_dir, device="cpu")
        self.facts = _replica_facts(time.time())

    async def __call__(self, request: Request) -> dict[str, Any]:
        return {**self.facts, **self.classify((await request.json()).get("text", ""))[0]}


def floor_app(args: dict[str, Any] | None = None) -> Application:
    return Floor.bind()


def pipeline_app(args: dict[str, Any]) -> Application:
    return Pipeline.bind(str(args["model_dir"]))
