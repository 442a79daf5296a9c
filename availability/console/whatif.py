"""Forms into rule changes, and the what-if chart.

A form posts strings; a rule wants ints, a float and None for "no selector". The
conversion is here once, for the rule editor and the what-if draft, and leaves the
validation itself to the domain (`rule_from_fields`), so a bad value gets the same
message in the console as in the API.
"""

from __future__ import annotations

from typing import Any

from availability.api.schemas import ChannelExposure
from availability.domain.errors import InvalidRule

_INTS = ("units", "priority")
_SELECTORS = ("sku", "category", "location", "location_group", "channel")
_TEXT = ("kind", "note")
_MAX_TEXT = 2000


def rule_fields_from_form(form: Any) -> dict[str, Any]:
    """The rule fields a form filled in; a field left out of the form is left out here."""
    fields: dict[str, Any] = {}
    for name in (*_TEXT, *_INTS, "percent", *_SELECTORS):
        raw = form.get(name)
        if raw is None:
            continue
        if not isinstance(raw, str) or len(raw) > _MAX_TEXT:
            raise InvalidRule(f"`{name}` must be text of at most {_MAX_TEXT} characters")
        value = raw.strip()
        if name in _INTS:
            fields[name] = _number(value, name, int) if value else 0
        elif name == "percent":
            fields[name] = _number(value, name, float) if value else 0.0
        elif name in _SELECTORS:
            fields[name] = value or None
        else:
            fields[name] = value
    return fields


def change_from_form(form: Any) -> dict[str, Any]:
    """One draft change ({"op", "id"?, "rule"?}) in the shape the preview and `apply_changes` take."""
    op = form.get("op")
    if op not in ("create", "update", "delete"):
        raise InvalidRule("`op` is create, update or delete")
    change: dict[str, Any] = {"op": op}
    if op != "create":
        raw_id = str(form.get("id") or "").strip()
        if not raw_id.isdigit() or len(raw_id) > 15:
            raise InvalidRule(f"an {op} needs the rule's id")
        change["id"] = int(raw_id)
    if op != "delete":
        fields = rule_fields_from_form(form)
        if op == "update":
            # An update changes only what was typed: an empty box means "keep", not "clear".
            fields = {k: v for k, v in fields.items() if str(form.get(k) or "").strip()}
            if not fields:
                raise InvalidRule("an update needs at least one field to change")
        change["rule"] = fields
    return change


def _number(value: str, name: str, kind: type) -> Any:
    try:
        number = kind(value)
    except ValueError:
        raise InvalidRule(f"`{name}` must be a {'whole ' if kind is int else ''}number, not {value[:40]!r}") from None
    if kind is float and (number != number or number in (float("inf"), float("-inf"))):
        raise InvalidRule(f"`{name}` must be a finite number")
    return number


def exposure_chart(channels: list[ChannelExposure], width: int = 560, bar: int = 14) -> dict[str, Any]:
    """Bars of units exposed per channel, before and after, as coordinates for an inline SVG."""
    peak = max([1, *(max(c.units_before, c.units_after) for c in channels)])
    label_w = 110
    room = width - label_w - 70
    rows = []
    for i, c in enumerate(channels):
        y = 10 + i * (2 * bar + 14)
        rows.append({
            "channel": c.channel,
            "y": y,
            "before_w": round(room * c.units_before / peak, 1),
            "after_w": round(room * c.units_after / peak, 1),
            "before": c.units_before,
            "after": c.units_after,
            "delta": c.delta,
        })
    return {"width": width, "height": 20 + len(channels) * (2 * bar + 14), "bar": bar, "label_w": label_w, "rows": rows}
