"""The async Admin API client against the simulator over real HTTP."""

from __future__ import annotations

import asyncio
import socket

import pytest

from adapters.shopify.client import (
    QueryCost,
    SetQuantity,
    ShopifyAdminClient,
    ShopifyAuthError,
    ShopifyRequestError,
    ShopifyThrottled,
    ShopifyTransientError,
    ThrottleGovernor,
    ThrottleStatus,
)
from adapters.shopify.gid import item_gid
from adapters.shopify.simulator import FaultConfig
from tests.shopify.bucket_audit import CallLog, refused_by_documented_bucket


def client_for(shop, **kw) -> ShopifyAdminClient:
    kw.setdefault("timeout", 5.0)
    token = kw.pop("token", shop.sim.config.access_token)
    return ShopifyAdminClient(shop.sim.base_url, token, **kw)


async def test_wrong_token_raises_auth_error(shop):
    async with client_for(shop, token="nope") as c:
        with pytest.raises(ShopifyAuthError) as exc:
            await c.read_levels([shop.items[0]])
    assert exc.value.status == 401


async def test_set_available_and_read_back(shop):
    seen: list[QueryCost] = []
    async with client_for(shop, on_cost=seen.append) as c:
        a, b = shop.items[:2]
        loc1, loc2 = shop.locations
        result = await c.set_available(
            [SetQuantity(a, loc1, 12, compare_quantity=5), SetQuantity(b, loc2, 0, compare_quantity=None)],
            idempotency_key="push-0001",
        )
        assert result.ok and result.user_errors == [] and result.stale_indexes == []
        assert result.adjustment_group_id and result.adjustment_group_id.startswith("gid://shopify/InventoryAdjustmentGroup/")
        avail = {(ch.inventory_item_id, ch.location_id): ch.quantity_after_change for ch in result.changes if ch.name == "available"}
        assert avail == {(a, loc1): 12, (b, loc2): 0}
        assert result.cost.requested == 10 and result.cost.actual == 10
        ts = result.cost.throttle_status
        assert ts is not None and ts.maximum_available == 2000.0 and ts.restore_rate == 100.0
        assert c.last_throttle_status == ts and seen[-1] == result.cost

        levels = await c.read_levels(shop.items)
        assert levels == shop.state.levels()
        assert levels[(a, loc1)] == 12 and levels[(b, loc2)] == 0
    # The default reference document names the push.
    assert shop.state.history[0].idempotency_key == "push-0001"


@pytest.mark.parametrize(
    ("version", "style"),
    [("2026-04", "changeFrom"), ("2026-07", "changeFrom"), ("2026-01", "changeFrom"), ("2025-10", "compare"), ("2024-07", "compare")],
)
async def test_input_spelled_for_the_api_version(shop, version, style):
    a, b = shop.items[:2]
    loc = shop.locations[0]
    async with client_for(shop, api_version=version) as c:
        checked = c.build_set_input([SetQuantity(a, loc, 1, 5), SetQuantity(b, loc, 2, 5)])
        unchecked = c.build_set_input([SetQuantity(a, loc, 1, None)])
        if style == "changeFrom":
            assert [q["changeFromQuantity"] for q in checked["quantities"]] == [5, 5]
            # Present even when null: the 2026-04 rule.
            assert "changeFromQuantity" in unchecked["quantities"][0]
            assert unchecked["quantities"][0]["changeFromQuantity"] is None
            assert "ignoreCompareQuantity" not in unchecked
        else:
            assert [q["compareQuantity"] for q in checked["quantities"]] == [5, 5]
            assert "ignoreCompareQuantity" not in checked
            assert unchecked["ignoreCompareQuantity"] is True and "compareQuantity" not in unchecked["quantities"][0]
            with pytest.raises(ValueError, match="cannot mix"):
                c.build_set_input([SetQuantity(a, loc, 1, 5), SetQuantity(b, loc, 2, None)])
        # @idempotent only where the version has it (2026-01 and later)
        assert ("@idempotent(key:" in c.set_mutation("k-1")) is (style == "changeFrom")
        assert c.uses_idempotent_directive is (style == "changeFrom")
        # And the simulator accepts it for that version, CAS included.
        r = await c.set_available([SetQuantity(a, loc, 7, 5)], idempotency_key=f"v-{version}")
        assert r.ok, r.user_errors
        last = shop.state.history[-1]
        assert last.idempotency_key == (f"v-{version}" if style == "changeFrom" else None)
        r = await c.set_available([SetQuantity(a, loc, 8, 5)], idempotency_key=f"v2-{version}")
        assert not r.ok and r.stale_indexes == [0]
        r = await c.set_available([SetQuantity(a, loc, 9, None)], idempotency_key=f"v3-{version}")
        assert r.ok
    assert shop.state.available(a, loc) == 9


