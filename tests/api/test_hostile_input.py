"""Hostile bodies against every route of the real app that takes one: never a 500.

The routes are found from the app itself (every POST/PUT/PATCH handler, the ingest uploads
and the Shopify webhook included), so a route added later is covered without editing this
file. Each gets deep arrays, deep objects, huge strings and numbers, invalid UTF-8, NUL
bytes, an empty body, plain garbage and a wrong content type; the answer must be a 4xx
application/problem+json (or the route's ordinary success where the input happens to be
acceptable, e.g. an empty body to a release), and nothing may be held or published.
"""

from __future__ import annotations

import re

import pytest
from litestar.routes import HTTPRoute

from availability.domain.jsonlimits import MAX_DEPTH, check_depth, json_depth
from availability.ingest.streams import StreamNames

PROBLEM = "application/problem+json"
DEEP = 5000
JSON = {"content-type": "application/json"}

HOSTILE: dict[str, tuple[bytes, dict[str, str]]] = {
    "deep arrays": (b"[" * DEEP, JSON),
    "deep arrays, closed": (b"[" * DEEP + b"]" * DEEP, JSON),
    "deep objects": (b'{"a":' * DEEP + b"1" + b"}" * DEEP, JSON),
    "deep inside a field": (b'{"reservation_id": "r1", "channel": "online", "lines": ' + b"[" * DEEP, JSON),
    "deep JSON Lines row": (b'{"sku": "A", "location": "DC1"}\n' + b"[" * DEEP + b"\n", {"content-type": "application/x-ndjson"}),
    "huge string": (b'{"reservation_id": "' + b"x" * 900_000 + b'"}', JSON),
    "huge string, over the API's body limit": (b'{"reservation_id": "' + b"x" * 2_000_000 + b'"}', JSON),
    "huge integer": (b'{"quantity": ' + b"9" * 100_000 + b"}", JSON),
    "huge exponent": (b'{"units": 1e999999, "skus": [1e999999]}', JSON),
    "invalid UTF-8": (b'{"sku": "\xff\xfe\xc3"}', JSON),
    "NUL bytes": (b'{"sku": "a\x00b"}\x00\x00', JSON),
    "only NUL": (b"\x00" * 64, JSON),
    "empty": (b"", JSON),
    "garbage": (b"hello", JSON),
    "null": (b"null", JSON),
    "a number": (b"42", JSON),
    "wrong content type": (b"<stock><sku>A</sku></stock>", {"content-type": "application/xml"}),
    "form encoded": (b"sku=A&quantity=1", {"content-type": "application/x-www-form-urlencoded"}),
}
#: routes that decode their body as JSON: deep nesting is refused by name there
DECODES_JSON = re.compile(
    r"^/v1/(reservations|availability/batch|rules(/preview|/1|/1/rollback)?|locations/X|channels/X|events|ingest/(pos|oms))$"
)


def body_routes(app) -> list[tuple[str, str]]:
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path = re.sub(r"\{[a-z_]+:int\}", "1", route.path)
        path = re.sub(r"\{[a-z_]+:str\}", "X", path)
        for method in sorted(route.http_handler_names if hasattr(route, "http_handler_names") else route.methods):
            if method in ("POST", "PUT", "PATCH"):
                found.append((method, path))
    return sorted(set(found))


async def nothing_happened(api) -> None:
    runtime = api.runtime
    names = StreamNames.from_settings(runtime.settings)
    for stream in names.all_partitions():
        assert await runtime.redis.xlen(stream) == 0, stream
    assert await runtime.redis.xlen(names.dlq) == 0
    stock = await runtime.ledger.stock_many(["A", "TEE", "r1"])
    assert all(not locations for locations in stock.values()), stock


async def test_every_body_route_is_covered(api):
    routes = body_routes(api.app)
    paths = {path for _, path in routes}
    for expected in (
        "/v1/reservations", "/v1/availability/batch", "/v1/rules", "/v1/rules/preview", "/v1/locations/X",
        "/v1/channels/X", "/v1/events", "/v1/ingest/pos", "/v1/ingest/oms", "/v1/ingest/erp/snapshot",
        "/v1/ingest/erp/purchase-orders", "/v1/ingest/erp/transfers", "/v1/ingest/wms/x12", "/webhooks/shopify",
    ):
        assert expected in paths, (expected, paths)


