"""Rules as CSV, for planners who keep them in a spreadsheet: export, and an import planned
as a list of changes that can be shown (dry run) before `RuleStore.apply_changes` applies it.

One row per rule, columns `RULE_CSV_COLUMNS` (an export opens and re-imports unchanged):

- a row with an `id` updates that live rule (only if some field differs);
- a row without one creates a rule, unless an identical live rule already exists;
- a row with `delete` = yes/true/1 deletes the rule of its `id`;
- rules the file does not mention are left alone (an import never deletes by omission).

Pure: no database, no clock. Errors name the row (`InvalidRule`, `UnknownRule`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from availability.domain.errors import InvalidRule, UnknownRule
from availability.domain.rules import Rule, rule_from_fields

RULE_CSV_COLUMNS = (
    "id", "kind", "units", "percent", "sku", "category", "location", "location_group", "channel", "priority", "note",
)
_SELECTORS = ("sku", "category", "location", "location_group", "channel")
_TRUE = {"yes", "true", "1", "y"}
#: a planner's sheet, not a data dump: a bigger file is a mistake to refuse, not to parse
MAX_ROWS = 10_000


class PlannedChange(msgspec.Struct, frozen=True, kw_only=True):
    """One change an import would make: what the rule is now (`before`) and would be (`after`)."""

    row: int
    op: str
    rule_id: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    #: the rule version the change was planned against (compare-and-set when applied)
    expected_version: int | None = None

    def as_change(self) -> dict[str, Any]:
        """The shape `RuleStore.apply_changes` takes."""
        fields = {k: v for k, v in (self.after or {}).items() if k not in ("id", "version")}
        change: dict[str, Any] = {"op": self.op, "rule": fields}
        if self.rule_id is not None:
            change["id"] = self.rule_id
            change["expected_version"] = self.expected_version
        return change

    def changed_fields(self) -> list[str]:
        before, after = self.before or {}, self.after or {}
        return [f for f in RULE_CSV_COLUMNS if f != "id" and before.get(f) != after.get(f)]


def rule_row(rule: Rule) -> dict[str, Any]:
    return {f: getattr(rule, f) for f in (*RULE_CSV_COLUMNS, "version")}


def export_rules_csv(rules: Iterable[Rule]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RULE_CSV_COLUMNS)
    for rule in rules:
        writer.writerow(["" if getattr(rule, f) is None else getattr(rule, f) for f in RULE_CSV_COLUMNS])
    return out.getvalue()


def plan_import(text: str, live: Sequence[Rule]) -> list[PlannedChange]:
    """What importing `text` over the `live` rules would change, in file order."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in reader.fieldnames or []]
    if "kind" not in header and "id" not in header:
        raise InvalidRule(f"CSV header must name the rule columns ({','.join(RULE_CSV_COLUMNS)}), not {header!r}")
    unknown = [h for h in header if h not in RULE_CSV_COLUMNS and h != "delete"]
    if unknown:
        raise InvalidRule(f"unknown CSV column(s) {', '.join(unknown)}; columns are {','.join(RULE_CSV_COLUMNS)},delete")
    reader.fieldnames = header
    by_id = {r.id: r for r in live}
    identities = {_identity(r) for r in live}
    planned: list[PlannedChange] = []
    seen_ids: set[int] = set()
    for number, raw in enumerate(reader, start=2):  # row 1 is the header
        if number > MAX_ROWS + 1:
            raise InvalidRule(f"more than {MAX_ROWS} rows: split the file")
        if None in raw:
            raise InvalidRule(f"row {number}: more cells than columns")
        cells = {k: (v or "").strip() for k, v in raw.items()}
        if not any(cells.values()):
            continue
        where = f"row {number}: "
        rule_id = _int(cells.get("id", ""), "id", where) if cells.get("id") else None
        if rule_id is not None:
            if rule_id in seen_ids:
                raise InvalidRule(f"{where}rule {rule_id} appears twice")
            seen_ids.add(rule_id)
        if cells.get("delete", "").lower() in _TRUE:
            current = _live(by_id, rule_id, where, "delete")
            planned.append(PlannedChange(row=number, op="delete", rule_id=current.id, before=rule_row(current),
                                         after=None, expected_version=current.version))
            continue
        fields = _fields(cells, where)
        if rule_id is None:
            draft = rule_from_fields(fields, rule_id=0, version=1, where=where)
            if _identity(draft) in identities:
                continue
            identities.add(_identity(draft))
            planned.append(PlannedChange(row=number, op="create", rule_id=None, before=None, after=rule_row(draft)))
            continue
        current = _live(by_id, rule_id, where, "update")
        # Every column given replaces the field: a cleared cell clears a selector.
        new = rule_from_fields(fields, rule_id=current.id, version=current.version + 1, base=current, where=where)
        if _identity(new) == _identity(current):
            continue
        planned.append(PlannedChange(row=number, op="update", rule_id=current.id, before=rule_row(current),
                                     after=rule_row(new), expected_version=current.version))
    return planned


def _live(by_id: dict[int, Rule], rule_id: int | None, where: str, op: str) -> Rule:
    if rule_id is None:
        raise InvalidRule(f"{where}a {op} needs the rule's id")
    current = by_id.get(rule_id)
    if current is None:
        raise UnknownRule(f"{where}no live rule {rule_id} (leave `id` empty to create one)", rule_id=rule_id)
    return current


def _fields(cells: dict[str, str], where: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, value in cells.items():
        if name in ("id", "delete"):
            continue
        if name in ("units", "priority"):
            fields[name] = _int(value, name, where) if value else 0
        elif name == "percent":
            fields[name] = _float(value, where) if value else 0.0
        elif name in _SELECTORS:
            fields[name] = value or None
        else:
            fields[name] = value
    return fields


def _int(value: str, name: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidRule(f"{where}`{name}` must be a whole number, not {value[:40]!r}") from None


def _float(value: str, where: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise InvalidRule(f"{where}`percent` must be a number, not {value[:40]!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InvalidRule(f"{where}`percent` must be a finite number")
    return number


def _identity(rule: Rule) -> tuple[Any, ...]:
    return tuple(getattr(rule, f) for f in RULE_CSV_COLUMNS if f != "id")
