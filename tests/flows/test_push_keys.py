"""The push's Redis keys are cluster-safe (one slot per script and transaction), and the
names before partitions are moved by `availability shopify migrate-keys`."""

from __future__ import annotations

import json
import os

import msgspec
import pytest
import redis as sync_redis
from redis.crc import key_slot

from availability.cli import main
from availability.flows.inventory.migrate import LegacyPushKeys, LegacyPushKeysFound, legacy_keys_left
from availability.flows.inventory.state import PushKeys
from availability.flows.machinery import DeadLetter, Outbox, OutboxMessage
from availability.ledger.keys import KeyLayout


def _slot(key: str) -> int:
    return key_slot(key.encode())


@pytest.mark.parametrize("shop", ["", "uk"])
def test_a_shops_queue_is_one_slot_and_a_skus_push_keys_are_in_the_skus_slot(shop):
    layout = KeyLayout("av", 64)
    keys = PushKeys(layout, shop)
    outbox = Outbox(None, keys.base, scripts=object())  # names only
    # claim.lua: marks, urgent, leases; outbox_claim.lua and Outbox.put/done: outbox, its leases
    queue = [keys.dirty, keys.urgent, keys.leases, outbox.key, outbox.lease_key, keys.dlq, keys.parked,
             keys.unmapped, keys.levels_stream, f"{keys.base}:levels:triggered", keys.drift_lock, keys.drift_last,
             keys.mappings_seen(7)]
    assert len({_slot(k) for k in queue}) == 1
    assert _slot(keys.dirty) == _slot(layout.tag(layout.queue_partition(keys.name)))
    for sku in ("TEE-BLK-M", "MUG", "p3", "shopify"):
        # SalesInFlight._transact: WATCH sales + known, MULTI writes them and the held index
        stock = _slot(layout.stock(sku))
        assert {_slot(keys.known(sku)), _slot(keys.sales(sku)), _slot(keys.held_index_of(sku))} == {stock}
        assert layout.kind(keys.known(sku)) == layout.kind(keys.sales(sku)) == ""  # no ledger family
    assert len(set(keys.all_held_indexes())) == 64
    # each shop its own names
    assert PushKeys(layout, "").dirty != PushKeys(layout, "uk").dirty


def _client(redis_url: str):
    on_cluster = os.environ.get("AVAILABILITY_REDIS_CLUSTER", "").lower() == "true"
    return (sync_redis.RedisCluster if on_cluster else sync_redis.Redis).from_url(redis_url, decode_responses=True)


def _write_old_keys(r, prefix: str, shop: str) -> dict:
    """A push's state under the names before partitions, as the service wrote it: seven
    queue keys, the held index, and the SKU's known values and sales (nine keys moved)."""
    old = LegacyPushKeys(prefix, shop)
    message = OutboxMessage(id="m1", flow="shopify.inventory", idempotency_key="k1", payload={"entries": []},
                            correlation_id="c1", created_ms=1)
    letter = DeadLetter(id="d1", flow="shopify.inventory", reason="INVALID_LOCATION", payload={"sku": "TEE"})
    r.zadd(f"{old.base}:dirty", {"TEE|DC1": 100, "MUG|DC1": 101})
    r.zadd(f"{old.base}:urgent", {"TEE|DC1": 100})
    r.hset(f"{old.base}:outbox", "m1", msgspec.json.encode(message))
    r.zadd(f"{old.base}:outbox:lease", {"m1": 5})
    r.rpush(f"{old.base}:dlq", msgspec.json.encode(letter))
    r.hset(f"{old.base}:parked", "TEE|I1|L1", "d1")
    r.xadd(f"{old.base}:levels", {"payload": "{}"})
    r.zadd(old.holds, {"TEE": 42})
    r.hset(f"{prefix}:{{TEE}}:{old.name}", "I1|L1", "5|10|push")
    r.hset(f"{prefix}:{{TEE}}:{old.name}:sales", "h|I1|L1", "[[2,10]]")
    r.expire(f"{prefix}:{{TEE}}:{old.name}:sales", 3600)
    return {"message": message, "letter": letter}


