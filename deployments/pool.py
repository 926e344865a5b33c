"""Ray Serve application: a warm pool whose replicas serve any variant, attaching it on demand.

A new replica process takes seconds to start (Ray's worker boot and imports, docs/SCALING.md);
attaching a variant's weights zero-copy takes milliseconds. So the elastic capacity is a pool of
warm replicas that each take on whichever variant the load moves to, through Serve's model
multiplexing: the variant is the multiplexed model id, given by the `serve_multiplexed_model_id`
header or by the path (`/pool/<variant>/classify`). A replica keeps the most recently used variants
up to `max_models` and `max_private_mb` and drops the rest; the weights stay in the object store.
Only the variants named in the pool's args are served: a request names a key, never a path.
"""

import asyncio
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any

import ray
from fastapi import Depends, FastAPI, Response
from pydantic import Field, field_validator
from ray import serve
from ray.serve import Application

from deployments.auth import ApiKeys
from deployments.boundary import NotServedError, install_error_handlers, require_json
from deployments.protocol import (
    VARIANT_PATTERN,
    ClassifyRequest,
    ClassifyResponse,
    InfoResponse,
    PoolHealthResponse,
    ServingLimits,
    check_texts,
)
from deployments.warm_worker import keep_spare_worker_in_background
from loading.artifact import resolve_model_dir
from loading.host import process_start_time
from loading.memory import IdleTrim
from loading.predict import Predictor
from loading.store import (
    AttachedModel,
    Int8Kernel,
    attach,
    import_model_code,
    keep_template_,
    prefetch,
    set_threads,
)

__all__ = ["Pool", "PoolArgs", "app_builder"]

logger = logging.getLogger(__name__)

_MULTIPLEX_ATTR = "__serve_multiplex_wrapper"  # where Serve keeps a multiplexed loader's LRU cache


class PoolArgs(ServingLimits):
    """Application arguments, given under `args:` in `serve_config.yaml`."""

    # variant -> artifact folder: the only variants the pool serves, so a request's variant is a key
    # into this map and never a path. Relative folders resolve from the repo root.
    variants: dict[str, str] = Field(default_factory=lambda: {"base": "artifacts/base"}, min_length=1)
    max_models: int = Field(8, ge=1)  # variants attached at once per replica; least recently used go
    # Private memory the attached variants may hold per replica (module objects, FBGEMM's packed copy
    # on CPUs without fast int8 matmuls, densified sparse layers). Shared weights are held once per
    # node by the store and do not count.
    max_private_mb: float = Field(512.0, gt=0)

    @field_validator("variants")
    @classmethod
    def _names(cls, variants: dict[str, str]) -> dict[str, str]:
        for name in variants:
            if not re.fullmatch(VARIANT_PATTERN, name):
                raise ValueError(f"variant names must match {VARIANT_PATTERN}, got {name!r}")
        return variants


@dataclass
class _Held:
    """One variant attached in this replica."""

    name: str
    attached: AttachedModel
    predictor: Predictor


pool_api = FastAPI(title="BERT text classifier pool", version="0.1.0", redirect_slashes=False)
install_error_handlers(pool_api)


