"""A multi-node Ray cluster on this machine: one `ray start --head` and `ray start --address` workers.

Each node is its own `ray start --block` process tree (own raylet, object store, agents and worker
processes) with `--node-ip-address 127.0.0.1`, its own temp dir and its own block of ports, so
several nodes share one machine without clashing with each other or with other Ray clusters on it.
Nodes are stopped by their own process ids, never by `ray stop` (which stops every Ray process of
the user):

- `kill(node)`: SIGKILL every process of the node at once, as a spot reclaim takes a machine away;
- `drain(node, deadline_s)`: what `ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION` and Ray's
  autoscaler do on a termination notice (GCS marks the node draining; Serve moves replicas off it);
- `shutdown()`: SIGTERM, then SIGKILL what is left, workers first; temp dirs removed.

Why not `ray.cluster_utils.Cluster` (Ray's own multi-node tests): it starts real raylets too, but
as children of the driver, set up through Python `Node` objects instead of the `ray start` command a
cloud node runs, and its `remove_node` stops only the processes Ray recorded (not, say, the
workers those raylets forked). Here a node is what runs on a machine, and all of it goes at once.

Ray 2.60's `ray start` replaces 127.0.0.1 with the host's own address (`resolve_ip_for_localhost`),
and GCS and raylets listen on all interfaces whatever the node address; the HTTP proxy that serves
the API binds 127.0.0.1 only.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

__all__ = ["LocalCluster", "LocalNode", "node_ports"]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
PORTS_PER_NODE = 100  # node i gets [base + 100 i, base + 100 i + 99]
WORKER_PORTS = (20, 99)  # offsets within a node's block for its worker processes
NODE_ENV = {
    "RAY_AUTH_MODE": "disabled",  # a local, single-user cluster
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",  # replicas inherit the node's environment: never reach for a hub
    "TOKENIZERS_PARALLELISM": "false",
}


def node_ports(index: int, base_port: int) -> dict[str, int]:
    """The ports of node `index` (0 = head): one block per node, so nodes on one host never clash."""
    first = base_port + PORTS_PER_NODE * index
    return {
        "node_manager": first,
        "object_manager": first + 1,
        "dashboard_agent_listen": first + 2,
        "dashboard_agent_grpc": first + 3,
        "runtime_env_agent": first + 4,
        "metrics_export": first + 5,
        "ray_client_server": first + 6,  # started on the head by `ray start` whenever ray[client] is in
        "dashboard": first + 7,  # not started (--include-dashboard=false), but never the shared 8265
        "min_worker": first + WORKER_PORTS[0],
        "max_worker": first + WORKER_PORTS[1],
    }


@dataclass
class LocalNode:
    """One node: its `ray start --block` process, temp dir, ports and (once joined) Ray node id."""

    name: str
    index: int
    head: bool
    resources: dict[str, float]
    temp_dir: Path
    process: subprocess.Popen
    started: float  # epoch s of `ray start`
    node_id: str | None = None
    joined: float | None = None  # epoch s at which GCS first listed it alive
    stopped: float | None = None
    ports: dict[str, int] = field(default_factory=dict)

    def pids(self) -> set[int]:
        """Every live process of this node: the `ray start` tree plus anything naming its temp dir."""
        pids: set[int] = set()
        try:
            root = psutil.Process(self.process.pid)
            pids = {root.pid} | {p.pid for p in root.children(recursive=True)}
        except psutil.NoSuchProcess:
            pass
        marker = str(self.temp_dir)
        uid = os.getuid()
        for proc in psutil.process_iter(["pid", "uids", "cmdline"]):
            try:
                if proc.info["uids"].real == uid and any(marker in a for a in proc.info["cmdline"] or ()):
                    pids.add(proc.info["pid"])
            except (psutil.Error, TypeError):
                continue
        pids.discard(os.getpid())
        return pids


class LocalCluster:
    """Head plus worker nodes on 127.0.0.1, each a separate `ray start`; the driver joins the head."""

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        *,
        gcs_port: int = 6390,
        base_port: int = 16400,
        object_store_bytes: int = 300_000_000,
    ) -> None:
        self.root = Path(root or f"/tmp/bertserve-preempt-{os.getpid()}")
        self.gcs_port = gcs_port
        self.base_port = base_port
        self.object_store_bytes = object_store_bytes
        self.address = f"{HOST}:{gcs_port}"
        self.nodes: list[LocalNode] = []
        self._ray_bin = str(Path(sys.executable).with_name("ray"))

    # -- starting ---------------------------------------------------------------------------------

    def start_head(self, resources: dict[str, float] | None = None, num_cpus: float = 0) -> LocalNode:
        """Start the head (no CPUs by default, so replicas never land there) and connect the driver."""
        import ray

        self.root.mkdir(parents=True, exist_ok=True)
        _check_free([self.gcs_port, *node_ports(0, self.base_port).values()])
        head = self._launch("head", 0, True, resources or {"head": 1}, num_cpus)
        self.wait_joined([head], timeout_s=90, connect=True)
        ray.init(address=self.address, namespace="serve", log_to_driver=False)
        self._refresh([head])
        return head

    def add_nodes(
        self, names: list[str], resources: dict[str, float], num_cpus: float = 1, wait: bool = True
    ) -> list[LocalNode]:
        """Start worker nodes (in parallel); with `wait`, return once GCS lists each one alive."""
        nodes = []
        for name in names:
            index = len(self.nodes)
            _check_free(list(node_ports(index, self.base_port).values()))
            nodes.append(self._launch(name, index, False, resources, num_cpus))
        if wait:
            self.wait_joined(nodes)
        return nodes

    def _launch(
        self, name: str, index: int, head: bool, resources: dict[str, float], num_cpus: float
    ) -> LocalNode:
        temp_dir = self.root / name  # short: Ray's socket paths live under it (108-byte limit)
        temp_dir.mkdir(parents=True, exist_ok=True)
        ports = node_ports(index, self.base_port)
        cmd = [self._ray_bin, "start", "--block", f"--node-ip-address={HOST}", f"--node-name={name}"]
        if head:
            cmd += ["--head", f"--port={self.gcs_port}", "--include-dashboard=false"]
            cmd += [f"--dashboard-port={ports['dashboard']}"]
            cmd += [f"--ray-client-server-port={ports['ray_client_server']}"]
        else:
            cmd += [f"--address={self.address}"]
        cmd += [
            f"--temp-dir={temp_dir}",
            f"--num-cpus={num_cpus:g}",
            f"--resources={json.dumps(resources)}",
            f"--object-store-memory={self.object_store_bytes}",
            "--disable-usage-stats",
        ]
        for option in (
            "node_manager",
            "object_manager",
            "dashboard_agent_listen",
            "dashboard_agent_grpc",
            "runtime_env_agent",
            "metrics_export",
            "min_worker",
            "max_worker",
        ):
            cmd.append(f"--{option.replace('_', '-')}-port={ports[option]}")
        log = (self.root / f"{name}.log").open("ab")
        process = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **NODE_ENV},
            start_new_session=True,  # its own process group: Ctrl-C in our terminal is ours to handle
        )
        log.close()
        node = LocalNode(name, index, head, dict(resources), temp_dir, process, time.time(), ports=ports)
        self.nodes.append(node)
        role = "head" if head else "worker"
        first, last = ports["node_manager"], ports["max_worker"]
        logger.info("started %s node %s (pid %d, ports %d-%d)", role, name, process.pid, first, last)
        return node

    def wait_joined(self, nodes: list[LocalNode], timeout_s: float = 120, connect: bool = False) -> None:
        """Until GCS lists every node in `nodes` alive (their `ray start` failing stops the wait)."""
        deadline = time.monotonic() + timeout_s
        while True:
            for node in nodes:
                if node.process.poll() is not None and node.node_id is None:
                    tail = (self.root / f"{node.name}.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(
                        f"ray start for {node.name} exited ({node.process.returncode}):\n{tail}"
                    )
            if connect:  # no driver yet: the head is up once its GCS answers and its raylet has a socket
                if _port_open(self.gcs_port) and any(nodes[0].temp_dir.glob("session_*/sockets/raylet")):
                    return
            else:
                self._refresh(nodes)
                if all(n.joined is not None for n in nodes):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes {[n.name for n in nodes]} did not join within {timeout_s:.0f} s")
            time.sleep(0.2)

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

    # -- taking nodes away ------------------------------------------------------------------------

    def kill(self, node: LocalNode) -> list[str]:
        """SIGKILL every process of `node` at once (a spot reclaim); returns the killed processes' names."""
        processes = [p for p in map(_process, node.pids()) if p is not None]
        names = sorted(_name(p) for p in processes)  # before: a dead process has no name to read
        for proc in processes:
            _signal(proc.pid, signal.SIGKILL)
        node.stopped = time.time()  # the moment of the loss: finding the processes took 0.1-0.5 s
        node.process.wait(timeout=30)
        logger.info("killed node %s: SIGKILL to %s", node.name, names)
        return names

    def stop(self, node: LocalNode, grace_s: float = 10.0) -> None:
        """SIGTERM every process of `node`, then SIGKILL whatever is still there after `grace_s`."""
        pids = node.pids()
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        _, alive = psutil.wait_procs([p for p in map(_process, pids) if p is not None], timeout=grace_s)
        for proc in alive:
            _signal(proc.pid, signal.SIGKILL)
        for pid in node.pids():  # workers the raylet forked while we waited
            _signal(pid, signal.SIGKILL)
        try:
            node.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.process.kill()
        node.stopped = node.stopped or time.time()

    def drain(self, node: LocalNode, deadline_s: int, message: str = "spot termination notice") -> float:
        """Drain `node` for preemption with a deadline; returns the epoch s at which GCS accepted it.

        The call `ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION --deadline-remaining-seconds`
        makes (and Ray's autoscaler on a termination notice), made in-process: the CLI's own
        start-up took 4-11 s on this 2-core machine, a delay no real notice has. GCS marks the node
        draining: nothing new is scheduled there, and Serve starts replacements for its replicas
        elsewhere and stops the old ones once those run (or `graceful_shutdown_timeout_s` before the
        deadline). Nothing is killed: the caller terminates the node, as the cloud would.
        """
        import ray
        from ray.core.generated import autoscaler_pb2

        if node.node_id is None:
            raise ValueError(f"node {node.name} has not joined the cluster")
        deadline_ms = int(time.time() * 1000) + deadline_s * 1000
        gcs = ray._raylet.GcsClient(address=self.address)
        accepted, why = gcs.drain_node(
            node.node_id,
            autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),
            message,
            deadline_ms,
        )
        if not accepted:
            raise RuntimeError(f"GCS refused to drain {node.name}: {why}")
        return time.time()

    def is_alive(self, node: LocalNode) -> bool:
        """Whether GCS still lists the node alive (it notices a killed node only after health checks)."""
        import ray

        return any(n["NodeID"] == node.node_id and n["Alive"] for n in ray.nodes())

    def shutdown(self) -> None:
        """Disconnect the driver and stop every node this cluster started (workers, then the head)."""
        import ray

        try:
            ray.shutdown()
        finally:
            for node in sorted(self.nodes, key=lambda n: n.head):
                if node.process.poll() is None or node.pids():
                    self.stop(node, grace_s=5.0)
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def describe(self) -> list[dict[str, Any]]:
        """Each node's name, role, Ray id, resources and timings (for the report)."""
        return [
            {
                "name": n.name,
                "head": n.head,
                "node_id": n.node_id,
                "resources": n.resources,
                "join_s": None if n.joined is None else round(n.joined - n.started, 2),
                "node_manager_port": n.ports["node_manager"],
            }
            for n in self.nodes
        ]


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()  # Ray renames its workers: "ray::ServeReplica:base:Classifier", "raylet"
    except psutil.Error:
        return "?"


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


def _check_free(ports: list[int]) -> None:
    """Stop early, with the port named, when another program (another cluster) holds one of ours."""
    busy = [p for p in ports if _port_open(p)]
    if busy:
        raise RuntimeError(f"ports {busy} on {HOST} are in use; pick another --gcs-port/--base-port")
