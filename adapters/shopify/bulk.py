"""Bulk operations of the Shopify GraphQL Admin API, for a full resync of a large catalogue.

Reading every level back one `nodes(ids:)` page at a time costs points per level: about
15 minutes for 10,000 SKUs on the standard plan. A bulk operation runs on Shopify's side,
costs a flat few points to start, and hands back one JSONL file:

- **read**: `bulkOperationRunQuery(query:)` with an `inventoryItems` query (every item,
  its levels, `available` and `committed`). The result file has one line per object;
  a nested object names its parent in `__parentId` (Shopify flattens connections).
- **write**: `stagedUploadsCreate` (resource `BULK_MUTATION_VARIABLES`) gives an upload
  target; the JSONL file of variables (one `inventorySetQuantities` input per line, up to
  250 quantities each, compare-and-set against the value the bulk read saw) is POSTed
  there as multipart form data; `bulkOperationRunMutation(mutation:, stagedUploadPath:)`
  runs the mutation once per line. The result file has one line per input line:
  `{"data": {...}, "__lineNumber": n}`.
- **progress**: the operation is polled with `node(id:)` (every version has it) until it
  is COMPLETED, FAILED, CANCELED or EXPIRED; `objectCount` is the running total, handed
  to an `on_progress(done, total)` callback (a progress bar, a log line).

Shopify runs one bulk query and one bulk mutation at a time per shop and app before
2026-01 (up to 5 from 2026-01); `bulkOperationRunQuery` answers a user error while one is
running, surfaced here as `BulkOperationError`. No @idempotent directive: a bulk mutation
is not retried as such (its lines are compare-and-set, so running it again is harmless).

Written against Shopify's documented API; run end to end against the project's simulator
(tests/flows/test_bulk_resync.py, loadtests/bench_resync.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import msgspec

from adapters.shopify.client import (
    MAX_ENTRIES_PER_CALL,
    STALE_CODES,
    SetQuantity,
    ShopifyAdminClient,
    ShopifyRequestError,
    UserError,
)

TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELED", "EXPIRED"})

LEVELS_BULK_QUERY = """{
  inventoryItems {
    edges {
      node {
        id
        inventoryLevels {
          edges {
            node {
              id
              location { id }
              quantities(names: ["available", "committed"]) { name quantity }
            }
          }
        }
      }
    }
  }
}"""

_RUN_QUERY = """mutation AvailabilityBulkRead($query: String!) {
  bulkOperationRunQuery(query: $query) {
    bulkOperation { id status }
    userErrors { field message code }
  }
}"""

_STAGED_UPLOAD = """mutation AvailabilityStagedUpload($input: [StagedUploadInput!]!) {
  stagedUploadsCreate(input: $input) {
    stagedTargets { url resourceUrl parameters { name value } }
    userErrors { field message }
  }
}"""

_RUN_MUTATION = """mutation AvailabilityBulkWrite($mutation: String!, $stagedUploadPath: String!) {
  bulkOperationRunMutation(mutation: $mutation, stagedUploadPath: $stagedUploadPath) {
    bulkOperation { id status }
    userErrors { field message code }
  }
}"""

_POLL = """query AvailabilityBulkStatus($id: ID!) {
  node(id: $id) {
    ... on BulkOperation {
      id status errorCode objectCount rootObjectCount fileSize url partialDataUrl createdAt completedAt
    }
  }
}"""

#: the mutation run once per line of the uploaded file (variables: {"input": ...})
BULK_SET_MUTATION = """mutation AvailabilityBulkSet($input: InventorySetQuantitiesInput!) {
  inventorySetQuantities(input: $input) {
    inventoryAdjustmentGroup { id }
    userErrors { code field message }
  }
}"""


class BulkOperation(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    status: str
    error_code: str | None = None
    object_count: int = 0
    root_object_count: int = 0
    url: str | None = None
    partial_data_url: str | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


class BulkOperationError(Exception):
    """Shopify refused to start a bulk operation, or it ended without a result."""

    def __init__(self, message: str, *, operation: BulkOperation | None = None, codes: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.operation = operation
        self.codes = set(codes)


class BulkLevels(msgspec.Struct, frozen=True):
    """Every level of the shop, as a bulk read saw it."""

    levels: dict[tuple[str, str], int]
    committed: dict[tuple[str, str], int]
    items: int
    operation: BulkOperation


class BulkSetLine(msgspec.Struct, frozen=True):
    """The outcome of one line (one inventorySetQuantities input) of a bulk write."""

    line: int
    entries: list[SetQuantity]
    user_errors: list[UserError]

    @property
    def ok(self) -> bool:
        return not self.user_errors

    @property
    def stale(self) -> bool:
        return any(e.code in STALE_CODES for e in self.user_errors)


def _operation(raw: dict[str, Any]) -> BulkOperation:
    return BulkOperation(
        id=str(raw["id"]),
        status=str(raw.get("status") or "CREATED"),
        error_code=raw.get("errorCode"),
        object_count=int(raw.get("objectCount") or 0),
        root_object_count=int(raw.get("rootObjectCount") or 0),
        url=raw.get("url"),
        partial_data_url=raw.get("partialDataUrl"),
    )


def parse_levels_jsonl(lines: Sequence[bytes | str | dict[str, Any]]) -> tuple[dict, dict, int]:
    """The result file of `LEVELS_BULK_QUERY`: (available, committed) per (item, location)
    and the number of items. Level lines name their item in `__parentId`."""
    available: dict[tuple[str, str], int] = {}
    committed: dict[tuple[str, str], int] = {}
    items = 0
    for raw in lines:
        doc = raw if isinstance(raw, dict) else msgspec.json.decode(raw)
        parent = doc.get("__parentId")
        if parent is None:
            if str(doc.get("id", "")).startswith("gid://shopify/InventoryItem/"):
                items += 1
            continue
        location = (doc.get("location") or {}).get("id")
        if location is None:
            continue
        for q in doc.get("quantities") or []:
            if q.get("name") == "available":
                available[(parent, location)] = int(q.get("quantity") or 0)
            elif q.get("name") == "committed":
                committed[(parent, location)] = int(q.get("quantity") or 0)
    return available, committed, items


class BulkClient:
    """Bulk operations through a `ShopifyAdminClient` (same endpoint, token, pacing)."""

    def __init__(self, client: ShopifyAdminClient, *, poll_s: float = 2.0, max_wait_s: float = 6 * 3600) -> None:
        self.client = client
        self.poll_s = poll_s
        self.max_wait_s = max_wait_s

    # --- starting and following an operation ------------------------------------------------

    @staticmethod
    def _started(payload: Any, what: str) -> BulkOperation:
        if not isinstance(payload, dict):
            raise BulkOperationError(f"{what} answered without a payload")
        errors = payload.get("userErrors") or []
        if errors:
            codes = [str(e.get("code")) for e in errors if e.get("code")]
            raise BulkOperationError(
                f"{what}: " + "; ".join(str(e.get("message")) for e in errors), codes=codes
            )
        op = payload.get("bulkOperation")
        if not isinstance(op, dict) or "id" not in op:
            raise BulkOperationError(f"{what} started no operation")
        return _operation(op)

    async def run_query(self, query: str) -> BulkOperation:
        resp = await self.client.execute(_RUN_QUERY, {"query": query}, estimated_cost=10)
        return self._started(resp.data.get("bulkOperationRunQuery"), "bulkOperationRunQuery")

    async def status(self, operation_id: str) -> BulkOperation:
        resp = await self.client.execute(_POLL, {"id": operation_id}, estimated_cost=1)
        node = resp.data.get("node")
        if not isinstance(node, dict):
            raise BulkOperationError(f"no bulk operation {operation_id}")
        return _operation(node)

    async def wait(
        self, operation: BulkOperation, on_progress: Callable[[int], None] | None = None
    ) -> BulkOperation:
        """Poll until the operation ends; `on_progress(objects so far)` after every poll."""
        deadline = time.monotonic() + self.max_wait_s
        while not operation.done:
            if time.monotonic() > deadline:
                raise BulkOperationError(f"bulk operation {operation.id} still {operation.status}", operation=operation)
            await asyncio.sleep(self.poll_s)
            operation = await self.status(operation.id)
            if on_progress is not None:
                on_progress(operation.object_count)
        if operation.status != "COMPLETED":
            raise BulkOperationError(
                f"bulk operation {operation.id} ended {operation.status} ({operation.error_code or 'no error code'})",
                operation=operation,
            )
        return operation

    async def result_lines(self, url: str | None) -> AsyncIterator[bytes]:
        """The JSONL result file, line by line (streamed: it may be large). An operation
        that produced nothing has no URL."""
        if not url:
            return
        async with self.client._http.stream("GET", url, timeout=self.client._timeout * 6) as resp:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                if line.strip():
                    yield line.encode()

    # --- read every level -------------------------------------------------------------------

    async def read_levels(self, on_progress: Callable[[int], None] | None = None) -> BulkLevels:
        op = await self.wait(await self.run_query(LEVELS_BULK_QUERY), on_progress)
        lines = [line async for line in self.result_lines(op.url)]
        available, committed, items = parse_levels_jsonl(lines)
        return BulkLevels(available, committed, items, op)

    # --- write many levels ------------------------------------------------------------------

    def set_lines(
        self, entries: Sequence[SetQuantity], *, reason: str = "correction", reference: str = "gid://availability/Resync/bulk"
    ) -> list[tuple[list[SetQuantity], dict[str, Any]]]:
        """The variables file: one `{"input": ...}` per 250 entries, spelled for the client's
        API version (compare-and-set included)."""
        out = []
        for i in range(0, len(entries), MAX_ENTRIES_PER_CALL):
            chunk = list(entries[i : i + MAX_ENTRIES_PER_CALL])
            out.append((chunk, {"input": self.client.build_set_input(chunk, "available", reason, reference)}))
        return out

    async def stage(self, body: bytes, filename: str = "availability-set.jsonl") -> str:
        """Upload a JSONL file of variables; returns its `stagedUploadPath`."""
        resp = await self.client.execute(
            _STAGED_UPLOAD,
            {"input": [{"resource": "BULK_MUTATION_VARIABLES", "filename": filename, "mimeType": "text/jsonl", "httpMethod": "POST"}]},
            estimated_cost=10,
        )
        payload = resp.data.get("stagedUploadsCreate") or {}
        if payload.get("userErrors"):
            raise BulkOperationError("stagedUploadsCreate: " + "; ".join(str(e.get("message")) for e in payload["userErrors"]))
        targets = payload.get("stagedTargets") or []
        if not targets or not targets[0].get("url"):
            raise ShopifyRequestError("stagedUploadsCreate gave no upload target", cost=resp.cost)
        target = targets[0]
        params = {p["name"]: p["value"] for p in target.get("parameters") or []}
        path = params.get("key")
        if not path:
            raise ShopifyRequestError("stagedUploadsCreate gave no key parameter", cost=resp.cost)
        upload = await self.client._http.post(
            target["url"], data=params, files={"file": (filename, body, "text/jsonl")}, timeout=self.client._timeout * 6
        )
        if upload.status_code >= 300:
            raise BulkOperationError(f"staged upload answered HTTP {upload.status_code}")
        return path

    async def set_available(
        self,
        entries: Sequence[SetQuantity],
        *,
        reason: str = "correction",
        on_progress: Callable[[int], None] | None = None,
    ) -> list[BulkSetLine]:
        """Set `available` for many levels in one bulk mutation; the outcome of every line."""
        lines = self.set_lines(entries, reason=reason)
        if not lines:
            return []
        body = b"".join(msgspec.json.encode(variables) + b"\n" for _chunk, variables in lines)
        path = await self.stage(body)
        resp = await self.client.execute(
            _RUN_MUTATION, {"mutation": BULK_SET_MUTATION, "stagedUploadPath": path}, estimated_cost=10
        )
        op = await self.wait(self._started(resp.data.get("bulkOperationRunMutation"), "bulkOperationRunMutation"), on_progress)
        out: dict[int, BulkSetLine] = {}
        async for raw in self.result_lines(op.url):
            doc = msgspec.json.decode(raw)
            n = int(doc.get("__lineNumber", len(out)))
            if not 0 <= n < len(lines):
                continue
            payload = ((doc.get("data") or {}).get("inventorySetQuantities")) or {}
            errors = [
                UserError(code=e.get("code"), field=[str(f) for f in e.get("field") or []] or None, message=str(e.get("message", "")))
                for e in payload.get("userErrors") or []
            ]
            if doc.get("errors"):
                errors.append(UserError(code="GRAPHQL_ERROR", field=None, message=str(doc["errors"])))
            out[n] = BulkSetLine(n, lines[n][0], errors)
        # a line the result file does not mention was not applied (e.g. the operation was cut short)
        return [out.get(n, BulkSetLine(n, lines[n][0], [UserError(code="NO_RESULT", field=None, message="no result line")])) for n in range(len(lines))]
