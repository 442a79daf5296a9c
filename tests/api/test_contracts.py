"""The published contracts work for the teams that integrate by them.

- A Python client generated from the served OpenAPI document with openapi-python-client
  (PyPI) posts an event, reads availability and reserves, against the real server.
- The AsyncAPI document (FastStream's generator, /asyncapi.json) is AsyncAPI 3.0, names every
  event partition and the dead-letter stream, and its event payload lists exactly the
  canonical event types of docs/events.md.
- OPTIONS answers every method a path has.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from availability.config import Settings
from availability.domain.events import EVENT_TYPES
from tests.api.served import KEY, served  # noqa: F401 - the module's server fixture

DOCS = Path(__file__).resolve().parents[2] / "docs"
HEADERS = {"Authorization": f"Bearer {KEY}"}


def _generator() -> str:
    found = shutil.which("openapi-python-client", path=os.path.dirname(sys.executable)) or shutil.which(
        "openapi-python-client"
    )
    if found is None:
        pytest.skip("openapi-python-client is not installed (pip install -e '.[test]')")
    return found


@pytest.fixture(scope="module")
def client_package(served, tmp_path_factory):
    generator = _generator()
    where = tmp_path_factory.mktemp("client")
    (where / "openapi.json").write_bytes(httpx.get(f"{served}/schema/openapi.json").content)
    (where / "config.yaml").write_text("post_hooks: []\npackage_name_override: availability_client\n")
    done = subprocess.run(
        [
            generator,
            "generate",
            "--path",
            str(where / "openapi.json"),
            "--meta",
            "none",
            "--config",
            str(where / "config.yaml"),
            "--output-path",
            str(where / "availability_client"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Every operation a client needs is generated; only the file-format uploads (X12, CSV,
    # JSON Lines bodies) are beyond the generator.
    skipped = set(re.findall(r"WARNING parsing (\w+ \S+)", done.stdout + done.stderr))
    assert all(" /v1/ingest/" in s for s in skipped), skipped
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module("availability_client")
    finally:
        sys.path.remove(str(where))


def test_a_generated_client_posts_an_event_reads_availability_and_reserves(client_package, served):
    from availability_client import AuthenticatedClient
    from availability_client.api.availability import v1_availability_sku_get_availability as get_availability
    from availability_client.api.events import v1_events_post_events as post_events
    from availability_client.api.reservations import v1_reservations_create_reservation as reserve
    from availability_client.api.reservations import v1_reservations_reservation_id_get_reservation as get_reservation
    from availability_client.models import ReservationBody, ReservationLineBody, StockEvent, StockEventType

    client = AuthenticatedClient(base_url=served, token=KEY)
    event = StockEvent(
        event_id="client-rcpt-1",
        type_=StockEventType.RECEIPT,
        source="wms",
        occurred_at="2026-11-20T10:00:00Z",
        sku="CLIENT-TEE",
        location="DC1",
        quantity=7,
    )
    posted = post_events.sync_detailed(client=client, body=[event])
    assert posted.status_code == 200, posted.content
    assert posted.parsed.received == 1 and posted.parsed.results[0].status == "applied"

    available = get_availability.sync_detailed("CLIENT-TEE", client=client, channel="online")
    assert available.status_code == 200, available.content
    assert available.parsed.ats == 7

    body = ReservationBody(
        reservation_id="client-order-1", channel="online", lines=[ReservationLineBody(sku="CLIENT-TEE", quantity=3)]
    )
    made = reserve.sync_detailed(client=client, body=body)
    assert made.status_code == 201, made.content
    assert made.parsed.reservation_id == "client-order-1"
    assert get_availability.sync("CLIENT-TEE", client=client).ats == 4
    again = get_reservation.sync_detailed("client-order-1", client=client)
    assert again.status_code == 200 and again.parsed.status == "held"

    short = reserve.sync_detailed(
        client=client,
        body=ReservationBody(
            reservation_id="client-order-2", channel="online", lines=[ReservationLineBody(sku="CLIENT-TEE", quantity=5)]
        ),
    )
    assert short.status_code == 409 and short.parsed.type_ == "urn:availability:problem:insufficient-stock"


def _documented_event_types() -> set[str]:
    """The first column of docs/events.md's "| type | typical source | effect |" table."""
    text = (DOCS / "events.md").read_text()
    table = text.split("| type | typical source | effect |", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^\| `(\w+)`", table, flags=re.M))


def test_the_asyncapi_document_lists_every_stream_and_every_event_type(served):
    document = httpx.get(f"{served}/asyncapi.json").json()
    assert document["asyncapi"] == "3.0.0"
    settings = Settings(_env_file=None)
    channels = document["channels"]
    assert {f"events:{p}" for p in range(settings.partitions)} | {"dead-letters"} == set(channels)
    assert all(c["address"].endswith((f":events:{c['address'].rsplit(':', 1)[-1]}", ":dlq")) for c in channels.values())
    schemas = document["components"]["schemas"]
    for name, message in document["components"]["messages"].items():
        target = message["payload"]["$ref"].rsplit("/", 1)[-1]
        assert target == ("DeadLetterEntry" if name.startswith("dead-letters") else "StockEvent")
    documented = _documented_event_types()
    assert len(documented) == len(EVENT_TYPES) == 17
    assert set(schemas["StockEvent"]["properties"]["type"]["enum"]) == documented
    assert {"reason", "detail", "payload", "stream", "entry_id"} <= set(schemas["DeadLetterEntry"]["required"])
    page = httpx.get(f"{served}/asyncapi")
    assert page.status_code == 200 and "/asyncapi.json" in page.text


def test_options_and_allow_name_every_method_of_a_path(served):
    for path, methods in {
        "/v1/channels/online": "DELETE, GET, OPTIONS, PUT",
        "/v1/locations/DC1": "DELETE, GET, OPTIONS, PUT",
        "/v1/rules/1": "DELETE, GET, OPTIONS, PATCH, PUT",
        "/v1/reservations": "OPTIONS, POST",
    }.items():
        answer = httpx.options(f"{served}{path}")
        assert answer.status_code == 204 and answer.headers["allow"] == methods, (path, answer.headers)
        refused = httpx.request("TRACE", f"{served}{path}", headers=HEADERS)
        assert refused.status_code == 405 and set(refused.headers["allow"].split(", ")) == set(methods.split(", "))
