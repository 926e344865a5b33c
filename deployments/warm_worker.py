"""One spare Ray worker per node, started ahead and already imported, for the next replica to land on.

A replica on a fresh Ray worker first waits for the worker to boot and to import torch, Serve and our
code (most of the ~8 s from a scale-up decision to the replica's first answer on 2 cores); on an
idle worker that has done those imports it starts in about a second. Ray keeps no such worker at
scale-up time (docs/SCALING.md, "Warm workers (Ray source)"), so our replicas keep one per node:

- `preload` is the worker setup hook of our applications' runtime_env (`serve_config.yaml`): every
  worker started with that runtime_env runs it before it takes work, so a spare does the imports
  while it idles (and a fresh worker does the imports its replica would do anyway).
- `keep_spare_worker` asks this node's raylet for one worker with this process's exact runtime_env
  (a replica only lands on a worker whose runtime_env string is the same), unless one is there.

It relies on two Ray internals, to re-check on every Ray upgrade: the raylet's `PrestartWorkers`
gRPC (`src/ray/protobuf/node_manager.proto`, called through Ray's generated stub) and the
`__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR` variable that `ray/_private/workers/default_worker.py` runs.
`BERTSERVE_SPARE_WORKER=0` in the replicas' environment turns the spare off.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil
import ray

__all__ = [
    "PRELOADED_MODULES",
    "SETUP_HOOK_ENV",
    "SPARE_WORKER_ENV",
    "spare_worker_on",
    "keep_spare_worker",
    "keep_spare_worker_in_background",
    "preload",
]

logger = logging.getLogger(__name__)

SPARE_WORKER_ENV = "BERTSERVE_SPARE_WORKER"  # "0": no spare worker
SETUP_HOOK_ENV = "__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"  # Ray-internal (`ray_constants.py`)
# What a replica of the classifier or the pool imports before it can load anything (~6 s on 2 cores).
PRELOADED_MODULES = (
    "torch",
    "tokenizers",
    "fastapi",
    "ray.serve",
    "loading.bert",
    "loading.predict",
    "loading.store",
    "deployments.classifier",
    "deployments.pool",
)
IDLE_TITLE = "ray::IDLE"  # a Python worker's process title while it holds no lease
# A spare asked for this recently may not be the raylet's child yet (it appears ~1.5 s after the
# call on an idle node): meanwhile another replica of the node must not ask for a second one.
STARTING_S = 15.0
# A process's start time (psutil, from the kernel's boot time in whole seconds) can read up to 1 s
# off the wall clock: a spare started just after the ask may seem to predate it.
START_TIME_SLACK_S = 2.0
RPC_TIMEOUT_S = 5.0  # the raylet answers at once: it starts the worker after replying
# A spare's start (~4 s of CPU for the imports) right at the end of the replica's __init__ slowed
# that replica's way to its first answer by ~0.7 s on 2 cores: start it once that is over.
FIRST_CHECK_AFTER_S = 5.0
CHECK_EVERY_S = 60.0  # how often a replica checks that its node still has a spare
# The raylet reaps a never-leased worker once its keep-alive is over and no CPU is free. A spare
# this close to the end of its keep-alive counts as gone, so that its replacement (asked for at the
# next check, ready in seconds) is idle before the raylet may reap it.
RENEW_BEFORE_S = 2 * CHECK_EVERY_S

_warned = False  # one warning per process: a replica checks every minute


def preload() -> None:
    """Import what a replica imports (the runtime_env's worker setup hook; an error stops the worker)."""
    for name in PRELOADED_MODULES:
        importlib.import_module(name)


def spare_worker_on() -> bool:
    """Whether this process's environment lets replicas keep a spare (`SPARE_WORKER_ENV` not "0")."""
    return os.environ.get(SPARE_WORKER_ENV, "1") != "0"


def keep_spare_worker(keep_alive_s: float = 600.0) -> bool:
    """Make sure this node has one idle worker with this process's runtime_env.

    Asks the raylet to start one, kept for at least `keep_alive_s`, unless one is idle or starting.
    Only a bad `keep_alive_s` raises: any other error is logged and returns False.
    Returns:
        True if a spare is there or was asked for; False if turned off or not possible (the reason
        is logged once, at warning level).
    """
    if keep_alive_s <= RENEW_BEFORE_S:
        raise ValueError(f"keep_alive_s must be > {RENEW_BEFORE_S:.0f}, got {keep_alive_s}")
    if not spare_worker_on():
        return False
    try:
        if not ray.is_initialized():
            raise RuntimeError("Ray is not initialised in this process")
        _ask_unless_spare(_raylet_process(), keep_alive_s)
        return True
    except Exception as exc:  # a spare is an optimisation: it must never fail the replica
        _warn_once(exc)
        return False


def keep_spare_worker_in_background(
    every_s: float = CHECK_EVERY_S, first_after_s: float = FIRST_CHECK_AFTER_S
) -> threading.Thread:
    """Run `keep_spare_worker` after `first_after_s`, then every `every_s`, on a daemon thread, until
    it returns False."""

    def keep() -> None:
        time.sleep(first_after_s)
        while keep_spare_worker():
            time.sleep(every_s)

    thread = threading.Thread(target=keep, name="spare-worker", daemon=True)
    thread.start()
    return thread


def _warn_once(exc: Exception) -> None:
    global _warned
    if not _warned:
        _warned = True
        logger.warning("no spare Ray worker (replicas start on fresh workers): %r", exc)


def _raylet_process() -> psutil.Process:
    """This worker's raylet: the raylet starts every worker of its node as its own child."""
    parent = psutil.Process().parent()
    if parent is None or parent.name() != "raylet":
        name = parent.name() if parent else None
        raise RuntimeError(f"not in a Ray worker process: its parent is {name!r}, not a raylet")
    return parent


def _ask_unless_spare(raylet: psutil.Process, keep_alive_s: float) -> None:
    """Ask `raylet` for a spare with this process's runtime_env unless it has one, one replica at a time."""
    runtime_env = ray.get_runtime_context().get_runtime_env_string()
    # The node's replicas all see this file (the raylet's pid names it); it holds when one last asked.
    with open(Path(tempfile.gettempdir()) / f"bertserve-spare-worker-{raylet.pid}", "a+") as asked:
        fcntl.flock(asked, fcntl.LOCK_EX)  # released when the file closes
        asked.seek(0)
        if _asked_moments_ago(float(asked.read() or 0), psutil.Process().create_time(), time.time()):
            return
        if _has_spare(raylet, runtime_env, keep_alive_s - RENEW_BEFORE_S):
            return
        address = _raylet_address()
        asking_at = time.time()  # before the call: the raylet may start the spare before it replies
        _prestart_worker(address, runtime_env, keep_alive_s)
        asked.seek(0)
        asked.truncate()
        asked.write(f"{asking_at:.3f}")


def _asked_moments_ago(asked_at: float, started_at: float, now: float) -> bool:
    """Whether the spare asked for at `asked_at` may still be on its way, seen from a process started
    at `started_at`: asked within STARTING_S, and after this process started. A process started after
    the ask may be that very spare, taken by this replica: then the node needs a new one (measured:
    without this, back-to-back scale-ups alternated between the spare and a fresh worker)."""
    return now - asked_at < STARTING_S and started_at < asked_at - START_TIME_SLACK_S


def _has_spare(raylet: psutil.Process, runtime_env: str, max_age_s: float) -> bool:
    """Whether another child of `raylet` younger than `max_age_s`, idle or still starting, has our env."""
    env_vars = (json.loads(runtime_env) if runtime_env else {}).get("env_vars", {})
    now = time.time()
    for child in raylet.children():
        try:
            title = " ".join(child.cmdline()).split()
            idle = title[:1] == [IDLE_TITLE] or any(a.endswith("default_worker.py") for a in title)
            if child.pid == os.getpid() or not idle or now - child.create_time() > max_age_s:
                continue
            environ = child.environ()
        except psutil.Error:  # exited (or a zombie) meanwhile
            continue
        if all(environ.get(k) == str(v) for k, v in env_vars.items()):
            return True
    return False


def _raylet_address() -> str:
    """host:port of this node's raylet gRPC server."""
    node_id = ray.get_runtime_context().get_node_id()
    (node,) = [n for n in ray.nodes() if n["NodeID"] == node_id]
    return f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}"


def _prestart_worker(address: str, runtime_env: str, keep_alive_s: float) -> None:
    """Ask the raylet at `address` for one worker with `runtime_env`, for any job."""
    import grpc
    from ray.core.generated import common_pb2, node_manager_pb2, node_manager_pb2_grpc
    from ray.core.generated.runtime_environment_pb2 import RuntimeEnvInfo

    request = node_manager_pb2.PrestartWorkersRequest(
        language=common_pb2.Language.PYTHON,
        runtime_env_info=RuntimeEnvInfo(serialized_runtime_env=runtime_env),
        keep_alive_duration_secs=int(keep_alive_s),
        num_workers=1,
    )  # no job_id: a nil job fits a lease of any job (the Serve controller's, here)
    # One channel per call: a channel held open between calls got GOAWAY from the raylet.
    with grpc.insecure_channel(address) as channel:
        node_manager_pb2_grpc.NodeManagerServiceStub(channel).PrestartWorkers(request, timeout=RPC_TIMEOUT_S)
    logger.info("asked the raylet at %s for a spare worker (keep-alive %.0f s)", address, keep_alive_s)
