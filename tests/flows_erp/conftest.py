"""A real Tryton for the order-flow tests: one database per test run, served by trytond.

The database is made once (company, chart, fiscal year, products for the SKUs below) and
cached as a template file under AVAILABILITY_TEST_ERP_CACHE (default: the system temp
dir), so later runs start in seconds. Tests share the session's server and stay apart by
shop name (each test has its own sale-reference prefix); fault tests that stop the ERP
get a server of their own over a copy of the template. Skipped, with the reason, when
trytond is not installed (the `erp` extra).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
import pytest_asyncio

from adapters.erp.tryton.server import ErpHome, TrytonServer, trytond_available

SKUS = ["TEE-BLK-M", "CAP-RED", "HOODIE-GRY-XL", "MUG-CLASSIC"] + [f"SKU-{i:04d}" for i in range(1, 21)]


def _cache_dir() -> Path:
    return Path(os.environ.get("AVAILABILITY_TEST_ERP_CACHE") or Path(tempfile.gettempdir()) / "availability-erp-cache")


@pytest.fixture(scope="session")
def erp_template(tmp_path_factory):
    reason = trytond_available()
    if reason:
        pytest.skip(reason)
    home = ErpHome(tmp_path_factory.mktemp("erp-template"))
    home.init(SKUS, cache_dir=_cache_dir())
    return home


def copy_home(template: ErpHome, data_dir: Path) -> ErpHome:
    home = ErpHome(data_dir)
    home.dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template.database, home.database)
    shutil.copyfile(template.password_file, home.password_file)
    return home


@pytest.fixture(scope="session")
def tryton(erp_template, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("erp-session")
    copy_home(erp_template, data_dir)
    server = TrytonServer(data_dir).start()
    yield server
    server.stop()


@pytest.fixture
def own_tryton(erp_template, tmp_path):
    """A Tryton of this test's own (fault tests stop and start it)."""
    copy_home(erp_template, tmp_path / "own")
    server = TrytonServer(tmp_path / "own")
    yield server
    server.stop()


@pytest.fixture
def shop():
    return f"shop-{uuid.uuid4().hex[:8]}.myshopify.com"


@pytest_asyncio.fixture
async def erp(tryton):
    from adapters.erp.tryton.client import TrytonErp

    client = TrytonErp(tryton.url, tryton.login, tryton.password(), timeout=30)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def order_store(tmp_path):
    from availability.flows.orders.store import OrderStore

    store = await OrderStore(f"sqlite+aiosqlite:///{tmp_path}/orders.db").open()
    yield store
    await store.close()
