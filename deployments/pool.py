"""Ray Serve application: a warm pool whose replicas serve any model's variants, attaching on demand.

A new replica process takes seconds to start (Ray's worker boot and imports, docs/SCALING.md);
attaching a variant's weights zero-copy takes milliseconds. So the elastic capacity is a pool of
warm replicas that each take on whichever model and variant the load moves to, through Serve's
model multiplexing: the multiplexed model id is `<model>/<variant>`, given by the
`serve_multiplexed_model_id` header or by the path. Mounted at `/`, the pool answers every path no
dedicated application claims: `/<model>/<variant>/classify` of a model served by the pool only,
the old `/<variant>/classify` routes (the default model's variants), `/pool/...` (always the pool),
`/-/models` (what is served) and a JSON 404 for the rest. A replica keeps the most recently used
variants up to `max_models` and `max_private_mb` and drops the rest; the weights stay in the object
store. Only the folders named in the pool's args are served: a request names keys, never a path.
"""

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field, model_validator
from ray import serve
from ray.serve import Application

from deployments.auth import ApiKeys
from deployments.boundary import NotServedError, install_error_handlers, require_json
from deployments.catalog import describe_models, routes_of
from deployments.metrics import ServingMetrics
from deployments.protocol import (
    DEFAULT_MODEL,
    MODEL_PATTERN,
    POOL_ALIAS,
    VARIANT_PATTERN,
    ClassifyRequest,
    ClassifyResponse,
    InfoResponse,
    PoolHealthResponse,
    ServingLimits,
    check_texts,
    check_tokens,
    served_key,
    split_key,
)
from deployments.scheduler import FairScheduler
from deployments.warm_worker import keep_spare_worker_in_background
from loading.artifact import resolve_model_dir
from loading.host import process_start_time
from loading.memory import IdleTrim, trim_heap
from loading.predict import Predictor
from loading.store import (
    AttachedModel,
    Int8Kernel,
    attach,
    import_model_code,
    prefetch,
    set_threads,
)

__all__ = ["Pool", "PoolArgs", "app_builder"]

logger = logging.getLogger(__name__)

_MULTIPLEX_ATTR = "__serve_multiplex_wrapper"  # where Serve keeps a multiplexed loader's LRU cache
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class PoolArgs(ServingLimits):
    """Application arguments, given under `args:` in `serve_config.yaml`."""

    # model -> variant -> artifact folder: the only variants the pool serves, so a request's model
    # and variant are keys into this map, never a path. Relative folders resolve from the repo root.
    models: dict[str, dict[str, str]] = Field(default_factory=dict)
    # Shorthand for one model: `variants: {base: artifacts/base}` = `models: {<default_model>: ...}`.
    variants: dict[str, str] = Field(default_factory=dict)
    # Whose variants answer at `/<variant>/classify` (the routes from before models had names).
    default_model: str = Field(DEFAULT_MODEL, pattern=MODEL_PATTERN)
    max_models: int = Field(8, ge=1)  # variants attached at once per replica; least recently used go
    # Private memory the attached variants may hold per replica (module objects, FBGEMM's packed copy
    # on CPUs without fast int8 matmuls, densified sparse layers). Shared weights are held once per
    # node by the store and do not count.
    max_private_mb: float = Field(512.0, gt=0)

    @model_validator(mode="after")
    def _one_map(self) -> "PoolArgs":
        if self.variants:
            if self.default_model in self.models:
                raise ValueError(f"give {self.default_model!r} either in `models` or as `variants`, not both")
            self.models = {**self.models, self.default_model: self.variants}
            self.variants = {}
        if not self.models or not all(self.models.values()):
            raise ValueError("the pool needs at least 1 variant of each model it lists")
        legacy = set(self.models.get(self.default_model, {}))
        for model, variants in self.models.items():
            if not re.fullmatch(MODEL_PATTERN, model) or model == POOL_ALIAS:
                raise ValueError(
                    f"model names must match {MODEL_PATTERN} and not be {POOL_ALIAS!r}, got {model!r}"
                )
            if model in legacy:  # /<name>/... would mean both the model and a default-model variant
                raise ValueError(f"model {model!r} has the name of a variant of {self.default_model!r}")
            for name in variants:
                if not re.fullmatch(VARIANT_PATTERN, name):
                    raise ValueError(f"variant names must match {VARIANT_PATTERN}, got {name!r}")
        return self

    def model_dirs(self) -> dict[str, str]:
        """Every served `model/variant` -> its artifact folder (absolute)."""
        return {
            served_key(m, v): str(resolve_model_dir(d))
            for m, variants in self.models.items()
            for v, d in variants.items()
        }


def _shown(name: str | None) -> str:
    """A caller's name, cut short for an error message."""
    text = str(name)
    return text if len(text) <= 60 else f"{text[:60]}..."


