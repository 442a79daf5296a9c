"""Bulk operations on the simulator: a bulk query exports every inventory level as JSONL
(100,000 levels in the opt-in run), a bulk mutation applies a staged JSONL of
inventorySetQuantities lines; status moves CREATED -> RUNNING -> COMPLETED; both are
cheap in points."""

from __future__ import annotations

import json
import time

import pytest

from .conftest import HTTP

BULK_LEVELS = '''{ inventoryItems { edges { node { id sku inventoryLevels { edges { node { location { id } quantities(names: ["available"]) { name quantity } } } } } } } }'''

RUN_QUERY = """mutation Run($q: String!) { bulkOperationRunQuery(query: $q) { bulkOperation { id status } userErrors { field message code } } }"""
POLL = """{ currentBulkOperation(type: %s) { id status errorCode objectCount rootObjectCount fileSize url } }"""
STAGE = """mutation { stagedUploadsCreate(input: [{resource: BULK_MUTATION_VARIABLES, filename: "levels.jsonl", mimeType: "text/jsonl", httpMethod: POST}]) {
  stagedTargets { url resourceUrl parameters { name value } } userErrors { field message } } }"""
RUN_MUTATION = """mutation Run($m: String!, $path: String!) { bulkOperationRunMutation(mutation: $m, stagedUploadPath: $path) {
  bulkOperation { id status type } userErrors { field message code } } }"""
SET_LINE = """mutation Set($input: InventorySetQuantitiesInput!) { inventorySetQuantities(input: $input) {
  inventoryAdjustmentGroup { id } userErrors { code field } } }"""


def _poll(shop, kind: str = "QUERY", timeout: float = 60.0) -> tuple[dict, list[str]]:
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        op = shop.gql(POLL % kind).json()["data"]["currentBulkOperation"]
        if not seen or seen[-1] != op["status"]:
            seen.append(op["status"])
        if op["status"] in ("COMPLETED", "FAILED", "CANCELED") or time.monotonic() > deadline:
            return op, seen
        time.sleep(0.02)


def _export_levels(shop) -> tuple[dict, dict[tuple[str, str], int], float]:
    started = time.monotonic()
    body = shop.gql(RUN_QUERY, {"q": BULK_LEVELS}).json()
    assert body["data"]["bulkOperationRunQuery"]["userErrors"] == [], body
    assert body["data"]["bulkOperationRunQuery"]["bulkOperation"]["status"] == "CREATED"
    assert body["extensions"]["cost"]["actualQueryCost"] == 10  # cheap: the work is not charged
    op, seen = _poll(shop)
    elapsed = time.monotonic() - started
    assert op["status"] == "COMPLETED", op
    assert seen[-1] == "COMPLETED" and set(seen) <= {"CREATED", "RUNNING", "COMPLETED"}
    text = HTTP.get(op["url"]).text
    levels: dict[tuple[str, str], int] = {}
    items = 0
    for line in text.splitlines():
        row = json.loads(line)
        if "__parentId" in row:
            (q,) = row["quantities"]
            levels[(row["__parentId"], row["location"]["id"])] = q["quantity"]
        else:
            items += 1
            assert row["id"].startswith("gid://shopify/InventoryItem/") and row["sku"]
    assert int(op["objectCount"]) == len(text.splitlines()) and int(op["rootObjectCount"]) == items
    assert int(op["fileSize"]) == len(text.encode())
    return op, levels, elapsed


@pytest.mark.parametrize("n_items", [pytest.param(5_000, id="10k-levels"), pytest.param(50_000, id="100k-levels", marks=pytest.mark.slow)])
def test_bulk_query_exports_every_level(shop_factory, n_items):
    shop = shop_factory(n_items=n_items, n_locations=2, available=3)
    shop.state.external_change(shop.items[7], shop.locations[1], available=11)
    op, levels, elapsed = _export_levels(shop)
    assert levels == shop.state.levels()
    assert len(levels) == 2 * n_items
    print(f"bulk export of {len(levels)} levels: {elapsed:.2f} s")


def test_bulk_query_is_validated_and_limited(shop):
    errs = shop.gql(RUN_QUERY, {"q": "{ inventoryItems { edges { node { id colour } } } }"}).json()["data"]["bulkOperationRunQuery"]["userErrors"]
    assert errs[0]["field"] == ["query"] and "colour" in errs[0]["message"]
    errs = shop.gql(RUN_QUERY, {"q": '{ inventoryItem(id: "gid://shopify/InventoryItem/1") { id } }'}).json()["data"]["bulkOperationRunQuery"]["userErrors"]
    assert "connection" in errs[0]["message"]
    # One bulk query at a time before 2026-01.
    shop.state.seed_catalog(2000, 1)
    first = shop.gql(RUN_QUERY, {"q": BULK_LEVELS}, version="2025-10").json()["data"]["bulkOperationRunQuery"]
    second = shop.gql(RUN_QUERY, {"q": BULK_LEVELS}, version="2025-10").json()["data"]["bulkOperationRunQuery"]
    assert first["userErrors"] == [] and second["userErrors"][0]["code"] == "OPERATION_IN_PROGRESS"
    op, _ = _poll(shop)
    assert op["status"] == "COMPLETED"
    # node(id:) polling works too.
    node = shop.gql('query($id: ID!) { node(id: $id) { ... on BulkOperation { id status url } } }', {"id": op["id"]}).json()["data"]["node"]
    assert node == {"id": op["id"], "status": "COMPLETED", "url": op["url"]}


