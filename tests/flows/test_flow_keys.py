"""The ERP flows' Redis keys are cluster-safe (each flow's keys in one slot, so the claim and
outbox scripts name one), and a deployment's keys under the names before the hash tag move
to the new ones when the flows are built, idempotently."""

from __future__ import annotations

import msgspec
import pytest
from redis.crc import key_slot

from availability.bootstrap import ERP_FLOWS, open_erp_flows
from availability.config import Settings
from availability.flows.keymoves import move_legacy_flow_keys
from availability.flows.machinery import FlowKeys, FlowQueue, Outbox, OutboxMessage, now_ms


def _slot(key: str) -> int:
    return key_slot(key.encode())


@pytest.mark.parametrize("flow", ERP_FLOWS)
def test_a_flows_keys_share_one_slot_under_the_prefix(flow):
    keys = FlowKeys("av", flow)
    outbox = Outbox(None, keys.base, scripts=object())  # names only
    # claim.lua: marks, urgent, leases; outbox_claim.lua and Outbox.put/done: the outbox and its leases
    names = [keys.marks, keys.urgent, keys.leases, keys.retry, outbox.key, outbox.lease_key]
    assert len({_slot(k) for k in names}) == 1
    assert sorted(names) == sorted(keys.legacy_names().values())  # every key it has moves
    # under the prefix: `ledger migrate-layout --to` copies `{prefix}:*`, tests scope by it
    assert all(k.startswith("av:{") for k in names)
    assert not set(keys.legacy_names()) & set(names)


def _settings(redis_url, key_prefix, tmp_path) -> Settings:
    return Settings(_env_file=None, redis_url=redis_url, key_prefix=key_prefix, data_dir=str(tmp_path / "var"),
                    database_url=f"sqlite+aiosqlite:///{tmp_path}/flows.db")


async def _write_old_keys(redis, prefix: str, flow: str) -> OutboxMessage:
    """A flow's queue as the service wrote it before the hash tag: all six keys."""
    old = f"{prefix}:{flow}"
    message = OutboxMessage(id="m1", flow=flow, idempotency_key="k1", payload={"reference": "R1"},
                            correlation_id="c1", created_ms=1)
    await redis.zadd(f"{old}:marks", {"R1|order": 100, "R2|order": 101})
    await redis.zadd(f"{old}:urgent", {"R3|order": 102})
    await redis.hset(f"{old}:inflight", "R9", "gone-worker|5")
    await redis.zadd(f"{old}:retry", {"R4": 103})
    await redis.hset(f"{old}:outbox", "m1", msgspec.json.encode(message))
    await redis.zadd(f"{old}:outbox:lease", {"m1": 5})
    return message


async def test_building_the_flows_moves_their_old_keys_and_the_worker_claims_them(redis_client, redis_url,
                                                                                   key_prefix, tmp_path):
    for flow in ("orders", "returns", "finance"):
        await _write_old_keys(redis_client, key_prefix, flow)
    # a worker on the new names marked R1 already: its mark stays (ZADD NX), the old one only fills gaps
    await redis_client.zadd(FlowKeys(key_prefix, "orders").marks, {"R1|order": 50})

    s = _settings(redis_url, key_prefix, tmp_path)
    async with open_erp_flows(s, redis_client, names=["orders", "returns"], with_erp=False) as flows:
        for queue in (flows.order_queue, flows.returns.queue):
            keys = queue.keys
            for old in keys.legacy_names():
                assert not await redis_client.exists(old), old
            assert await queue.work.pending() == (2, 1)
            assert await redis_client.zscore(keys.retry, "R4") == 103
            assert [m.idempotency_key for m in await queue.outbox.messages()] == ["k1"]
            # the lease of the message lapsed (5 ms after the epoch): another worker takes it over, same key
            assert [m.id for m in await queue.outbox.take_over(lease_ms=60_000)] == ["m1"]
        claimed = await flows.order_queue.work.claim("w1", window_ms=0, limit=10, lease_ms=60_000, at_ms=now_ms())
        assert {(c.member, c.dirty_since_ms) for c in claimed} == {("R1|order", 50), ("R2|order", 101),
                                                                   ("R3|order", 102)}
    # the finance flow was not built here: its keys wait for the process that runs it
    assert await redis_client.exists(f"{key_prefix}:finance:marks")

    # a run cut between a copy and its delete: the old key is there beside its copy
    queue = FlowQueue(redis_client, key_prefix, "returns", member="order")
    await redis_client.zadd(f"{key_prefix}:returns:marks", {"R2|order": 101})
    await redis_client.hset(f"{key_prefix}:returns:outbox", "m1", await redis_client.hget(queue.outbox.key, "m1"))
    again = await move_legacy_flow_keys(redis_client, key_prefix, ["orders", "returns"])
    assert again == {"moved": 0, "merged": 2}
    assert await queue.work.pending() == (2, 1) and await queue.outbox.pending() == 1
    assert await move_legacy_flow_keys(redis_client, key_prefix, ["orders", "returns"]) == {"moved": 0, "merged": 0}
