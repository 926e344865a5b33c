"""A multi-node Ray cluster on this machine: one `ray start --head` and `ray start --address` workers.

Each node is its own `ray start --block` process tree (raylet, object store, agents, workers) on
127.0.0.1 with its own temp dir and block of ports, so nodes share one machine without clashing with
each other or with other Ray clusters on it. Nodes are stopped by their own pids, never by `ray stop`
(which stops every Ray process of the user). Not `ray.cluster_utils.Cluster`: it starts raylets as
children of the driver, not through the `ray start` a cloud node runs, and its `remove_node` stops
only the processes Ray recorded, not the workers those raylets forked.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.harness.load import wait_until
from loading.host import WORKER_ENV

__all__ = ["LocalCluster", "LocalNode", "node_ports"]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
PORTS_PER_NODE = 100  # node i gets [base + 100 i, base + 100 i + 99], its workers from +20
PORT_NAMES = ("node_manager", "object_manager", "dashboard_agent_listen", "dashboard_agent_grpc")
PORT_NAMES += ("runtime_env_agent", "metrics_export", "ray_client_server", "dashboard")
# On the head only: the client server `ray start` runs whenever ray[client] is installed, and the
# dashboard's port (not started, but never the shared 8265).
HEAD_ONLY_PORTS = ("ray_client_server", "dashboard")
OBJECT_STORE_BYTES = 300_000_000


def node_ports(index: int, base_port: int) -> dict[str, int]:
    """The ports of node `index` (0 = head): one block per node, so nodes on one host never clash."""
    first = base_port + PORTS_PER_NODE * index
    ports = {name: first + i for i, name in enumerate(PORT_NAMES)}
    return {**ports, "min_worker": first + 20, "max_worker": first + PORTS_PER_NODE - 1}


@dataclass
class LocalNode:
    """One node: its `ray start --block` process, temp dir, ports and (once joined) Ray node id."""

    name: str
    head: bool
    resources: dict[str, float]
    temp_dir: Path
    process: subprocess.Popen
    started: float  # epoch s of `ray start`
    node_id: str | None = None
    joined: float | None = None  # epoch s at which GCS first listed it alive
    stopped: float | None = None
    ports: dict[str, int] = field(default_factory=dict)

    def processes(self) -> set[psutil.Process]:
        """Every live process of this node: the `ray start` tree plus anything naming its temp dir."""
        found: set[psutil.Process] = set()
        with suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.process.pid)
            found = {root, *root.children(recursive=True)}
        marker, uid = str(self.temp_dir), os.getuid()
        for proc in psutil.process_iter(["uids", "cmdline"]):
            with suppress(psutil.Error, TypeError):
                if proc.info["uids"].real == uid and any(marker in a for a in proc.info["cmdline"] or ()):
                    found.add(proc)
        return {p for p in found if p.pid != os.getpid()}


class LocalCluster:
    """Head plus worker nodes on 127.0.0.1, each a separate `ray start`; the driver joins the head."""

    def __init__(self, *, gcs_port: int = 6390, base_port: int = 16400) -> None:
        self.root = Path(f"/tmp/bertserve-preempt-{os.getpid()}")  # short: Ray's socket paths are limited
        self.gcs_port, self.base_port = gcs_port, base_port
        self.address = f"{HOST}:{gcs_port}"
        self.nodes: list[LocalNode] = []

    def start_head(self) -> LocalNode:
        """Start the head (no CPUs, so replicas never land there) and connect the driver to it."""
        import ray

        self.root.mkdir(parents=True, exist_ok=True)
        head = self._launch("head", {"head": 1}, num_cpus=0)
        self.wait_joined([head], timeout_s=90, connect=True)
        ray.init(address=self.address, namespace="serve", log_to_driver=False)
        self._refresh([head])
        return head

    def add_nodes(self, names: list[str], resources: dict[str, float], wait: bool = True) -> list[LocalNode]:
        """Start 1-CPU worker nodes (in parallel); with `wait`, return once GCS lists each one alive."""
        nodes = [self._launch(name, resources, num_cpus=1) for name in names]
        if wait:
            self.wait_joined(nodes)
        return nodes

    def _launch(self, name: str, resources: dict[str, float], num_cpus: float) -> LocalNode:
        head = not self.nodes  # the first node started
        ports = node_ports(len(self.nodes), self.base_port)
        if busy := [p for p in [self.gcs_port] * head + list(ports.values()) if _port_open(p)]:
            raise RuntimeError(f"ports {busy} on {HOST} are in use; pick another --gcs-port/--base-port")
        temp_dir = self.root / name  # Ray's socket paths live under it (108-byte limit)
        temp_dir.mkdir(parents=True, exist_ok=True)
        skipped = () if head else HEAD_ONLY_PORTS
        cmd = [str(Path(sys.executable).with_name("ray")), "start", "--block", f"--node-ip-address={HOST}"]
        cmd += ["--head", f"--port={self.gcs_port}", "--include-dashboard=false"] if head else []
        cmd += [
            *([] if head else [f"--address={self.address}"]),
            *(f"--node-name={name}", f"--temp-dir={temp_dir}", f"--num-cpus={num_cpus:g}"),
            *(f"--resources={json.dumps(resources)}", f"--object-store-memory={OBJECT_STORE_BYTES}"),
            "--disable-usage-stats",
            *(f"--{k.replace('_', '-')}-port={v}" for k, v in ports.items() if k not in skipped),
        ]
        with (self.root / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **WORKER_ENV},  # replicas inherit the node's environment
                start_new_session=True,  # its own process group: Ctrl-C in our terminal is ours to handle
            )
        node = LocalNode(name, head, dict(resources), temp_dir, process, time.time(), ports=ports)
        self.nodes.append(node)
        logger.info("started node %s (pid %d, ports from %d)", name, process.pid, ports["node_manager"])
        return node

    def wait_joined(self, nodes: list[LocalNode], timeout_s: float = 120, connect: bool = False) -> None:
        """Until GCS lists every node in `nodes` alive (their `ray start` failing stops the wait)."""

        def up() -> bool:
            for node in nodes:
                if node.process.poll() is not None and node.node_id is None:
                    log = (self.root / f"{node.name}.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"ray start of {node.name} exited {node.process.returncode}:\n{log}")
            if connect:  # no driver yet: the head is up once its GCS answers and its raylet has a socket
                return _port_open(self.gcs_port) and any(nodes[0].temp_dir.glob("session_*/sockets/raylet"))
            self._refresh(nodes)
            return all(n.joined is not None for n in nodes)

        wait_until(up, timeout_s, f"nodes {[n.name for n in nodes]} joining", interval_s=0.2)

    def joined(self, node: LocalNode) -> bool:
        """Whether GCS has listed `node` alive (its id and join time are set from then on)."""
        self._refresh([node])
        return node.node_id is not None

    def _refresh(self, nodes: list[LocalNode]) -> None:
        import ray

        alive = {n["NodeName"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}
        for node in nodes:
            if node.node_id is None and node.name in alive:
                node.node_id, node.joined = alive[node.name], time.time()

    def is_alive(self, node: LocalNode) -> bool:
        """Whether GCS still lists the node alive (it notices a killed node only after health checks)."""
        import ray

        return any(n["NodeID"] == node.node_id and n["Alive"] for n in ray.nodes())

    def kill(self, node: LocalNode) -> list[str]:
        """SIGKILL every process of `node` at once (a spot reclaim); returns the killed processes' names."""
        processes = node.processes()
        names = sorted(_name(p) for p in processes)  # before: a dead process has no name to read
        for proc in processes:
            _signal(proc, signal.SIGKILL)
        node.stopped = time.time()  # the moment of the loss: finding the processes took 0.1-0.5 s
        node.process.wait(timeout=30)
        logger.info("killed node %s: SIGKILL to %s", node.name, names)
        return names

    def drain(self, node: LocalNode, deadline_s: int) -> float:
        """Drain `node` for preemption with a deadline (a termination notice); returns when GCS accepted.

        The GCS call of `ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION`, made in-process (the
        CLI's start-up took 4-11 s here, a delay no real notice has). Nothing is killed: the caller
        terminates the node, as the cloud would.
        """
        import ray
        from ray.core.generated import autoscaler_pb2

        if node.node_id is None:
            raise ValueError(f"node {node.name} has not joined the cluster")
        reason = autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION")
        deadline_ms = int(time.time() * 1000) + deadline_s * 1000
        gcs = ray._raylet.GcsClient(address=self.address)
        accepted, why = gcs.drain_node(node.node_id, reason, "spot termination notice", deadline_ms)
        if not accepted:
            raise RuntimeError(f"GCS refused to drain {node.name}: {why}")
        return time.time()

    def _stop(self, node: LocalNode, grace_s: float = 5.0) -> None:
        """SIGTERM every process of `node`, then SIGKILL whatever is still there after `grace_s`."""
        processes = node.processes()
        for proc in processes:
            _signal(proc, signal.SIGTERM)
        _, alive = psutil.wait_procs(processes, timeout=grace_s)
        for proc in {*alive, *node.processes()}:  # and workers the raylet forked meanwhile
            _signal(proc, signal.SIGKILL)
        try:
            node.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.process.kill()
        node.stopped = node.stopped or time.time()

    def shutdown(self) -> None:
        """Disconnect the driver and stop every node this cluster started (workers, then the head)."""
        import ray

        try:
            ray.shutdown()
        finally:
            for node in sorted(self.nodes, key=lambda n: n.head):
                if node.process.poll() is None or node.processes():
                    self._stop(node)
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def describe(self) -> list[dict[str, Any]]:
        """Each node's name, role, Ray id, resources and timings (for the report)."""
        return [
            {
                **{k: getattr(n, k) for k in ("name", "head", "node_id", "resources")},
                "join_s": None if n.joined is None else round(n.joined - n.started, 2),
                "node_manager_port": n.ports["node_manager"],
            }
            for n in self.nodes
        ]


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()  # Ray renames its workers: "ray::ServeReplica:base:Classifier", "raylet"
    except psutil.Error:
        return "?"


def _signal(proc: psutil.Process, sig: signal.Signals) -> None:
    with suppress(psutil.NoSuchProcess):
        proc.send_signal(sig)  # not to a new process that took a dead one's pid


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0
