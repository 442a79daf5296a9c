"""Schemathesis fuzzes every operation of the OpenAPI document against a real server.

The server is the one `availability serve` runs (ServedApp under uvicorn, background
services included) on a free port, in a thread with its own event loop, over the session's
Redis (a unique key prefix) and a SQLite store in a temporary directory. Checks: no 5xx
ever, status codes, content types and response bodies as documented. Generation is
derandomized so a failure reproduces; the Shopify webhook and the ingest uploads belong to
the ingest area and are left out. The same run as a command: docs/api.md "Fuzzing".
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from availability.api.app import ServedApp  # noqa: E402
from availability.config import Settings  # noqa: E402
from availability.embedded_redis import free_port  # noqa: E402

KEY = "fuzz-admin-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def served(redis_url, tmp_path_factory):
    import uvicorn

    data_dir = tmp_path_factory.mktemp("fuzz")
    config = Settings(
        _env_file=None,
        redis_url=redis_url,
        key_prefix=f"fz{uuid.uuid4().hex[:8]}",
        data_dir=str(data_dir),
        database_url=f"sqlite+aiosqlite:///{data_dir}/rules.db",
        api_keys=json.dumps([{"key": KEY, "scopes": ["admin"], "name": "fuzzer"}]),
        events_mode="direct",
        rate_limit_per_second=0,
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(ServedApp(config), host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="fuzz-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the API server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=20)


@pytest.fixture(scope="module")
def api_schema(served):
    return schemathesis.openapi.from_url(f"{served}/schema/openapi.json").exclude(path_regex=r"^/(webhooks|v1/ingest)")


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_every_operation_answers_as_documented_and_never_5xx(api_schema):
    # schemathesis' pytest plugin does not load under this pytest, so each operation's
    # hypothesis test is built and run here; failures are gathered and reported together.
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None
        )
        def fuzz(case):
            case.call_and_validate(headers=HEADERS, checks=CHECKS)

        try:
            fuzz()
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            failures.append(f"{operation.label}: {str(exc)[:2000]}")
    assert operations >= 25
    assert not failures, "\n\n".join(failures)
