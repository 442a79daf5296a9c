"""A primary of the cluster dies (SIGKILL) while events are published and consumed: its
replica takes over, the service's clients find the new primary, and no event that was
acknowledged (published, or applied and XACKed) is lost, because both acknowledgements
wait for a replica (AVAILABILITY_REDIS_WAIT_REPLICAS=1). Own cluster: it is killed into."""

from __future__ import annotations

import asyncio
import os

import pytest

from availability.bootstrap import open_runtime
from availability.ingest.consumer import StreamConsumer
from availability.ingest.publisher import EventPublisher
from availability.ingest.streams import StreamNames
from availability.local_cluster import LocalCluster
from tests.ingest.conftest import assert_ledger_equals_oracle, make_settings, random_events, wait_drained

pytestmark = pytest.mark.cluster


async def _publish_until_acknowledged(publisher: EventPublisher, chunk) -> None:
    """What a producer does: retry a publish that failed (the event ids make it idempotent)."""
    for _ in range(600):
        try:
            await publisher.publish(chunk)
            return
        except Exception:  # noqa: BLE001 - connection lost, slots moving, ReplicationLag until a replica is back
            await asyncio.sleep(0.1)
    raise AssertionError("a publish never got through after the failover")


async def _publish_all(publisher: EventPublisher, chunks) -> None:
    for chunk in chunks:
        await _publish_until_acknowledged(publisher, chunk)


async def test_a_primary_killed_mid_stream_loses_no_acknowledged_event(tmp_path, key_prefix):
    with LocalCluster(tmp_path / "cluster", binary=os.environ.get("AVAILABILITY_REDIS_SERVER")) as cluster:
        settings = make_settings(
            cluster.url, key_prefix, tmp_path, redis_cluster=True, redis_wait_replicas=1,
            redis_wait_timeout_ms=500, consumer_lease_seconds=2.0, batch_size=100,
        )
        names = StreamNames.from_settings(settings)
        events = random_events(6000, seed=21)
        chunks = [events[i:i + 200] for i in range(0, len(events), 200)]
        async with open_runtime(settings) as runtime:
            publisher = EventPublisher(runtime)
            async with StreamConsumer(runtime):
                for chunk in chunks[:10]:
                    await _publish_until_acknowledged(publisher, chunk)
                # the primary of the first partition's stream: the consumer is at work on it
                victim = cluster.primary_for_slot(runtime.redis.keyslot(names.partition(0)))
                cluster.kill(victim)
                # the producer goes on through the failover (its publishes fail and are retried)
                producing = asyncio.create_task(_publish_all(publisher, chunks[10:]))
                promoted = await asyncio.to_thread(cluster.wait_failover, victim)
                assert promoted.port != victim.port
                # With one replica per shard the promoted primary has none left, so WAIT 1
                # holds acknowledgements back (publishes fail, batches stay pending) until the
                # dead node is back, as a replica of the promoted one.
                await asyncio.to_thread(cluster.restart, victim)
                await producing
                await wait_drained(runtime.redis, names, timeout=120)
            await assert_ledger_equals_oracle(runtime.ledger, events)
            assert await runtime.redis.xlen(names.dlq) == 0