async def test_stale_entries_are_identified_and_nothing_applied(shop_factory):
    shop = shop_factory(n_items=5, n_locations=1)
    loc = shop.locations[0]
    entries = [SetQuantity(i, loc, 20 + n, compare_quantity=5) for n, i in enumerate(shop.items)]
    shop.state.external_change(shop.items[1], loc, available=4)
    shop.state.external_change(shop.items[3], loc, available=6)
    before = shop.state.levels()
    async with client_for(shop) as c:
        r = await c.set_available(entries, idempotency_key="stale-1")
        assert not r.ok
        assert r.stale_indexes == [1, 3]
        assert r.codes == {"CHANGE_FROM_QUANTITY_STALE"}
        assert [e.entry_index for e in r.user_errors] == [1, 3]
        assert r.user_errors[0].field == ["input", "quantities", "1", "changeFromQuantity"]
        assert r.adjustment_group_id is None and r.changes == []
        assert shop.state.levels() == before
        # Retry the others (new key: different parameters), re-read the stale ones.
        rest = [e for n, e in enumerate(entries) if n not in r.stale_indexes]
        assert (await c.set_available(rest, idempotency_key="stale-2")).ok
        fresh = await c.read_levels([entries[1].inventory_item_id, entries[3].inventory_item_id])
        fixed = [SetQuantity(entries[n].inventory_item_id, loc, entries[n].quantity, fresh[(entries[n].inventory_item_id, loc)]) for n in (1, 3)]
        assert (await c.set_available(fixed, idempotency_key="stale-3")).ok
    assert shop.state.levels() == {(e.inventory_item_id, loc): e.quantity for e in entries}


async def test_client_side_validation(shop):
    loc = shop.locations[0]
    async with client_for(shop) as c:
        with pytest.raises(ValueError, match="250"):
            await c.set_available([SetQuantity(item_gid(n), loc, 1, None) for n in range(1, 252)], "k")
        with pytest.raises(ValueError, match="empty"):
            await c.set_available([], "k")
        with pytest.raises(ValueError, match="idempotency"):
            await c.set_available([SetQuantity(shop.items[0], loc, 1, None)], 'bad"key')
        with pytest.raises(ValueError):
            await c.read_levels([loc])  # a location is not an item
    assert shop.state.stats.calls == 0
    with pytest.raises(ValueError):
        ShopifyAdminClient("http://x", "t", api_version="latest")


async def test_user_errors_are_results_not_exceptions(shop):
    async with client_for(shop) as c:
        r = await c.set_available(
            [SetQuantity(shop.items[0], shop.locations[0], -3, None)], "neg", reason="because", reference_document_uri="x"
        )
    assert not r.ok and r.stale_indexes == []
    assert r.codes == {"INVALID_QUANTITY_NEGATIVE", "INVALID_REASON", "INVALID_REFERENCE_DOCUMENT"}


async def test_idempotent_replay_through_client_applies_once(shop):
    entries = [SetQuantity(shop.items[0], shop.locations[0], 12, 5)]
    async with client_for(shop) as c:
        first = await c.set_available(entries, "same-key")
        again = await c.set_available(entries, "same-key")
        other = await c.set_available([SetQuantity(shop.items[0], shop.locations[0], 13, 12)], "same-key")
    assert first.ok and again.ok
    assert again.adjustment_group_id == first.adjustment_group_id and again.changes == first.changes
    assert other.codes == {"IDEMPOTENCY_KEY_PARAMETER_MISMATCH"}
    assert shop.state.applications_by_key() == {"same-key": 1}


async def test_timeout_then_same_key_retry_does_not_double_apply(shop_factory):
    shop = shop_factory(faults=FaultConfig(timeout_rate=1.0, timeout_s=1.0))
    entries = [SetQuantity(shop.items[0], shop.locations[0], 12, 5)]
    async with client_for(shop, timeout=0.3) as c:
        with pytest.raises(ShopifyTransientError) as exc:
            await c.set_available(entries, "lost-answer")
        assert exc.value.status is None and not isinstance(exc.value, ShopifyThrottled)
        # The sim applied it; only the answer was lost.
        assert shop.state.available(shop.items[0], shop.locations[0]) == 12
        shop.state.set_faults(timeout_rate=0.0)
        retry = await c.set_available(entries, "lost-answer")
    assert retry.ok and retry.adjustment_group_id is not None  # the original result, replayed
    assert shop.state.applications_by_key() == {"lost-answer": 1}
    assert shop.state.stats.replays == 1


