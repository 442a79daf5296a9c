"""The lookup fast path (api/fastpath.py) answers byte for byte what Litestar answers.

Every request is sent twice to the same app over the same data: once with the fast path on,
once with it off (Litestar's routes answer). Status, body bytes and headers must be equal,
and the fast path must really have answered the requests it is meant to (else the comparison
would only compare Litestar with itself).
"""

from __future__ import annotations

import json

import pytest

from availability.embedded_redis import free_port
from availability.ledger.stockreader import PipelinedStockReader

from tests.api.conftest import ADMIN, PLANNER, READER, RESERVER, bearer, receipt
from tests.api.test_availability import setup_stores

NO_KEY = {"Authorization": ""}
#: Start-up bound of the real `serve` process: generous for a shared CI machine under load,
#: still inside pytest's 300 s per test.
START_UP_BOUND_S = 180


async def same_answer(api, method: str, url: str, *, fast: bool, headers=None, content=None, **kw):
    """Send twice (fast path on, then off); assert identical answers and who answered."""
    switch = api.app.state.fast_lookups
    # the same id both times, so that the echoed X-Correlation-Id compares too
    headers = {**(headers or {}), "X-Correlation-Id": "fastpath-compare"}
    answers = []
    for enabled in (True, False):
        switch.enabled = enabled
        before = switch.answered
        resp = await api.client.request(method, url, headers=headers, content=content, **kw)
        answers.append((resp, switch.answered - before))
    switch.enabled = True
    (quick, by_fast), (slow, by_litestar) = answers
    assert by_litestar == 0
    assert by_fast == (1 if fast else 0), f"{method} {url}: fast path answered {by_fast}"
    assert quick.status_code == slow.status_code, (url, quick.text, slow.text)
    assert quick.content == slow.content, url
    assert sorted(quick.headers.multi_items()) == sorted(slow.headers.multi_items()), url
    return slow


async def same_batch(api, body: bytes, *, fast: bool, headers=None, content_type="application/json"):
    headers = {**(headers or {}), "Content-Type": content_type}
    return await same_answer(api, "POST", "/v1/availability/batch", fast=fast, headers=headers, content=body)


SINGLE_FAST = [
    "/v1/availability/TEE",
    "/v1/availability/CAP",
    "/v1/availability/NEVER-SEEN",
    "/v1/availability/TEE?channel=online",
    "/v1/availability/TEE?channel=pos&location=STORE-2",
    "/v1/availability/TEE?channel=pos&location_group=north",
    "/v1/availability/TEE?channel=pos&location=DC1",
    "/v1/availability/TEE?location=STORE-1&location_group=north",
    "/v1/availability/A.b_c-1:x~y",
    "/v1/availability/TEE?location=NOWHERE",  # online sells from every location, listed or not
    "/v1/availability/" + "S" * 128,
]

SINGLE_LITESTAR = [
    "/v1/availability/TEE?channel=marketplace",  # unknown channel: 404
    "/v1/availability/TEE?channel=pos&location=NOWHERE",  # unknown location: 404
    "/v1/availability/TEE?location_group=south",  # empty group: 404
    "/v1/availability/" + "S" * 129,  # too long: 4xx
    "/v1/availability/T%7CEE",  # '|' is not in a SKU
    "/v1/availability/T%20EE",  # escaped: Litestar decodes it
    "/v1/availability/TEE?channel=online&channel=pos",  # repeated
    "/v1/availability/TEE?channel=",  # empty value
    "/v1/availability/TEE?chanel=online",  # unknown parameter (Litestar ignores it)
    "/v1/availability/TEE?channel=" + "c" * 129,
    "/v1/availability/TEE?channel=p+os",
    "/v1/availability/TEE/",
    "/v1/availability/TEE/explain",
    "/v1/availability/batch",
]


@pytest.mark.parametrize("url", SINGLE_FAST)
async def test_single_lookup_fast_and_identical(api, url):
    await setup_stores(api)
    resp = await same_answer(api, "GET", url, fast=True)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"


@pytest.mark.parametrize("url", SINGLE_LITESTAR)
async def test_odd_single_lookups_fall_through_to_litestar(api, url):
    await setup_stores(api)
    await same_answer(api, "GET", url, fast=False)


