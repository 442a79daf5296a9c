"""The Shopify simulator over real HTTP: auth, versions, compare-and-set, idempotency, user
errors, the 250 cap, cost and throttling, sim-only endpoints and fault knobs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac

import httpx
import pytest

from adapters.shopify.gid import item_gid, location_gid, parse_inventory_level_gid
from adapters.shopify.simulator import FaultConfig

from .conftest import HTTP, LEVELS_QUERY, entry, eventually, set_input, set_mutation


def _payload(resp: httpx.Response) -> dict:
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]["inventorySetQuantities"]


def _codes(payload: dict) -> list[str]:
    return [e["code"] for e in payload["userErrors"]]


# ------------------------------------------------------------------------- auth, shape


def test_wrong_or_missing_token_is_401_with_shopify_error(shop):
    for token in ("wrong", ""):
        r = shop.gql(LEVELS_QUERY, {"id": shop.items[0], "first": 5}, token=token)
        assert r.status_code == 401
        assert r.json() == {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}
    assert shop.state.stats.unauthorized == 2
    assert shop.state.stats.calls == 0


def test_bad_version_malformed_body_and_unknown_queries_never_500(shop):
    assert shop.gql("{ shop { name } }", version="latest").status_code == 404
    r = HTTP.post(
        shop.sim.graphql_url(),
        content=b"{not json",
        headers={"X-Shopify-Access-Token": shop.sim.config.access_token},
    )
    assert r.status_code == 400
    for query in ("{ shop { name } }", "mutation { productCreate(input: {}) { product { id } } }", "subscription { x }", "{{{"):
        r = shop.gql(query)
        assert r.status_code == 200, r.text
        body = r.json()
        assert "data" not in body
        # Validated against the schema: an unknown root field is Shopify's undefinedField.
        assert body["errors"][0]["extensions"]["code"] in ("UNSUPPORTED_OPERATION", "PARSE_ERROR", "undefinedField")
        assert "throttleStatus" in body["extensions"]["cost"]


def test_set_then_read_back_with_exact_response_shape(shop):
    item, loc = shop.items[0], shop.locations[0]
    r = shop.gql(set_mutation("k-1"), set_input([entry(item, loc, 12, changeFromQuantity=5)]))
    body = r.json()
    assert body["extensions"]["cost"]["requestedQueryCost"] == 10
    assert body["extensions"]["cost"]["actualQueryCost"] == 10
    ts = body["extensions"]["cost"]["throttleStatus"]
    assert ts["maximumAvailable"] == 2000.0 and ts["restoreRate"] == 100.0
    assert 1990 <= ts["currentlyAvailable"] <= 2000
    payload = body["data"]["inventorySetQuantities"]
    assert payload["userErrors"] == []
    group = payload["inventoryAdjustmentGroup"]
    assert group["id"].startswith("gid://shopify/InventoryAdjustmentGroup/")
    assert group["reason"] == "correction"
    assert group["referenceDocumentUri"] == "gid://availability/Push/test"
    by_name = {c["name"]: c for c in group["changes"]}
    assert set(by_name) == {"available", "on_hand"}
    assert by_name["available"] == {
        "name": "available",
        "delta": 7,
        "quantityAfterChange": 12,
        "item": {"id": item},
        "location": {"id": loc},
    }
    assert shop.state.available(item, loc) == 12
    assert shop.state.quantity(item, loc, "on_hand") == 12

    r = shop.gql(LEVELS_QUERY, {"id": item, "first": 10})
    levels = r.json()["data"]["inventoryItem"]["inventoryLevels"]
    got = {e["node"]["location"]["id"]: e["node"]["quantities"] for e in levels["edges"]}
    assert got == {
        shop.locations[0]: [{"name": "available", "quantity": 12}],
        shop.locations[1]: [{"name": "available", "quantity": 5}],
    }
    assert levels["pageInfo"]["hasNextPage"] is False


def test_unchanged_values_give_null_group_without_errors(shop):
    item, loc = shop.items[0], shop.locations[0]
    payload = _payload(shop.gql(set_mutation("same"), set_input([entry(item, loc, 5, changeFromQuantity=5)])))
    assert payload == {"inventoryAdjustmentGroup": None, "userErrors": []}
    # Applied (recorded) but nothing moved.
    assert [r.delta for r in shop.state.history] == [0]


# --------------------------------------------------------------- compare styles / versions


def test_2026_04_requires_change_from_quantity(shop):
    item, loc = shop.items[0], shop.locations[0]
    # Missing -> user error, nothing applied.
    p = _payload(shop.gql(set_mutation("a"), set_input([entry(item, loc, 9)])))
    assert p["inventoryAdjustmentGroup"] is None
    assert p["userErrors"] == [
        {
            "code": "CHANGE_FROM_QUANTITY_REQUIRED",
            "field": ["input", "quantities", "0", "changeFromQuantity"],
            "message": p["userErrors"][0]["message"],
        }
    ]
    # compareQuantity is deprecated in 2026-04 but still in the schema: it no longer
    # stands in for the required changeFromQuantity.
    p = _payload(shop.gql(set_mutation("b"), set_input([entry(item, loc, 9, compareQuantity=5)])))
    assert _codes(p) == ["CHANGE_FROM_QUANTITY_REQUIRED"]
    # ... and is gone in 2026-07: a GraphQL variable error.
    r = shop.gql(set_mutation("b2"), set_input([entry(item, loc, 9, compareQuantity=5)]), version="2026-07")
    assert "data" not in r.json()
    assert r.json()["errors"][0]["extensions"]["code"] == "INVALID_VARIABLE"
    r = shop.gql(set_mutation("c"), set_input([entry(item, loc, 9, changeFromQuantity=5)], ignoreCompareQuantity=True), version="2026-07")
    assert r.json()["errors"][0]["extensions"]["code"] == "INVALID_VARIABLE"
    # null skips the check, a number checks it.
    assert _payload(shop.gql(set_mutation("d"), set_input([entry(item, loc, 9, changeFromQuantity=None)])))["userErrors"] == []
    p = _payload(shop.gql(set_mutation("e"), set_input([entry(item, loc, 1, changeFromQuantity=5)])))
    assert _codes(p) == ["CHANGE_FROM_QUANTITY_STALE"]
    assert shop.state.available(item, loc) == 9


def test_before_2026_01_uses_compare_quantity(shop):
    item, loc = shop.items[0], shop.locations[0]
    v = "2025-10"
    # changeFromQuantity does not exist yet.
    r = shop.gql(set_mutation(None), set_input([entry(item, loc, 9, changeFromQuantity=5)]), version=v)
    assert r.json()["errors"][0]["extensions"]["code"] == "INVALID_VARIABLE"
    # No compare and no ignore -> required.
    p = _payload(shop.gql(set_mutation(None), set_input([entry(item, loc, 9)]), version=v))
    assert p["userErrors"][0]["code"] == "COMPARE_QUANTITY_REQUIRED"
    assert p["userErrors"][0]["field"] == ["input", "quantities", "0", "compareQuantity"]
    p = _payload(shop.gql(set_mutation(None), set_input([entry(item, loc, 9, compareQuantity=4)]), version=v))
    assert _codes(p) == ["COMPARE_QUANTITY_STALE"]
    assert shop.state.available(item, loc) == 5
    p = _payload(shop.gql(set_mutation(None), set_input([entry(item, loc, 9, compareQuantity=5)]), version=v))
    assert p["userErrors"] == [] and shop.state.available(item, loc) == 9
    p = _payload(shop.gql(set_mutation(None), set_input([entry(item, loc, 3)], ignoreCompareQuantity=True), version=v))
    assert p["userErrors"] == [] and shop.state.available(item, loc) == 3


def test_2026_01_accepts_either_style_and_no_key(shop):
    item, loc = shop.items[0], shop.locations[0]
    v = "2026-01"
    p = _payload(shop.gql(set_mutation(None), set_input([entry(item, loc, 8, changeFromQuantity=5)]), version=v))
    assert p["userErrors"] == []
    p = _payload(shop.gql(set_mutation(None), set_input([entry(item, loc, 6, compareQuantity=8)]), version=v))
    assert p["userErrors"] == []
    p = _payload(shop.gql(set_mutation(None), set_input([entry(item, loc, 1, changeFromQuantity=8)]), version=v))
    assert _codes(p) == ["CHANGE_FROM_QUANTITY_STALE"]
    assert shop.state.available(item, loc) == 6


def test_stale_entry_fails_whole_mutation_nothing_applied(shop):
    a, b, c = shop.items
    loc = shop.locations[0]
    quantities = [
        entry(a, loc, 20, changeFromQuantity=5),
        entry(b, loc, 21, changeFromQuantity=4),  # stale: it is 5
        entry(c, loc, 22, changeFromQuantity=None),
    ]
    p = _payload(shop.gql(set_mutation("stale"), set_input(quantities)))
    assert p["inventoryAdjustmentGroup"] is None
    assert p["userErrors"] == [
        {
            "code": "CHANGE_FROM_QUANTITY_STALE",
            "field": ["input", "quantities", "1", "changeFromQuantity"],
            "message": "The changeFromQuantity value does not match persisted value.",
        }
    ]
    assert [shop.state.available(i, loc) for i in (a, b, c)] == [5, 5, 5]
    assert shop.state.history == []
    assert shop.state.stats.quantities_applied == 0


# ------------------------------------------------------------------------- idempotency


def test_missing_idempotency_key_rejected_from_2026_04_only(shop):
    item, loc = shop.items[0], shop.locations[0]
    r = shop.gql(set_mutation(None), set_input([entry(item, loc, 9, changeFromQuantity=5)]))
    body = r.json()
    assert "data" not in body and body["errors"][0]["extensions"]["code"] == "IDEMPOTENCY_KEY_REQUIRED"
    assert shop.state.available(item, loc) == 5
    r = shop.gql(set_mutation(None), set_input([entry(item, loc, 9, compareQuantity=5)]), version="2025-07")
    assert _payload(r)["userErrors"] == [] and shop.state.available(item, loc) == 9


def test_replay_returns_original_result_and_applies_once(shop):
    item, loc = shop.items[0], shop.locations[0]
    variables = set_input([entry(item, loc, 12, changeFromQuantity=5)])
    first = _payload(shop.gql(set_mutation("replay-1"), variables))
    # Someone else changes the level; a replay must not re-apply (and is not stale either).
    shop.state.external_change(item, loc, available=3)
    again = _payload(shop.gql(set_mutation("replay-1"), variables))
    assert again == first
    assert shop.state.available(item, loc) == 3
    assert shop.state.applications_by_key() == {"replay-1": 1}
    assert shop.state.stats.replays == 1
    # A replay is still charged as a mutation.
    assert shop.state.stats.points_spent == 20


def test_same_key_different_parameters_is_mismatch(shop):
    item, loc = shop.items[0], shop.locations[0]
    _payload(shop.gql(set_mutation("mm"), set_input([entry(item, loc, 12, changeFromQuantity=5)])))
    p = _payload(shop.gql(set_mutation("mm"), set_input([entry(item, loc, 13, changeFromQuantity=12)])))
    assert p["inventoryAdjustmentGroup"] is None
    assert _codes(p) == ["IDEMPOTENCY_KEY_PARAMETER_MISMATCH"]
    assert shop.state.available(item, loc) == 12


async def test_concurrent_same_key_gets_concurrent_request_error(shop_factory):
    shop = shop_factory(faults=FaultConfig(latency_ms=300))
    item, loc = shop.items[0], shop.locations[0]
    variables = set_input([entry(item, loc, 12, changeFromQuantity=5)])
    async with httpx.AsyncClient(timeout=10) as c:
        first = asyncio.create_task(shop.agql(c, set_mutation("conc"), variables))
        await asyncio.sleep(0.1)  # the first is now inside its 300 ms processing window
        second = await shop.agql(c, set_mutation("conc"), variables)
        first_resp = await first
        assert _codes(_payload(second)) == ["IDEMPOTENCY_CONCURRENT_REQUEST"]
        original = _payload(first_resp)
        assert original["userErrors"] == []
        # Once done, the same key replays the original.
        assert _payload(await shop.agql(c, set_mutation("conc"), variables)) == original
    assert shop.state.applications_by_key() == {"conc": 1}
    assert shop.state.available(item, loc) == 12


def test_injected_5xx_marks_key_failed_and_applies_nothing(shop):
    item, loc = shop.items[0], shop.locations[0]
    shop.state.set_faults(error_rate=1.0, error_statuses=[503])
    variables = set_input([entry(item, loc, 12, changeFromQuantity=5)])
    r = shop.gql(set_mutation("boom"), variables)
    assert r.status_code == 503
    shop.state.set_faults(error_rate=0.0)
    p = _payload(shop.gql(set_mutation("boom"), variables))
    assert _codes(p) == ["IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED"]
    assert shop.state.available(item, loc) == 5
    assert _payload(shop.gql(set_mutation("boom-2"), variables))["userErrors"] == []
    assert shop.state.available(item, loc) == 12


# --------------------------------------------------------------------------- user errors


@pytest.fixture
def error_shop(shop):
    shop.state.add_item("BUNDLE", id=999, mutable=False)
    shop.state.stock(999, shop.locations[0], 1)
    shop.state.add_item("UNSTOCKED", id=998)
    return shop


@pytest.mark.parametrize(
    ("code", "make", "field"),
    [
        ("INVALID_INVENTORY_ITEM", lambda s: ([entry(item_gid(1), s.locations[0], 1, changeFromQuantity=None)], {}), ["input", "quantities", "0", "inventoryItemId"]),
        ("INVALID_INVENTORY_ITEM", lambda s: ([entry("not-a-gid", s.locations[0], 1, changeFromQuantity=None)], {}), ["input", "quantities", "0", "inventoryItemId"]),
        ("INVALID_LOCATION", lambda s: ([entry(s.items[0], location_gid(1), 1, changeFromQuantity=None)], {}), ["input", "quantities", "0", "locationId"]),
        ("INVALID_NAME", lambda s: ([entry(s.items[0], s.locations[0], 1, changeFromQuantity=None)], {"name": "committed"}), ["input", "name"]),
        ("INVALID_QUANTITY_NEGATIVE", lambda s: ([entry(s.items[0], s.locations[0], -1, changeFromQuantity=None)], {}), ["input", "quantities", "0", "quantity"]),
        ("INVALID_QUANTITY_TOO_HIGH", lambda s: ([entry(s.items[0], s.locations[0], 1_000_000_001, changeFromQuantity=None)], {}), ["input", "quantities", "0", "quantity"]),
        ("INVALID_REASON", lambda s: ([entry(s.items[0], s.locations[0], 1, changeFromQuantity=None)], {"reason": "because"}), ["input", "reason"]),
        ("INVALID_REFERENCE_DOCUMENT", lambda s: ([entry(s.items[0], s.locations[0], 1, changeFromQuantity=None)], {"referenceDocumentUri": "push-0001"}), ["input", "referenceDocumentUri"]),
        ("ITEM_NOT_STOCKED_AT_LOCATION", lambda s: ([entry(item_gid(998), s.locations[0], 1, changeFromQuantity=None)], {}), ["input", "quantities", "0", "locationId"]),
        ("NON_MUTABLE_INVENTORY_ITEM", lambda s: ([entry(item_gid(999), s.locations[0], 1, changeFromQuantity=None)], {}), ["input", "quantities", "0", "inventoryItemId"]),
        (
            "NO_DUPLICATE_INVENTORY_ITEM_ID_GROUP_ID_PAIR",
            lambda s: (
                [entry(s.items[0], s.locations[0], 1, changeFromQuantity=None), entry(s.items[0], s.locations[0], 2, changeFromQuantity=None)],
                {},
            ),
            ["input", "quantities", "1", "locationId"],
        ),
    ],
)
def test_every_user_error_code_rejects_the_whole_mutation(error_shop, code, make, field):
    shop = error_shop
    quantities, overrides = make(shop)
    # A valid entry rides along: it must not be applied either.
    quantities = [*quantities, entry(shop.items[1], shop.locations[1], 42, changeFromQuantity=5)]
    before = shop.state.levels()
    p = _payload(shop.gql(set_mutation(f"err-{code}-{field[-1]}"), set_input(quantities, **overrides)))
    assert p["inventoryAdjustmentGroup"] is None
    assert [(e["code"], e["field"]) for e in p["userErrors"]] == [(code, field)]
    assert all(isinstance(e["message"], str) and e["message"] for e in p["userErrors"])
    assert shop.state.levels() == before
    assert shop.state.history == []


def test_several_errors_reported_together(shop):
    loc = shop.locations[0]
    quantities = [
        entry(shop.items[0], loc, -5, changeFromQuantity=None),
        entry(shop.items[1], loc, 7, changeFromQuantity=99),
    ]
    p = _payload(shop.gql(set_mutation("multi"), set_input(quantities, reason="nope")))
    assert sorted(_codes(p)) == ["CHANGE_FROM_QUANTITY_STALE", "INVALID_QUANTITY_NEGATIVE", "INVALID_REASON"]


def test_250_entries_accepted_251_rejected(shop_factory):
    shop = shop_factory(n_items=126, n_locations=2, available=0)
    pairs = [(i, loc) for i in shop.items for loc in shop.locations]
    ok = [entry(i, loc, 1, changeFromQuantity=0) for i, loc in pairs[:250]]
    p = _payload(shop.gql(set_mutation("cap-250"), set_input(ok)))
    assert p["userErrors"] == []
    assert shop.state.stats.quantities_applied == 250

    too_many = [entry(i, loc, 2, changeFromQuantity=None) for i, loc in pairs[:251]]
    body = shop.gql(set_mutation("cap-251"), set_input(too_many)).json()
    assert "data" not in body
    assert body["errors"][0]["extensions"]["code"] == "MAX_INPUT_SIZE_EXCEEDED"
    assert shop.state.stats.quantities_applied == 250
    assert shop.state.available(*pairs[0]) == 1


# ---------------------------------------------------------------------- reads and cost


def test_levels_pagination_and_cost_refund(shop_factory):
    shop = shop_factory(n_items=1, n_locations=5, available=3)
    item = shop.items[0]
    seen, after, costs = [], None, []
    while True:
        body = shop.gql(LEVELS_QUERY, {"id": item, "first": 2, "after": after}).json()
        costs.append(body["extensions"]["cost"])
        conn = body["data"]["inventoryItem"]["inventoryLevels"]
        seen += [e["node"]["location"]["id"] for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
    assert seen == shop.locations
    # requested = item 1 + connection 2 + 2 levels x 3; the last page returns 1 level.
    assert [c["requestedQueryCost"] for c in costs] == [9, 9, 9]
    assert [c["actualQueryCost"] for c in costs] == [9, 9, 6]
    assert shop.state.stats.points_spent == 24


def test_unknown_item_is_null_and_cheap(shop):
    body = shop.gql(LEVELS_QUERY, {"id": item_gid(123456), "first": 10}).json()
    assert body["data"] == {"inventoryItem": None}
    assert body["extensions"]["cost"]["requestedQueryCost"] == 33
    assert body["extensions"]["cost"]["actualQueryCost"] == 0  # unknown ids cost nothing


def test_nodes_items_and_locations_listing(shop):
    q = """query R($ids: [ID!]!) { nodes(ids: $ids) { ... on InventoryItem { id
            inventoryLevels(first: 5) { edges { node { location { id } quantities(names: ["available", "on_hand"]) { name quantity } } } pageInfo { hasNextPage endCursor } } } } }"""
    ids = [shop.items[0], item_gid(1), shop.locations[0]]
    body = shop.gql(q, {"ids": ids}).json()
    nodes = body["data"]["nodes"]
    assert nodes[0]["id"] == shop.items[0] and len(nodes[0]["inventoryLevels"]["edges"]) == 2
    assert nodes[0]["inventoryLevels"]["edges"][0]["node"]["quantities"] == [
        {"name": "available", "quantity": 5},
        {"name": "on_hand", "quantity": 5},
    ]
    assert nodes[1] is None
    assert nodes[2] == {}  # a Location: the InventoryItem fragment selects nothing on it
    assert body["extensions"]["cost"]["requestedQueryCost"] == 3 * (1 + 2 + 5 * 3)

    sku = shop.state.sku_of(shop.items[1])
    body = shop.gql(
        'query { inventoryItems(first: 10, query: "sku:%s") { edges { node { id sku } } pageInfo { hasNextPage } } }' % sku
    ).json()
    assert [e["node"] for e in body["data"]["inventoryItems"]["edges"]] == [{"id": shop.items[1], "sku": sku}]
    body = shop.gql("query { locations(first: 1) { edges { node { id name } } pageInfo { hasNextPage endCursor } } }").json()
    conn = body["data"]["locations"]
    assert [e["node"]["id"] for e in conn["edges"]] == [shop.locations[0]]
    assert conn["pageInfo"]["hasNextPage"] is True


def test_max_cost_exceeded_costs_nothing(shop):
    q = """query R($ids: [ID!]!) { nodes(ids: $ids) { ... on InventoryItem { id
            inventoryLevels(first: 10) { edges { node { location { id } quantities(names: ["available"]) { name quantity } } } } } } }"""
    body = shop.gql(q, {"ids": [item_gid(n) for n in range(1, 41)]}).json()
    err = body["errors"][0]
    assert err["extensions"]["code"] == "MAX_COST_EXCEEDED"
    assert err["extensions"]["cost"] == 40 * 33
    assert "data" not in body
    assert shop.state.stats.points_spent == 0
    # first above 250 is refused too.
    body = shop.gql("query { locations(first: 251) { edges { node { id } } } }").json()
    assert body["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


# ------------------------------------------------------------------------- throttling

THROTTLED_BODY_KEYS = {"errors", "extensions"}


def _assert_throttled_shape(body: dict, requested: int, bucket: float, rate: float) -> None:
    assert set(body) == THROTTLED_BODY_KEYS
    assert body["errors"] == [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]
    cost = body["extensions"]["cost"]
    assert cost["requestedQueryCost"] == requested
    assert cost["actualQueryCost"] is None
    ts = cost["throttleStatus"]
    assert ts["maximumAvailable"] == bucket and ts["restoreRate"] == rate
    assert isinstance(ts["currentlyAvailable"], int)
    assert 0 <= ts["currentlyAvailable"] < requested


async def test_hammering_a_tiny_plan_throttles_and_never_overdraws(shop_factory):
    shop = shop_factory(n_items=40, n_locations=1, restore_rate=20.0, bucket_size=50.0)
    loc = shop.locations[0]
    # The simulator's clock stands still for the burst: nothing trickles back, however long a
    # loaded machine takes to send the 40 calls, so exactly the full bucket is admitted.
    frozen = shop.state.now()
    shop.state._clock = lambda: frozen
    async with httpx.AsyncClient(timeout=10) as c:
        calls = [
            shop.agql(c, set_mutation(f"h-{n}"), set_input([entry(item, loc, 9, changeFromQuantity=None)]))
            for n, item in enumerate(shop.items)
        ]
        responses = await asyncio.gather(*calls)
    bodies = [r.json() for r in responses]
    assert all(r.status_code == 200 for r in responses)
    ok = [b for b in bodies if "data" in b]
    throttled = [b for b in bodies if "data" not in b]
    # 50 points = 5 mutations of 10 points.
    assert len(ok) == 5
    assert len(throttled) == 35
    for b in throttled:
        _assert_throttled_shape(b, 10, 50.0, 20.0)
    stats = shop.state.stats
    assert stats.throttled == len(throttled)
    # Admitted no more than the full bucket (10 points per mutation).
    assert stats.points_spent == 10 * len(ok) == 50.0
    # Throttled mutations were not applied.
    assert stats.quantities_applied == len(ok)


def test_each_access_token_has_its_own_bucket(shop_factory):
    shop = shop_factory(restore_rate=1.0, bucket_size=20.0, extra_access_tokens=["shpat_other_app"])
    item, loc = shop.items[0], shop.locations[0]
    variables = set_input([entry(item, loc, 1, changeFromQuantity=None)])
    assert "data" in shop.gql(set_mutation("b1"), variables).json()
    assert "data" in shop.gql(set_mutation("b2"), variables).json()
    assert "data" not in shop.gql(set_mutation("b3"), variables).json()  # bucket empty
    other = shop.gql(set_mutation("b4"), variables, token="shpat_other_app").json()
    assert "data" in other
    assert other["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 10


def test_throttle_can_answer_429(shop_factory):
    shop = shop_factory(throttle_http_status=429)
    shop.state.set_faults(force_throttle=2)
    item, loc = shop.items[0], shop.locations[0]
    for _ in range(2):
        r = shop.gql(set_mutation("t429"), set_input([entry(item, loc, 1, changeFromQuantity=None)]))
        assert r.status_code == 429
        assert "retry-after" in r.headers
        body = r.json()
        assert body["errors"] == [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}]
        assert "data" not in body and body["extensions"]["cost"]["actualQueryCost"] is None
    # Third goes through.
    assert _payload(shop.gql(set_mutation("t429"), set_input([entry(item, loc, 1, changeFromQuantity=None)])))["userErrors"] == []


# ------------------------------------------------------------------ sim-only endpoints


def test_seed_levels_stats_and_faults_endpoints(sim_factory):
    sim = sim_factory()
    url = sim.base_url
    r = HTTP.post(
        f"{url}/_sim/seed",
        json={
            "locations": [{"id": 11, "name": "DC1"}, {"id": 12, "name": "STORE-12"}],
            "items": [{"id": 501, "sku": "TEE-BLK-M"}],
            "levels": [{"inventory_item_id": "gid://shopify/InventoryItem/501", "location_id": 11, "available": 7, "committed": 2}],
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["items"] == [item_gid(501)]
    levels = HTTP.get(f"{url}/_sim/levels").json()["levels"]
    assert levels == [
        {
            "inventory_item_id": item_gid(501),
            "location_id": location_gid(11),
            "sku": "TEE-BLK-M",
            "location": "DC1",
            "updated_at": levels[0]["updated_at"],
            "available": 7,
            "on_hand": 9,
            "committed": 2,
            "reserved": 0,
            "damaged": 0,
            "safety_stock": 0,
            "quality_control": 0,
            "incoming": 0,
        }
    ]
    assert HTTP.post(f"{url}/_sim/seed", json={"levels": [{"inventory_item_id": 501, "location_id": 99}]}).status_code == 400
    r = HTTP.post(f"{url}/_sim/faults", json={"latency_ms": 5, "force_throttle": 1})
    assert r.status_code == 200 and r.json()["latency_ms"] == 5
    assert HTTP.post(f"{url}/_sim/faults", json={"no_such_knob": 1}).status_code == 400
    assert HTTP.post(f"{url}/_sim/faults", json={"error_rate": "lots"}).status_code == 400
    stats = HTTP.get(f"{url}/_sim/stats").json()
    assert stats["stats"]["calls"] == 0 and stats["plan"] == {"restore_rate": 100.0, "bucket_size": 2000.0}
    assert HTTP.post(f"{url}/_sim/reset").json() == {"reset": True}
    assert HTTP.get(f"{url}/_sim/levels").json() == {"levels": []}


# ------------------------------------------------------------------ webhooks (faults)


def _verify(received, secret: str) -> None:
    expected = base64.b64encode(hmac.new(secret.encode(), received.body, hashlib.sha256).digest()).decode()
    assert hmac.compare_digest(received.headers["x-shopify-hmac-sha256"], expected)


def test_external_change_posts_signed_webhook(shop_factory, webhook_receiver):
    shop = shop_factory(webhook_url=webhook_receiver.url, webhook_secret="s3cret", api_version="2026-04")
    item, loc = shop.items[1], shop.locations[1]
    r = HTTP.post(
        f"{shop.sim.base_url}/_sim/external-change",
        json={"inventory_item_id": item, "location_id": loc, "available": 17},
    )
    assert r.status_code == 200, r.text
    assert r.json()["webhook"]["ok"] is True
    (got,) = webhook_receiver.wait_for(1)
    _verify(got, "s3cret")
    body = got.json()
    item_num, loc_num = parse_inventory_level_gid(body["admin_graphql_api_id"])
    assert body["inventory_item_id"] == item_num == int(item.rsplit("/", 1)[1])
    assert body["location_id"] == loc_num == int(loc.rsplit("/", 1)[1])
    assert body["available"] == 17 and body["updated_at"]
    h = got.headers
    assert h["x-shopify-topic"] == "inventory_levels/update"
    assert h["x-shopify-shop-domain"] == shop.sim.config.shop_domain
    assert h["x-shopify-api-version"] == "2026-04"
    assert h["x-shopify-webhook-id"] and h["x-shopify-triggered-at"] and h["x-shopify-event-id"]
    assert shop.state.available(item, loc) == 17
    assert shop.state.history[-1].source == "external"


def test_webhook_retried_with_same_id_and_api_writes_echoed(shop_factory, webhook_receiver):
    shop = shop_factory(webhook_url=webhook_receiver.url, webhook_retry_backoff_s=0.01)
    webhook_receiver.script = [500]
    item, loc = shop.items[0], shop.locations[0]
    p = _payload(shop.gql(set_mutation("echo"), set_input([entry(item, loc, 30, changeFromQuantity=5)])))
    assert p["userErrors"] == []
    first, second = webhook_receiver.wait_for(2)
    assert first.headers["x-shopify-webhook-id"] == second.headers["x-shopify-webhook-id"]
    assert second.json()["available"] == 30
    _verify(second, shop.sim.config.webhook_secret)
    deliveries = eventually(lambda: shop.state.webhook_deliveries)
    assert len(deliveries) == 1 and deliveries[0].attempts == 2 and deliveries[0].ok


def test_background_external_writer(shop_factory, webhook_receiver):
    shop = shop_factory(webhook_url=webhook_receiver.url, seed=7)
    before = shop.state.levels()
    shop.state.set_faults(external_writer_interval_s=0.05)
    got = webhook_receiver.wait_for(3)
    shop.state.set_faults(external_writer_interval_s=0.0)
    for g in got:
        _verify(g, shop.sim.config.webhook_secret)
    assert shop.state.levels() != before
    assert shop.state.stats.external_changes >= 3
    assert all(r.source == "external" and r.delta != 0 for r in shop.state.history)
