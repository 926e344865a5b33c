"""Ray Serve application: one text-classifier variant behind an HTTP/JSON API.

`serve_config.yaml` builds one application per variant from `app_builder`, each mounted at
`/<variant>`. Replicas attach their weights zero-copy from the model store; requests from all
callers are batched together with `@serve.batch`.
"""

import asyncio
import logging
import os
import time
import unicodedata
from typing import Any, Literal

import ray
from fastapi import Depends, FastAPI
from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator
from ray import serve
from ray.serve import Application

from deployments.auth import ApiKeys
from deployments.errors import InputError, install_error_handlers, require_json
from loading.artifact import resolve_model_dir
from loading.machine import process_start_time
from loading.memory import trim_heap
from loading.predict import Prediction, Predictor
from loading.store import (
    Int8Kernel,
    SparseKernel,
    attach,
    import_model_code,
    load_from_disk,
    set_threads,
)

__all__ = ["ClassifierArgs", "ClassifyRequest", "Classifier", "app_builder"]

logger = logging.getLogger(__name__)

TRIM_AFTER_IDLE_S = 0.5  # return freed heap to the OS after this long without a batch


def _visible(ch: str) -> bool:
    """Neither whitespace nor a control or format code (NUL, ESC, zero-width space, BOM).

    The tokenizer drops those, so a text of nothing else would be classified as the empty string.
    """
    return not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf", "Zs", "Zl", "Zp")