async def test_5xx_is_transient_and_key_must_then_change(shop_factory):
    shop = shop_factory(faults=FaultConfig(error_rate=1.0, error_statuses=[502]))
    entries = [SetQuantity(shop.items[0], shop.locations[0], 12, 5)]
    async with client_for(shop) as c:
        with pytest.raises(ShopifyTransientError) as exc:
            await c.set_available(entries, "k-5xx")
        assert exc.value.status == 502
        with pytest.raises(ShopifyTransientError):
            await c.read_levels(shop.items)
        shop.state.set_faults(error_rate=0.0)
        r = await c.set_available(entries, "k-5xx")
        assert r.retry_with_new_key and not r.ok
        assert (await c.set_available(entries, "k-5xx-2")).ok
    assert c.stats.transient_errors == 2


async def test_random_5xx_rate_is_seeded_and_roughly_right(shop_factory):
    shop = shop_factory(faults=FaultConfig(error_rate=0.3), seed=42)
    outcomes = []
    async with client_for(shop) as c:
        for _ in range(60):
            try:
                await c.read_levels([shop.items[0]])
                outcomes.append("ok")
            except ShopifyTransientError as exc:
                assert exc.status in (500, 502, 503)
                outcomes.append("err")
    assert 8 <= outcomes.count("err") <= 30
    assert shop.state.stats.injected_errors == outcomes.count("err")


async def test_connection_refused_is_transient():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with ShopifyAdminClient(f"http://127.0.0.1:{port}", "t", timeout=1) as c:
        with pytest.raises(ShopifyTransientError):
            await c.read_levels([item_gid(1)])


async def test_throttled_answer_raises_with_status(shop_factory):
    for status_code in (200, 429):
        shop = shop_factory(throttle_http_status=status_code, restore_rate=10.0, bucket_size=25.0)
        shop.state.set_faults(force_throttle=1)
        async with client_for(shop) as c:
            with pytest.raises(ShopifyThrottled) as exc:
                await c.set_available([SetQuantity(shop.items[0], shop.locations[0], 1, None)], "thr")
        err = exc.value
        assert isinstance(err, ShopifyTransientError)
        assert err.status == status_code
        assert err.throttle_status == ThrottleStatus(25.0, 25.0, 10.0)
        assert err.requested_cost == 10 and err.cost.actual is None
        assert c.stats.throttled == 1


async def test_read_levels_many_items_paginates(shop_factory):
    shop = shop_factory(n_items=70, n_locations=3, available=4)
    shop.state.external_change(shop.items[5], shop.locations[2], available=99)
    unknown = item_gid(1)
    async with client_for(shop, levels_page_size=2) as c:  # 3 locations: every item needs a 2nd page
        result = await c.read_levels_detailed([*shop.items, unknown, shop.items[0]])
    assert result.levels == shop.state.levels()
    assert result.levels[(shop.items[5], shop.locations[2])] == 99
    assert result.missing_items == [unknown]
    # 71 ids at 1+2+2x3 = 9 points requested each: one nodes call (639 <= 1000), plus one
    # follow-up page per known item for its third location.
    assert result.calls == 1 + 70
    assert shop.state.stats.max_cost_exceeded == 0


async def test_read_levels_batches_stay_under_the_cost_cap(shop_factory):
    shop = shop_factory(n_items=100, n_locations=1)
    async with client_for(shop) as c:  # page size 10: 33 points per item -> 30 per call
        result = await c.read_levels_detailed(shop.items)
    assert result.calls == 4
    assert result.levels == shop.state.levels()
    assert shop.state.stats.max_cost_exceeded == 0


async def test_read_levels_halves_batches_on_max_cost_exceeded(shop_factory):
    shop = shop_factory(n_items=60, n_locations=1)
    # This client believes in a larger cap than the server enforces.
    async with client_for(shop, max_query_cost=5000) as c:
        levels = await c.read_levels(shop.items)
    assert levels == shop.state.levels()
    assert shop.state.stats.max_cost_exceeded >= 1


