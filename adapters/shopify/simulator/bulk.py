"""Bulk operations: ``bulkOperationRunQuery`` (a JSONL export served by the simulator)
and ``bulkOperationRunMutation`` over a JSONL file staged with ``stagedUploadsCreate``.

Shopify's documented behaviour followed here: the run mutations answer at once with a
``BulkOperation`` in ``CREATED``; it moves to ``RUNNING`` and ends ``COMPLETED`` (or
``FAILED``/``CANCELED``) with ``objectCount``, ``fileSize`` and a ``url`` to JSONL, polled
through ``currentBulkOperation`` or ``node(id:)`` (``bulkOperation(id:)`` from 2026-01).
A query's nested connections become lines of their own with ``__parentId``; a
mutation's result has one line per input line with ``__lineNumber``. One bulk query and
one bulk mutation at a time before 2026-01, five at once from 2026-01. The run
mutations cost 10 points; the work itself is not charged against the bucket.

The simulator's own choices: the staged upload target is the simulator itself
(``POST /_sim/staged-uploads``, multipart form, as a POST policy upload to a bucket
would be); result URLs never expire; ``bulkOperationRunMutation`` runs
``inventorySetQuantities`` and ``inventoryAdjustQuantities`` only; a line's
``@idempotent`` directive is optional in bulk; nested connections in a bulk query need no
``first``; ``CREATED`` lasts ``bulk_start_delay_s``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
from graphql import FieldNode, FragmentSpreadNode, InlineFragmentNode, OperationType, get_named_type, is_object_type
from graphql.execution.values import get_argument_values

from ._util import gid, now_iso
from .cost import is_connection


@dataclass
class _BulkOp:
    id: int
    type: str  # QUERY | MUTATION
    query: str
    status: str = "CREATED"
    created_at: str = ""
    completed_at: str | None = None
    object_count: int = 0
    root_object_count: int = 0
    file_size: int | None = None
    error_code: str | None = None
    cancel: bool = False


class BulkOperations:
    """Registry of bulk operations, staged uploads and result files (one per shop)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self._lock = threading.RLock()
        self.base_url = ""
        self._tasks: set[asyncio.Task[Any]] = set()
        # Set by the app to the webhook sender: announces bulk_operations/finish.
        self.emit: Any = None
        self.reset()
        state.bulk = self

    def reset(self) -> None:
        with self._lock:
            self._ops: dict[int, _BulkOp] = {}
            self._uploads: dict[str, bytes] = {}
            self._results: dict[int, bytes] = {}
            self._next = 1

    # ---- reads ----------------------------------------------------------------------

    def node(self, n: int) -> dict[str, Any] | None:
        with self._lock:
            op = self._ops.get(n)
            if op is None:
                return None
            done = op.status in ("COMPLETED", "FAILED", "CANCELED")
            has_file = op.status == "COMPLETED" and op.object_count > 0
            return {
                "__typename": "BulkOperation",
                "id": gid("BulkOperation", op.id),
                "status": op.status,
                "type": op.type,
                "errorCode": op.error_code,
                "createdAt": op.created_at,
                "completedAt": op.completed_at if done else None,
                "objectCount": str(op.object_count),
                "rootObjectCount": str(op.root_object_count),
                "fileSize": str(op.file_size) if has_file and op.file_size is not None else None,
                "url": f"{self.base_url}/_sim/bulk/{op.id}.jsonl" if has_file else None,
                "partialDataUrl": f"{self.base_url}/_sim/bulk/{op.id}.jsonl" if op.status == "FAILED" and op.id in self._results else None,
                "query": op.query,
            }

    def current(self, type_: str) -> dict[str, Any] | None:
        with self._lock:
            ops = [o for o in self._ops.values() if o.type == type_]
            return self.node(ops[-1].id) if ops else None

    def result(self, n: int) -> bytes | None:
        with self._lock:
            return self._results.get(n)

    def status(self, n: int) -> str | None:
        with self._lock:
            op = self._ops.get(n)
            return None if op is None else op.status

    # ---- staged uploads ---------------------------------------------------------------

    def stage(self, key: str, content: bytes) -> bool:
        with self._lock:
            if key not in self._uploads:
                return False
            self._uploads[key] = content
            return True

    def _new_target(self, filename: str, mime: str) -> dict[str, Any]:
        key = f"tmp/sim/bulk/{uuid.uuid4()}/{filename}"
        with self._lock:
            self._uploads[key] = b""
        return {
            "url": f"{self.base_url}/_sim/staged-uploads",
            "resourceUrl": f"{self.base_url}/_sim/staged-uploads/{key}",
            "parameters": [
                {"name": "Content-Type", "value": mime},
                {"name": "success_action_status", "value": "201"},
                {"name": "acl", "value": "private"},
                {"name": "key", "value": key},
            ],
        }

    # ---- running ------------------------------------------------------------------------

    def _start(self, type_: str, query: str, max_at_once: int) -> tuple[_BulkOp | None, str | None]:
        with self._lock:
            running = [o for o in self._ops.values() if o.status in ("CREATED", "RUNNING", "CANCELING")]
            same_type = [o for o in running if o.type == type_]
            if max_at_once == 1 and same_type:
                return None, f"A bulk {type_.lower()} operation for this app and shop is already in progress: {gid('BulkOperation', same_type[0].id)}."
            if len(running) >= max_at_once:
                return None, f"The limit of {max_at_once} concurrent bulk operations for this app and shop has been reached."
            op = _BulkOp(self._next, type_, query, created_at=now_iso())
            self._next += 1
            self._ops[op.id] = op
            self.state.count("bulk_operations")
            return op, None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            try:
                await t
            except BaseException:  # noqa: S110 (shutting down)
                pass

    def _set(self, op: _BulkOp, **changes: Any) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(op, k, v)

    async def _begin(self, op: _BulkOp) -> bool:
        await asyncio.sleep(self.state.config.bulk_start_delay_s)
        if op.cancel:
            self._set(op, status="CANCELED", completed_at=now_iso())
            self._announce(op)
            return False
        self._set(op, status="RUNNING")
        return True

    def _finish(self, op: _BulkOp, lines: list[bytes], roots: int) -> None:
        data = b"\n".join(lines) + b"\n" if lines else b""
        with self._lock:
            self._results[op.id] = data
            if op.cancel:
                op.status = "CANCELED"
            else:
                op.status = "COMPLETED"
            op.object_count, op.root_object_count, op.file_size = len(lines), roots, len(data)
            op.completed_at = now_iso()
        self._announce(op)

    def _announce(self, op: _BulkOp) -> None:
        """``bulk_operations/finish`` (Shopify's payload: lower-case status and type)."""
        if self.emit is None:
            return
        self.emit(
            [
                (
                    "bulk_operations/finish",
                    {
                        "admin_graphql_api_id": gid("BulkOperation", op.id),
                        "completed_at": op.completed_at,
                        "created_at": op.created_at,
                        "error_code": op.error_code.lower() if op.error_code else None,
                        "status": op.status.lower(),
                        "type": op.type.lower(),
                    },
                )
            ]
        )

    async def _run_query(self, op: _BulkOp, prepared: Any) -> None:
        try:
            if not await self._begin(op):
                return
            lines, roots = await asyncio.to_thread(_export, self.state, prepared, op)
            self._finish(op, lines, roots)
        except Exception:  # a failed export is a FAILED operation, never a crash
            self._set(op, status="FAILED", error_code="INTERNAL_SERVER_ERROR", completed_at=now_iso())
            self._announce(op)

    async def _run_mutation(self, op: _BulkOp, mutation: str, upload: bytes, version: str, emit: Any) -> None:
        from .gql import Context, QueryError, ValidationFailed, prepare, run

        try:
            if not await self._begin(op):
                return
            lines: list[bytes] = []
            for n, raw in enumerate(upload.decode().splitlines()):
                if op.cancel:
                    break
                if not raw.strip():
                    continue
                try:
                    variables = json.loads(raw)
                    if not isinstance(variables, dict):
                        raise ValueError("each line is a JSON object of variables")
                    prepared = prepare(mutation, variables, version, costs=self.state.costs, bulk=True)
                    data, errors, _ = await run(prepared, Context(state=self.state, prepared=prepared, emit=emit))
                    out: dict[str, Any] = {"data": data}
                    if errors:
                        out["errors"] = errors
                except QueryError as exc:
                    out = {"errors": [exc.to_error()]}
                except ValidationFailed as exc:
                    out = {"errors": exc.errors}
                except ValueError as exc:
                    out = {"errors": [{"message": f"Invalid JSONL line: {exc}", "extensions": {"code": "INVALID"}}]}
                out["__lineNumber"] = n
                lines.append(msgspec.json.encode(out))
                if n % 20 == 19:
                    await asyncio.sleep(0)  # let polls in between lines
            self._finish(op, lines, len(lines))
        except Exception:
            self._set(op, status="FAILED", error_code="INTERNAL_SERVER_ERROR", completed_at=now_iso())
            self._announce(op)

    def cancel(self, n: int) -> tuple[dict[str, Any] | None, str | None]:
        with self._lock:
            op = self._ops.get(n)
            if op is None:
                return None, "Bulk operation does not exist"
            if op.status not in ("CREATED", "RUNNING"):
                return self.node(n), f"A bulk operation cannot be canceled when it is {op.status.lower()}"
            op.cancel = True
            op.status = "CANCELING"
            return self.node(n), None


