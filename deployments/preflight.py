"""Check every application of a Serve config before deploying it: `python -m deployments.preflight`.

A bad artifact already fails its deployment (the store refuses it and Serve keeps the previous
version serving), but only once the rollout has started. This finds the same problems in seconds,
from a shell or a CI step: arguments the deployment would refuse, a missing model folder, a weights
file whose hash does not match its `variant.json`, a weights file missing tensors its config needs
(or holding others), a tokenizer that does not load. It also applies the accuracy gate
(`loading.accuracy`): a served variant with no recorded accuracy, or more than the app's
`accuracy_budget_points` below its base, is refused; `--no-accuracy-gate` serves it anyway, with a
warning per variant. Exit 0 when every application passes, 2 otherwise, with one line per problem
naming the application.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from deployments.protocol import served_key
from deployments.serve_config import DEFAULT_PATH, ServeConfigError, is_pool, load_serve_config
from loading.accuracy import accuracy_problem
from loading.artifact import load_tokenizer, resolve_model_dir, verify_artifact
from loading.checkpoint import check_tensor_names

__all__ = ["Findings", "check_config", "inspect_config", "main"]

logger = logging.getLogger(__name__)

OVERRIDE_HINT = (
    "to serve a variant the accuracy gate refuses anyway: "
    "python -m deployments.preflight --no-accuracy-gate (make serve ACCURACY_GATE=off)"
)


@dataclass(frozen=True)
class Findings:
    """What preflight found in a Serve config."""

    # application -> why it must not be deployed: one entry per problem (per variant, in the pool)
    problems: dict[str, list[str]] = field(default_factory=dict)
    # (application, refusal) for each variant the accuracy gate refused and `--no-accuracy-gate` let through
    waived: list[tuple[str, str]] = field(default_factory=list)
    refused_by_gate: bool = False  # some problem is the accuracy gate's: main names the override


def _check_variant(model_dir: Path, budget_points: float) -> tuple[str | None, str | None]:
    """(artifact problem, accuracy-gate refusal) of one served variant; at most one is not None."""
    try:
        info = verify_artifact(model_dir)
        check_tensor_names(model_dir)  # missing or extra tensors: refused before a replica tries
        load_tokenizer(model_dir)
    except Exception as exc:  # noqa: BLE001 - any failure to read the artifact is the finding
        return f"model_dir {model_dir}: {exc}", None
    logger.info("%s (%s) verified, %.1f MB", model_dir, info.name, info.size_bytes / 1e6)
    # A broken artifact's record would describe other weights: the gate judges verified ones only.
    return None, accuracy_problem(info, budget_points)


def inspect_config(path: str | Path = DEFAULT_PATH, *, accuracy_gate: bool = True) -> Findings:
    """Every problem of the classifier and pool applications of the Serve config, by application.

    Args:
        accuracy_gate: False lets variants the accuracy gate refuses through, into `Findings.waived`.
    """
    try:
        config = load_serve_config(path)
    except ServeConfigError as exc:
        return Findings({"<config>": [str(exc)]})
    served = config.served_apps()
    if not served:
        return Findings({"<config>": [f"{path} has no classifier applications"]})
    problems: dict[str, list[str]] = {}
    waived: list[tuple[str, str]] = []
    refused_by_gate = False
    for app in served:
        name = app["name"]
        try:
            args = config.validated_args(app)
        except ServeConfigError as exc:
            problems[name] = [str(exc)]
            continue
        pool = is_pool(app)
        dirs = args.model_dirs() if pool else {served_key(args.model, args.variant): args.model_dir}
        broken, refused = [], []
        for variant, d in dirs.items():
            problem, refusal = _check_variant(resolve_model_dir(d), args.accuracy_budget_points)
            where = f"{variant}: " if pool else ""  # the pool holds several: name which
            if problem is not None:
                broken.append(where + problem)
            elif refusal is not None:
                refused.append(where + refusal)
        if accuracy_gate:
            broken += refused
            refused_by_gate |= bool(refused)
        else:
            waived.extend((name, r) for r in refused)
        if broken:
            problems[name] = broken
    return Findings(problems, waived, refused_by_gate)


def check_config(path: str | Path = DEFAULT_PATH, *, accuracy_gate: bool = True) -> dict[str, str]:
    """{application name: problem} for the classifier and pool applications of the Serve config."""
    problems = inspect_config(path, accuracy_gate=accuracy_gate).problems
    return {name: "; ".join(found) for name, found in problems.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.preflight", description=__doc__.splitlines()[0]
    )
    parser.add_argument("config", nargs="?", default=str(DEFAULT_PATH), help="Serve config (YAML)")
    parser.add_argument(
        "--no-accuracy-gate",
        dest="accuracy_gate",
        action="store_false",
        help="let through variants with no recorded accuracy or outside the accuracy budget (warns for each)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    findings = inspect_config(args.config, accuracy_gate=args.accuracy_gate)
    for name, refusal in findings.waived:
        print(f"warning: {name}: accuracy gate off, serving it anyway: {refusal}", file=sys.stderr)
    for name, found in findings.problems.items():
        for problem in found:
            print(f"error: {name}: {problem}", file=sys.stderr)
    if findings.refused_by_gate:
        print(f"hint: {OVERRIDE_HINT}", file=sys.stderr)
    if not findings.problems:
        print(f"ok: every application in {args.config} can be deployed")
    return 2 if findings.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
