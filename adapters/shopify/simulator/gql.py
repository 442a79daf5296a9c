"""GraphQL for the simulator: parse and validate with ``graphql-core`` against the
version's schema (:mod:`.schema`), coerce variables, pre-check what Shopify checks before
running anything (array sizes, paging, the mandatory ``@idempotent``, the cost), then
execute with the resolvers below. Errors are shaped as Shopify answers them.

Top-level error codes are Shopify's where known (``THROTTLED``, ``MAX_COST_EXCEEDED``,
``MAX_INPUT_SIZE_EXCEEDED``, ``INVALID_VARIABLE``, ``undefinedField``,
``argumentNotAccepted``, ``missingRequiredArguments``, ``undefinedDirective``); the
simulator's own: ``PARSE_ERROR``, ``UNSUPPORTED_OPERATION`` (subscriptions),
``GRAPHQL_VALIDATION_FAILED`` (other validation rules), ``IDEMPOTENCY_KEY_REQUIRED``
(Shopify documents the runtime error without its code) and ``BAD_REQUEST``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    default_field_resolver,
    execute,
    get_named_type,
    is_abstract_type,
    is_object_type,
    parse,
    type_from_ast,
    validate,
)
from graphql.execution.values import get_argument_values, get_directive_values
from graphql.utilities import coerce_input_value

from adapters.shopify.gid import GidError, parse_gid, parse_inventory_level_gid

from . import fulfillment
from . import payments
from ._util import canonical_hash
from .config import MAX_INPUT_ARRAY, QUANTITY_NAMES
from .cost import Coster, CostError, actual_field_cost
from .schema import schema_for
from .versions import Features

INVENTORY_MUTATIONS = ("inventorySetQuantities", "inventoryAdjustQuantities")
#: Root fields real Shopify answers but the simulator does not: in the schema so that a
#: valid document is not called invalid, refused before running as UNSUPPORTED_OPERATION.
UNSIMULATED_ROOTS = ("shop",)
BULK_ROOTS = ("bulkOperationRunQuery", "bulkOperationRunMutation", "bulkOperationCancel", "stagedUploadsCreate")


class QueryError(Exception):
    """A top-level GraphQL error (answered with ``errors``, no ``data``)."""

    def __init__(self, message: str, code: str, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.extensions = extensions

    def to_error(self) -> dict[str, Any]:
        return {"message": self.message, "extensions": {"code": self.code, **self.extensions}}


def resolver_error(message: str, code: str = "BAD_REQUEST") -> GraphQLError:
    return GraphQLError(message, extensions={"code": code})


# ---------------------------------------------------------------------- error shapes

_VALIDATION_REWRITES: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"Cannot query field '(?P<f>\w+)' on type '(?P<t>\w+)'"), "Field '{f}' doesn't exist on type '{t}'", "undefinedField"),
    (re.compile(r"Unknown argument '(?P<a>\w+)' on field '(?P<t>\w+)\.(?P<f>\w+)'"), "Field '{f}' doesn't accept argument '{a}'", "argumentNotAccepted"),
    (re.compile(r"Unknown argument '(?P<a>\w+)' on directive '@(?P<d>\w+)'"), "Directive '{d}' doesn't accept argument '{a}'", "argumentNotAccepted"),
    (
        re.compile(r"Argument '(?P<t>\w+)\.(?P<f>\w+)\((?P<a>\w+):\)' of type '.*' is required"),
        "Field '{f}' is missing required arguments: {a}",
        "missingRequiredArguments",
    ),
    (
        re.compile(r"Field '(?P<f>\w+)' argument '(?P<a>\w+)' of type '.*' is required"),
        "Field '{f}' is missing required arguments: {a}",
        "missingRequiredArguments",
    ),
    (re.compile(r"Unknown directive '@(?P<d>\w+)'"), "Directive @{d} is not defined", "undefinedDirective"),
    (re.compile(r"Unknown type '(?P<t>\w+)'"), "No such type {t}, so it can't be a fragment condition or variable type", "undefinedType"),
]


def _validation_error(err: GraphQLError) -> dict[str, Any]:
    message, code = err.message, "GRAPHQL_VALIDATION_FAILED"
    for pattern, template, c in _VALIDATION_REWRITES:
        m = pattern.search(err.message)
        if m:
            message, code = template.format(**m.groupdict()), c
            break
    out: dict[str, Any] = {"message": message}
    if err.locations:
        out["locations"] = [{"line": loc.line, "column": loc.column} for loc in err.locations]
    out["extensions"] = {"code": code}
    return out


class ValidationFailed(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0]["message"] if errors else "invalid")
        self.errors = errors


# ---------------------------------------------------------------------- preparation


@dataclass
class RootCall:
    name: str
    response_key: str
    args: dict[str, Any]
    idem_key: str | None
    node: FieldNode


@dataclass
class Prepared:
    schema: GraphQLSchema
    features: Features
    document: DocumentNode
    operation: OperationDefinitionNode
    variables: dict[str, Any]  # as sent (graphql-core coerces again when executing)
    coerced: dict[str, Any]
    calls: list[RootCall]
    requested_cost: float

    @property
    def is_mutation(self) -> bool:
        return self.operation.operation == OperationType.MUTATION

    def call(self, response_key: str) -> RootCall | None:
        return next((c for c in self.calls if c.response_key == response_key), None)


def _select_operation(document: DocumentNode, operation_name: str | None) -> OperationDefinitionNode:
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name:
        ops = [o for o in ops if o.name and o.name.value == operation_name]
        if not ops:
            raise QueryError(f'No operation named "{operation_name}"', "BAD_REQUEST")
    if len(ops) != 1:
        raise QueryError("An operation name is required when the document has several operations", "BAD_REQUEST")
    return ops[0]


def _coerce_variables(schema: GraphQLSchema, operation: OperationDefinitionNode, raw: dict[str, Any]) -> dict[str, Any]:
    coerced: dict[str, Any] = {}
    for var_def in operation.variable_definitions or ():
        name = var_def.variable.variable.name.value if hasattr(var_def.variable, "variable") else var_def.variable.name.value
        var_type = type_from_ast(schema, var_def.type)
        type_text = _type_text(var_def.type)
        if var_type is None:
            raise QueryError(f"{type_text} isn't a defined input type (on ${name})", "variableRequiresValidType")
        if name not in raw:
            if var_def.default_value is not None:
                continue  # graphql-core applies the default
            if type_text.endswith("!"):
                raise QueryError(
                    f"Variable ${name} of type {type_text} was provided invalid value",
                    "INVALID_VARIABLE",
                    value=None,
                    problems=[{"path": [], "explanation": "Expected value to not be null"}],
                )
            continue
        problems: list[dict[str, Any]] = []

        def on_error(path: list[str | int], invalid: Any, error: GraphQLError, _p: list = problems) -> None:
            _p.append({"path": list(path), "explanation": error.message})

        value = coerce_input_value(raw[name], var_type, on_error)
        if problems:
            where = ".".join(str(p) for p in problems[0]["path"])
            raise QueryError(
                f"Variable ${name} of type {type_text} was provided invalid value"
                + (f" for {where}" if where else "")
                + f" ({problems[0]['explanation']})",
                "INVALID_VARIABLE",
                value=raw[name],
                problems=problems,
            )
        coerced[name] = value
    return coerced


def _type_text(node: Any) -> str:
    kind = type(node).__name__
    if kind == "NonNullTypeNode":
        return _type_text(node.type) + "!"
    if kind == "ListTypeNode":
        return "[" + _type_text(node.type) + "]"
    return node.name.value


def _oversized_array(value: Any, path: list[str]) -> list[str] | None:
    if isinstance(value, list):
        if len(value) > MAX_INPUT_ARRAY:
            return path
        for i, v in enumerate(value):
            hit = _oversized_array(v, [*path, str(i)])
            if hit:
                return hit
    elif isinstance(value, dict):
        for k, v in value.items():
            hit = _oversized_array(v, [*path, k])
            if hit:
                return hit
    return None


def _root_calls(p_schema: GraphQLSchema, operation: OperationDefinitionNode, coerced: dict[str, Any]) -> list[RootCall]:
    root_type = p_schema.mutation_type if operation.operation == OperationType.MUTATION else p_schema.query_type
    assert root_type is not None
    directive = p_schema.get_directive("idempotent")
    calls = []
    for sel in operation.selection_set.selections:
        if not isinstance(sel, FieldNode) or sel.name.value.startswith("__"):
            continue
        field_def = root_type.fields[sel.name.value]
        args = get_argument_values(field_def, sel, coerced)
        key = None
        if directive is not None:
            values = get_directive_values(directive, sel, coerced)
            if values is not None:
                key = values.get("key")
        calls.append(RootCall(sel.name.value, sel.alias.value if sel.alias else sel.name.value, args, key, sel))
    return calls


def prepare(
    query: str,
    variables: dict[str, Any],
    version: str,
    *,
    costs: Any,
    operation_name: str | None = None,
    bulk: bool = False,
) -> Prepared:
    """Parse, validate and pre-check one request; raise :class:`QueryError` or
    :class:`ValidationFailed` for what Shopify refuses before running anything."""
    schema, features = executable_schema(version)
    try:
        document = parse(query, no_location=True)
    except GraphQLError as exc:
        loc = exc.locations[0] if exc.locations else None
        raise QueryError(
            f"Parse error: {exc.message}" + (f" at [{loc.line}, {loc.column}]" if loc else ""), "PARSE_ERROR"
        ) from None
    operation = _select_operation(document, operation_name)
    if operation.operation == OperationType.SUBSCRIPTION:
        raise QueryError("Subscriptions are not supported over this endpoint", "UNSUPPORTED_OPERATION")
    errors = _validation_errors(schema, features.version, query, document)
    if errors:
        # Parsed without locations for speed: parse again to say where the errors are.
        raise ValidationFailed([_validation_error(e) for e in validate(schema, parse(query))])
    coerced = _coerce_variables(schema, operation, variables)
    calls = _root_calls(schema, operation, coerced)
    for call in calls:
        if call.name in UNSIMULATED_ROOTS:
            raise QueryError(f"The simulator does not answer '{call.name}' (real Shopify does)", "UNSUPPORTED_OPERATION")
    for call in calls:
        hit = _oversized_array(call.args, [call.name])
        if hit:
            size = len(_dig(call.args, hit[1:]))
            raise QueryError(
                f"The input array size of {size} is greater than the maximum allowed of {MAX_INPUT_ARRAY}.",
                "MAX_INPUT_SIZE_EXCEEDED",
                path=hit,
            )
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    if operation.operation == OperationType.MUTATION:
        requested = 0.0
        for call in calls:
            if call.name in INVENTORY_MUTATIONS:
                if call.idem_key is None and features.idempotency_required and not bulk:
                    raise QueryError(
                        f"The @idempotent directive is required for {call.name} from API version {features.version}",
                        "IDEMPOTENCY_KEY_REQUIRED",
                    )
                if call.idem_key is not None and (not call.idem_key.strip() or len(call.idem_key) > 255):
                    raise QueryError("Idempotency keys are 1 to 255 characters", "BAD_REQUEST")
                entries = call.args["input"].get("quantities") or call.args["input"].get("changes") or []
                requested += costs.mutation_cost + costs.mutation_entry_cost * len(entries)
            elif call.name in BULK_ROOTS:
                requested += costs.bulk_mutation_cost
            else:
                requested += costs.mutation_cost
    else:
        coster = Coster(schema, fragments, coerced, bulk=bulk)
        try:
            assert schema.query_type is not None
            requested = coster.selection(operation.selection_set, schema.query_type)
        except CostError as exc:
            raise QueryError(str(exc), "BAD_REQUEST") from None
    return Prepared(schema, features, document, operation, variables, coerced, calls, requested)


_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"')
_VALIDATED: dict[tuple[str, str], list[dict[str, Any]]] = {}


def _validation_errors(schema: GraphQLSchema, version: str, query: str, document: DocumentNode) -> list[dict[str, Any]]:
    """Validation is most of a request's work and its outcome does not depend on the
    value of a string literal (the client puts a fresh idempotency key in every mutation
    document), so results are cached on the text with string literals blanked."""
    # Block strings and comments could hide a quote that would blank real syntax.
    key = (version, query if '"""' in query or "#" in query else _STRING_RE.sub('""', query))
    hit = _VALIDATED.get(key)
    if hit is None:
        hit = [_validation_error(e) for e in validate(schema, document)]
        if hit:
            return hit  # locations of errors are the caller's own: not cached
        if len(_VALIDATED) > 1024:
            _VALIDATED.clear()
        _VALIDATED[key] = hit
    return hit


