"""The HTTP contract: request and response models and the per-request limits, shared by every app.

The per-variant applications (`deployments.classifier`) and the warm pool (`deployments.pool`) parse
the same request and answer the same shape, so `/docs` of either shows what a prediction looks like.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator

from deployments.boundary import InputError, TooManyTokensError
from deployments.serve_config import DEFAULT_MODEL
from loading.accuracy import ACCURACY_BUDGET_POINTS
from loading.store import Int8Kernel, SparseKernel

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_PATTERN",
    "POOL_ALIAS",
    "VARIANT_PATTERN",
    "AttachedOut",
    "ClassifyRequest",
    "ClassifyResponse",
    "HealthResponse",
    "InfoResponse",
    "PoolHealthResponse",
    "PredictionOut",
    "ServingLimits",
    "check_texts",
    "check_tokens",
    "served_key",
    "split_key",
]

VARIANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # route and store key: no slash, no dot-dot start
MODEL_PATTERN = VARIANT_PATTERN  # a model names a route segment too: /<model>/<variant>/classify
POOL_ALIAS = "pool"  # /pool/... always reaches the warm pool, so no model may be called this


def served_key(model: str, variant: str) -> str:
    """The one name of a model's variant: multiplexed model id, store key, metrics and log tag."""
    return f"{model}/{variant}"


def split_key(key: str) -> tuple[str, str]:
    """`(model, variant)` of a `served_key`."""
    model, variant = key.split("/", 1)
    return model, variant


class ServingLimits(BaseModel):
    """Args common to every app: what a request may cost, how replicas run the model, the accuracy budget."""

    model_config = ConfigDict(extra="forbid")

    max_texts: int = Field(64, ge=1)  # per request: bounds one caller's share of a batch
    max_text_chars: int = Field(20_000, ge=1)  # per text: tokenizing huge strings costs CPU
    max_tokens: int | None = Field(None, ge=8)  # None: the model's maximum; longer texts truncated
    max_body_bytes: int = Field(2_000_000, ge=1024)  # refused before the JSON is parsed
    # Work in tokens (issue 20; docs/RELIABILITY.md, "Heavy requests"). A forward pass holds at most
    # max_batch_tokens padded tokens: 2048 runs in ~0.33 s at 512-token texts on one core with the
    # tokens/s of bigger passes (docs/benchmarks/pass_tokens.json), so a short request waits at most
    # about that long behind others. A request's texts together may hold max_request_tokens (413
    # beyond, before model work: 32 full 512-token texts); a replica queues at most
    # max_queued_tokens (503 with Retry-After beyond: ~13 s of work at ~5,000 tokens/s).
    max_batch_tokens: int = Field(2048, ge=64)
    max_request_tokens: int = Field(16384, ge=8)
    max_queued_tokens: int = Field(65536, ge=8)
    body_timeout_s: float = Field(10.0, gt=0)  # a body still arriving after this frees its slot (408)
    int8_kernel: Int8Kernel = Int8Kernel.AUTO  # shared int8 weights, or fbgemm where the CPU lacks VNNI/AMX
    sparse_kernel: SparseKernel = SparseKernel.SHARED  # pruned-75: ties dense at 32x128, saves 42 MB/replica
    # The accuracy gate (`python -m deployments.preflight`, `make serve`) refuses a variant more than
    # this many accuracy points below its base, or with none recorded; replicas only validate it.
    accuracy_budget_points: float = Field(ACCURACY_BUDGET_POINTS, ge=0, allow_inf_nan=False)


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
    def _exactly_one(self) -> ClassifyRequest:
        if (self.texts is None) == (self.text is None):
            raise ValueError("give exactly one of 'texts' (a non-empty list) or 'text'")
        return self

    def as_list(self) -> list[str]:
        return self.texts if self.texts is not None else [self.text]


class PredictionOut(BaseModel):
    """One text's answer."""

    label: str  # the most probable label
    score: float  # its probability
    probabilities: dict[str, float]  # every label's probability
    truncated: bool  # the text had more tokens than the model takes; the tail was ignored


class ClassifyResponse(BaseModel):
    """Predictions in input order, and the model and variant that made them."""

    model: str
    variant: str
    predictions: list[PredictionOut]


class AttachedOut(BaseModel):
    """How a replica holds one variant's weights."""

    attach_ms: float  # the last attach: store lookup, mapping, module wrapping
    store_wait_ms: float  # of which waiting for the model store
    arena_bytes: int  # shared weights in the object store (once per node)
    private_bytes: int  # this replica's own copies (FBGEMM packs, densified layers)
    loaded_from: str  # "object_store" (zero-copy) or "disk"


class InfoResponse(AttachedOut):
    """`/info`: the variant's `variant.json` and how this replica holds it."""

    model: str
    variant: str
    info: dict[str, Any]  # variant.json: parent, method, parameters, sizes, content hash


class HealthResponse(BaseModel):
    """`/healthz` of a per-variant replica: it answers once its weights are attached."""

    status: str
    model: str
    variant: str
    replica_id: str
    weights_load_ms: float
    store_wait_ms: float
    weights_loaded_from: str
    arena_bytes: int
    torch_threads: int
    labels: list[str]
    max_tokens: int
    pid: int
    startup: dict[str, float | None]  # process start -> constructed -> first inference, for cold starts


class PoolHealthResponse(BaseModel):
    """`/pool/healthz`: what this pool replica serves (`model/variant`) and what it holds attached now."""

    status: str
    replica_id: str
    pid: int
    torch_threads: int
    variants: list[str]  # every `model/variant` the pool serves
    held: dict[str, AttachedOut]  # by `model/variant`, least recently used first
    startup: dict[str, float | None]


def _visible(ch: str) -> bool:
    """Neither whitespace nor a control or format code (NUL, ESC, zero-width space, BOM).

    The tokenizer drops those, so a text of nothing else would be classified as the empty string.
    """
    return not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf", "Zs", "Zl", "Zp")


def check_tokens(encodings: list[Any], limits: ServingLimits) -> None:
    """Raise `TooManyTokensError` (a 413) when a request's texts hold more than `max_request_tokens`."""
    tokens = sum(len(e.ids) for e in encodings)
    if tokens > limits.max_request_tokens:
        raise TooManyTokensError(
            f"the texts hold {tokens} tokens together; a request may hold at most max_request_tokens = "
            f"{limits.max_request_tokens} (send fewer or shorter texts per request)",
            limits.max_request_tokens,
            tokens,
        )


def check_texts(texts: list[str], limits: ServingLimits) -> None:
    """Raise `InputError` (a 422) naming the first text outside `limits`."""
    if len(texts) > limits.max_texts:
        raise InputError(f"texts must hold at most {limits.max_texts} items, got {len(texts)}")
    for i, text in enumerate(texts):
        if len(text) > limits.max_text_chars:
            raise InputError(
                f"texts[{i}] must be at most {limits.max_text_chars} characters, got {len(text)}"
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
