"""The console over plain HTTP: login and session, CSRF, scopes, the pages, stale edits,
CSV dry run and import, what-if apply, and bad input answered 4xx (never 500)."""

from __future__ import annotations

import asyncio

import re

import httpx
import pytest

from availability.console.session import COOKIE
from tests.api.conftest import ADMIN, PLANNER, READER
from tests.console.conftest import CSRF as CSRF_VALUE

pytestmark = pytest.mark.asyncio


async def test_login_sets_a_secure_httponly_strict_session_cookie_not_the_key(console):
    resp = await console.login(PLANNER)
    assert resp.status_code == 303 and resp.headers["location"] == "/console/skus"
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "Secure" in cookie and "samesite=strict" in cookie.lower()
    assert PLANNER not in cookie
    page = await console.client.get("/console/skus")
    assert page.status_code == 200 and "planner-ann" in page.text


def browser(console, session_id: str | None = None) -> httpx.AsyncClient:
    """Another browser on the same app: the attacker's, or the victim's with a planted cookie."""
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=console.app), base_url="https://console.test",
                               headers={"Accept": "text/html"}, follow_redirects=False)
    if session_id is not None:
        client.cookies.set(COOKIE, session_id, domain="console.test", path="/console")
    return client


def session_id_of(resp: httpx.Response) -> str:
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    return cookie.split(";", 1)[0].split("=", 1)[1]


async def test_login_renews_the_session_id_so_a_planted_one_never_logs_in(console):
    # Visiting the login page hands out no session id to plant: nothing is stored before login.
    async with browser(console) as attacker:
        assert "set-cookie" not in (await attacker.get("/console/login")).headers
        # The attacker logs in with a key of their own (read only) and holds a real, stored id ...
        own = session_id_of(await attacker.post("/console/login", data={"api_key": READER}))
    # ... which they plant in the planner's browser, beside an id they simply made up.
    for planted in (own, "f" * 64):
        async with browser(console, planted) as victim:
            login = await victim.post("/console/login", data={"api_key": PLANNER})
            assert login.status_code == 303
            renewed = session_id_of(login)
            assert renewed != planted and len(renewed) == 64
            assert "planner-ann" in (await victim.get("/console/skus")).text  # the planner is logged in
        async with browser(console, planted) as attacker:
            page = await attacker.get("/console/skus")
            # the planted id is not the planner's session: the login page, never the planner's pages
            assert page.status_code == 303 and page.headers["location"] == "/console/login"
    # the planted real session was dropped at the planner's login, so not even the reader's pages open