def _dig(value: Any, path: list[str]) -> Any:
    for p in path:
        value = value[int(p)] if isinstance(value, list) else value[p]
    return value


# ---------------------------------------------------------------------- execution


@dataclass
class Context:
    """What resolvers see as ``info.context``."""

    state: Any
    prepared: Prepared
    latency: float = 0.0
    emit: Callable[[list[tuple[str, dict[str, Any]]]], None] | None = None
    base_url: str = ""
    actual: float = 0.0

    @property
    def features(self) -> Features:
        return self.prepared.features


async def run(prepared: Prepared, context: Context) -> tuple[dict[str, Any] | None, list[dict[str, Any]], float]:
    """Execute; returns (data, formatted errors, actual cost)."""
    if not prepared.is_mutation and context.latency:
        await asyncio.sleep(context.latency)
    result = execute(
        prepared.schema,
        prepared.document,
        context_value=context,
        variable_values=prepared.variables,
        operation_name=prepared.operation.name.value if prepared.operation.name else None,
    )
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future) or hasattr(result, "__await__"):
        result = await result  # type: ignore[misc]
    errors = [_execution_error(e) for e in (result.errors or [])]
    actual = prepared.requested_cost if prepared.is_mutation else context.actual
    return result.data, errors, actual


def _execution_error(err: GraphQLError) -> dict[str, Any]:
    original = err.original_error
    if original is not None and not isinstance(original, GraphQLError):
        # A bug in a resolver: say so without a stack trace (and never a 500).
        out = err.formatted
        out["message"] = f"Internal error: {type(original).__name__}: {original}"
        out["extensions"] = {"code": "INTERNAL_SERVER_ERROR"}
        return out
    out = err.formatted
    out.setdefault("extensions", {}).setdefault("code", "BAD_REQUEST")
    return out


