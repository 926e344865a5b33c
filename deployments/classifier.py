"""Ray Serve application: one text-classifier variant behind an HTTP/JSON API.

`serve_config.yaml` builds one application per model variant from `app_builder`, each mounted at
`/<model>/<variant>`: the variant's own replicas, isolated from the others' load. Replicas attach
their weights zero-copy from the model store; requests from all callers are batched together,
fairly and in token-bounded passes (`deployments.scheduler`).
"""

import logging
import os
import time
from typing import Any, Literal

import ray
from fastapi import Depends, FastAPI
from pydantic import Field
from ray import serve
from ray.serve import Application

from deployments.auth import ApiKeys
from deployments.boundary import install_error_handlers, require_json
from deployments.metrics import ServingMetrics
from deployments.protocol import (
    DEFAULT_MODEL,
    MODEL_PATTERN,
    VARIANT_PATTERN,
    ClassifyRequest,
    ClassifyResponse,
    HealthResponse,
    InfoResponse,
    ServingLimits,
    check_texts,
    check_tokens,
    served_key,
)
from deployments.scheduler import FairScheduler
from deployments.warm_worker import keep_spare_worker_in_background
from loading.artifact import resolve_model_dir
from loading.host import process_start_time
from loading.memory import IdleTrim, trim_heap
from loading.predict import Predictor
from loading.store import attach, import_model_code, load_from_disk, set_threads

__all__ = ["ClassifierArgs", "Classifier", "app_builder"]

logger = logging.getLogger(__name__)


class ClassifierArgs(ServingLimits):
    """Application arguments, given under `args:` in `serve_config.yaml`."""

    model: str = Field(DEFAULT_MODEL, pattern=MODEL_PATTERN)  # the model this variant belongs to
    variant: str = Field("base", pattern=VARIANT_PATTERN)  # with the model: route and store key
    model_dir: str = "artifacts/base"  # artifact folder; relative paths resolve from the repo root
    # "store": map the weights zero-copy from the model store (the product). "disk": read them from
    # model_dir into the replica's own memory, the baseline `benchmarks.coldstart` compares against.
    weights: Literal["store", "disk"] = "store"


# No trailing-slash redirects: a 307 built from the caller's Host header is no answer to bad input.
api = FastAPI(title="BERT text classifier", version="0.1.0", redirect_slashes=False)
install_error_handlers(api)


