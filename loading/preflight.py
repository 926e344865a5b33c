"""Check every application of a Serve config before deploying it: `python -m loading.preflight`.

A bad artifact already fails its deployment (the store refuses it and Serve keeps the previous
version serving), but only once the rollout has started. This finds the same problems in seconds,
from a shell or a CI step: arguments the deployment would refuse, a missing model folder, a weights
file whose hash does not match its `variant.json`, a weights file missing tensors its config needs
(or holding others), a tokenizer that does not load. Exit 0 when every application passes, 2
otherwise, with one line per problem naming the application.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from loading.artifact import load_tokenizer, resolve_model_dir, verify_artifact
from loading.checkpoint import check_tensor_names

__all__ = ["check_config", "main"]

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "serve_config.yaml"


def _check_artifact(model_dir: Path) -> str | None:
    try:
        info = verify_artifact(model_dir)
        check_tensor_names(model_dir)  # missing or extra tensors: refused before a replica tries
        load_tokenizer(model_dir)
    except Exception as exc:  # noqa: BLE001 - any failure to read the artifact is the finding
        return f"model_dir {model_dir}: {exc}"
    logger.info("%s (%s) verified, %.1f MB", model_dir, info.name, info.size_bytes / 1e6)
    return None


def _check_app(app: dict[str, Any]) -> str | None:
    """The problem with one classifier or pool application, or None."""
    from pydantic import ValidationError

    from deployments.classifier import ClassifierArgs
    from deployments.pool import PoolArgs

    is_pool = _is_pool(app)
    try:
        args = (PoolArgs if is_pool else ClassifierArgs)(**(app.get("args") or {}))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return f"args rejected: {problems}"
    dirs = {v: d for v, d in args.variants.items()} if is_pool else {args.variant: args.model_dir}
    problems = [
        f"{variant}: {p}" if is_pool else p
        for variant, d in dirs.items()
        if (p := _check_artifact(resolve_model_dir(d))) is not None
    ]
    return "; ".join(problems) or None


def _is_pool(app: dict[str, Any]) -> bool:
    return str(app.get("import_path", "")).startswith("deployments.pool:")


def check_config(path: str | Path = DEFAULT_CONFIG) -> dict[str, str]:
    """{application name: problem} for the classifier and pool applications of the Serve config."""
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        return {"<config>": f"cannot read {path}: {exc}"}
    apps = (config or {}).get("applications") or []
    # Not the catch-all 404 app: it holds no model.
    served = [a for a in apps if "variant" in (a.get("args") or {}) or _is_pool(a)]
    if not served:
        return {"<config>": f"{path} has no classifier applications"}
    problems = {str(a.get("name")): _check_app(a) for a in served}
    return {name: p for name, p in problems.items() if p is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loading.preflight", description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG), help="Serve config (YAML)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    problems = check_config(args.config)
    for name, problem in problems.items():
        print(f"error: {name}: {problem}", file=sys.stderr)
    if not problems:
        print(f"ok: every application in {args.config} can be deployed")
    return 2 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
