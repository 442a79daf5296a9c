"""The cost model: a leaky bucket of points per access token, and query costs.

Shopify's documented rules (shopify.dev, "API rate limits"): an object costs 1, a scalar
or enum 0, a connection 2 plus ``first`` (or ``last``) times the cost of one node, a
mutation 10; the requested cost is reserved when a request is admitted and the unused
part refunded when the actual cost is known. The simulator applies them to the parsed
document. Its own choices: a plain list of objects (``quantities``, ``changes``) costs
1 whatever its length; ``edges``/``pageInfo`` cost nothing beyond the connection;
``nodes(ids:)`` costs each id's selection; an abstract selection costs the dearest of its
type conditions; a mutation's price is :class:`~.config.CostModel` (flat 10 by default,
per entry in the pessimistic preset), replays and user-error answers included.
"""

from __future__ import annotations

import math
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    SelectionSetNode,
    get_named_type,
    is_abstract_type,
    is_object_type,
)
from graphql.execution.values import get_argument_values

from .config import MAX_INPUT_ARRAY


class LeakyBucket:
    """Points bucket that refills continuously at ``restore_rate`` up to ``capacity``."""

    def __init__(self, capacity: float, restore_rate: float, now: float) -> None:
        self.capacity = capacity
        self.restore_rate = restore_rate
        self.available = capacity
        self._at = now

    def refill(self, now: float) -> None:
        if now > self._at:
            self.available = min(self.capacity, self.available + (now - self._at) * self.restore_rate)
            self._at = now

    def status(self) -> dict[str, Any]:
        return {
            "maximumAvailable": float(self.capacity),
            "currentlyAvailable": int(math.floor(self.available)),
            "restoreRate": float(self.restore_rate),
        }


class CostError(Exception):
    """A paging argument Shopify refuses before running anything (``BAD_REQUEST``)."""


def is_connection(type_: Any) -> bool:
    return get_named_type(type_).name.endswith("Connection")


def _unwrap_list(type_: Any) -> bool:
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    return isinstance(type_, GraphQLList)


class Coster:
    """Requested cost of one operation against one schema (variables already coerced)."""

    def __init__(
        self, schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode], variables: dict[str, Any], bulk: bool = False
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.bulk = bulk  # inside a bulk query, connections need no first/last

    def _fields(self, selection_set: SelectionSetNode | None, parent: GraphQLObjectType | Any) -> list[tuple[Any, FieldNode]]:
        """(parent type, field node) pairs, fragments flattened; abstract parents keep
        per-type groups apart so the dearest one is charged."""
        out: list[tuple[Any, FieldNode]] = []
        if selection_set is None:
            return out
        for sel in selection_set.selections:
            if isinstance(sel, FieldNode):
                out.append((parent, sel))
            elif isinstance(sel, InlineFragmentNode):
                t = self.schema.get_type(sel.type_condition.name.value) if sel.type_condition else parent
                out.append((t, sel))  # type: ignore[arg-type]
            elif isinstance(sel, FragmentSpreadNode):
                frag = self.fragments.get(sel.name.value)
                if frag is not None:
                    out.append((self.schema.get_type(frag.type_condition.name.value), frag))  # type: ignore[arg-type]
        return out

    def selection(self, selection_set: SelectionSetNode | None, parent: Any) -> float:
        """Cost of a selection set on an object (not counting the object itself)."""
        plain = 0.0
        by_type: dict[str, float] = {}
        for t, node in self._fields(selection_set, parent):
            if isinstance(node, FieldNode):
                plain += self.field(t, node)
            else:  # a fragment: cost it on its own type condition
                c = self.selection(node.selection_set, t)
                if is_abstract_type(parent):
                    by_type[t.name] = by_type.get(t.name, 0.0) + c
                else:
                    plain += c
        return plain + (max(by_type.values()) if by_type else 0.0)

    def field(self, parent: Any, node: FieldNode) -> float:
        name = node.name.value
        if name.startswith("__") or not hasattr(parent, "fields") or name not in parent.fields:
            return 0.0
        field_def = parent.fields[name]
        named = get_named_type(field_def.type)
        if not (is_object_type(named) or is_abstract_type(named)):
            return 0.0
        args = get_argument_values(field_def, node, self.variables)
        if is_connection(field_def.type):
            return 2.0 + self.page_size(parent.name, name, args) * self.connection_node(node, named)
        if name == "nodes" and parent is self.schema.query_type:
            ids = args.get("ids") or []
            if len(ids) > MAX_INPUT_ARRAY:
                raise CostError(f"The input array size of {len(ids)} is greater than the maximum allowed of {MAX_INPUT_ARRAY}.")
            return len(ids) * (1.0 + self.selection(node.selection_set, named))
        return 1.0 + self.selection(node.selection_set, named)

    def page_size(self, parent: str, name: str, args: dict[str, Any]) -> int:
        first, last = args.get("first"), args.get("last")
        size = first if first is not None else last
        if size is None:
            if self.bulk:
                return 1
            raise CostError(f"you must provide one of first or last to properly paginate the `{name}` connection.")
        if not 0 < size <= MAX_INPUT_ARRAY:
            raise CostError(f"The 'first' and 'last' arguments on '{parent}.{name}' must be between 1 and {MAX_INPUT_ARRAY}")
        return size

    def connection_node(self, node: FieldNode, conn_type: Any) -> float:
        """Cost of one node of a connection: 1 + its selection, through edges or nodes."""
        best = 0.0
        for _t, sub in self._fields(node.selection_set, conn_type):
            if not isinstance(sub, FieldNode):
                continue
            if sub.name.value == "nodes":
                node_type = get_named_type(conn_type.fields["nodes"].type)
                best = max(best, 1.0 + self.selection(sub.selection_set, node_type))
            elif sub.name.value == "edges":
                edge_type = get_named_type(conn_type.fields["edges"].type)
                for _t2, e in self._fields(sub.selection_set, edge_type):
                    if isinstance(e, FieldNode) and e.name.value == "node":
                        node_type = get_named_type(edge_type.fields["node"].type)
                        best = max(best, 1.0 + self.selection(e.selection_set, node_type))
        return best


def actual_field_cost(parent_name: str, field_name: str, return_type: Any, value: Any) -> float:
    """Points for one resolved field, by the same rules as :class:`Coster`."""
    if value is None:
        return 0.0
    named = get_named_type(return_type)
    if not (is_object_type(named) or is_abstract_type(named)):
        return 0.0
    if named.name.endswith("Connection"):
        return 2.0
    if parent_name.endswith("Connection"):
        return float(len(value)) if field_name == "nodes" else 0.0  # edges: counted at node
    if parent_name.endswith("Edge") or named.name == "PageInfo":
        return 1.0 if field_name == "node" else 0.0
    if _unwrap_list(return_type):
        if parent_name == "Query":
            return float(sum(1 for v in value if v is not None))
        return 1.0
    return 1.0
