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
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import RedisClusterException


class ScriptingPipeline(ClusterPipeline):
    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> ClusterPipeline:
        return self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)


class ServiceCluster(RedisCluster):
    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        return ScriptingPipeline(self, transaction)