@dataclass
class _Held:
    """One variant attached in this replica."""

    model: str
    variant: str
    attached: AttachedModel
    predictor: Predictor

    @property
    def key(self) -> str:
        return served_key(self.model, self.variant)


pool_api = FastAPI(title="BERT text classifier pool", version="0.2.0", redirect_slashes=False)
install_error_handlers(pool_api)


@serve.deployment(
    max_ongoing_requests=64,
    user_config={"max_batch_size": 16, "batch_wait_timeout_s": 0.01},
    ray_actor_options={"num_cpus": 1},
)
@serve.ingress(pool_api)
class Pool:
    """A warm replica: any listed model and variant, attached zero-copy the first time it is asked for."""

    def __init__(self, args: PoolArgs) -> None:
        init_started = time.time()
        api_keys = ApiKeys.from_env()  # first: a bad key setting fails the replica before loading
        self.args = args
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        self.threads = set_threads(cpus)
        self.model_dirs = args.model_dirs()
        for model_dir in dict.fromkeys(self.model_dirs.values()):
            import_model_code(model_dir)
        # Every variant's store references in one round trip, and its pages mapped: an attach is
        # then local work only, and a first forward pass takes no page faults.
        prefetch(self.model_dirs, map_pages=True)
        Int8Kernel(args.int8_kernel).resolve()  # `auto`'s probe (20-40 ms) now, not at an attach
        # Every variant attached once now and dropped, its module tree kept as a template: a
        # variant's first request here is then a clone of it (~1 ms), not an unpickle and re-wrap of
        # its skeleton (~5 ms for BERT-base). Module objects only (no measurable USS, docs/SCALING.md):
        # the tensors are the store's pages. Variants with private copies (FBGEMM's
        # packed weights) keep no template and attach in full on their first request.
        for key, model_dir in self.model_dirs.items():
            attach(key, model_dir, **self._kernels())
        trim_heap()  # the skeletons' unpickling leftovers
        models: dict[str, dict[str, Path]] = {}
        for key, model_dir in self.model_dirs.items():
            model, variant = split_key(key)
            models.setdefault(model, {})[variant] = Path(model_dir)
        self.catalog = describe_models(models)
        self.routes = routes_of(self.catalog)  # for the 404

        # Per instance, so that `max_models` comes from the args (the decorator's count is fixed
        # when it is applied). A plain function: Serve keeps its LRU cache as an attribute of the
        # function it wraps (`_cache`), and reports the ids that cache holds to its router.
        async def load(key: str) -> _Held:
            return await self._attach(key)

        self._loader = load
        self.metrics = ServingMetrics()
        self.scheduler = FairScheduler(
            max_batch_tokens=args.max_batch_tokens,
            max_queued_tokens=args.max_queued_tokens,
            on_pass=self.metrics.forward_pass,
        )
        self._held_keys: set[str] = set()  # what the cache held after our last look: its evictions
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

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Queued tokens, for the work-aware autoscaling policy (`deployments.autoscaling`)."""
        return self.scheduler.autoscaling_stats()

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Retune batching without restarting the replica (`user_config` in the YAML)."""
        self.scheduler.configure(config)

    async def _attach(self, key: str) -> _Held:
        """Serve's multiplexed loader: attach `key`, then drop the least recent past the budget."""
        self._count_evictions()  # Serve dropped its least recent one before calling us, if full
        attached = attach(key, self.model_dirs[key], **self._kernels())  # a clone of its template
        model, variant = split_key(key)
        held = _Held(
            model, variant, attached, Predictor(attached.model, attached.tokenizer, self.args.max_tokens)
        )
        await self._fit_budget(attached.private_bytes)
        self.metrics.pool_load(model, variant)
        self.metrics.attached(model, variant, attached.attach_ms)
        self._held_keys.add(key)
        self.metrics.held(len(self._held_keys))
        logger.info(
            "replica %s attached %s in %.2f ms (%.1f MB private)",
            self.replica_id,
            key,
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
        self._count_evictions()

    def _count_evictions(self) -> None:
        """Count as evicted what the cache held at our last look and holds no more."""
        cache = self._cache()
        now = set(cache.models) if cache is not None else set()
        for key in self._held_keys - now:
            self.metrics.pool_eviction(*split_key(key))
        self._held_keys &= now
        self.metrics.held(len(self._held_keys))

    def _key(self, model: str | None, variant: str) -> str:
        """The served `model/variant` a request names; NotServedError (a JSON 404) when none is.

        The only check between a request and the store: the result is a key of `model_dirs`.
        """
        model = self.args.default_model if model in (None, POOL_ALIAS) else model
        key = served_key(model, variant)
        if key in self.model_dirs:
            return key
        if model in self.args.models:
            problem = f"model {_shown(model)!r} has no variant {_shown(variant)!r}"
        else:
            problem = f"no model {_shown(model)!r}"
        raise NotServedError(
            f"{problem}; served: {sorted(self.model_dirs)} (GET /-/models lists them)",
            sorted(self.model_dirs),
        )

    async def _held(self, model: str | None, variant: str) -> _Held:
        return await self._variant(self._key(model, variant))

    async def _classify(
        self, model: str | None, variant: str, request: ClassifyRequest, response: Response
    ) -> dict[str, Any]:
        texts = request.as_list()
        check_texts(texts, self.args)
        held = await self._held(model, variant)
        encodings, truncated = held.predictor.encode(texts)  # once: counted, then run in passes
        check_tokens(encodings, self.args)
        # One scheduler for every variant: a round runs one variant's texts, rounds take turns.
        probs = await self.scheduler.run(held.key, held.predictor.forward, encodings)
        self._trim.touch()
        response.headers["x-model"] = held.model
        response.headers["x-variant"] = held.variant
        response.headers["x-weights-load-ms"] = f"{held.attached.attach_ms:.3f}"
        response.headers["x-weights-loaded-from"] = held.attached.loaded_from
        predictions = held.predictor.predictions(probs, truncated)
        return {
            "model": held.model,
            "variant": held.variant,
            "predictions": [p.to_dict() for p in predictions],
        }

    @pool_api.get("/healthz")
    @pool_api.get(f"/{POOL_ALIAS}/healthz")
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
                key: {
                    "attach_ms": round(h.attached.attach_ms, 3),
                    "store_wait_ms": round(h.attached.store_wait_ms, 3),
                    "private_bytes": h.attached.private_bytes,
                    "arena_bytes": h.attached.arena_bytes,
                    "loaded_from": h.attached.loaded_from,
                }
                for key, h in held.items()
            },
            "startup": self.startup,
        }

    @pool_api.get("/-/models")
    async def models(self) -> dict[str, Any]:
        """Every model and variant served: labels, size, recorded accuracy and routes."""
        return {"default_model": self.args.default_model, "models": self.catalog}

    @pool_api.post("/classify", dependencies=[Depends(require_json)])
    @pool_api.post(f"/{POOL_ALIAS}/classify", dependencies=[Depends(require_json)])
    async def classify(self, request: ClassifyRequest, response: Response) -> ClassifyResponse:
        """Classify texts with the `model/variant` (or default model's variant) the header names."""
        key = serve.get_multiplexed_model_id()
        if not key:
            raise NotServedError(
                "name the model and variant: POST /<model>/<variant>/classify, or send the header "
                f"serve_multiplexed_model_id: <model>/<variant>; served: {sorted(self.model_dirs)}",
                sorted(self.model_dirs),
            )
        model, _, variant = key.rpartition("/")
        return await self._classify(model or None, variant, request, response)

    @pool_api.post(f"/{POOL_ALIAS}/{{model}}/{{variant}}/classify", dependencies=[Depends(require_json)])
    @pool_api.post("/{model}/{variant}/classify", dependencies=[Depends(require_json)])
    async def classify_model_variant(
        self, model: str, variant: str, request: ClassifyRequest, response: Response
    ) -> ClassifyResponse:
        """Classify texts with a model's variant; predictions come back in input order."""
        return await self._classify(model, variant, request, response)

    @pool_api.post("/{variant}/classify", dependencies=[Depends(require_json)])
    async def classify_variant(
        self, variant: str, request: ClassifyRequest, response: Response
    ) -> ClassifyResponse:
        """The route from before models had names: the default model's variant."""
        return await self._classify(None, variant, request, response)

    @pool_api.get(f"/{POOL_ALIAS}/{{model}}/{{variant}}/info")
    @pool_api.get("/{model}/{variant}/info")
    async def info(self, model: str, variant: str) -> InfoResponse:
        """The variant's metadata from `variant.json` (attaches it if this replica lacks it)."""
        held = await self._held(model, variant)
        return {**held.attached.describe(), "model": held.model, "variant": held.variant}

    @pool_api.get("/{variant}/info")
    async def info_variant(self, variant: str) -> InfoResponse:
        """The default model's variant's metadata (the route from before models had names)."""
        return await self.info(None, variant)

    @pool_api.api_route("/{path:path}", methods=_METHODS, include_in_schema=False)
    async def not_found(self, request: Request) -> JSONResponse:
        """Every other path: a JSON 404 naming the routes (Serve's own is plain text)."""
        routes = self.routes
        # The path is not echoed: it is the caller's input (any bytes, percent-decoded).
        return JSONResponse(
            status_code=404,
            content={"error": f"nothing is served at this path; POST to one of {routes}", "routes": routes},
        )


def app_builder(args: dict[str, Any]) -> Application:
    """Build the pool application from the YAML `args:` (validated, clear errors)."""
    return Pool.bind(PoolArgs(**args))


app = Pool.bind(PoolArgs(variants={"base": "artifacts/base"}))