# ---------------------------------------------------------------------- resolvers


def cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"last_id": last_id}).encode()).decode().rstrip("=")


def decode_cursor(value: str | None) -> int:
    if value is None:
        return 0
    try:
        padded = value + "=" * (-len(value) % 4)
        return int(json.loads(base64.urlsafe_b64decode(padded))["last_id"])
    except Exception:  # any malformed cursor is the caller's error, not ours
        raise resolver_error(f"Invalid cursor for pagination: {value!r}") from None


def connection(ids: list[int], build: Callable[[int], dict[str, Any] | None], args: dict[str, Any]) -> dict[str, Any]:
    """A Relay connection over ascending numeric ids (``first``/``after``; ``last``/
    ``before``; ``reverse``). Without first/last (bulk queries) every row is returned."""
    if args.get("_bulk"):
        # A bulk export reads every node and no cursor: skip building edges.
        nodes = [n for n in map(build, ids) if n is not None]
        return {"nodes": nodes}
    if args.get("reverse"):
        ids = ids[::-1]
    after, before = args.get("after"), args.get("before")
    if after is not None:
        a = decode_cursor(after)
        ids = [i for i in ids if (i < a if args.get("reverse") else i > a)]
    if before is not None:
        b = decode_cursor(before)
        ids = [i for i in ids if (i > b if args.get("reverse") else i < b)]
    first, last = args.get("first"), args.get("last")
    has_next = has_prev = False
    if first is not None:
        has_next = len(ids) > first
        ids = ids[:first]
    elif last is not None:
        has_prev = len(ids) > last
        ids = ids[-last:] if last else []
    edges = []
    for i in ids:
        node = build(i)
        if node is not None:
            edges.append({"cursor": cursor(i), "node": node})
    return {
        "edges": edges,
        "nodes": [e["node"] for e in edges],
        "pageInfo": {
            "hasNextPage": has_next,
            "hasPreviousPage": has_prev or after is not None,
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else None,
        },
    }


