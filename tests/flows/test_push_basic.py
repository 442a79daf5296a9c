from __future__ import annotations

from tests.flows.conftest import wait_for


async def test_smoke(shop_factory):
    shop = await shop_factory(3, initial=0)
    publisher = await shop.publisher()
    await shop.receive("SKU-000", "DC1", 7)
    await shop.receive("SKU-001", "S1", 3)
    assert await shop.converged(5) == {}
    print(publisher.stats)
