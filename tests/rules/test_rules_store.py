"""Rule store: CRUD, versioned audit history, compare-and-set, rollback, validation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from availability.domain.errors import InvalidRule, StaleRuleVersion, UnknownChannel, UnknownLocation, UnknownRule
from availability.domain.rules import Location
from availability.rules.store import RuleStore


async def test_crud_and_versioning(any_store: RuleStore):
    s = any_store
    assert await s.version() == 0
    await s.upsert_location(Location(code="DC1"), actor="ops", reason="new DC")
    v0 = await s.version()
    assert v0 == 1

    started = datetime.now(UTC) - timedelta(seconds=5)
    rule = await s.create_rule(
        {"kind": "safety_stock", "units": 2, "location": "DC1", "note": "fragile"}, actor="alice", reason="damage rate"
    )
    assert (rule.id, rule.version, rule.units, rule.location) == (1, 1, 2, "DC1")
    assert await s.get_rule(rule.id) == rule
    assert await s.version() == v0 + 1

    other = await s.create_rule({"kind": "buffer", "units": 1, "channel": "online"}, actor="bob", reason="b")
    assert other.id == 2
    assert [r.id for r in await s.list_rules()] == [1, 2]
    assert [r.id for r in await s.list_rules(kind="buffer")] == [2]

    updated = await s.update_rule(rule.id, {"units": 5}, expected_version=1, actor="carol", reason="peak season")
    assert (updated.version, updated.units, updated.note, updated.location) == (2, 5, "fragile", "DC1")
    assert await s.get_rule(rule.id) == updated
    assert await s.version() == v0 + 3

    # an update that changes nothing makes no version and does not move the store
    same = await s.update_rule(rule.id, {"units": 5}, expected_version=2, actor="carol", reason="again")
    assert same == updated
    assert await s.version() == v0 + 3

    with pytest.raises(StaleRuleVersion) as stale:
        await s.update_rule(rule.id, {"units": 9}, expected_version=1, actor="dave", reason="old tab")
    assert stale.value.status == 409
    assert (await s.get_rule(rule.id)).units == 5

    await s.delete_rule(rule.id, expected_version=2, actor="erin", reason="not needed")
    with pytest.raises(UnknownRule):
        await s.get_rule(rule.id)
    assert [r.id for r in await s.list_rules()] == [2]
    assert [r.id for r in await s.list_rules(include_deleted=True)] == [1, 2]
    with pytest.raises(UnknownRule):
        await s.update_rule(rule.id, {"units": 1}, actor="x", reason="")
    with pytest.raises(UnknownRule):
        await s.get_rule(999)

    history = await s.rule_history(rule.id)
    assert [(h.version, h.action, h.actor, h.reason) for h in history] == [
        (1, "create", "alice", "damage rate"),
        (2, "update", "carol", "peak season"),
        (3, "delete", "erin", "not needed"),
    ]
    assert history[0].before is None and history[0].after["units"] == 2
    assert history[1].before["units"] == 2 and history[1].after["units"] == 5
    assert history[2].before["units"] == 5 and history[2].after is None
    for h in history:
        assert h.at.tzinfo is not None and h.at.utcoffset() == timedelta(0)
        assert started <= h.at <= datetime.now(UTC) + timedelta(seconds=5)
    assert [h.store_version for h in history] == sorted(h.store_version for h in history)

    recent = await s.recent_changes(limit=2)
    assert [(c.rule_id, c.action) for c in recent] == [(1, "delete"), (1, "update")]

    book = await s.load_book()
    assert book.version == await s.version()
    assert [r.id for r in book.rules] == [2]


async def test_concurrent_updates_exactly_one_wins(any_url):
    """Two planners (two processes: two stores on one database) save on the same version."""
    a, b = RuleStore(any_url), RuleStore(any_url)
    await a.start()
    await b.start()
    try:
        rule = await a.create_rule({"kind": "safety_stock", "units": 1}, actor="setup", reason="")
        for round_ in range(5):
            base = (await a.get_rule(rule.id)).version
            results = await asyncio.gather(
                a.update_rule(rule.id, {"units": 100 + round_}, expected_version=base, actor="a", reason="a"),
                b.update_rule(rule.id, {"units": 200 + round_}, expected_version=base, actor="b", reason="b"),
                return_exceptions=True,
            )
            wins = [r for r in results if not isinstance(r, BaseException)]
            losses = [r for r in results if isinstance(r, BaseException)]
            assert len(wins) == 1 and len(losses) == 1, results
            assert isinstance(losses[0], StaleRuleVersion)
            assert wins[0].version == base + 1
            assert await b.get_rule(rule.id) == wins[0]
        history = await a.rule_history(rule.id)
        assert [h.version for h in history] == list(range(1, 7))
    finally:
        await a.close()
        await b.close()


async def test_concurrent_updates_same_store(store: RuleStore):
    rule = await store.create_rule({"kind": "safety_stock", "units": 1}, actor="setup", reason="")
    results = await asyncio.gather(
        *(store.update_rule(rule.id, {"units": n}, expected_version=1, actor=f"p{n}", reason="") for n in range(2, 8)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, StaleRuleVersion) for r in results if isinstance(r, BaseException))
    assert (await store.get_rule(rule.id)).version == 2


async def test_version_in_fields_is_the_expected_version(store: RuleStore):
    rule = await store.create_rule({"kind": "safety_stock", "units": 1}, actor="a", reason="")
    await store.update_rule(rule.id, {"units": 2, "version": 1}, actor="a", reason="")
    with pytest.raises(StaleRuleVersion):
        await store.update_rule(rule.id, {"units": 3, "version": 1}, actor="a", reason="")
    with pytest.raises(InvalidRule, match="does not match"):
        await store.update_rule(rule.id, {"id": 99, "units": 3}, actor="a", reason="")


async def test_rollback(store: RuleStore):
    await store.upsert_location(Location(code="DC1"), actor="ops")
    rule = await store.create_rule({"kind": "safety_stock", "units": 2}, actor="a", reason="v1")
    await store.update_rule(rule.id, {"units": 5, "location": "DC1"}, expected_version=1, actor="b", reason="v2")
    await store.update_rule(rule.id, {"units": 7}, expected_version=2, actor="c", reason="v3")

    restored = await store.rollback_rule(rule.id, 1, actor="d", reason="undo peak settings")
    assert (restored.version, restored.units, restored.location) == (4, 2, None)
    assert await store.get_rule(rule.id) == restored
    last = (await store.rule_history(rule.id))[-1]
    assert (last.version, last.action, last.actor, last.reason) == (4, "update", "d", "undo peak settings")
    assert last.before["units"] == 7 and last.after["units"] == 2

    # rolling back to the state it is already in changes nothing
    v = await store.version()
    assert await store.rollback_rule(rule.id, 4, actor="d", reason="") == restored
    assert await store.version() == v

    with pytest.raises(StaleRuleVersion):
        await store.rollback_rule(rule.id, 2, actor="d", reason="", expected_version=3)
    with pytest.raises(UnknownRule, match="no version 42"):
        await store.rollback_rule(rule.id, 42, actor="d", reason="")

    # a deleted rule comes back through a rollback, recorded as a create
    await store.delete_rule(rule.id, expected_version=4, actor="e", reason="gone")
    with pytest.raises(InvalidRule, match="deleted it"):
        await store.rollback_rule(rule.id, 5, actor="e", reason="")
    back = await store.rollback_rule(rule.id, 3, actor="f", reason="needed after all")
    assert (back.version, back.units, back.location) == (6, 7, "DC1")
    assert await store.get_rule(rule.id) == back
    last = (await store.rule_history(rule.id))[-1]
    assert (last.action, last.before) == ("create", None)

    # restoring a rule whose location has since gone is refused
    await store.update_rule(rule.id, {"location": None}, actor="g", reason="")
    await store.delete_location("DC1", actor="ops", reason="closed")
    with pytest.raises(UnknownLocation):
        await store.rollback_rule(rule.id, 6, actor="g", reason="")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "`kind` is required"),
        ({"kind": "bogus"}, "unknown rule kind 'bogus'"),
        ({"kind": "safety_stock", "units": -1}, "units must not be negative"),
        ({"kind": "buffer", "percent": 150, "channel": "online"}, "percent must be between 0 and 100"),
        ({"kind": "buffer", "units": 1}, "a buffer rule applies to one channel"),
        ({"kind": "safety_stock", "units": 1, "channel": "online"}, "leave `channel` empty"),
        ({"kind": "threshold", "percent": 5, "channel": "online"}, "a threshold rule is in units only"),
        ({"kind": "protection", "units": 1, "percent": 5, "channel": "online"}, "either units or percent"),
        ({"kind": "safety_stock", "skus": "A"}, "unknown rule field(s) skus"),
        ({"kind": "safety_stock", "units": "5"}, "Expected `int`, got `str` - at `$.units`"),
        ({"kind": "safety_stock", "units": 1.5}, "Expected `int`"),
        ("not a dict", "a rule is an object"),
    ],
)
async def test_invalid_rules_rejected(store: RuleStore, fields, message):
    before = await store.version()
    with pytest.raises(InvalidRule) as err:
        await store.create_rule(fields, actor="a", reason="")
    assert message in err.value.detail
    assert err.value.status == 422
    assert await store.version() == before
    assert await store.list_rules(include_deleted=True) == []


async def test_invalid_update_changes_nothing(store: RuleStore):
    rule = await store.create_rule({"kind": "buffer", "units": 1, "channel": "online"}, actor="a", reason="")
    v = await store.version()
    with pytest.raises(InvalidRule, match="percent must be between"):
        await store.update_rule(rule.id, {"percent": -3}, expected_version=1, actor="a", reason="")
    with pytest.raises(InvalidRule, match="applies to one channel"):
        await store.update_rule(rule.id, {"channel": ""}, expected_version=1, actor="a", reason="")
    assert await store.get_rule(rule.id) == rule
    assert await store.version() == v
    assert len(await store.rule_history(rule.id)) == 1


async def test_rules_must_name_known_locations_and_channels(store: RuleStore):
    with pytest.raises(UnknownLocation, match="STORE12"):
        await store.create_rule({"kind": "safety_stock", "units": 1, "location": "STORE12"}, actor="a")
    # with no channel configured, the default channel is the one that exists
    await store.create_rule({"kind": "buffer", "units": 1, "channel": "online"}, actor="a")
    with pytest.raises(UnknownChannel, match="onlnie"):
        await store.create_rule({"kind": "buffer", "units": 1, "channel": "onlnie"}, actor="a")
    with pytest.raises(InvalidRule, match="actor"):
        await store.create_rule({"kind": "safety_stock", "units": 1}, actor="", reason="")


async def test_blank_selector_means_no_selector(store: RuleStore):
    rule = await store.create_rule({"kind": "safety_stock", "units": 1, "sku": "", "category": "  "}, actor="a")
    assert rule.sku is None and rule.category is None and rule.specificity == 0


async def test_start_is_idempotent_and_survives_reopen(sqlite_url):
    s = RuleStore(sqlite_url)
    await s.start()
    await s.start()
    await s.create_rule({"kind": "safety_stock", "units": 3}, actor="a", reason="")
    await s.close()
    s2 = RuleStore(sqlite_url)
    await s2.start()
    try:
        assert [r.units for r in await s2.list_rules()] == [3]
        assert await s2.version() == 1
    finally:
        await s2.close()
