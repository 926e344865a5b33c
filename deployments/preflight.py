"""Check every application of a Serve config before deploying it: `python -m deployments.preflight`.

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

from deployments.serve_config import DEFAULT_PATH, ServeConfigError, is_pool, load_serve_config
from loading.artifact import load_tokenizer, resolve_model_dir, verify_artifact
from loading.checkpoint import check_tensor_names

__all__ = ["check_config", "main"]

logger = logging.getLogger(__name__)


def _check_artifact(model_dir: Path) -> str | None:
    try:
        info = verify_artifact(model_dir)
        check_tensor_names(model_dir)  # missing or extra tensors: refused before a replica tries
        load_tokenizer(model_dir)
    except Exception as exc:  # noqa: BLE001 - any failure to read the artifact is the finding
        return f"model_dir {model_dir}: {exc}"
    logger.info("%s (%s) verified, %.1f MB", model_dir, info.name, info.size_bytes / 1e6)
    return None


def check_config(path: str | Path = DEFAULT_PATH) -> dict[str, str]:
    """{application name: problem} for the classifier and pool applications of the Serve config."""
    try:
        config = load_serve_config(path)
    except ServeConfigError as exc:
        return {"<config>": str(exc)}
    served = config.served_apps()
    if not served:
        return {"<config>": f"{path} has no classifier applications"}
    problems = {}
    for app in served:
        try:
            args = config.validated_args(app)
        except ServeConfigError as exc:
            problems[app["name"]] = str(exc)
            continue
        pool = is_pool(app)
        dirs = args.variants if pool else {args.variant: args.model_dir}
        found = [
            f"{variant}: {p}" if pool else p
            for variant, d in dirs.items()
            if (p := _check_artifact(resolve_model_dir(d))) is not None
        ]
        if found:
            problems[app["name"]] = "; ".join(found)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.preflight", description=__doc__.splitlines()[0]
    )
    parser.add_argument("config", nargs="?", default=str(DEFAULT_PATH), help="Serve config (YAML)")
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
