"""The Redis Cluster client the service uses: redis-py's asyncio `RedisCluster`, with
EVALSHA allowed in pipelines.

redis-py's cluster pipeline already splits a pipeline per node (keeping each node's
commands in order, so one SKU's events stay in order), routes EVALSHA by its first key,
and resends a command that got MOVED/ASK/TRYAGAIN on its own after refreshing the slot
map; it only refuses EVALSHA up front, because a script naming keys of several slots
would fail there. Every ledger script names keys of one slot (availability/ledger/keys.py:
one partition's hash tag), so that refusal is lifted here, and the ledger's pipelines of
script calls (`Ledger.apply_batch`, reservations, sweeps) run unchanged on a cluster. A
NOSCRIPT reply (a promoted replica that never loaded the scripts) comes back per command
as on one server, and the ledger reloads the scripts (SCRIPT LOAD goes to every primary).

redis-py's cluster client raises MaxConnectionsError when a node's connections are all in
use instead of waiting for one (its single-server pool can block; this one cannot), so 500
concurrent reservations of one hot SKU failed where one server queues them. Here a command
or pipeline waits for a turn instead: at most `max_connections` of them are in flight per
client, and each holds at most one connection per node, so no node's pool runs out. A
command issued from inside one in flight (a pipeline's redirected retry) does not wait again.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import RedisClusterException


#: set while this task (and the tasks it gathers) holds a turn of its client
_IN_FLIGHT = contextvars.ContextVar("cluster_in_flight", default=False)


class ScriptingPipeline(ClusterPipeline):
    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> ClusterPipeline:
        return self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        run = super().execute
        return await self.cluster_client.in_turn(lambda: run(raise_on_error, allow_redirections))


class ServiceCluster(RedisCluster):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns = asyncio.Semaphore(kwargs.get("max_connections", 100))

    async def in_turn(self, run: Any) -> Any:
        """Run `run()` once fewer than max_connections commands are in flight."""
        if _IN_FLIGHT.get():
            return await run()
        async with self._turns:
            token = _IN_FLIGHT.set(True)
            try:
                return await run()
            finally:
                _IN_FLIGHT.reset(token)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        run = super().execute_command
        return await self.in_turn(lambda: run(*args, **kwargs))

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        return ScriptingPipeline(self, transaction)


class ReplicationLag(RuntimeError):
    """Fewer replicas than asked for confirmed the writes in time: the caller must not
    acknowledge (the batch stays pending and is retried, the publish answers an error)."""


async def wait_for_replicas(redis: Any, replicas: int, timeout_ms: int, *, prefix: str) -> None:
    """Return once every primary (one server, or each primary of a cluster) has passed
    everything written to it so far to at least `replicas` replicas; ReplicationLag if one
    has not within `timeout_ms`.

    WAIT counts replicas that reached the offset of the *calling connection's* last write,
    and this process's writes went out on other pooled connections; so each primary gets
    a marker write and WAIT on one connection (a pipeline to that node). A primary's
    replication stream is one ordered log, so a replica that has the marker has every
    write the primary took before it."""
    if replicas <= 0:
        return
    if isinstance(redis, RedisCluster):
        pipe = redis.pipeline()
        markers = _markers_per_primary(redis, prefix)
        for node, key in markers:
            pipe.set(key, 1, px=60_000)
            pipe.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)
        replies = await pipe.execute()
        acked = {node.name: replies[2 * i + 1] for i, (node, _) in enumerate(markers)}
    else:
        pipe = redis.pipeline(transaction=False)
        pipe.set(f"{prefix}:replwait", 1, px=60_000)
        pipe.execute_command("WAIT", replicas, timeout_ms)
        acked = {"server": (await pipe.execute())[1]}
    short = {name: int(n) for name, n in acked.items() if int(n) < replicas}
    if short:
        raise ReplicationLag(f"WAIT {replicas} {timeout_ms}: only {short} replicas confirmed")


def _markers_per_primary(redis: RedisCluster, prefix: str) -> list[tuple[Any, str]]:
    """A key in a slot of each primary (found by trying hash tags; recomputed per call, so
    it follows a failover or resharding)."""
    wanted = {node.name: node for node in redis.get_primaries()}
    found: dict[str, str] = {}
    tag = 0
    while len(found) < len(wanted) and tag < 100_000:
        key = f"{prefix}:replwait:{{w{tag}}}"
        node = redis.get_node_from_key(key)
        if node is not None and node.name in wanted and node.name not in found:
            found[node.name] = key
        tag += 1
    return [(wanted[name], key) for name, key in found.items()]