@pytest.mark.parametrize(
    ("headers", "fast", "status"),
    [
        (NO_KEY, False, 401),
        (bearer("no-such-key"), False, 401),
        ({**NO_KEY, "X-API-Key": "no-such-key"}, False, 401),
        (bearer(RESERVER), False, 403),
        (bearer(READER), True, 200),
        ({**NO_KEY, "X-API-Key": PLANNER}, True, 200),
        (bearer(ADMIN), True, 200),
    ],
)
async def test_keys_and_scopes(api, headers, fast, status):
    await setup_stores(api)
    resp = await same_answer(api, "GET", "/v1/availability/TEE", fast=fast, headers=headers)
    assert resp.status_code == status
    resp = await same_batch(api, b'{"skus":["TEE"]}', fast=fast, headers=headers)
    assert resp.status_code == status


async def test_public_read_needs_no_key_on_the_fast_path(make_api):
    async with make_api(key=ADMIN, public_read=True) as api:
        await setup_stores(api)
        resp = await same_answer(api, "GET", "/v1/availability/TEE?channel=pos", fast=True, headers=NO_KEY)
        assert resp.status_code == 200
        resp = await same_batch(api, b'{"skus":["TEE","CAP"]}', fast=True, headers=NO_KEY)
        assert resp.status_code == 200
        # a read key is still checked when one is presented
        await same_answer(api, "GET", "/v1/availability/TEE", fast=False, headers=bearer("wrong"))


async def test_rate_limit_refusal_is_litestars(make_api):
    """The fast path takes the same token as the gate; once the bucket is empty Litestar refuses."""
    async with make_api(rate_limit_per_second=1) as api:
        switch = api.app.state.fast_lookups
        assert (await api.client.get("/v1/availability/TEE")).status_code == 200
        assert switch.answered == 1
        resp = await api.client.get("/v1/availability/TEE")
        assert resp.status_code == 429 and resp.headers["retry-after"] == "1"
        assert switch.answered == 1


BATCH_FAST = [
    {"skus": ["TEE"]},
    {"skus": ["TEE", "CAP", "NEVER-SEEN", "TEE"]},
    {"skus": ["CAP", "TEE"], "channel": "pos"},
    {"skus": ["TEE"], "channel": "pos", "location": "STORE-2"},
    {"skus": ["TEE"], "channel": "pos", "location_group": "north"},
    {"skus": ["TEE"], "location": "STORE-1", "location_group": "north"},
    {"skus": [f"SKU-{n}" for n in range(500)]},
]

BATCH_LITESTAR = [
    b'{"skus":[]}',
    json.dumps({"skus": [f"SKU-{n}" for n in range(501)]}).encode(),
    b'{"skus":["TEE"],"extra":1}',
    b'{"skus":["T|EE"]}',
    b'{"skus":["' + b"S" * 129 + b'"]}',
    b'{"skus":["TEE"],"channel":"marketplace"}',
    b'{"skus":["TEE"],"channel":"pos","location":"NOWHERE"}',
    b'{"skus":["TEE"],"channel":""}',
    b'{"skus":"TEE"}',
    b'{"skus":[1]}',
    b"{not json",
    b"",
    b"[]",
    b'{"skus":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["TEE"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}',
]


@pytest.mark.parametrize("body", BATCH_FAST)
async def test_batch_fast_and_identical(api, body):
    await setup_stores(api)
    resp = await same_batch(api, json.dumps(body).encode(), fast=True)
    assert resp.status_code == 200


@pytest.mark.parametrize("body", BATCH_LITESTAR)
async def test_odd_batches_fall_through_to_litestar(api, body):
    await setup_stores(api)
    resp = await same_batch(api, body, fast=False)
    assert 400 <= resp.status_code < 500


@pytest.mark.parametrize("content_type", ["text/plain", "application/json; charset=utf-8"])
async def test_other_content_types_fall_through(api, content_type):
    await setup_stores(api)
    await same_batch(api, b'{"skus":["TEE"]}', fast=False, content_type=content_type)


async def test_redis_down_is_litestars_answer(api):
    """A reader whose Redis refuses connections (a free port): Litestar gives its 503."""
    await setup_stores(api)
    switch = api.app.state.fast_lookups
    ctx = api.app.state.api
    reader = ctx.reader
    ctx.reader = PipelinedStockReader(f"redis://127.0.0.1:{free_port()}", api.ledger.keys)
    try:
        resp = await api.client.get("/v1/availability/TEE")
    finally:
        ctx.reader = reader
    assert resp.status_code == 503 and switch.answered == 0