async def test_logout_deletes_the_session_so_its_id_is_dead(console):
    async with browser(console) as planner:
        sid = session_id_of(await planner.post("/console/login", data={"api_key": PLANNER}))
        page = await planner.get("/console/rules")
        csrf = CSRF_VALUE.search(page.text).group(1)
        out = await planner.post("/console/logout", data={"_csrf": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/console/login"
        assert "expires=" in out.headers["set-cookie"].lower() and out.headers["set-cookie"].startswith(f"{COOKIE}=null")
    async with browser(console, sid) as replayed:  # the old cookie, kept by someone
        page = await replayed.get("/console/rules")
        assert page.status_code == 303 and page.headers["location"] == "/console/login"


async def test_wrong_key_is_401_and_pages_need_a_session(console):
    assert (await console.login("not-a-key")).status_code == 401
    resp = await console.client.get("/console/rules")
    assert resp.status_code == 303 and resp.headers["location"] == "/console/login"
    htmx = await console.client.get("/console/skus?q=x", headers={"HX-Request": "true"})
    assert htmx.status_code == 401 and htmx.headers["hx-redirect"] == "/console/login"


async def test_post_without_the_csrf_token_is_refused_and_writes_nothing(console):
    await console.login(PLANNER)
    resp = await console.client.post("/console/rules/new", data={"kind": "buffer", "channel": "online", "units": "2"})
    assert resp.status_code == 403 and "CSRF" in resp.text
    wrong = await console.client.post("/console/rules/new", data={"_csrf": "forged", "kind": "buffer", "channel": "online"})
    assert wrong.status_code == 403
    assert await console.runtime.store.list_rules() == []


async def test_read_scope_views_but_cannot_change_rules(console):
    await console.login(READER)
    assert (await console.client.get("/console/rules")).status_code == 200
    resp = await console.post("/console/rules/new", {"kind": "buffer", "channel": "online", "units": "2"})
    assert resp.status_code == 403 and "rules&#39; scope" in resp.text
    assert await console.runtime.store.list_rules() == []


async def test_sku_explorer_finds_a_sku_and_shows_its_arithmetic_with_rule_links(console):
    await console.seed_stock(("TEE-BLK-M", "DC1", 12), ("TEE-BLK-L", "DC1", 5), ("CAP-RED", "DC1", 3))
    safety = await console.runtime.store.create_rule({"kind": "safety_stock", "units": 2}, actor="t")
    buffer = await console.runtime.store.create_rule({"kind": "buffer", "units": 1, "channel": "online"}, actor="t")
    await console.runtime.rules.apply_local_change()
    await console.login(PLANNER)
    found = await console.client.get("/console/skus?q=tee-blk", headers={"HX-Request": "true"})
    assert found.status_code == 200
    assert "TEE-BLK-M" in found.text and "TEE-BLK-L" in found.text and "CAP-RED" not in found.text
    page = await console.client.get("/console/skus/TEE-BLK-M")
    assert page.status_code == 200
    row = page.text[page.text.index('data-location="DC1"'):]
    row = re.sub(r"\s+", " ", row[: row.index("</tr>")])
    # 12 - safety 2 = 10; shared pool 10 + protected 0 - buffer 1 = 9
    assert "on hand <b>12</b>" in row and "safety stock <b>2</b>" in row and "= <b>10</b>" in row
    assert "buffer <b>1</b>" in row and "<b>9</b>" in row
    assert f'href="/console/rules/{safety.id}#v1"' in row and f'href="/console/rules/{buffer.id}#v1"' in row


async def test_sku_search_finds_skus_of_every_partition(console):
    # 24 SKUs over many ledger partitions: on Redis Cluster their stock keys are on every
    # primary, and a search that SCANs one node lists only that node's share
    skus = [f"ROAM-{i:02d}" for i in range(24)]
    assert len({console.runtime.ledger.keys.partition(s) for s in skus}) >= 12
    await console.seed_stock(*((sku, "DC1", 1) for sku in skus))
    await console.login(PLANNER)
    found = await console.client.get("/console/skus?q=roam-", headers={"HX-Request": "true"})
    assert found.status_code == 200 and "24 SKUs" in found.text, found.text
    assert all(f">{sku}</a>" in found.text for sku in skus)


async def test_rules_table_filters_by_scope(console):
    await console.runtime.store.create_rule({"kind": "safety_stock", "units": 2}, actor="t")
    await console.runtime.store.create_rule({"kind": "buffer", "units": 1, "channel": "online", "sku": "TEE"}, actor="t")
    await console.login(PLANNER)
    sku_only = await console.client.get("/console/rules?scope=sku")
    assert "sku=TEE" in sku_only.text and "safety_stock</td>" not in sku_only.text
    global_only = await console.client.get("/console/rules?scope=global")
    assert "safety_stock</td>" in global_only.text and "sku=TEE" not in global_only.text


async def test_stale_edit_is_shown_as_stale_and_not_saved(console):
    await console.login(PLANNER)
    rule = await console.runtime.store.create_rule({"kind": "buffer", "channel": "online", "units": 1}, actor="t")
    first = await console.post(f"/console/rules/{rule.id}", {"expected_version": "1", "units": "3", "kind": "buffer", "channel": "online"})
    assert first.status_code == 303
    stale = await console.post(f"/console/rules/{rule.id}", {"expected_version": "1", "units": "9", "kind": "buffer", "channel": "online"})
    assert stale.status_code == 409 and "Stale edit" in stale.text
    current = await console.runtime.store.get_rule(rule.id)
    assert current.units == 3 and current.version == 2


async def test_history_diff_and_rollback(console):
    await console.login(PLANNER)
    rule = await console.runtime.store.create_rule({"kind": "buffer", "channel": "online", "units": 1}, actor="t")
    await console.post(f"/console/rules/{rule.id}", {"expected_version": "1", "units": "4", "reason": "flash sale"})
    page = await console.client.get(f"/console/rules/{rule.id}")
    assert "flash sale" in page.text and "<del>1</del> → <ins>4</ins>" in page.text
    back = await console.post(f"/console/rules/{rule.id}/rollback", {"to_version": "1", "expected_version": "2"})
    assert back.status_code == 303
    restored = await console.runtime.store.get_rule(rule.id)
    assert restored.units == 1 and restored.version == 3


async def test_csv_dry_run_lists_changes_and_writes_nothing_then_apply_writes_one_version(console):
    await console.login(PLANNER)
    rule = await console.runtime.store.create_rule({"kind": "buffer", "channel": "online", "units": 1}, actor="t")
    exported = await console.client.get("/console/rules.csv")
    assert exported.status_code == 200 and exported.text.startswith("id,kind,units")
    edited = exported.text.replace(f"{rule.id},buffer,1,", f"{rule.id},buffer,5,")
    edited += ",threshold,2,0.0,,,,,online,0,new one\n"
    before = await console.runtime.store.version()
    dry = await console.post("/console/rules/import", {"apply": "no"}, files={"file": ("rules.csv", edited, "text/csv")})
    assert dry.status_code == 200 and "Dry run: 2 changes would be made" in dry.text
    assert await console.runtime.store.version() == before
    applied = await console.post("/console/rules/import", {"apply": "yes", "csv_text": edited, "reason": "sheet"})
    assert applied.status_code == 200 and "Applied: 2 rule changes" in applied.text
    assert await console.runtime.store.version() == before + 1
    rules = {r.kind: r for r in await console.runtime.store.list_rules()}
    assert rules["buffer"].units == 5 and rules["threshold"].units == 2


async def test_csv_import_bad_input_is_4xx(console):
    await console.login(PLANNER)
    bad_header = await console.post("/console/rules/import", {"csv_text": "foo,bar\n1,2\n"})
    assert bad_header.status_code == 422
    bad_units = await console.post("/console/rules/import", {"csv_text": "kind,units,channel\nbuffer,lots,online\n"})
    assert bad_units.status_code == 422 and "row 2" in bad_units.text
    unknown = await console.post("/console/rules/import", {"csv_text": "id,kind,units,channel\n999,buffer,1,online\n"})
    assert unknown.status_code == 404
    not_utf8 = await console.post("/console/rules/import", files={"file": ("r.csv", b"\xff\xfe\x00", "text/csv")})
    assert not_utf8.status_code == 400


async def test_whatif_draft_preview_and_apply_as_one_change(console):
    await console.seed_stock(("TEE-BLK-M", "DC1", 12), ("CAP-RED", "DC1", 3))
    await console.login(PLANNER)
    add = await console.post("/console/whatif/add", {"op": "create", "kind": "buffer", "channel": "online", "units": "3"})
    assert add.status_code == 303
    add2 = await console.post("/console/whatif/add", {"op": "create", "kind": "threshold", "channel": "online", "units": "5"})
    assert add2.status_code == 303
    report = await console.client.post("/console/whatif/preview", headers={"X-CSRF-Token": console.csrf, "HX-Request": "true"})
    assert report.status_code == 200 and "<svg" in report.text
    assert 'data-changed="2"' in report.text  # both SKUs change at DC1/online
    assert "go to zero" in report.text and "cross a threshold" in report.text
    before = await console.runtime.store.version()
    no_reason = await console.post("/console/whatif/apply", {"reason": ""})
    assert no_reason.status_code == 422
    applied = await console.post("/console/whatif/apply", {"reason": "weekend buffer"})
    assert applied.status_code == 303
    assert await console.runtime.store.version() == before + 1
    changes = await console.runtime.store.recent_changes(5)
    assert {c.reason for c in changes} == {"weekend buffer"} and len(changes) == 2
    assert (await console.client.get("/console/whatif")).text.count("The draft is empty") == 1


async def test_whatif_bad_changes_are_4xx_and_not_drafted(console):
    await console.login(PLANNER)
    for form in (
        {"op": "create", "kind": "buffer", "units": "2"},  # no channel
        {"op": "create", "kind": "buffer", "channel": "online", "units": "-1"},
        {"op": "update", "id": "99", "units": "2"},
        {"op": "explode"},
        {"op": "create", "kind": "buffer", "channel": "online", "percent": "nan"},
    ):
        resp = await console.post("/console/whatif/add", form)
        assert 400 <= resp.status_code < 500, (form, resp.status_code)
    assert "The draft is empty" in (await console.client.get("/console/whatif")).text


async def test_pages_answer_and_junk_is_4xx_never_500(console):
    await console.login(ADMIN)
    for path in ("/console/skus", "/console/rules", "/console/whatif", "/console/backtest", "/console/ops",
                 "/console/rules?scope=sku&kind=buffer&q=x", "/console/skus/%F0%9F%91%8D", "/console/rules/new"):
        resp = await console.client.get(path)
        assert resp.status_code == 200, (path, resp.status_code, resp.text[:300])
    for path in ("/console/rules/999", "/console/rules/abc", "/console/backtest/../../x", "/console/nope"):
        resp = await console.client.get(path)
        assert 400 <= resp.status_code < 500, (path, resp.status_code)
    resp = await console.post("/console/rules/1/rollback", {"to_version": "x"})
    assert resp.status_code == 400


async def test_revoked_key_ends_the_session(console):
    await console.runtime.store.keys.add_api_key("temp", "temp-key-123", ["read"])
    await console.app.state.api.keys.refresh(console.runtime.store)
    assert (await console.login("temp-key-123")).status_code == 303
    assert (await console.client.get("/console/rules")).status_code == 200
    await console.runtime.store.keys.revoke_api_key("temp")
    await console.app.state.api.keys.refresh(console.runtime.store)
    resp = await console.client.get("/console/rules")
    assert resp.status_code == 303 and resp.headers["location"] == "/console/login"


async def test_schema_ui_loads_only_vendored_assets(console):
    page = await console.client.get("/schema")
    assert page.status_code == 200
    hosts = set(re.findall(r"https?://([^/\"'\s]+)", page.text))
    assert hosts <= {"console.test"}, hosts
    assets = re.findall(r'(?:src|href)="(/console/static/[^"]+)"', page.text)
    assets += re.findall(r"href='(/console/static/[^']+)'", page.text)
    assert len(assets) >= 3
    for asset in assets:
        resp = await console.client.get(asset)
        assert resp.status_code == 200 and len(resp.content) > 100, asset


async def test_backtest_page_runs_the_real_backtest_as_the_planner(console):
    """The page against the /v1/backtests API (availability/api/backtests.py): start, poll
    with htmx until the report, who may start one."""
    import re

    await console.login(PLANNER)
    await console.post("/console/whatif/add", {"op": "create", "kind": "threshold", "channel": "online", "units": "5"})
    started = await console.post("/console/backtest", {"days": "7"})
    assert started.status_code == 200, started.text
    poll = re.search(r'hx-get="(/console/backtest/[^"]+)"', started.text)
    assert poll, started.text
    for _ in range(200):
        done = await console.client.get(poll.group(1), headers={"HX-Request": "true"})
        assert done.status_code == 200
        if "backtest-report" in done.text or "error" in done.text.lower():
            break
        await asyncio.sleep(0.05)
    assert "backtest-report" in done.text, done.text
    assert "hx-trigger" not in done.text  # polling stops with the report
    # a reader may look but not start one
    await console.login(READER)
    assert (await console.post("/console/backtest", {"days": "7"})).status_code == 403


async def test_operations_replays_a_dead_letter_for_admin_only(console):
    from availability.console.operations import dead_letter_queue
    from availability.ingest.deadletters import DeadLetter

    dlq = dead_letter_queue(console.runtime)
    stream = dlq.names.partition(0)
    good = b'{"event_id": "dl-1", "type": "receipt", "source": "wms", "occurred_at": "2026-11-20T10:00:00Z", "sku": "TEE", "location": "DC1", "quantity": 4}'
    await dlq.add([DeadLetter(reason="unknown-location", detail="DC1 was not configured", payload=good, stream=stream,
                              entry_id="1-1")])
    letter_id = (await dlq.list(limit=1))[0].id
    await console.login(PLANNER)
    page = await console.client.get("/console/ops")
    assert page.status_code == 200 and "unknown-location" in page.text and "Replay</button>" not in page.text
    assert (await console.post("/console/ops/dead-letters/replay", {"id": letter_id})).status_code == 403
    await console.login(ADMIN)
    replayed = await console.post("/console/ops/dead-letters/replay", {"id": letter_id})
    assert replayed.status_code == 303 and "replayed" in replayed.headers["location"]
    assert await dlq.count() == 0
    again = await console.post("/console/ops/dead-letters/replay", {"id": letter_id})
    assert again.status_code == 303 and "not%20replayed" in again.headers["location"]
    # the counts per reason (kept between visits) follow the stream: gone once replayed, back with a new letter
    page = await console.client.get("/console/ops")
    assert "Dead letters (0)" in page.text and "<code>unknown-location</code>" not in page.text
    await dlq.add([DeadLetter(reason="bad-quantity", detail="-3", payload=good, stream=stream, entry_id="1-2")])
    page = await console.client.get("/console/ops")
    assert "Dead letters (1)" in page.text and "<code>bad-quantity</code> 1" in page.text


async def test_errors_for_non_browser_callers_are_problem_json(console):
    resp = await console.client.post("/console/login", data={"api_key": "nope"}, headers={"Accept": "application/json"})
    assert resp.status_code == 401 and resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["detail"] == "unknown or revoked API key"
    await console.login(PLANNER)
    forged = await console.client.post("/console/logout", data={"_csrf": "x"}, headers={"Accept": "*/*"})
    assert forged.status_code == 403 and forged.json()["status"] == 403
