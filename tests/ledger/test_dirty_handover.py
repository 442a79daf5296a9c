"""The publisher's dirty marks come from every ledger partition's dirty set through the
crash-safe hand-over (availability/ledger/dirty.py): earlier first-dirty times are kept, a
hand-over that died after taking marks loses none of them, and marks made meanwhile wait."""

from __future__ import annotations

from availability.ledger.dirty import DirtyHandover


async def test_marks_of_every_partition_reach_every_target_once(ledger):
    pairs = [(f"H-{i}", "DC1") for i in range(300)]
    await ledger.mark_dirty(pairs, at_ms=1000)
    assert len({ledger.keys.partition(s) for s, _ in pairs}) > 10
    targets = [f"{ledger.keys.prefix}:shop-a:dirty", f"{ledger.keys.prefix}:shop-b:dirty"]
    await ledger.redis.zadd(targets[0], {"H-0|DC1": 500})  # already waiting there, earlier
    handover = DirtyHandover(ledger.redis, ledger.keys, targets, batch=7)
    assert await handover.run() == 300
    for target in targets:
        assert await ledger.redis.zcard(target) == 300
    assert await ledger.redis.zscore(targets[0], "H-0|DC1") == 500
    assert await ledger.redis.zscore(targets[1], "H-0|DC1") == 1000
    assert await ledger.dirty_count() == 0
    assert await handover.run() == 0


async def test_a_hand_over_that_died_after_taking_loses_nothing(ledger):
    await ledger.mark_dirty([("H-1", "DC1"), ("H-1", "S1")], at_ms=1000)
    p = ledger.keys.partition("H-1")
    handover = DirtyHandover(ledger.redis, ledger.keys, [f"{ledger.keys.prefix}:shop:dirty"])
    # step 1 alone, as a process killed right after it leaves things
    [taken] = await handover._take([p])
    assert len(taken) == 4 and await ledger.dirty_count() == 0
    await ledger.mark_dirty([("H-1", "DC1")], at_ms=2000)  # changed again meanwhile
    assert await handover.run() == 2  # the taken marks first
    assert await handover.run() == 1  # then the new one
    target = f"{ledger.keys.prefix}:shop:dirty"
    assert await ledger.redis.zrange(target, 0, -1, withscores=True) == [(b"H-1|DC1", 1000.0), (b"H-1|S1", 1000.0)]
    assert not await ledger.redis.exists(ledger.keys.dirty_taking(p))