def _gid_num(value: str, type_name: str | None = None) -> tuple[str, int]:
    try:
        return parse_gid(value, type_name)
    except GidError:
        raise resolver_error(f"Invalid global id '{value}'", "argumentLiteralsIncompatible") from None


def node_by_gid(state: Any, value: str) -> dict[str, Any] | None:
    if isinstance(value, str) and value.startswith("gid://shopify/InventoryLevel/"):
        try:
            loc, item = parse_inventory_level_gid(value)
        except GidError:
            raise resolver_error(f"Invalid global id '{value}'", "argumentLiteralsIncompatible") from None
        return state.level_node(item, loc)
    type_name, n = _gid_num(value)
    if type_name == "InventoryItem":
        return state.item_node(n)
    if type_name == "Location":
        return state.location_node(n)
    if type_name == "ProductVariant":
        return state.variant_node(n)
    if type_name == "Order":
        return state.order_node(n)
    if type_name == "BulkOperation" and state.bulk is not None:
        return state.bulk.node(n)
    return payments.node(state, type_name, n)


_SKU_RE = re.compile(r"\bsku:\"?([^\s\")]+)\"?")


def _items_connection(state: Any, args: dict[str, Any]) -> dict[str, Any]:
    ids = state.item_ids()
    skus = set(_SKU_RE.findall(args.get("query") or ""))
    if skus:
        wanted = {state.item_id_by_sku(s) for s in skus}
        ids = [i for i in ids if i in wanted]
    return connection(ids, state.item_node, args)


