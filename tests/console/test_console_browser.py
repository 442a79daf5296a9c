"""The console in a real browser: Debian's Chromium (/usr/bin/chromium) driven by Playwright,
against the API as `availability serve` runs it (uvicorn, real HTTP, real Redis).

Playwright's own browser download does not work here, so the browser is launched by its
executable path; without it (or without the playwright package) these tests skip, saying
which. Screenshots of each page go under the test's tmp_path and their paths are printed
(`pytest -s` shows them) and attached to the test's report as user properties.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import httpx
import pytest

from availability.config import Settings
from tests.api.served import running

CHROMIUM = os.environ.get("AVAILABILITY_CHROMIUM", "/usr/bin/chromium")
PLANNER_KEY = "browser-planner-key"
ADMIN_KEY = "browser-admin-key"

playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test extra)")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def served(redis_url, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("console-browser")
    config = Settings(
        _env_file=None,
        redis_url=redis_url,
        key_prefix=f"cb{uuid.uuid4().hex[:8]}",
        data_dir=str(data_dir),
        database_url=f"sqlite+aiosqlite:///{data_dir}/rules.db",
        api_keys=json.dumps([
            {"key": PLANNER_KEY, "scopes": ["read", "rules"], "name": "planner-pat"},
            {"key": ADMIN_KEY, "scopes": ["admin"], "name": "ops-admin"},
        ]),
        events_mode="direct",
        rate_limit_per_second=0,
        services=[],
    )
    # localhost, not 127.0.0.1: browsers send a Secure cookie over plain http only to localhost
    with running(config, "console-browser-server") as port:
        yield _seeded(f"http://localhost:{port}")


def _seeded(base: str) -> str:
    events = [
        {"event_id": f"cb-{sku}-{loc}", "type": "snapshot", "source": "erp", "occurred_at": "2026-11-20T10:00:00Z",
         "sku": sku, "location": loc, "quantity": qty}
        for sku, loc, qty in (("TEE-BLK-M", "DC1", 12), ("TEE-BLK-L", "DC1", 4), ("CAP-RED", "DC1", 30))
    ]
    resp = httpx.post(f"{base}/v1/events", json=events, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert resp.status_code == 200, resp.text
    return base


@pytest.fixture
def page(served):
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        tab = context.new_page()
        tab.set_default_timeout(45_000)  # a shared 2-core CI machine can be slow
        yield tab
        context.close()
        browser.close()


class Shots:
    def __init__(self, tmp_path: Path, record) -> None:
        self.dir = tmp_path / "screenshots"
        self.dir.mkdir()
        self.record = record
        self.paths: list[Path] = []

    def take(self, page, name: str) -> None:
        path = self.dir / f"{len(self.paths) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.paths.append(path)
        self.record(f"screenshot:{name}", str(path))
        print(f"screenshot {path}")


def login(page, served: str, key: str) -> None:
    page.goto(f"{served}/console/login")
    page.fill("input[name=api_key]", key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{served}/console/skus")


def test_a_planner_explains_drafts_previews_applies_and_rolls_back(served, page, tmp_path, record_property):
    shots = Shots(tmp_path, record_property)
    page.goto(f"{served}/console/rules")
    page.wait_for_url(f"{served}/console/login")
    shots.take(page, "login")
    login(page, served, PLANNER_KEY)

    # find a SKU (htmx search as you type) and read its arithmetic
    page.fill("input[name=q]", "tee-blk")
    # the first page lists every SKU; the htmx swap leaves only the matches
    page.wait_for_selector("#sku-results a:has-text('CAP-RED')", state="detached")
    assert page.locator("#sku-results a:has-text('TEE-BLK-L')").count() == 1
    shots.take(page, "sku-search")
    page.click("#sku-results a:has-text('TEE-BLK-M')")
    page.wait_for_selector("section.channel[data-channel=online]")
    row = page.locator("section.channel[data-channel=online] tr[data-location=DC1]")
    assert "on hand 12" in " ".join(row.inner_text().split())
    assert row.locator("td.ats").inner_text().strip() == "12"
    shots.take(page, "sku-arithmetic")

    # draft a buffer of 3 units on online, preview it against the live ledger
    page.goto(f"{served}/console/whatif")
    form = page.locator("form.add-change")
    form.locator("select[name=op]").select_option("create")
    form.locator("select[name=kind]").select_option("buffer")
    form.locator("input[name=units]").fill("3")
    form.locator("input[name=channel]").fill("online")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("table.draft td:has-text('create')")
    page.click("button:has-text('Preview against the live ledger')")
    page.wait_for_selector("#report svg.chart")
    assert page.locator("#report .report").get_attribute("data-changed") == "3"  # three SKUs at DC1/online
    exposure = page.locator("#report table.exposure tbody tr").first.inner_text().split()
    assert exposure[:4] == ["online", "46", "37", "-9"]
    shots.take(page, "whatif-preview")

    # apply the draft as one change with a reason, and see it in the rule's history
    page.fill("form[action='/console/whatif/apply'] input[name=reason]", "weekend buffer")
    page.click("form[action='/console/whatif/apply'] button[type=submit]")
    page.wait_for_selector("table.history")
    assert "weekend buffer" in page.locator("table.history").inner_text()
    rule_url = page.url
    shots.take(page, "rule-history")
    page.goto(f"{served}/console/skus/TEE-BLK-M")
    row = page.locator("section.channel[data-channel=online] tr[data-location=DC1]")
    assert row.locator("td.ats").inner_text().strip() == "9"
    assert row.locator("a.rule").count() >= 1  # the buffer term links to its rule
    shots.take(page, "sku-after-apply")

    # edit it to 5 units (v2), then roll back to v1 (makes v3 equal to v1)
    page.goto(rule_url)
    page.fill("form.edit input[name=units]", "5")
    page.fill("form.edit input[name=reason]", "more cover")
    page.click("form.edit button[type=submit]")
    page.wait_for_selector("table.history tr#v2")
    page.click("table.history tr#v1 button:has-text('Roll back to v1')")
    page.wait_for_selector("table.history tr#v3")
    assert "v3" in page.locator("h1").inner_text()
    assert page.locator("form.edit input[name=units]").input_value() == "3"
    shots.take(page, "rolled-back")

    # rules table and operations page render for the same session
    page.goto(f"{served}/console/rules?scope=channel")
    assert page.locator("table.rules tbody tr").count() == 1
    shots.take(page, "rules")
    page.goto(f"{served}/console/ops")
    page.wait_for_selector("#dead-letters")
    shots.take(page, "operations")
    page.goto(f"{served}/schema", wait_until="domcontentloaded")
    # rendered from the vendored bundle, no CDN (1.7 MB of script: generous on a loaded machine)
    page.wait_for_selector(".swagger-ui .info", timeout=90_000)
    shots.take(page, "schema")
    assert len(shots.paths) == 10


def test_a_planner_runs_a_backtest_of_the_draft(served, page, tmp_path, record_property):
    spec = httpx.get(f"{served}/schema/openapi.json", timeout=30).json()
    if "/v1/backtests" not in spec.get("paths", {}):
        pytest.skip("backtest API not present")
    shots = Shots(tmp_path, record_property)
    login(page, served, PLANNER_KEY)
    page.goto(f"{served}/console/whatif")
    form = page.locator("form.add-change")
    form.locator("select[name=kind]").select_option("threshold")
    form.locator("input[name=units]").fill("5")
    form.locator("input[name=channel]").fill("online")
    form.locator("button[type=submit]").click()
    page.wait_for_selector("table.draft td:has-text('create')")
    page.goto(f"{served}/console/backtest")
    page.fill("input[name=days]", "7")
    page.click("button:has-text('Run backtest')")
    page.wait_for_selector("#backtest progress, #backtest .done, #backtest .error")
    shots.take(page, "backtest-running")
    page.wait_for_selector("#backtest table.backtest-report", timeout=120_000)
    assert page.locator("#backtest table.backtest-report tbody tr").count() >= 1
    shots.take(page, "backtest-report")