# ------------------------------------------------------------------- the query export


def _fields(selection_set: Any, fragments: dict[str, Any], typename: str) -> list[FieldNode]:
    out: list[FieldNode] = []
    for sel in selection_set.selections if selection_set else ():
        if isinstance(sel, FieldNode):
            out.append(sel)
        elif isinstance(sel, InlineFragmentNode):
            if sel.type_condition is None or sel.type_condition.name.value == typename:
                out += _fields(sel.selection_set, fragments, typename)
        elif isinstance(sel, FragmentSpreadNode):
            frag = fragments.get(sel.name.value)
            if frag is not None and frag.type_condition.name.value == typename:
                out += _fields(frag.selection_set, fragments, typename)
    return out


def _connection_node_selection(node: FieldNode, fragments: dict[str, Any], conn_type: Any) -> Any:
    for sub in _fields(node.selection_set, fragments, conn_type.name):
        if sub.name.value == "nodes":
            return sub.selection_set
        if sub.name.value == "edges":
            edge_type = get_named_type(conn_type.fields["edges"].type)
            for e in _fields(sub.selection_set, fragments, edge_type.name):
                if e.name.value == "node":
                    return e.selection_set
    return None


def _export(state: Any, prepared: Any, op: _BulkOp) -> tuple[list[bytes], int]:
    """Run a bulk query: every node of the root connection, and of nested connections
    as lines of their own with ``__parentId``."""
    from .gql import RESOLVERS

    schema = prepared.schema
    fragments = {d.name.value: d for d in prepared.document.definitions if d.kind == "fragment_definition"}
    lines: list[bytes] = []
    encode = msgspec.json.encode
    arg_cache: dict[int, dict[str, Any]] = {}
    field_cache: dict[tuple[int, str], list[FieldNode]] = {}

    def fields_of(selection_set: Any, typename: str) -> list[FieldNode]:
        key = (id(selection_set), typename)
        hit = field_cache.get(key)
        if hit is None:
            hit = field_cache[key] = _fields(selection_set, fragments, typename)
        return hit

    def args_of(field_def: Any, node: FieldNode) -> dict[str, Any]:
        hit = arg_cache.get(id(node))
        if hit is None:
            hit = get_argument_values(field_def, node, prepared.coerced)
            hit["_bulk"] = True
            arg_cache[id(node)] = hit
        return hit

    plans: dict[tuple[int, str], list[tuple[Any, ...]]] = {}

    def plan_of(selection_set: Any, typename: str) -> list[tuple[Any, ...]]:
        """Per selection and type, what to do for each field (computed once)."""
        key = (id(selection_set), typename)
        plan = plans.get(key)
        if plan is not None:
            return plan
        plan = []
        concrete = schema.get_type(typename)
        for node in fields_of(selection_set, typename):
            name = node.name.value
            out_key = node.alias.value if node.alias else name
            if name == "__typename":
                plan.append(("typename", out_key, None, None, None, None))
                continue
            field_def = concrete.fields[name]
            fn = RESOLVERS.get((concrete.name, name))
            named = get_named_type(field_def.type)
            args = args_of(field_def, node)
            if is_connection(field_def.type):
                node_type = get_named_type(named.fields["nodes"].type)
                plan.append(("connection", out_key, fn, args, node_type, _connection_node_selection(node, fragments, named)))
            elif is_object_type(named) or hasattr(named, "resolve_type"):
                plan.append(("object", out_key, fn, args, (name, named), node.selection_set))
            else:
                plan.append(("scalar", out_key, fn, args, name, None))
        plans[key] = plan
        return plan

    def project(type_: Any, selection_set: Any, obj: dict[str, Any], children: list[tuple[Any, Any, list[dict[str, Any]]]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        typename = obj.get("__typename") or type_.name
        for kind, key, fn, args, extra, sub in plan_of(selection_set, typename):
            if kind == "typename":
                out[key] = typename
                continue
            if kind == "connection":
                children.append((extra, sub, fn(state, obj, args)["nodes"]))
            elif kind == "object":
                name, named = extra
                value = fn(state, obj, args) if fn is not None else obj.get(name)
                if value is None:
                    out[key] = None
                elif isinstance(value, list):
                    out[key] = [project(named, sub, v, []) for v in value]
                else:
                    out[key] = project(named, sub, value, [])
            else:
                out[key] = fn(state, obj, args) if fn is not None else obj.get(extra)
        return out

    def emit(type_: Any, selection_set: Any, obj: dict[str, Any], parent_id: str | None) -> None:
        children: list[tuple[Any, Any, list[dict[str, Any]]]] = []
        line = project(type_, selection_set, obj, children)
        if parent_id is not None:
            line["__parentId"] = parent_id
        lines.append(encode(line))
        for child_type, child_sel, nodes in children:
            for child in nodes:
                emit(child_type, child_sel, child, obj["id"])

    (root,) = _fields(prepared.operation.selection_set, fragments, "Query")
    query_type = schema.query_type
    field_def = query_type.fields[root.name.value]
    conn_type = get_named_type(field_def.type)
    node_type = get_named_type(conn_type.fields["nodes"].type)
    args = {**get_argument_values(field_def, root, prepared.coerced), "_bulk": True}
    nodes = RESOLVERS[("Query", root.name.value)](state, None, args)["nodes"]
    selection = _connection_node_selection(root, fragments, conn_type)
    for obj in nodes:
        if op.cancel:
            break
        emit(node_type, selection, obj, None)
    return lines, len(nodes)


# --------------------------------------------------------------- mutation resolvers


def _registry(info: Any) -> BulkOperations:
    state = info.context.state
    if state.bulk is None:
        BulkOperations(state)
    reg: BulkOperations = state.bulk
    if info.context.base_url:
        reg.base_url = info.context.base_url
    return reg


def _bulk_error(message: str, code: str = "INVALID", field: list[str] | None = None) -> dict[str, Any]:
    return {"bulkOperation": None, "userErrors": [{"code": code, "field": field, "message": message}]}


def _run_query(parent: Any, info: Any, query: str, groupObjects: bool = False) -> dict[str, Any]:  # noqa: N803 (GraphQL name)
    from .gql import QueryError, ValidationFailed, prepare

    reg = _registry(info)
    ctx = info.context
    try:
        prepared = prepare(query, {}, ctx.features.version, costs=ctx.state.costs, bulk=True)
    except QueryError as exc:
        return _bulk_error(f"Invalid bulk query: {exc.message}", field=["query"])
    except ValidationFailed as exc:
        return _bulk_error(f"Invalid bulk query: {exc.errors[0]['message']}", field=["query"])
    if prepared.is_mutation:
        return _bulk_error("Bulk queries cannot contain mutations; use bulkOperationRunMutation", field=["query"])
    roots = [c for c in prepared.calls]
    if len(roots) != 1 or not is_connection(prepared.schema.query_type.fields[roots[0].name].type):
        return _bulk_error("Bulk queries must contain exactly one top-level connection field", field=["query"])
    op, problem = _start(reg, "QUERY", query, ctx)
    if op is None:
        return _bulk_error(problem or "", "OPERATION_IN_PROGRESS")
    reg._spawn(reg._run_query(op, prepared))
    return {"bulkOperation": reg.node(op.id), "userErrors": []}


def _start(reg: BulkOperations, type_: str, query: str, ctx: Any) -> tuple[_BulkOp | None, str | None]:
    return reg._start(type_, query, ctx.features.max_bulk_operations)


def _run_mutation(
    parent: Any, info: Any, mutation: str, stagedUploadPath: str, clientIdentifier: str | None = None, groupObjects: bool | None = None  # noqa: N803
) -> dict[str, Any]:
    from .gql import INVENTORY_MUTATIONS, QueryError, ValidationFailed, prepare

    reg = _registry(info)
    ctx = info.context
    with reg._lock:
        upload = reg._uploads.get(stagedUploadPath)
    if upload is None:
        return _bulk_error("The JSONL file could not be found. Try uploading the file again, and check that you've entered the URL correctly for the stagedUploadPath mutation argument.", "NO_SUCH_FILE", ["stagedUploadPath"])
    first_line = next((ln for ln in upload.decode(errors="replace").splitlines() if ln.strip()), "{}")
    try:
        variables = json.loads(first_line)
        prepared = prepare(mutation, variables if isinstance(variables, dict) else {}, ctx.features.version, costs=ctx.state.costs, bulk=True)
    except (QueryError, ValidationFailed, ValueError) as exc:
        message = exc.message if isinstance(exc, QueryError) else exc.errors[0]["message"] if isinstance(exc, ValidationFailed) else str(exc)
        return _bulk_error(f"Invalid mutation or variables: {message}", field=["mutation"])
    if prepared.operation.operation != OperationType.MUTATION or len(prepared.calls) != 1:
        return _bulk_error("The mutation must be a single mutation field", field=["mutation"])
    if prepared.calls[0].name not in INVENTORY_MUTATIONS:
        return _bulk_error(f"The simulator runs {', '.join(INVENTORY_MUTATIONS)} in bulk, not {prepared.calls[0].name}", field=["mutation"])
    op, problem = _start(reg, "MUTATION", mutation, ctx)
    if op is None:
        return _bulk_error(problem or "", "OPERATION_IN_PROGRESS")
    reg._spawn(reg._run_mutation(op, mutation, upload, ctx.features.version, ctx.emit))
    return {"bulkOperation": reg.node(op.id), "userErrors": []}


def _cancel(parent: Any, info: Any, id: str) -> dict[str, Any]:  # noqa: A002 (GraphQL name)
    from adapters.shopify.gid import GidError, parse_gid

    reg = _registry(info)
    try:
        n = parse_gid(id, "BulkOperation")[1]
    except GidError:
        return _bulk_error("Bulk operation does not exist", field=["id"])
    node, problem = reg.cancel(n)
    return {"bulkOperation": node, "userErrors": [] if problem is None else [{"code": "INVALID", "field": ["id"], "message": problem}]}


def _staged_uploads(parent: Any, info: Any, input: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: A002
    reg = _registry(info)
    targets, errors = [], []
    for i, target in enumerate(input):
        if target["resource"] != "BULK_MUTATION_VARIABLES":
            errors.append({"field": ["input", str(i), "resource"], "message": "The simulator stages BULK_MUTATION_VARIABLES only"})
            continue
        targets.append(reg._new_target(target["filename"], target["mimeType"]))
    return {"stagedTargets": targets if not errors else None, "userErrors": errors}


MUTATION_RESOLVERS = {
    "bulkOperationRunQuery": _run_query,
    "bulkOperationRunMutation": _run_mutation,
    "bulkOperationCancel": _cancel,
    "stagedUploadsCreate": _staged_uploads,
}