@serve.deployment(
    max_ongoing_requests=64,
    user_config={"max_batch_size": 16, "batch_wait_timeout_s": 0.01},
    ray_actor_options={"num_cpus": 1},
)
@serve.ingress(pool_api)
class Pool:
    """A warm replica: any listed variant, attached zero-copy the first time it is asked for."""

    def __init__(self, args: PoolArgs) -> None:
        init_started = time.time()
        api_keys = ApiKeys.from_env()  # first: a bad key setting fails the replica before loading
        self.args = args
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        self.threads = set_threads(cpus)
        self.model_dirs = {v: str(resolve_model_dir(d)) for v, d in args.variants.items()}
        for model_dir in dict.fromkeys(self.model_dirs.values()):
            import_model_code(model_dir)
        # Every variant's store references in one round trip, and its pages mapped: an attach is
        # then local work only, and a first forward pass takes no page faults.
        prefetch(self.model_dirs, map_pages=True)
        Int8Kernel(args.int8_kernel).resolve()  # `auto`'s probe (20-40 ms) now, not at an attach
        # One attach now, dropped: the first in a process pays ~4 ms of first-time code paths.
        first = next(iter(self.model_dirs))
        attach(first, self.model_dirs[first], keep_for_reattach=False, **self._kernels())

        # Per instance, so that `max_models` comes from the args (the decorator's count is fixed
        # when it is applied). A plain function: Serve keeps its LRU cache as an attribute of the
        # function it wraps (`_cache`), and reports the ids that cache holds to its router.
        async def load(variant: str) -> _Held:
            return await self._attach(variant)

        self._loader = load
        self._variant = serve.multiplexed(max_num_models_per_replica=args.max_models)(load)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.startup: dict[str, float | None] = {
            "process_started": process_start_time(),
            "init_started": init_started,
            "ready": time.time(),
        }
        self._trim = IdleTrim(after_s=0.5)  # freed heap back to the OS once idle for 0.5 s
        pool_api.state.headers = {"x-replica-id": self.replica_id}
        pool_api.state.max_body_bytes = args.max_body_bytes
        pool_api.state.body_timeout_s = args.body_timeout_s
        pool_api.state.api_keys = api_keys
        logger.info("pool replica %s ready for %s", self.replica_id, sorted(self.model_dirs))
        # A spare worker, already imported, for this node's next replica (~1 s start, not ~8 s);
        # on a thread, seconds later: docs/SCALING.md "Warm workers".
        keep_spare_worker_in_background()

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Retune batching without restarting the replica (`user_config` in the YAML)."""
        self._classify_batch.set_max_batch_size(int(config.get("max_batch_size", 16)))
        self._classify_batch.set_batch_wait_timeout_s(float(config.get("batch_wait_timeout_s", 0.01)))

    async def _attach(self, variant: str) -> _Held:
        """Serve's multiplexed loader: attach `variant`, then drop the least recent past the budget."""
        # No template now: one is made after the answer, below.
        attached = attach(variant, self.model_dirs[variant], keep_for_reattach=False, **self._kernels())
        # Off this request's path: the next attach of this variant here is then a clone (<1 ms).
        asyncio.get_running_loop().call_soon(keep_template_, attached)
        held = _Held(variant, attached, Predictor(attached.model, attached.tokenizer, self.args.max_tokens))
        await self._fit_budget(attached.private_bytes)
        logger.info(
            "replica %s attached %s in %.2f ms (%.1f MB private)",
            self.replica_id,
            variant,
            attached.attach_ms,
            attached.private_bytes / 1e6,
        )
        return held

    def _kernels(self) -> dict[str, Any]:
        return {"int8_kernel": self.args.int8_kernel, "sparse_kernel": self.args.sparse_kernel}

    def _cache(self) -> Any:
        """Serve's multiplexed cache (`models`: an LRU-ordered dict), made at the first request."""
        return getattr(self._loader, _MULTIPLEX_ATTR, None)

    async def _fit_budget(self, incoming_bytes: int) -> None:
        """Drop least recently used variants until `incoming_bytes` more fit in `max_private_mb`.

        Serve's multiplexed cache bounds the count only; the bytes are bounded here through the same
        cache, so that Serve's router learns what this replica dropped.
        """
        cache = self._cache()
        if cache is None:
            return
        budget = self.args.max_private_mb * 1e6
        while (
            cache.models
            and sum(h.attached.private_bytes for h in cache.models.values()) + incoming_bytes > budget
        ):
            await cache.unload_model_lru()
            cache._push_multiplexed_replica_info = True  # Serve's own flag: report the new set

    async def _held(self, variant: str) -> _Held:
        if variant not in self.model_dirs:  # the only check between a request and the store: a key
            shown = variant if len(variant) <= 60 else f"{variant[:60]}..."
            raise NotServedError(
                f"no variant {shown!r} in the pool; it serves {sorted(self.model_dirs)}",
                sorted(self.model_dirs),
            )
        return await self._variant(variant)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _classify_batch(self, items: list[tuple[_Held, str]]) -> list[dict[str, Any]]:
        # One forward pass per variant in the batch; answers go back in arrival order.
        results: list[dict[str, Any] | None] = [None] * len(items)
        groups: dict[str, list[int]] = {}
        for i, (held, _) in enumerate(items):
            groups.setdefault(held.name, []).append(i)
        for indices in groups.values():
            held = items[indices[0]][0]
            predictions = held.predictor.predict([items[i][1] for i in indices], len(indices))
            for i, p in zip(indices, predictions, strict=True):
                results[i] = p.to_dict()
        self._trim.touch()
        return results

    async def _classify(self, variant: str, request: ClassifyRequest, response: Response) -> dict[str, Any]:
        texts = request.as_list()
        check_texts(texts, self.args)
        held = await self._held(variant)
        predictions = await asyncio.gather(*(self._classify_batch((held, t)) for t in texts))
        response.headers["x-variant"] = variant
        response.headers["x-weights-load-ms"] = f"{held.attached.attach_ms:.3f}"
        response.headers["x-weights-loaded-from"] = held.attached.loaded_from
        return {"variant": variant, "predictions": list(predictions)}

    @pool_api.post("/classify", dependencies=[Depends(require_json)])
    async def classify(self, request: ClassifyRequest, response: Response) -> ClassifyResponse:
        """Classify texts with the variant named by the `serve_multiplexed_model_id` header."""
        variant = serve.get_multiplexed_model_id()
        if not variant:
            raise NotServedError(
                "name the variant: POST /pool/<variant>/classify, or send the header "
                f"serve_multiplexed_model_id; the pool serves {sorted(self.model_dirs)}",
                sorted(self.model_dirs),
            )
        return await self._classify(variant, request, response)

    @pool_api.post("/{variant}/classify", dependencies=[Depends(require_json)])
    async def classify_variant(
        self, variant: str, request: ClassifyRequest, response: Response
    ) -> ClassifyResponse:
        """Classify texts with the variant named in the path; predictions come back in input order."""
        return await self._classify(variant, request, response)

    @pool_api.get("/healthz")
    async def healthz(self) -> PoolHealthResponse:
        """200 once the replica can attach any variant; says which ones it holds now."""
        cache = self._cache()
        held: dict[str, _Held] = dict(cache.models) if cache is not None else {}
        return {
            "status": "ok",
            "replica_id": self.replica_id,
            "pid": os.getpid(),
            "torch_threads": self.threads,
            "variants": sorted(self.model_dirs),
            "held": {
                name: {
                    "attach_ms": round(h.attached.attach_ms, 3),
                    "store_wait_ms": round(h.attached.store_wait_ms, 3),
                    "private_bytes": h.attached.private_bytes,
                    "arena_bytes": h.attached.arena_bytes,
                    "loaded_from": h.attached.loaded_from,
                }
                for name, h in held.items()
            },
            "startup": self.startup,
        }

    @pool_api.get("/{variant}/info")
    async def info(self, variant: str) -> InfoResponse:
        """The variant's metadata from `variant.json` (attaches it if this replica lacks it)."""
        return (await self._held(variant)).attached.describe()


def app_builder(args: dict[str, Any]) -> Application:
    """Build the pool application from the YAML `args:` (validated, clear errors)."""
    return Pool.bind(PoolArgs(**args))


app = Pool.bind(PoolArgs())
