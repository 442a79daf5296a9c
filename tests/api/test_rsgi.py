"""The served app on Granian's RSGI interface (api/rsgi.py), over real HTTP.

The lookup routes are answered from Granian's request object; everything else goes through
the RSGI-to-ASGI bridge into Litestar. Every request of test_fastpath's lists is sent twice
to the same server, the fast path on and then off (Litestar answers through the bridge):
status, body bytes and headers must be equal (bar `date`, the server's clock), and the fast
path must really have answered the ones it is meant to. Then what only the bridge carries:
uploads in chunks, streamed answers, errors, and the metrics of both paths.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest

pytest.importorskip("granian")

from tests.api.conftest import ADMIN, KEYS, READER, RESERVER, bearer  # noqa: E402
from tests.api.served import served_settings, serving_rsgi  # noqa: E402
from tests.api.test_availability import setup_stores  # noqa: E402
from tests.api.test_fastpath import BATCH_FAST, BATCH_LITESTAR, SINGLE_FAST, SINGLE_LITESTAR  # noqa: E402


BODY_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def rsgi_server(redis_url, tmp_path_factory):
    # A small body limit: the oversized bodies below then fit the socket buffers, so the
    # client reads the 413 instead of a reset when the server answers before reading it all.
    config = served_settings(redis_url, tmp_path_factory.mktemp("rsgi"), "rs", KEYS, services=["expiry"],
                             max_body_bytes=BODY_LIMIT)
    with serving_rsgi(config) as (port, app):
        yield f"http://127.0.0.1:{port}", app


@pytest.fixture
async def api(rsgi_server):
    base, app = rsgi_server
    async with httpx.AsyncClient(base_url=base, headers=bearer(ADMIN), timeout=30) as client:

        async def seed(*events: dict) -> None:
            resp = await client.post("/v1/events", json=list(events))
            assert resp.status_code == 200, resp.text

        harness = SimpleNamespace(client=client, app=app.served.app, seed=seed, rsgi=app)
        await setup_stores(harness)
        yield harness


async def same_answer(api, method: str, url: str, *, fast: bool, headers=None, content=None):
    switch = api.app.state.fast_lookups
    assert api.rsgi.fast is switch, "RSGI and ASGI share one fast path (one switch, one counter)"
    headers = {**(headers or {}), "X-Correlation-Id": "rsgi-compare"}
    answers = []
    for enabled in (True, False):
        switch.enabled = enabled
        before = switch.answered
        resp = await api.client.request(method, url, headers=headers, content=content)
        answers.append((resp, switch.answered - before))
    switch.enabled = True
    (quick, by_fast), (slow, by_litestar) = answers
    assert by_litestar == 0
    if fast is not None:
        assert by_fast == (1 if fast else 0), f"{method} {url}: fast path answered {by_fast}"
    assert quick.status_code == slow.status_code, (url, quick.text, slow.text)
    assert quick.content == slow.content, url

    def headers_of(resp):
        return sorted((k, v) for k, v in resp.headers.multi_items() if k != "date")

    assert headers_of(quick) == headers_of(slow), url
    assert quick.headers["x-correlation-id"] == "rsgi-compare"
    return slow


@pytest.mark.parametrize("url", SINGLE_FAST)
async def test_single_lookup_over_rsgi_is_byte_identical(api, url):
    resp = await same_answer(api, "GET", url, fast=True)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"


@pytest.mark.parametrize("url", SINGLE_LITESTAR)
async def test_odd_lookups_over_rsgi_are_litestars(api, url):
    # RSGI hands the app the path decoded (no raw path): an escaped SKU that decodes to a
    # plain one may be answered by the fast path; the bytes must be Litestar's all the same
    await same_answer(api, "GET", url, fast=None if "%" in url else False)


@pytest.mark.parametrize("body", BATCH_FAST)
async def test_batch_over_rsgi_is_byte_identical(api, body):
    headers = {"Content-Type": "application/json"}
    resp = await same_answer(api, "POST", "/v1/availability/batch", fast=True, headers=headers,
                             content=json.dumps(body).encode())
    assert resp.status_code == 200


@pytest.mark.parametrize("body", BATCH_LITESTAR)
async def test_odd_batches_over_rsgi_are_litestars(api, body):
    headers = {"Content-Type": "application/json"}
    resp = await same_answer(api, "POST", "/v1/availability/batch", fast=False, headers=headers, content=body)
    assert 400 <= resp.status_code < 500


@pytest.mark.parametrize(
    ("headers", "fast", "status"),
    [
        ({"Authorization": ""}, False, 401),
        (bearer("no-such-key"), False, 401),
        ({"Authorization": "", "X-API-Key": "no-such-key"}, False, 401),
        (bearer(RESERVER), False, 403),
        (bearer(READER), True, 200),
        ({"Authorization": "", "X-API-Key": READER}, True, 200),
        # both usable: the first in the request wins, which the RSGI path leaves to the ASGI
        # side of the bridge (headers in request order there): either may answer
        ({"X-API-Key": READER, "Authorization": f"Bearer {READER}"}, None, 200),
        ({"X-API-Key": RESERVER, "Authorization": f"Bearer {READER}"}, False, 403),
    ],
)
async def test_keys_and_scopes_over_rsgi(api, headers, fast, status):
    resp = await same_answer(api, "GET", "/v1/availability/TEE", fast=fast, headers=headers)
    assert resp.status_code == status


async def test_a_new_correlation_id_per_fast_answer(api):
    ids = {(await api.client.get("/v1/availability/TEE")).headers["x-correlation-id"] for _ in range(3)}
    assert len(ids) == 3
    insane = await api.client.get("/v1/availability/TEE", headers={"X-Correlation-Id": "no spaces allowed"})
    assert insane.headers["x-correlation-id"] not in ("no spaces allowed", *ids)
    asked = await api.client.get("/v1/availability/TEE", headers={"X-Request-Id": "req-7"})
    assert asked.headers["x-correlation-id"] == "req-7"


async def test_the_bridge_carries_a_chunked_upload_and_the_body_limit(api):
    """A body sent in chunks (no Content-Length) reaches Litestar whole; one over the limit is 413."""
    events = [{"event_id": f"chunk-{n}", "type": "receipt", "source": "wms", "occurred_at": "2026-11-20T10:00:00Z",
               "sku": "CHUNKED", "location": "DC1", "quantity": 1} for n in range(200)]
    raw = json.dumps(events).encode()

    async def chunks(data: bytes):
        for start in range(0, len(data), 1000):
            yield data[start : start + 1000]

    resp = await api.client.post("/v1/events", content=chunks(raw), headers={"Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text
    assert (await api.client.get("/v1/availability/CHUNKED")).json()["ats"] == 200
    too_big = b"[" + b" " * BODY_LIMIT + b"]"
    resp = await api.client.post("/v1/events", content=chunks(too_big), headers={"Content-Type": "application/json"})
    assert resp.status_code == 413, resp.text
    assert resp.headers["content-type"] == "application/problem+json"


async def test_the_bridge_streams_a_file_answer(api):
    """Static files are streamed by Litestar in chunks: the bridge sends them as one whole body."""
    from availability.console.assets import STATIC_DIR, STATIC_PATH

    expected = (STATIC_DIR / "vendor" / "swagger-ui-bundle.js").read_bytes()
    resp = await api.client.get(f"{STATIC_PATH}/vendor/swagger-ui-bundle.js")
    assert resp.status_code == 200
    assert resp.content == expected and len(expected) > 500_000
    assert resp.headers["cache-control"] == "max-age=86400, public"


async def test_unknown_routes_and_methods_are_litestars_problems(api):
    resp = await api.client.get("/no/such/route")
    assert resp.status_code == 404 and resp.headers["content-type"] == "application/problem+json"
    assert "x-correlation-id" in resp.headers
    resp = await api.client.delete("/v1/availability/TEE")
    assert resp.status_code == 405 and "GET" in resp.headers["allow"]


async def test_metrics_count_both_paths(api):
    def count(text: str, status: str) -> float:
        label = f'availability_http_request_duration_seconds_count{{method="GET",route="/v1/availability/{{sku}}",status="{status}"}}'
        return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(label + " ")), 0.0)

    before = (await api.client.get("/metrics")).text
    for _ in range(5):
        assert (await api.client.get("/v1/availability/TEE")).status_code == 200
    assert (await api.client.get("/v1/availability/TEE?channel=marketplace")).status_code == 404
    after = (await api.client.get("/metrics")).text
    assert count(after, "200") - count(before, "200") == 5
    assert count(after, "404") - count(before, "404") == 1


async def test_a_batch_without_length_or_over_the_limit_is_streamed_to_litestar(api):
    """The RSGI path reads a batch body itself only when its declared length fits the limit."""
    switch = api.app.state.fast_lookups
    headers = {"Content-Type": "application/json"}

    async def chunks(data: bytes):
        yield data

    before = switch.answered
    resp = await api.client.post("/v1/availability/batch", content=chunks(b'{"skus":["TEE"]}'), headers=headers)
    assert resp.status_code == 200 and switch.answered == before, "chunked: Litestar's route answers"
    fast = await api.client.post("/v1/availability/batch", content=b'{"skus":["TEE"]}', headers=headers)
    assert fast.content == resp.content and switch.answered == before + 1
    big = b'{"skus":["TEE"],"pad":"' + b"x" * BODY_LIMIT + b'"}'
    resp = await api.client.post("/v1/availability/batch", content=big, headers=headers)
    assert resp.status_code == 413 and switch.answered == before + 1