_ORDER_TERM_RE = re.compile(r"\b(updated_at|created_at):(>=|<=|>|<)?'?\"?([0-9T:.\-Z+]+)'?\"?")


def _orders_connection(state: Any, args: dict[str, Any]) -> dict[str, Any]:
    """``orders``: filters ``status:open|cancelled|any`` and ``updated_at`` /
    ``created_at`` comparisons are honoured; other search terms are ignored (as Shopify
    ignores unknown filters)."""
    query = args.get("query") or ""
    nodes = {i: state.order_node(i) for i in state.order_ids()}
    ids = list(nodes)
    m = re.search(r"\bstatus:(\w+)", query)
    if m and m.group(1) in ("open", "cancelled"):
        want_cancelled = m.group(1) == "cancelled"
        ids = [i for i in ids if (nodes[i]["cancelledAt"] is not None) == want_cancelled]
    for term, op, value in _ORDER_TERM_RE.findall(query):
        key = "updatedAt" if term == "updated_at" else "createdAt"
        cmp = {">": str.__gt__, ">=": str.__ge__, "<": str.__lt__, "<=": str.__le__, "": str.__eq__}[op]
        ids = [i for i in ids if cmp(nodes[i][key], value)]
    return connection(ids, nodes.get, args)


def _quantities(state: Any, parent: dict[str, Any], args: dict[str, Any]) -> list[dict[str, Any]]:
    names = args["names"]
    bad = [n for n in names if n not in QUANTITY_NAMES]
    if bad:
        raise resolver_error(f"Invalid quantity name(s): {', '.join(bad)}")
    q = parent["_q"]
    return [
        {"id": f"{parent['id']}&name={n}", "name": n, "quantity": q[n], "updatedAt": parent["updatedAt"]} for n in names
    ]