def test_migrate_keys_moves_every_shops_keys_and_runs_again_harmlessly(redis_url, key_prefix, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AVAILABILITY_REDIS_URL", redis_url)
    monkeypatch.setenv("AVAILABILITY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/cli.db")
    monkeypatch.setenv("AVAILABILITY_KEY_PREFIX", key_prefix)
    monkeypatch.setenv("AVAILABILITY_DATA_DIR", str(tmp_path))
    r = _client(redis_url)
    try:
        for shop in ("", "uk"):
            _write_old_keys(r, key_prefix, shop)
        untouched = f"{key_prefix}:{{TEE}}:stock"  # an old ledger key: `ledger migrate-layout`'s, not ours
        r.hset(untouched, "DC1", "1,0,0,0,0,0")
        layout = KeyLayout(key_prefix)
        new = PushKeys(layout, "")
        r.zadd(new.dirty, {"TEE|DC1": 50})  # a publisher already ran on the new names: merged, earlier time kept

        assert main(["--log-level", "WARNING", "shopify", "migrate-keys", "--shop", "uk"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["shops"] == ["default", "uk"]
        assert report["merged"] == 1 and report["moved"] == 2 * 9 - 1 and report["index_members"] == 2

        for shop in ("", "uk"):
            keys, old = PushKeys(layout, shop), LegacyPushKeys(key_prefix, shop)
            assert r.zrange(keys.dirty, 0, -1, withscores=True) == (
                [("TEE|DC1", 50.0), ("MUG|DC1", 101.0)] if shop == "" else [("TEE|DC1", 100.0), ("MUG|DC1", 101.0)]
            )
            assert r.zrange(keys.urgent, 0, -1) == ["TEE|DC1"]
            assert msgspec.json.decode(r.hget(f"{keys.base}:outbox", "m1"), type=OutboxMessage).idempotency_key == "k1"
            assert r.zscore(f"{keys.base}:outbox:lease", "m1") == 5
            assert [msgspec.json.decode(x, type=DeadLetter).id for x in r.lrange(keys.dlq, 0, -1)] == ["d1"]
            assert r.hgetall(keys.parked) == {"TEE|I1|L1": "d1"}
            assert r.xlen(keys.levels_stream) == 1
            assert r.hgetall(keys.known("TEE")) == {"I1|L1": "5|10|push"}
            assert r.hgetall(keys.sales("TEE")) == {"h|I1|L1": "[[2,10]]"}
            assert 0 < r.ttl(keys.sales("TEE")) <= 3600  # its TTL came along
            assert r.zscore(keys.held_index_of("TEE"), "TEE") == 42
            for name in [*old.queue(), old.holds, f"{key_prefix}:{{TEE}}:{old.name}", f"{key_prefix}:{{TEE}}:{old.name}:sales"]:
                assert not r.exists(name), name
        assert r.hgetall(untouched) == {"DC1": "1,0,0,0,0,0"}

        # once more (a run killed half-way is simply run again): nothing left to move
        assert main(["--log-level", "WARNING", "shopify", "migrate-keys", "--shop", "uk"]) == 0
        again = json.loads(capsys.readouterr().out)
        assert (again["moved"], again["merged"], again["index_members"]) == (0, 0, 0)
        # a dead letter left under the old name beside its copy (a run cut before the delete) is not doubled
        r.rpush(LegacyPushKeys(key_prefix).base + ":dlq", r.lindex(new.dlq, 0))
        assert main(["--log-level", "WARNING", "shopify", "migrate-keys"]) == 0
        capsys.readouterr()
        assert r.llen(new.dlq) == 1
    finally:
        r.close()


async def test_a_publisher_refuses_to_start_while_the_old_names_hold_its_state(shop_factory, redis_client, key_prefix):
    shop = await shop_factory(1)
    old = LegacyPushKeys(key_prefix)
    await redis_client.hset(f"{old.base}:outbox", "m1", "{}")
    assert await legacy_keys_left(redis_client, key_prefix) == [f"{old.base}:outbox"]
    with pytest.raises(LegacyPushKeysFound, match="migrate-keys"):
        await shop.publisher()
    shop.publishers.clear()
    await redis_client.delete(f"{old.base}:outbox")
    publisher = await shop.publisher()
    await shop.receive("SKU-000", "DC1", 4)
    assert await publisher.drain(10)
    # the started publisher's own loop may hold the round that claimed the mark (drain then
    # sees no mark left while that push is still on its way): stop lets it finish
    await publisher.stop()
    assert shop.shopify("SKU-000", "DC1") == await shop.ats("SKU-000", "DC1") == 4