async def test_locations_and_items_lookup(shop):
    async with client_for(shop) as c:
        locations = await c.list_locations()
        assert [loc.id for loc in locations] == shop.locations
        all_items = await c.find_inventory_items()
        assert [i.id for i in all_items] == shop.items
        sku = shop.state.sku_of(shop.items[2])
        found = await c.find_inventory_items([sku, "NOPE"])
        assert [(i.id, i.sku) for i in found] == [(shop.items[2], sku)]


async def test_max_cost_and_graphql_errors_are_request_errors(shop):
    async with client_for(shop) as c:
        with pytest.raises(ShopifyRequestError) as exc:
            await c.execute("{ shop { name } }")
        assert exc.value.codes == {"UNSUPPORTED_OPERATION"}


# ------------------------------------------------------------------------------ pacing


async def _push_many(shop, client, n_calls: int, concurrency: int) -> list[str]:
    """n_calls single-entry sets spread over `concurrency` workers; returns outcomes."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(n_calls):
        queue.put_nowait(n)
    outcomes: list[str] = []

    async def worker() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            item = shop.items[n % len(shop.items)]
            try:
                r = await client.set_available([SetQuantity(item, shop.locations[0], n, None)], f"pace-{n}")
                outcomes.append("ok" if r.ok else "user-error")
            except ShopifyThrottled:
                outcomes.append("throttled")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes


async def test_governor_paces_a_small_plan_without_throttles(shop_factory):
    # 40-point bucket, 400 points/s: 4 mutations at once, then 40/s.
    shop = shop_factory(n_items=10, n_locations=1, restore_rate=400.0, bucket_size=40.0)
    gov = ThrottleGovernor(reserve_margin=2)
    log = CallLog()
    async with client_for(shop, governor=gov) as c:
        log.attach(c._http)
        outcomes = await _push_many(shop, c, n_calls=60, concurrency=4)
    assert outcomes.count("ok") >= 59
    assert outcomes.count("throttled") <= 1
    stats = shop.state.stats
    assert stats.throttled <= 1
    # What the client asked for fits the documented bucket (the mis-paced client below fails this).
    assert len(log.calls) >= 60
    assert len(refused_by_documented_bucket(log.calls, capacity=40.0, restore_rate=400.0)) <= 1
    assert c.stats.paced_seconds > 0  # it really had to wait
    assert gov.in_flight == 0


async def test_without_governor_the_same_load_hits_the_wall(shop_factory):
    # The same burst on the same 40-point bucket, with a slow refill (2 points/s): at 400/s
    # a loaded machine's slow round trips would pace the unpaced client for it. Here the
    # bucket pays for 4 mutations and one more every 5 s, whatever the machine's speed.
    shop = shop_factory(n_items=10, n_locations=1, restore_rate=2.0, bucket_size=40.0)
    async with client_for(shop) as c:
        outcomes = await _push_many(shop, c, n_calls=60, concurrency=8)
    assert outcomes.count("throttled") >= 10


# --- bulk operations (adapters/shopify/bulk.py) ------------------------------------------------
# The simulator has no bulk operations yet: the result-file parsing and the variables file
# are tested here; the round trip (stage, run, poll, download) waits for the simulator.


def test_bulk_levels_result_file_is_read_by_parent():
    from adapters.shopify.bulk import parse_levels_jsonl

    lines = [
        b'{"id":"gid://shopify/InventoryItem/1"}',
        b'{"id":"gid://shopify/InventoryLevel/1?inventory_item_id=1","location":{"id":"gid://shopify/Location/7"},'
        b'"quantities":[{"name":"available","quantity":4},{"name":"committed","quantity":2}],'
        b'"__parentId":"gid://shopify/InventoryItem/1"}',
        {"id": "gid://shopify/InventoryItem/2"},
        {"location": {"id": "gid://shopify/Location/7"}, "quantities": [{"name": "available", "quantity": 0}],
         "__parentId": "gid://shopify/InventoryItem/2"},
    ]
    available, committed, items = parse_levels_jsonl(lines)
    assert items == 2
    assert available == {("gid://shopify/InventoryItem/1", "gid://shopify/Location/7"): 4,
                         ("gid://shopify/InventoryItem/2", "gid://shopify/Location/7"): 0}
    assert committed == {("gid://shopify/InventoryItem/1", "gid://shopify/Location/7"): 2}


@pytest.mark.parametrize(("version", "field"), [("2026-04", "changeFromQuantity"), ("2025-10", "compareQuantity")])
def test_bulk_variables_file_is_one_checked_input_per_250_levels(version, field):
    from adapters.shopify.bulk import BULK_SET_MUTATION, BulkClient

    client = ShopifyAdminClient("http://shop.invalid", "t", version)
    entries = [SetQuantity(f"gid://shopify/InventoryItem/{i}", "gid://shopify/Location/1", i, i + 1) for i in range(1, 602)]
    lines = BulkClient(client).set_lines(entries)
    assert [len(chunk) for chunk, _ in lines] == [250, 250, 101]
    first = lines[0][1]["input"]
    assert first["name"] == "available" and first["quantities"][0][field] == 2
    assert "@idempotent" not in BULK_SET_MUTATION  # a bulk line is compare-and-set, not keyed


async def test_a_second_bulk_read_while_one_runs_fails_clearly(shop):
    """Before 2026-01 a shop runs one bulk query at a time: the second is refused with a
    named error (the simulator has bulk operations now; the round trip itself is tested in
    tests/flows/test_bulk_resync.py)."""
    from adapters.shopify.bulk import LEVELS_BULK_QUERY, BulkClient, BulkOperationError

    async with client_for(shop, api_version="2025-10") as c:
        bulk = BulkClient(c, poll_s=0.01)
        first = await bulk.run_query(LEVELS_BULK_QUERY)
        with pytest.raises(BulkOperationError) as refused:
            await bulk.run_query(LEVELS_BULK_QUERY)
        assert "OPERATION_IN_PROGRESS" in refused.value.codes
        assert (await bulk.wait(first)).status == "COMPLETED"


def test_progress_rate_eta_and_log_lines(caplog):
    import io
    import logging

    from availability.progress import Progress, describe, rate_and_eta

    assert rate_and_eta(50, 200, 10.0) == (5.0, 30.0)
    assert rate_and_eta(0, 200, 10.0) == (0.0, None)
    assert rate_and_eta(10, None, 2.0) == (5.0, None)
    assert describe("resync", 50, 200, 10.0, "SKUs") == "resync: 50/200 SKUs (5.0/s, ETA 30 s, 10 s)"
    with caplog.at_level(logging.INFO, logger="availability.progress"):
        bar = Progress("resync", 10, unit="SKUs", stream=io.StringIO(), log_every_s=0)
        assert not bar.interactive  # not a terminal: log lines, no bar
        bar.update(4)
        text = bar.close()
    assert "resync: 4/10 SKUs" in caplog.text and text.startswith("resync: 4/10 SKUs")
    drawn = io.StringIO()
    bar = Progress("resync", 10, unit="SKUs", stream=drawn, interactive=True)
    bar.update(10)
    bar.close()
    assert "10/10" in drawn.getvalue() and "SKUs/s" in drawn.getvalue()


async def test_the_pacing_audit_catches_an_unpaced_client(shop_factory):
    # A slow refill (2 points/s) so that crediting each call its round trip's refill, however
    # long the round trips on a loaded machine, cannot pay for a mutation: 4 fit, 8 do not.
    shop = shop_factory(n_items=12, n_locations=1, restore_rate=2.0, bucket_size=40.0)
    log = CallLog()
    async with client_for(shop) as c:
        log.attach(c._http)
        await _push_many(shop, c, n_calls=12, concurrency=12)
    assert len(log.calls) == 12
    assert len(refused_by_documented_bucket(log.calls, capacity=40.0, restore_rate=2.0)) >= 6


async def test_mutation_estimate_follows_the_shop_so_a_per_entry_price_is_paced(shop_factory):
    # The pessimistic preset charges 10 + 1 per entry, on half the standard bucket (1,000
    # points, 50/s): a 250-entry call costs 260, so four fit and the fifth must wait. With
    # the documented flat 10 as its estimate the governor would let all eight go at once.
    shop = shop_factory(n_items=250, n_locations=1, cost_model="pessimistic")
    gov = ThrottleGovernor()
    log = CallLog()
    async with client_for(shop, governor=gov, timeout=30.0) as c:
        log.attach(c._http)
        assert c.mutation_cost(250) == 10.0
        for n in range(8):
            entries = [SetQuantity(item, shop.locations[0], n, None) for item in shop.items]
            assert (await c.set_available(entries, f"big-{n}")).ok
        assert c.mutation_cost(250) == 260.0
    assert shop.state.stats.throttled == 0
    assert c.stats.throttled == 0 and c.stats.paced_seconds > 0
    assert [call.requested for call in log.calls] == [260.0] * 8
    assert refused_by_documented_bucket(log.calls, capacity=1000.0, restore_rate=50.0) == []
