"""The simulator validates GraphQL against Shopify's schema (graphql-core), per API
version: what the real API rejects is rejected here, with Shopify-shaped errors."""

from __future__ import annotations

import pytest

from adapters.shopify.simulator import SimulatorConfig, SimulatorServer
from adapters.shopify.simulator.schema import error_codes, schema_for
from adapters.shopify.simulator.versions import Features

from .conftest import LEVELS_QUERY, entry, set_input, set_mutation


def _errors(resp) -> list[dict]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert "data" not in body, body
    assert "throttleStatus" in body["extensions"]["cost"]
    return body["errors"]


def test_unknown_field_is_rejected_like_shopify(shop):
    q = "query($id: ID!) { inventoryItem(id: $id) { id sku colour } }"
    (err,) = _errors(shop.gql(q, {"id": shop.items[0]}))
    assert err["message"] == "Field 'colour' doesn't exist on type 'InventoryItem'"
    assert err["extensions"]["code"] == "undefinedField"
    assert err["locations"] == [{"line": 1, "column": q.index("colour") + 1}]
    # Nothing was charged or read.
    assert shop.state.stats.points_spent == 0 and shop.state.stats.queries == 0


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("{ inventoryItem(id: 1, colour: 2) { id } }", "argumentNotAccepted"),
        ("{ inventoryItem { id } }", "missingRequiredArguments"),
        ("{ inventoryItems(first: 2) { edges { node { id inventoryLevels(first: 1) { edges { node { quantities { name } } } } } } } }", "missingRequiredArguments"),
        ("{ locations(first: 1) { edges { node { id } } } } fragment F on Nope { id }", "undefinedType"),
        ("{ inventoryItem(id: 1) { id @skipme } }", "undefinedDirective"),
        ("{ inventoryItem(id: 1) }", "GRAPHQL_VALIDATION_FAILED"),  # object needs a selection
        ("{ inventoryItem(id: 1) { id ", "PARSE_ERROR"),
        ("subscription { inventoryItem(id: 1) { id } }", "UNSUPPORTED_OPERATION"),
        ("{ shop { name } }", "UNSUPPORTED_OPERATION"),  # real, but not simulated
    ],
)
def test_invalid_documents_never_run(shop, query, code):
    errs = _errors(shop.gql(query))
    assert errs[0]["extensions"]["code"] == code, errs
    assert shop.state.stats.queries == 0


def test_variables_are_coerced_with_shopify_shaped_problems(shop):
    bad = set_input([entry(shop.items[0], shop.locations[0], "lots", changeFromQuantity=None)])
    (err,) = _errors(shop.gql(set_mutation("v1"), bad))
    assert err["extensions"]["code"] == "INVALID_VARIABLE"
    assert err["extensions"]["problems"][0]["path"] == ["quantities", 0, "quantity"]
    assert err["message"].startswith("Variable $input of type InventorySetQuantitiesInput! was provided invalid value for quantities.0.quantity")
    (err,) = _errors(shop.gql(LEVELS_QUERY, {"first": 5}))  # $id missing
    assert err["extensions"]["code"] == "INVALID_VARIABLE"


def test_response_has_exactly_the_selection_with_aliases_and_fragments(shop):
    q = """query($id: ID!) { a: inventoryItem(id: $id) { ...Basics stock: inventoryLevels(first: 1) { nodes { q: quantities(names: ["available", "committed"]) { quantity } } } } }
           fragment Basics on InventoryItem { id __typename }"""
    body = shop.gql(q, {"id": shop.items[0]}).json()
    assert body["data"] == {
        "a": {"id": shop.items[0], "__typename": "InventoryItem", "stock": {"nodes": [{"q": [{"quantity": 5}, {"quantity": 0}]}]}}
    }
    # item 1 + connection 2 + 1 node x (1 + quantities 1)
    assert body["extensions"]["cost"]["requestedQueryCost"] == 5


def test_connections_need_first_or_last(shop):
    (err,) = _errors(shop.gql("{ locations { nodes { id } } }"))
    assert err["extensions"]["code"] == "BAD_REQUEST" and "first or last" in err["message"]


# ------------------------------------------------------------------ versions


def test_idempotent_directive_exists_from_2026_01_only(shop):
    item, loc = shop.items[0], shop.locations[0]
    (err,) = _errors(shop.gql(set_mutation("old"), set_input([entry(item, loc, 9, compareQuantity=5)]), version="2025-10"))
    assert err["extensions"]["code"] == "undefinedDirective"
    assert err["message"] == "Directive @idempotent is not defined"
    assert shop.state.available(item, loc) == 5
    r = shop.gql(set_mutation("new"), set_input([entry(item, loc, 9, compareQuantity=5)]), version="2026-01")
    assert r.json()["data"]["inventorySetQuantities"]["userErrors"] == []


