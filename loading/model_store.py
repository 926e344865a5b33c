"""The model store: one named, detached Ray actor that owns every variant's shared weights.

Objects made by `ray.put` die with the process that made them, so weights must not be owned by a
replica (which autoscaling kills) or by a driver (which exits). The store reads each variant from
disk once, puts its skeleton and weight arena into the object store and hands out the references;
`loading.store.attach` maps them in a replica.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import ray

from loading.artifact import VariantInfo, load_tokenizer, verify_artifact
from loading.checkpoint import load_model
from loading.encoder import TextEncoder
from loading.zerocopy import ModelSkeleton, arena_nbytes, extract_tensors

__all__ = ["STORE_NAME", "STORE_NAMESPACE", "Bundle", "ModelStore", "model_store"]

logger = logging.getLogger(__name__)

STORE_NAME = "model_store"
STORE_NAMESPACE = "bertserve"


@dataclass(frozen=True)
class Bundle:
    """The model without its weights: small, unpickled by every attach (1-3 ms for BERT-base)."""

    skeleton: ModelSkeleton
    info: VariantInfo


@ray.remote(num_cpus=0, max_restarts=-1)
class ModelStore:
    """Owns the object-store copies of each variant's weights; restarts re-read from disk."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Any]] = {}
        # One object per distinct tokenizer: a model's variants share theirs, so a process that
        # attaches several of them deserializes it once (35-75 ms each time otherwise).
        self._tokenizers: dict[str, ray.ObjectRef] = {}

    def ensure(self, variant: str, model_dir: str) -> dict[str, Any]:
        """References to `variant`'s bundle and arena, reading `model_dir` on first request."""
        entry = self._entries.get(variant)
        if entry is not None and entry["model_dir"] != model_dir:
            raise ValueError(
                f"variant {variant!r} is already stored from {entry['model_dir']}, "
                f"not {model_dir}; drop it first"
            )
        if entry is None:
            entry = self._put(variant, model_dir)
            self._entries[variant] = entry
        return dict(entry)

    def ensure_many(self, model_dirs: dict[str, str]) -> dict[str, dict[str, Any]]:
        """`ensure` for several variants in one round trip: what a warm pool replica asks at start."""
        return {variant: self.ensure(variant, model_dir) for variant, model_dir in model_dirs.items()}

    def _put(self, variant: str, model_dir: str) -> dict[str, Any]:
        start = time.perf_counter()
        info = verify_artifact(model_dir)
        model = load_model(model_dir)
        skeleton, arena = extract_tensors(model)
        entry = {
            "model_dir": model_dir,
            "bundle": ray.put(Bundle(skeleton, info)),
            # Separate from the bundle: rebuilding a tokenizer costs 35-75 ms, so each process fetches
            # it once per variant (see `_tokenizer`), not on every attach. The bare Rust tokenizer
            # only: it takes ~2/3 of a transformers tokenizer's memory in every replica.
            "tokenizer": self._tokenizer_ref(
                TextEncoder.from_pretrained_tokenizer(load_tokenizer(model_dir))
            ),
            "arena": ray.put(arena),
            "arena_bytes": int(arena.nbytes),
            "tensor_bytes": arena_nbytes(skeleton),
        }
        logger.info(
            "stored %s from %s: %.1f MB in %.2f s",
            variant,
            model_dir,
            arena.nbytes / 1e6,
            time.perf_counter() - start,
        )
        return entry

    def _tokenizer_ref(self, encoder: TextEncoder) -> ray.ObjectRef:
        key = f"{encoder.pad_id}:{encoder.input_names}:{encoder.tokenizer.to_str()}"
        if key not in self._tokenizers:
            self._tokenizers[key] = ray.put(encoder)
        return self._tokenizers[key]

    def drop(self, variant: str) -> bool:
        """Forget a variant; its memory is freed once no replica holds it."""
        return self._entries.pop(variant, None) is not None

    def drop_model(self, model: str) -> list[str]:
        """Forget every variant of `model` (keys `<model>/<variant>`), e.g. one no config serves any
        more; returns the keys dropped. Replicas that still hold one keep their mapping until they
        drop it; a later request for it reads the folder again."""
        dropped = [key for key in self._entries if key.startswith(f"{model}/")]
        for key in dropped:
            del self._entries[key]
        return dropped

    def variants(self) -> dict[str, dict[str, Any]]:
        """Stored variants with their source folder and sizes."""
        return {
            name: {k: v for k, v in e.items() if k not in ("bundle", "arena", "tokenizer")}
            for name, e in self._entries.items()
        }


def model_store() -> ray.actor.ActorHandle:
    """The cluster's model store, created on first use (detached: it outlives its creator)."""
    return ModelStore.options(
        name=STORE_NAME,
        namespace=STORE_NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        # On the head node, as Serve's controller: it owns the weights, so it must not live on a spot
        # worker that can vanish (every node's replicas would lose their weights with it).
        resources={"node:__internal_head__": 0.001},
    ).remote()


def main(argv: list[str] | None = None) -> int:
    """`python -m loading.model_store list | drop <model>` against the running cluster's store."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m loading.model_store", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every stored model/variant with its folder and sizes (JSON)")
    drop = sub.add_parser("drop", help="forget every variant of a model no application serves any more")
    drop.add_argument("model")
    args = parser.parse_args(argv)
    if not ray.is_initialized():
        try:
            ray.init(address="auto", namespace=STORE_NAMESPACE, logging_level=logging.WARNING)
        except ConnectionError as exc:
            raise SystemExit(f"no running Ray cluster to ask ({exc}); start one with `make serve`") from None
    try:
        store = ray.get_actor(STORE_NAME, namespace=STORE_NAMESPACE)
    except ValueError:
        raise SystemExit("this cluster has no model store yet: nothing is stored") from None
    if args.command == "list":
        print(json.dumps(ray.get(store.variants.remote()), indent=2, sort_keys=True))
        return 0
    dropped = ray.get(store.drop_model.remote(args.model))
    if not dropped:
        raise SystemExit(f"the store holds no variant of model {args.model!r}")
    print(f"dropped {', '.join(dropped)}; their memory is freed once no replica holds them")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