def test_server_choice_from_the_environment(monkeypatch):
    from availability.api.commands import default_server

    monkeypatch.delenv("AVAILABILITY_SERVER", raising=False)
    assert default_server() == "granian"
    monkeypatch.setenv("AVAILABILITY_SERVER", "Uvicorn")
    assert default_server() == "uvicorn"
    monkeypatch.setenv("AVAILABILITY_SERVER", "gunicorn")
    with pytest.raises(SystemExit, match="granian, uvicorn"):
        default_server()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_granian_serves_the_same_lookup_and_counts_it(redis_url, key_prefix, tmp_path, workers):
    """`availability serve --server granian` (RSGI, api/rsgi.py), a real process: the fast path
    answers as under the in-process app, and /metrics counts every worker's lookups."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx

    pytest.importorskip("granian")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AVAILABILITY_")}
    env.update(
        AVAILABILITY_REDIS_URL=redis_url,
        AVAILABILITY_KEY_PREFIX=key_prefix,
        AVAILABILITY_DATA_DIR=str(tmp_path / "var"),
        AVAILABILITY_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/rules.db",
        AVAILABILITY_API_KEYS=json.dumps([{"key": READER, "scopes": ["read"]}]),
        AVAILABILITY_SERVICES='["expiry"]',
    )
    cmd = [sys.executable, "-m", "availability.cli", "serve", "--server", "granian", "--port", str(port)]
    log_path = tmp_path / "serve.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([*cmd, "--workers", str(workers)], env=env, cwd=tmp_path,
                                stdout=log, stderr=subprocess.STDOUT)

    def log_tail() -> str:
        return log_path.read_text(errors="replace")[-4000:]

    base = f"http://127.0.0.1:{port}"
    try:
        # Generous for a loaded CI machine (workers spawn and import everything); a serve that
        # dies fails the wait at once, with its log, as tests/runtime/conftest.py does.
        deadline = time.monotonic() + START_UP_BOUND_S
        while True:
            assert proc.poll() is None, f"granian exited with {proc.returncode}: {log_tail()}"
            try:
                if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"granian not ready in {START_UP_BOUND_S}s: {log_tail()}"
            time.sleep(0.2)
        for _ in range(6):
            resp = httpx.get(f"{base}/v1/availability/NEVER-SEEN", headers=bearer(READER))
            assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
            assert resp.content == b'{"sku":"NEVER-SEEN","channel":"online","ats":0,"locations":[],"rules_version":0}'
        assert httpx.get(f"{base}/v1/availability/X").status_code == 401
        metrics = httpx.get(f"{base}/metrics").text
        route = 'route="/v1/availability/{sku}"'
        assert f'availability_http_request_duration_seconds_count{{method="GET",{route},status="200"}} 6.0' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log_tail()


async def test_a_kept_answer_is_not_given_once_stock_or_rules_change(api):
    """The fast path resends its last answer for a (SKU, query) only while the stock hash and
    the RuleBook are the ones it was computed from: a receipt, a reservation and a rule
    change each give a new answer, the same bytes as Litestar's."""
    await setup_stores(api)
    url = "/v1/availability/TEE"
    first = await same_answer(api, "GET", url, fast=True)
    again = await same_answer(api, "GET", url, fast=True)
    assert again.content == first.content and first.json()["ats"] == 17
    await api.seed(receipt("TEE", "DC1", 5, event_id="more-tee"))
    after_receipt = await same_answer(api, "GET", url, fast=True)
    assert after_receipt.json()["ats"] == 22
    resp = await api.client.post("/v1/reservations", json={"reservation_id": "kept-1", "channel": "online",
                                                            "lines": [{"sku": "TEE", "quantity": 2}]})
    assert resp.status_code == 201, resp.text
    assert (await same_answer(api, "GET", url, fast=True)).json()["ats"] == 20
    resp = await api.client.post("/v1/rules", json={"kind": "safety_stock", "units": 1})
    assert resp.status_code == 201, resp.text
    await api.runtime.rules.refresh()
    after_rule = await same_answer(api, "GET", url, fast=True)
    assert after_rule.json()["ats"] == 17 and after_rule.json()["rules_version"] > first.json()["rules_version"]