@pytest.mark.parametrize(
    ("version", "compare", "change_from"),
    [("2025-07", True, False), ("2025-10", True, False), ("2026-01", True, True), ("2026-04", True, True), ("2026-07", False, True), ("unstable", False, True)],
)
def test_compare_fields_per_version(version, compare, change_from):
    schema, _ = schema_for(version)
    fields = schema.type_map["InventoryQuantityInput"].fields
    assert ("compareQuantity" in fields) is compare
    assert ("changeFromQuantity" in fields) is change_from
    assert ("ignoreCompareQuantity" in schema.type_map["InventorySetQuantitiesInput"].fields) is compare


def test_error_enums_per_version():
    assert "INVALID_QUANTITY_TOO_LOW" in error_codes(Features("2026-01"))
    assert "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED" not in error_codes(Features("2026-01"))
    assert "IDEMPOTENCY_KEY_PARAMETER_MISMATCH" in error_codes(Features("2026-01"))
    assert "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED" in error_codes(Features("2026-04"))
    assert "CHANGE_FROM_QUANTITY_STALE" not in error_codes(Features("2025-10"))
    assert not any(c.startswith("IDEMPOTENCY_") for c in error_codes(Features("2025-10")))


def test_quantity_too_low_is_its_own_error(shop):
    item, loc = shop.items[0], shop.locations[0]
    r = shop.gql(set_mutation("low"), set_input([entry(item, loc, -1_000_000_001, changeFromQuantity=None)]))
    assert [e["code"] for e in r.json()["data"]["inventorySetQuantities"]["userErrors"]] == ["INVALID_QUANTITY_TOO_LOW"]


def test_failed_key_on_2026_01_is_claimed_again_without_the_missing_code(shop):
    item, loc = shop.items[0], shop.locations[0]
    v = set_input([entry(item, loc, 12, changeFromQuantity=5)])
    shop.state.set_faults(error_rate=1.0, error_statuses=[503])
    assert shop.gql(set_mutation("f1"), v, version="2026-01").status_code == 503
    shop.state.set_faults(error_rate=0.0)
    # 2026-01 has no IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED: the retry runs (the failed
    # attempt did nothing), once.
    p = shop.gql(set_mutation("f1"), v, version="2026-01").json()["data"]["inventorySetQuantities"]
    assert p["userErrors"] == [] and shop.state.available(item, loc) == 12
    assert shop.state.applications_by_key() == {"f1": 1}


def test_adjust_quantities_with_change_from(shop):
    item, loc = shop.items[0], shop.locations[0]
    m = """mutation A($input: InventoryAdjustQuantitiesInput!) { inventoryAdjustQuantities(input: $input) @idempotent(key: "adj-1") {
             inventoryAdjustmentGroup { changes { name delta quantityAfterChange } } userErrors { code field } } }"""
    inp = {"name": "available", "reason": "correction", "changes": [{"inventoryItemId": item, "locationId": loc, "delta": -2, "changeFromQuantity": 5}]}
    p = shop.gql(m, {"input": inp}).json()["data"]["inventoryAdjustQuantities"]
    assert p["userErrors"] == [] and shop.state.available(item, loc) == 3
    inp["changes"][0]["changeFromQuantity"] = 5  # stale now, and a new key
    p = shop.gql(m.replace("adj-1", "adj-2"), {"input": inp}).json()["data"]["inventoryAdjustQuantities"]
    assert [e["code"] for e in p["userErrors"]] == ["CHANGE_FROM_QUANTITY_STALE"]
    assert shop.state.available(item, loc) == 3


def test_pessimistic_cost_model_charges_per_entry(shop_factory):
    shop = shop_factory(n_items=10, n_locations=1, available=0, cost_model="pessimistic")
    assert shop.state.limits.restore_rate == 50.0 and shop.state.limits.bucket_size == 1000.0
    quantities = [entry(i, shop.locations[0], 1, changeFromQuantity=0) for i in shop.items]
    body = shop.gql(set_mutation("pess"), set_input(quantities)).json()
    assert body["extensions"]["cost"]["requestedQueryCost"] == 10 + 10
    with SimulatorServer(SimulatorConfig(mutation_entry_cost=2.5)) as sim:
        assert sim.state.costs.mutation_entry_cost == 2.5 and sim.state.costs.mutation_cost == 10