def _stage(shop, content: bytes) -> str:
    target = shop.gql(STAGE).json()["data"]["stagedUploadsCreate"]["stagedTargets"][0]
    params = {p["name"]: p["value"] for p in target["parameters"]}
    r = HTTP.post(target["url"], data=params, files={"file": ("levels.jsonl", content, "text/jsonl")})
    assert r.status_code == 201, r.text
    return params["key"]


def test_bulk_mutation_sets_levels_from_a_staged_upload(shop_factory, webhook_receiver):
    shop = shop_factory(n_items=600, n_locations=2, available=1, webhook_url=webhook_receiver.url, echo_api_writes=False)
    pairs = sorted(shop.state.levels())
    lines = []
    for start in range(0, len(pairs), 250):
        chunk = pairs[start : start + 250]
        quantities = [{"inventoryItemId": i, "locationId": loc, "quantity": 7, "changeFromQuantity": 1} for i, loc in chunk]
        lines.append(json.dumps({"input": {"name": "available", "reason": "correction", "quantities": quantities}}))
    # A stale line: its level is not 99, so it is refused and reported on its line.
    lines.append(json.dumps({"input": {"name": "available", "reason": "correction", "quantities": [{"inventoryItemId": pairs[0][0], "locationId": pairs[0][1], "quantity": 3, "changeFromQuantity": 99}]}}))
    path = _stage(shop, ("\n".join(lines) + "\n").encode())

    body = shop.gql(RUN_MUTATION, {"m": SET_LINE, "path": path}).json()
    run = body["data"]["bulkOperationRunMutation"]
    assert run["userErrors"] == [] and run["bulkOperation"]["type"] == "MUTATION"
    assert body["extensions"]["cost"]["actualQueryCost"] == 10
    op, seen = _poll(shop, "MUTATION")
    assert op["status"] == "COMPLETED" and int(op["objectCount"]) == len(lines)
    assert set(shop.state.levels().values()) == {7}
    results = [json.loads(line) for line in HTTP.get(op["url"]).text.splitlines()]
    assert [r["__lineNumber"] for r in results] == list(range(len(lines)))
    assert all(r["data"]["inventorySetQuantities"]["userErrors"] == [] for r in results[:-1])
    assert results[-1]["data"]["inventorySetQuantities"]["userErrors"] == [{"code": "CHANGE_FROM_QUANTITY_STALE", "field": ["input", "quantities", "0", "changeFromQuantity"]}]
    assert shop.state.stats.quantities_applied == len(pairs)
    (finish,) = webhook_receiver.wait_for(1)
    assert finish.headers["x-shopify-topic"] == "bulk_operations/finish"
    assert finish.json() | {"completed_at": None, "created_at": None} == {
        "admin_graphql_api_id": op["id"], "completed_at": None, "created_at": None, "error_code": None, "status": "completed", "type": "mutation",
    }


def test_bulk_mutation_refusals(shop):
    r = shop.gql(RUN_MUTATION, {"m": SET_LINE, "path": "tmp/never/uploaded.jsonl"}).json()["data"]["bulkOperationRunMutation"]
    assert r["userErrors"][0]["code"] == "NO_SUCH_FILE"
    path = _stage(shop, b'{"input": {"name": "available", "reason": "correction", "quantities": []}}\n')
    r = shop.gql(RUN_MUTATION, {"m": "mutation { inventorySetQuantities(input: {}) { nope } }", "path": path}).json()
    assert r["data"]["bulkOperationRunMutation"]["userErrors"][0]["field"] == ["mutation"]
    assert HTTP.post(f"{shop.sim.base_url}/_sim/staged-uploads", data={"key": "forged"}, files={"file": ("x", b"{}")}).status_code == 403
    assert HTTP.get(f"{shop.sim.base_url}/_sim/bulk/999.jsonl").status_code == 404


def test_cancel_and_version_differences(shop_factory):
    shop = shop_factory(n_items=20, n_locations=1, bulk_start_delay_s=0.5)
    run = shop.gql(RUN_QUERY, {"q": BULK_LEVELS}).json()["data"]["bulkOperationRunQuery"]["bulkOperation"]
    cancel = 'mutation($id: ID!) { bulkOperationCancel(id: $id) { bulkOperation { status } userErrors { message } } }'
    r = shop.gql(cancel, {"id": run["id"]}).json()["data"]["bulkOperationCancel"]
    assert r == {"bulkOperation": {"status": "CANCELING"}, "userErrors": []}
    op, seen = _poll(shop)
    assert op["status"] == "CANCELED" and op["url"] is None
    assert shop.gql(cancel, {"id": run["id"]}).json()["data"]["bulkOperationCancel"]["userErrors"]
    # bulkOperation(id:) is a 2026-01 addition; before it, node(id:) or currentBulkOperation.
    by_id = 'query($id: ID!) { bulkOperation(id: $id) { status } }'
    assert shop.gql(by_id, {"id": run["id"]}).json()["data"]["bulkOperation"]["status"] == "CANCELED"
    assert shop.gql(by_id, {"id": run["id"]}, version="2025-10").json()["errors"][0]["extensions"]["code"] == "undefinedField"
    # groupObjects left bulkOperationRunMutation in 2026-01.
    m = 'mutation { bulkOperationRunMutation(mutation: "x", stagedUploadPath: "y", groupObjects: false) { userErrors { message } } }'
    assert shop.gql(m).json()["errors"][0]["extensions"]["code"] == "argumentNotAccepted"
    assert "data" in shop.gql(m, version="2025-10").json()