class ClassifierArgs(BaseModel):
    """Application arguments, given under `args:` in `serve_config.yaml`."""

    model_config = ConfigDict(extra="forbid")

    variant: str = Field("base", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # route and store key
    model_dir: str = "artifacts/base"  # artifact folder; relative paths resolve from the repo root
    max_texts: int = Field(64, ge=1)  # per request: bounds one caller's share of a batch
    max_text_chars: int = Field(20_000, ge=1)  # per text: tokenizing huge strings costs CPU
    max_tokens: int | None = Field(None, ge=8)  # None: the model's maximum; longer texts truncated
    max_body_bytes: int = Field(2_000_000, ge=1024)  # refused before the JSON is parsed
    body_timeout_s: float = Field(10.0, gt=0)  # a body still arriving after this frees its slot (408)
    int8_kernel: Int8Kernel = Int8Kernel.AUTO  # shared int8 weights, or fbgemm where the CPU lacks VNNI/AMX
    sparse_kernel: SparseKernel = SparseKernel.SHARED  # pruned-75: ties dense at 32x128, saves 42 MB/replica
    # "store": map the weights zero-copy from the model store (the product). "disk": read them from
    # model_dir into the replica's own memory, the baseline `loadtest.coldstart` compares against.
    weights: Literal["store", "disk"] = "store"


class ClassifyRequest(BaseModel):
    """`{"texts": [...]}` or `{"text": "..."}`."""

    model_config = ConfigDict(extra="forbid")

    texts: list[StrictStr] | None = Field(None, min_length=1)
    text: StrictStr | None = None

    @field_validator("texts", mode="before")
    @classmethod
    def _strings_only(cls, texts: Any) -> Any:
        # One error for the first non-string, not one per item: a 2 MB list of numbers would
        # otherwise build a million error records.
        if isinstance(texts, list):
            for i, item in enumerate(texts):
                if not isinstance(item, str):
                    raise ValueError(f"texts[{i}] must be a string, got {type(item).__name__}")
        return texts

    @model_validator(mode="after")
    def _exactly_one(self) -> "ClassifyRequest":
        if (self.texts is None) == (self.text is None):
            raise ValueError("give exactly one of 'texts' (a non-empty list) or 'text'")
        return self

    def as_list(self) -> list[str]:
        return self.texts if self.texts is not None else [self.text]


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
        model_dir = resolve_model_dir(args.model_dir)
        import_model_code(model_dir)  # the model class's module (~2 s): an import, not the weights
        weights_started = time.time()
        if args.weights == "disk":
            self.attached = load_from_disk(
                model_dir, int8_kernel=args.int8_kernel, sparse_kernel=args.sparse_kernel
            )
        else:
            self.attached = attach(
                args.variant,
                model_dir,
                int8_kernel=args.int8_kernel,
                sparse_kernel=args.sparse_kernel,
                keep_for_reattach=False,  # a replica attaches once; no template to keep
            )
        trim_heap()  # the skeleton's unpickling leftovers
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
        self._trim: asyncio.TimerHandle | None = None
        api.state.headers = {
            "x-replica-id": self.replica_id,
            "x-variant": args.variant,
            "x-weights-load-ms": f"{self.attached.attach_ms:.3f}",
            "x-weights-loaded-from": self.attached.loaded_from,
        }
        api.state.max_body_bytes = args.max_body_bytes
        api.state.body_timeout_s = args.body_timeout_s
        api.state.api_keys = api_keys
        logger.info(
            "replica %s serves %s (weights attached in %.1f ms, %d threads; %s)",
            self.replica_id,
            args.variant,
            self.attached.attach_ms,
            self.threads,
            "open access" if api_keys is None else f"{len(api_keys.digests)} API keys",
        )

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Retune batching without restarting the replica (`user_config` in the YAML)."""
        self._classify_batch.set_max_batch_size(int(config.get("max_batch_size", 16)))
        self._classify_batch.set_batch_wait_timeout_s(float(config.get("batch_wait_timeout_s", 0.01)))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _classify_batch(self, texts: list[str]) -> list[dict[str, Any]]:
        # The model runs on the event loop's own thread. In a worker thread it had to win the GIL
        # back from the loop after every torch op, and served 16% fewer texts/s (docs/BENCHMARKS.md).
        # Requests arriving meanwhile wait in the actor's queue and form the next batch.
        predictions = self._predict(texts)
        # Hand freed activations back to the OS once the replica goes idle, not after every batch
        # (trimming costs 2-3% when batches follow each other): idle replicas stay small.
        if self._trim is not None:
            self._trim.cancel()
        self._trim = asyncio.get_running_loop().call_later(TRIM_AFTER_IDLE_S, trim_heap)
        return [p.to_dict() for p in predictions]

    def _predict(self, texts: list[str]) -> list[Prediction]:
        start = time.perf_counter()
        predictions = self.predictor.predict(texts, len(texts))
        if self.startup["first_inference_ms"] is None:
            self.startup["first_inference_ms"] = (time.perf_counter() - start) * 1e3
        return predictions

    @api.post("/classify", dependencies=[Depends(require_json)])
    async def classify(self, request: ClassifyRequest) -> dict[str, Any]:
        """Classify texts; predictions come back in input order."""
        texts = request.as_list()
        self._check_limits(texts)
        predictions = await asyncio.gather(*(self._classify_batch(t) for t in texts))
        return {"variant": self.args.variant, "predictions": list(predictions)}

    def _check_limits(self, texts: list[str]) -> None:
        if len(texts) > self.args.max_texts:
            raise InputError(f"texts must hold at most {self.args.max_texts} items, got {len(texts)}")
        for i, text in enumerate(texts):
            if len(text) > self.args.max_text_chars:
                raise InputError(
                    f"texts[{i}] must be at most {self.args.max_text_chars} characters, got {len(text)}"
                )
            if not any(_visible(ch) for ch in text):
                raise InputError(
                    f"texts[{i}] must be a non-empty string with a visible character, got {len(text)} "
                    "characters of whitespace or control codes"
                )
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:  # JSON can spell a lone surrogate: "\ud800"
                raise InputError(
                    f"texts[{i}] must be valid Unicode, got a lone surrogate at character {exc.start}"
                ) from None

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """200 once the weights are attached (they are before the replica takes traffic)."""
        return {
            "status": "ok",
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
    async def info(self) -> dict[str, Any]:
        """The variant's metadata from `variant.json`."""
        return self.attached.describe()


def app_builder(args: dict[str, Any]) -> Application:
    """Build one variant's application from the YAML `args:` (validated, clear errors)."""
    parsed = ClassifierArgs(**args)
    return Classifier.bind(parsed)


app = Classifier.bind(ClassifierArgs())