@serve.deployment(
    max_ongoing_requests=64,
    user_config={"max_batch_size": 16, "batch_wait_timeout_s": 0.01},
    ray_actor_options={"num_cpus": 1},
)
@serve.ingress(api)
class Classifier:
    """One replica: weights attached from the model store, inference batched across callers."""

    def __init__(self, args: ClassifierArgs) -> None:
        init_started = time.time()
        # First, so that a bad key setting fails the replica before it loads anything. From this
        # process's environment (the cluster's, or runtime_env env_vars); the keys are never logged.
        api_keys = ApiKeys.from_env()
        self.args = args
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        self.threads = set_threads(cpus)
        self.key = served_key(args.model, args.variant)
        model_dir = resolve_model_dir(args.model_dir)
        import_model_code(model_dir)  # the model class's module (~2 s): an import, not the weights
        weights_started = time.time()
        if args.weights == "disk":
            self.attached = load_from_disk(
                model_dir, int8_kernel=args.int8_kernel, sparse_kernel=args.sparse_kernel
            )
        else:
            self.attached = attach(
                self.key,  # the pool's key too: one copy per node
                model_dir,
                int8_kernel=args.int8_kernel,
                sparse_kernel=args.sparse_kernel,
                keep_for_reattach=False,  # a replica attaches once; no template to keep
            )
        trim_heap()  # the skeleton's unpickling leftovers
        self.metrics = ServingMetrics()
        self.metrics.attached(args.model, args.variant, self.attached.attach_ms)
        self.scheduler = FairScheduler(
            max_batch_tokens=args.max_batch_tokens,
            max_queued_tokens=args.max_queued_tokens,
            on_pass=self.metrics.forward_pass,
        )
        weights_done = time.time()
        self.predictor = Predictor(self.attached.model, self.attached.tokenizer, args.max_tokens)
        # Wall-clock times (epoch s) of this replica's start, for the cold-start breakdown. Before
        # __init__ the process booted Ray's worker and unpickled this class, importing torch,
        # transformers and our code (Serve pickles the class by value, so a module-level clock
        # would be the builder's, not this process's).
        self.startup: dict[str, float | None] = {
            "process_started": process_start_time(),
            "init_started": init_started,
            "weights_started": weights_started,
            "weights_done": weights_done,
            "ready": time.time(),
            "first_inference_ms": None,
        }
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self._trim = IdleTrim(after_s=0.5)  # freed heap back to the OS once idle for 0.5 s
        api.state.headers = {
            "x-replica-id": self.replica_id,
            "x-model": args.model,
            "x-variant": args.variant,
            "x-weights-load-ms": f"{self.attached.attach_ms:.3f}",
            "x-weights-loaded-from": self.attached.loaded_from,
        }
        api.state.max_body_bytes = args.max_body_bytes
        api.state.body_timeout_s = args.body_timeout_s
        api.state.api_keys = api_keys
        logger.info(
            "replica %s serves %s/%s (weights attached in %.1f ms, %d threads; %s)",
            self.replica_id,
            args.model,
            args.variant,
            self.attached.attach_ms,
            self.threads,
            "open access" if api_keys is None else f"{len(api_keys.digests)} API keys",
        )
        # A spare worker, already imported, for this node's next replica (~1 s start, not ~8 s);
        # on a thread, seconds later: docs/SCALING.md "Warm workers".
        keep_spare_worker_in_background()

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Queued tokens, for the work-aware autoscaling policy (`deployments.autoscaling`)."""
        return self.scheduler.autoscaling_stats()

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Retune batching without restarting the replica (`user_config` in the YAML)."""
        self.scheduler.configure(config)

    @api.post("/classify", dependencies=[Depends(require_json)])
    async def classify(self, request: ClassifyRequest) -> ClassifyResponse:
        """Classify texts; predictions come back in input order."""
        texts = request.as_list()
        check_texts(texts, self.args)
        encodings, truncated = self.predictor.encode(texts)  # once: counted, then run in passes
        check_tokens(encodings, self.args)
        # The model runs on the event loop's own thread, one pass at a time, yielding between passes
        # (deployments/scheduler.py). In a worker thread it had to win the GIL back from the loop
        # after every torch op and served 16% fewer texts/s (docs/BENCHMARKS.md).
        start = time.perf_counter()
        probs = await self.scheduler.run(self.key, self.predictor.forward, encodings)
        if self.startup["first_inference_ms"] is None:
            self.startup["first_inference_ms"] = (time.perf_counter() - start) * 1e3
        # Hand freed activations back to the OS once the replica goes idle, not after every batch
        # (trimming costs 2-3% when batches follow each other): idle replicas stay small.
        self._trim.touch()
        predictions = self.predictor.predictions(probs, truncated)
        return {
            "model": self.args.model,
            "variant": self.args.variant,
            "predictions": [p.to_dict() for p in predictions],
        }

    @api.get("/healthz")
    async def healthz(self) -> HealthResponse:
        """200 once the weights are attached (they are before the replica takes traffic)."""
        return {
            "status": "ok",
            "model": self.args.model,
            "variant": self.args.variant,
            "replica_id": self.replica_id,
            "weights_load_ms": round(self.attached.attach_ms, 3),
            "store_wait_ms": round(self.attached.store_wait_ms, 3),
            "weights_loaded_from": self.attached.loaded_from,
            "arena_bytes": self.attached.arena_bytes,
            "torch_threads": self.threads,
            "labels": self.predictor.labels,
            "max_tokens": self.predictor.max_tokens,
            "pid": os.getpid(),
            "startup": self.startup,
        }

    @api.get("/info")
    async def info(self) -> InfoResponse:
        """The variant's metadata from `variant.json`."""
        return {**self.attached.describe(), "model": self.args.model, "variant": self.args.variant}


def app_builder(args: dict[str, Any]) -> Application:
    """Build one variant's application from the YAML `args:` (validated, clear errors)."""
    parsed = ClassifierArgs(**args)
    return Classifier.bind(parsed)


app = Classifier.bind(ClassifierArgs())
