"""Wire decoding and validation of canonical events."""

from __future__ import annotations

import pytest

from availability.domain.errors import InvalidEvent
from availability.domain.events import decode_event, decode_events

GOOD = (b'{"event_id": "wms-944-0001-3", "type": "receipt", "source": "wms", '
        b'"occurred_at": "2026-11-20T10:00:00Z", "sku": "TEE-BLK-M", "location": "DC1", "quantity": 40}')


def test_product_md_example_decodes():
    event = decode_event(GOOD)
    assert (event.type, event.quantity, event.occurred_ms) == ("receipt", 40, 1_795_168_800_000)


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"not json", "unparseable"),
        (GOOD.replace(b'"receipt"', b'"teleport"'), "invalid event"),
        (GOOD.replace(b"40", b"-4"), "negative"),
        (GOOD.replace(b"40", b"4000000000"), "exceeds"),
        (GOOD.replace(b'"DC1"', b'"D{C}1"'), "location"),
        (GOOD.replace(b'"receipt"', b'"adjustment"'), "adjustment reason"),
        (GOOD.replace(b'"receipt"', b'"reserve"'), "needs a reference"),
        (GOOD.replace(b'"2026-11-20T10:00:00Z"', b'"yesterday"'), "invalid event"),
        (GOOD.replace(b', "quantity": 40', b""), "quantity"),
    ],
)
def test_bad_events_are_refused_with_a_reason(raw, reason):
    with pytest.raises(InvalidEvent, match=reason):
        decode_event(raw)


def test_a_list_of_events_decodes():
    assert len(decode_events(b"[" + GOOD + b"," + GOOD + b"]")) == 2
