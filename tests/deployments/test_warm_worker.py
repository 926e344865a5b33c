"""`deployments.warm_worker`: the spare worker never fails its caller, is kept once, and takes the replica."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from deployments import warm_worker
from deployments.warm_worker import (
    PRELOADED_MODULES,
    SETUP_HOOK_ENV,
    SPARE_WORKER_ENV,
    STARTING_S,
    _asked_moments_ago,
    keep_spare_worker,
)

# As serve_config.yaml's anchor: the hook, plus a variable only these tests' workers have.
SPARE_ENV = {"env_vars": {SETUP_HOOK_ENV: "deployments.warm_worker.preload", "WARM_WORKER_TEST": "1"}}


@pytest.fixture
def fresh_warning(monkeypatch):
    monkeypatch.delenv(SPARE_WORKER_ENV, raising=False)
    monkeypatch.setattr(warm_worker, "_warned", False)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Context:
    def get_runtime_env_string(self) -> str:
        return json.dumps(SPARE_ENV)


def test_without_ray_it_returns_false_and_warns_once(monkeypatch, caplog, fresh_warning):
    monkeypatch.setattr(warm_worker.ray, "is_initialized", lambda: False)
    with caplog.at_level(logging.WARNING, logger=warm_worker.__name__):
        assert keep_spare_worker() is False
        assert keep_spare_worker() is False
    assert [r.getMessage() for r in caplog.records] == [
        "no spare Ray worker (replicas start on fresh workers): RuntimeError('Ray is not initialised in "
        "this process')"
    ]


def test_outside_a_ray_worker_it_returns_false(monkeypatch, fresh_warning):
    monkeypatch.setattr(warm_worker.ray, "is_initialized", lambda: True)
    monkeypatch.setattr(warm_worker.ray, "get_runtime_context", _Context)
    assert keep_spare_worker() is False  # pytest's parent is no raylet


def test_a_refused_rpc_returns_false(monkeypatch, caplog, tmp_path, fresh_warning):
    monkeypatch.setattr(warm_worker.ray, "is_initialized", lambda: True)
    monkeypatch.setattr(warm_worker.ray, "get_runtime_context", _Context)
    monkeypatch.setattr(warm_worker.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(warm_worker, "_raylet_process", psutil.Process)  # this process: no spare child
    monkeypatch.setattr(warm_worker, "_raylet_address", lambda: f"127.0.0.1:{_closed_port()}")
    with caplog.at_level(logging.WARNING, logger=warm_worker.__name__):
        assert keep_spare_worker() is False
    (record,) = caplog.records
    assert "RpcError" in record.getMessage() or "UNAVAILABLE" in record.getMessage()


def test_the_opt_out_asks_nothing(monkeypatch):
    monkeypatch.setenv(SPARE_WORKER_ENV, "0")

    def fail(*args):
        raise AssertionError("the raylet was asked")

    monkeypatch.setattr(warm_worker, "_ask_unless_spare", fail)
    assert keep_spare_worker() is False
    thread = warm_worker.keep_spare_worker_in_background(every_s=0.01, first_after_s=0)
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_keep_alive_must_outlast_the_renewal():
    with pytest.raises(ValueError, match="keep_alive_s must be > 120, got 60"):
        keep_spare_worker(60)


def test_preload_imports_what_it_promises():
    code = (
        "import sys; from deployments.warm_worker import PRELOADED_MODULES, preload; preload(); "
        "print(','.join(m for m in PRELOADED_MODULES if m not in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
    assert {"torch", "deployments.classifier", "deployments.pool"} <= set(PRELOADED_MODULES)


def _spares(raylet: psutil.Process) -> list[int]:
    """pids of the raylet's idle workers started with SPARE_ENV."""
    pids = []
    for child in raylet.children():
        try:
            if child.cmdline()[:1] and child.cmdline()[0].split()[:1] == ["ray::IDLE"]:
                if child.environ().get("WARM_WORKER_TEST") == "1":
                    pids.append(child.pid)
        except psutil.Error:
            continue
    return pids


def test_a_spare_is_kept_once_and_takes_the_next_actor(ray_session):
    ray = ray_session

    @ray.remote(num_cpus=0)
    class Probe:
        def keep(self) -> bool:
            return keep_spare_worker()

        def facts(self) -> dict:
            return {
                "pid": os.getpid(),
                "raylet": psutil.Process().parent().pid,
                "preloaded": [m for m in PRELOADED_MODULES if m in sys.modules],
            }

    first = Probe.options(runtime_env=SPARE_ENV).remote()
    raylet = psutil.Process(ray.get(first.facts.remote())["raylet"])
    assert ray.get(first.keep.remote()) is True
    assert ray.get(first.keep.remote()) is True  # at once: the spare asked for is still starting
    deadline = time.monotonic() + 120
    while not (spares := _spares(raylet)) and time.monotonic() < deadline:
        time.sleep(0.2)
    # Once it is idle, even with no record that it was asked for, the raylet's children show it.
    (Path(tempfile.gettempdir()) / f"bertserve-spare-worker-{raylet.pid}").unlink()
    assert ray.get(first.keep.remote()) is True
    time.sleep(2.0)  # a second spare, had one been asked for, would be a child by now
    assert spares == _spares(raylet), "one spare per node, not one per call"

    second = Probe.options(runtime_env=SPARE_ENV).remote()
    facts = ray.get(second.facts.remote())
    assert facts["pid"] == spares[0]  # started before the actor was created
    assert facts["preloaded"] == list(PRELOADED_MODULES)  # the hook ran

    # The replica that took the spare asks for the node's next one.
    assert ray.get(second.keep.remote()) is True
    deadline = time.monotonic() + 120
    while not (after := _spares(raylet)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(after) == 1 and after[0] != facts["pid"]
    for actor in (first, second):
        ray.kill(actor)
    psutil.Process(after[0]).kill()  # not kept for the rest of the test session (~230 MiB)


def test_a_spare_asked_for_moments_ago_counts_unless_this_process_may_be_it():
    asked = 1000.0
    assert _asked_moments_ago(asked, started_at=asked - 30, now=asked + 5)  # still on its way
    assert not _asked_moments_ago(asked, started_at=asked - 30, now=asked + STARTING_S + 1)  # long ago
    # Started after the ask: this process may be that spare, now taken; look at the node instead.
    assert not _asked_moments_ago(asked, started_at=asked + 1.5, now=asked + 5)
    # Start times read up to 1 s off the wall clock: "just before the ask" may be that spare too.
    assert not _asked_moments_ago(asked, started_at=asked - 0.5, now=asked + 5)
