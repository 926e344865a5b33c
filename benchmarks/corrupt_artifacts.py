"""Corrupt artifacts and who refuses them (`benchmarks.faults`, scenario 3): `verify_artifact`, the
build CLI, and a redeploy over the running app, which must keep serving meanwhile."""

from __future__ import annotations

import json
import logging
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.harness import ROOT
from benchmarks.harness.session import app_entry
from loading.artifact import VARIANT_FILE, WEIGHTS_FILE, ArtifactError, resolve_model_dir, verify_artifact

if TYPE_CHECKING:
    from benchmarks.faults import Run

__all__ = ["CORRUPTIONS", "artifact_faults", "build_refusal", "corrupt_artifact"]

logger = logging.getLogger(__name__)

CORRUPTIONS = ("truncated", "flipped", "bad-hash")


def corrupt_artifact(src: str | Path, dst: str | Path, kind: str) -> Path:
    """Copy the artifact `src` to `dst` and damage the copy as `kind` says; `src` is left alone.

    truncated: the weights file cut to half its length (an interrupted copy). flipped: 16 bytes
    inverted in the middle of the tensor data (bit rot: the file still parses, the values are wrong).
    bad-hash: `variant.json` records another hash than the weights file's (a swapped file).
    """
    if kind not in CORRUPTIONS:
        raise ValueError(f"kind must be one of {CORRUPTIONS}, got {kind!r}")
    dst = Path(dst)
    shutil.copytree(src, dst)
    weights = dst / WEIGHTS_FILE
    if kind == "truncated":
        with weights.open("r+b") as f:
            f.truncate(weights.stat().st_size // 2)
    elif kind == "flipped":
        with weights.open("r+b") as f:
            (header_bytes,) = struct.unpack("<Q", f.read(8))  # safetensors: u64 header length first
            data_start = 8 + header_bytes
            f.seek(data_start + (weights.stat().st_size - data_start) // 2)
            chunk = f.read(16)
            f.seek(-len(chunk), 1)
            f.write(bytes(b ^ 0xFF for b in chunk))
    else:
        meta = dst / VARIANT_FILE
        info = json.loads(meta.read_text())
        info["content_hash"] = "sha256:" + "0" * 64
        meta.write_text(json.dumps(info, indent=2, sort_keys=True))
    return dst


def build_refusal(model_dir: Path, out: Path) -> dict[str, Any]:
    """`python -m loading.build` from a damaged base: its exit code and what it printed."""
    cmd = [sys.executable, "-m", "loading.build", "--model", str(model_dir), "--variants", "quant"]
    done = subprocess.run([*cmd, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return {
        "exit_code": done.returncode,
        "message": lines[-1] if lines else "",
        "traceback": "Traceback" in done.stderr,
        "wrote_variant": (out / "quant").exists(),
    }


def _verify_refusal(model_dir: Path) -> str | None:
    """`verify_artifact`'s error for `model_dir`, or None if it passes."""
    try:
        verify_artifact(model_dir)
    except ArtifactError as exc:
        return str(exc)
    return None


def artifact_faults(run: Run, tmp: Path) -> dict[str, Any]:
    """Corrupt copies of the app's artifact: refused offline, by the build, and by a redeploy."""
    variant = run.variant
    model_dir = resolve_model_dir(app_entry(run.session.config, variant)["args"]["model_dir"])
    kinds = {kind: corrupt_artifact(model_dir, tmp / kind, kind) for kind in CORRUPTIONS}
    out: dict[str, Any] = {
        "verify_artifact": {kind: _verify_refusal(path) for kind, path in kinds.items()},
        "build": {kind: build_refusal(path, tmp / f"build-{kind}") for kind, path in kinds.items()},
        "deploy": {
            kind: _failed_redeploy(run, f"{variant}-{kind}", kinds[kind]) for kind in run.cfg.corruptions
        },
    }
    if run.cfg.same_name_case:  # the same variant name from a new (intact) folder: the store's answer
        shutil.copytree(model_dir, tmp / "intact")
        out["deploy"]["same-name-new-folder"] = _failed_redeploy(run, variant, tmp / "intact")
    return out


def _failed_redeploy(run: Run, variant: str, model_dir: Path) -> dict[str, Any]:
    """Redeploy the running app from `model_dir`; expect DEPLOY_FAILED; then restore the good config."""
    before = run.running()
    asked = time.time()
    run.deploy(2, variant=variant, model_dir=str(model_dir))
    failed_at, app = run.wait(lambda: (a := run.app())["status"] == "DEPLOY_FAILED" and a, variant)
    time.sleep(run.cfg.steady_s / 3)
    left = run.running()
    message = app["deployment_message"] or app["message"]
    logger.info("artifacts: %s refused after %.1f s: %s", variant, failed_at - asked, _error_line(message))
    restore = time.time()
    run.scale(2, "the good deployment restored")
    restored = time.time()
    return {
        "refused_after_s": round(failed_at - asked, 2),
        "status": app["status"],
        "error": _error_line(message),
        "names_the_file": str(model_dir) in message,
        "old_replicas_kept": sorted(set(before) & set(left)),
        "old_replicas_stopped": sorted(set(before) - set(left)),
        "replicas_running_after_refusal": len(left),
        "restore_s": round(restored - restore, 2),
        "load": run.window(asked, restored),
    }


def _error_line(message: str) -> str:
    """The line of a Serve failure message that carries our error (not the traceback around it)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    ours = [line for line in lines if "ArtifactError" in line or "ValueError" in line]
    return (ours or lines or [""])[-1][:500]