@pytest.mark.parametrize("kind", list(HOSTILE))
async def test_no_hostile_body_gets_a_500(api, kind):
    body, headers = HOSTILE[kind]
    for method, path in body_routes(api.app):
        response = await api.client.request(method, path, content=body, headers=headers)
        where = f"{kind}: {method} {path} -> {response.status_code} {response.text[:300]}"
        assert response.status_code < 500, where
        if response.status_code >= 400:
            assert response.headers["content-type"].startswith(PROBLEM), where
            problem = response.json()
            assert problem["status"] == response.status_code and problem["detail"], where
        if kind.startswith("huge string, over") and DECODES_JSON.match(path) and "/ingest/" not in path:
            assert response.status_code == 413, where
        if kind.startswith("deep") and kind != "deep JSON Lines row" and DECODES_JSON.match(path):
            assert response.status_code == 400, where
            assert response.json()["type"].endswith("nesting-too-deep"), where
            assert str(MAX_DEPTH) in response.json()["detail"], where
    await nothing_happened(api)


async def test_the_depth_limit_is_configurable_and_names_itself(make_api):
    async with make_api(max_json_depth=3) as api:
        ok = await api.client.post("/v1/availability/batch", json={"skus": ["TEE"]})
        assert ok.status_code == 200, ok.text
        deep = await api.client.post("/v1/events", json=[[[[{"x": 1}]]]])
        assert deep.status_code == 400
        problem = deep.json()
        assert problem["type"] == "urn:availability:problem:nesting-too-deep"
        assert problem["max_depth"] == 3 and problem["depth"] == 5
        assert "3" in problem["detail"]


async def test_brackets_inside_strings_are_not_nesting(api):
    # 200 brackets inside a string are text: the body is judged on its own merits (422 here).
    response = await api.client.post("/v1/availability/batch", json={"skus": ["[" * 100 + "{" * 100]})
    assert response.status_code == 422, response.text
    assert "nesting" not in response.text


def _reference_depth(text: bytes) -> int | None:
    """A plain byte-by-byte JSON scanner, the oracle for the fast one: the depth, or None
    for input a decoder stops reading early (a string that never closes, a backslash
    outside a string), where the fast scanner need not agree."""
    depth = best = 0
    in_string = escaped = False
    for char in text.decode():
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "\\":
            return None
        elif char in "[{":
            depth += 1
            best = max(best, depth)
        elif char in "]}":
            depth -= 1
    return None if in_string else best


def test_the_fast_scanner_agrees_with_a_byte_by_byte_one():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    alphabet = st.sampled_from(["[", "]", "{", "}", '"', "\\", "a", ":", ",", "\\\\", '\\"', " "])

    @settings(max_examples=300, deadline=None)
    @given(st.lists(alphabet, max_size=60))
    def agree(parts):
        text = "".join(parts).encode()
        expected = _reference_depth(text)
        if expected is not None:
            assert json_depth(text) == expected, text

    agree()
    # and many more cheap random ones than hypothesis could shrink in the time
    import random

    rng = random.Random(7)
    pieces = ["[", "]", "{", "}", '"', "\\", "a", ":", ",", "\\\\", '\\"', " "]
    checked = 0
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40))).encode()
        expected = _reference_depth(text)
        if expected is not None:
            assert json_depth(text) == expected, text
            checked += 1
    assert checked > 1000


def test_check_depth_fast_path_and_refusal():
    check_depth(b"[" * MAX_DEPTH)  # at the limit: fine
    with pytest.raises(Exception) as info:
        check_depth(b"[" * (MAX_DEPTH + 1))
    assert info.value.slug == "nesting-too-deep"
    check_depth(b'["' + b"[" * 10_000 + b'"]')  # brackets inside a string