def _item_levels(state: Any, parent: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    rows = dict(state.item_levels(parent["_item"]))
    return connection(sorted(rows), rows.get, args)


def _location_levels(state: Any, parent: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    rows = dict(state.location_levels(parent["_loc"]))
    return connection(sorted(rows), rows.get, args)


def _list_connection(rows: list[dict[str, Any]], args: dict[str, Any]) -> dict[str, Any]:
    by_index = dict(enumerate(rows, start=1))
    return connection(sorted(by_index), by_index.get, args)


#: (type, field) -> fn(state, parent, args). Shared by graphql-core execution and the
#: bulk query runner, so both read the shop the same way.
RESOLVERS: dict[tuple[str, str], Callable[[Any, Any, dict[str, Any]], Any]] = {
    ("Query", "node"): lambda s, p, a: node_by_gid(s, a["id"]),
    ("Query", "nodes"): lambda s, p, a: [node_by_gid(s, i) for i in a["ids"]],
    ("Query", "inventoryItem"): lambda s, p, a: s.item_node(_gid_num(a["id"], "InventoryItem")[1]),
    ("Query", "inventoryItems"): lambda s, p, a: _items_connection(s, a),
    ("Query", "inventoryLevel"): lambda s, p, a: node_by_gid(s, a["id"]),
    ("Query", "location"): lambda s, p, a: s.location_node(_gid_num(a["id"], "Location")[1]) if a.get("id") else s.location_node(min(s.location_ids(), default=0)),
    ("Query", "locations"): lambda s, p, a: connection(s.location_ids(), s.location_node, a),
    ("Query", "order"): lambda s, p, a: s.order_node(_gid_num(a["id"], "Order")[1]),
    ("Query", "orders"): lambda s, p, a: _orders_connection(s, a),
    ("Query", "currentBulkOperation"): lambda s, p, a: s.bulk.current(a.get("type", "QUERY")) if s.bulk else None,
    ("Query", "bulkOperation"): lambda s, p, a: node_by_gid(s, a["id"]),
    ("InventoryItem", "inventoryLevels"): _item_levels,
    ("InventoryItem", "inventoryLevel"): lambda s, p, a: s.level_node(p["_item"], _gid_num(a["locationId"], "Location")[1]),
    ("InventoryItem", "variant"): lambda s, p, a: s.variant_node(p["_item"]),
    ("ProductVariant", "inventoryItem"): lambda s, p, a: s.item_node(p["_item"]),
    ("Location", "inventoryLevels"): _location_levels,
    ("Location", "inventoryLevel"): lambda s, p, a: s.level_node(_gid_num(a["inventoryItemId"], "InventoryItem")[1], p["_loc"]),
    ("InventoryLevel", "item"): lambda s, p, a: s.item_node(p["_item"]),
    ("InventoryLevel", "location"): lambda s, p, a: s.location_node(p["_loc"]),
    ("InventoryLevel", "quantities"): _quantities,
    ("LineItem", "variant"): lambda s, p, a: s.variant_node(p["_item"]),
    ("Order", "lineItems"): lambda s, p, a: _list_connection(p["_lines"], a),
    ("Order", "fulfillmentOrders"): lambda s, p, a: _list_connection(p["_fos"], a),
    ("FulfillmentOrder", "lineItems"): lambda s, p, a: _list_connection(p["_lines"], a),
    **fulfillment.RESOLVERS,
    **payments.RESOLVERS,
}


async def _inventory_mutation(kind: str, info: Any, inp: dict[str, Any]) -> dict[str, Any]:
    ctx: Context = info.context
    state, features = ctx.state, ctx.features
    key = None
    call = ctx.prepared.call(info.path.key)
    if call is not None:
        key = call.idem_key
    input_hash = canonical_hash({"field": kind, "input": inp})
    if key is not None:
        earlier = state.idempotency_begin(key, input_hash, features)
        if earlier is not None:
            return earlier
    try:
        if ctx.latency:
            await asyncio.sleep(ctx.latency)  # the window in which the key is "in flight"
        execute_fn = state.execute_set if kind == "inventorySetQuantities" else state.execute_adjust
        payload, events = execute_fn(inp, features, key)
    except BaseException:
        if key is not None:
            state.idempotency_fail_claim(key, input_hash)
        raise
    if key is not None:
        state.idempotency_finish(key, input_hash, payload)
    if events and ctx.emit is not None:
        ctx.emit(events)
    return payload


def _bind(schema: GraphQLSchema) -> None:
    from . import bulk  # the bulk mutations' resolvers live with the runner
    from . import refunds  # and the refund/return ones with the refund desk

    RESOLVERS.update(refunds.field_resolvers(connection, _list_connection, _gid_num))

    for type_name, type_ in schema.type_map.items():
        if type_name.startswith("__") or not is_object_type(type_):
            continue
        for field_name, field_def in type_.fields.items():
            fn = RESOLVERS.get((type_name, field_name))
            if type_name in ("Shop",):
                continue
            if type_name == "Mutation":
                if field_name in INVENTORY_MUTATIONS:
                    field_def.resolve = _mutation_resolver(field_name)
                elif field_name in fulfillment.MUTATION_RESOLVERS:
                    field_def.resolve = fulfillment.MUTATION_RESOLVERS[field_name]
                elif field_name in refunds.MUTATION_RESOLVERS:
                    field_def.resolve = refunds.MUTATION_RESOLVERS[field_name]
                else:
                    field_def.resolve = bulk.MUTATION_RESOLVERS[field_name]
                continue
            named = get_named_type(field_def.type)
            if fn is None and not (is_object_type(named) or is_abstract_type(named)):
                continue  # a plain scalar costs nothing: graphql-core's default resolver
            field_def.resolve = _counting(type_name, field_name, field_def.type, fn)


def _mutation_resolver(name: str) -> Callable[..., Any]:
    async def resolve(parent: Any, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002 (GraphQL name)
        return await _inventory_mutation(name, info, input)

    return resolve


def _counting(type_name: str, field_name: str, return_type: Any, fn: Callable[..., Any] | None) -> Callable[..., Any]:
    def resolve(parent: Any, info: Any, **args: Any) -> Any:
        value = fn(info.context.state, parent, args) if fn is not None else default_field_resolver(parent, info, **args)
        info.context.actual += actual_field_cost(type_name, field_name, return_type, value)
        return value

    return resolve


@lru_cache(maxsize=32)
def executable_schema(version: str) -> tuple[GraphQLSchema, Features]:
    schema, features = schema_for(version)
    _bind(schema)
    return schema, features
