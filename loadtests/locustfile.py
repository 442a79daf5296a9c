"""Flash-sale load test: storefront lookups, checkouts on hot SKUs, POS sales, WMS receipts
and streamed events, all at once against `availability serve` (with the Shopify push
running against the simulator).

Headless, fixed users and duration (`python -m loadtests.flash_sale` wraps this, starts
everything it needs and adds the reconciliation; docs/performance.md):

    locust -f loadtests/locustfile.py --headless -u 60 -r 20 -t 60s \
        --host http://127.0.0.1:8000 --csv loadtests/results/flash --json > loadtests/results/flash.json

Environment: AVAILABILITY_LOADTEST_KEY (an API key with read, reserve and events scopes),
AVAILABILITY_LOADTEST_SKUS (comma-separated hot SKUs; default: the demo catalogue's first
10), AVAILABILITY_LOADTEST_MAX_ERROR_RATE (default 0.01), AVAILABILITY_LOADTEST_LEDGER
(a JSON file this run appends its successful reservations and posted receipts to, for the
reconciliation).

Exits non-zero when the error rate is above the threshold. The oversell reconciliation
(ledger state and the units checkouts got, against what was there) runs afterwards in
loadtests/flash_sale.py, which also starts the service and the simulator.
"""

from __future__ import annotations

import json
import os
import random
import threading
import uuid
from datetime import datetime, timezone

from locust import FastHttpUser, between, events, task

from availability.demo.catalogue import build_catalogue

CATALOGUE = build_catalogue()
HOT = [s for s in os.environ.get("AVAILABILITY_LOADTEST_SKUS", "").split(",") if s] or CATALOGUE.hot_skus(10)
TAIL = CATALOGUE.skus[100:]
STORES = CATALOGUE.stores
KEY = os.environ.get("AVAILABILITY_LOADTEST_KEY", "")
HEADERS = {"Authorization": f"Bearer {KEY}"} if KEY else {}
MAX_ERROR_RATE = float(os.environ.get("AVAILABILITY_LOADTEST_MAX_ERROR_RATE", "0.01"))

_tally_lock = threading.Lock()
#: what this run did that the reconciliation needs: units held per SKU, receipts per (SKU, location)
TALLY: dict = {"held": {}, "received": {}, "reservations": 0, "refused": 0}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class Shopper(FastHttpUser):
    """Storefront traffic: product pages (single SKU) and collection pages (batch)."""

    weight = 6
    wait_time = between(0.05, 0.3)

    @task(6)
    def product_page(self):
        sku = random.choice(HOT) if random.random() < 0.5 else random.choice(TAIL)
        self.client.get(f"/v1/availability/{sku}?channel=online", headers=HEADERS, name="/v1/availability/[sku]")

    @task(1)
    def collection_page(self):
        skus = random.sample(TAIL, 40) + random.sample(HOT, 3)
        self.client.post("/v1/availability/batch", json={"skus": skus, "channel": "online"}, headers=HEADERS,
                         name="/v1/availability/batch")


class Checkout(FastHttpUser):
    """Checkouts on the hot SKUs: most pay (commit), some cancel (release), some abandon
    (left to expire through the TTL)."""

    weight = 3
    wait_time = between(0.05, 0.2)

    @task
    def checkout(self):
        sku = random.choice(HOT)
        quantity = random.choice((1, 1, 1, 2))
        rid = f"lt-{uuid.uuid4().hex}"
        body = {"reservation_id": rid, "channel": "online", "lines": [{"sku": sku, "quantity": quantity}],
                "ttl_seconds": 30}
        with self.client.post("/v1/reservations", json=body, headers=HEADERS, name="/v1/reservations",
                              catch_response=True) as response:
            if response.status_code == 409:
                response.success()  # sold out is a correct answer in a flash sale
                with _tally_lock:
                    TALLY["refused"] += 1
                return
            if response.status_code not in (200, 201):
                response.failure(f"reserve answered {response.status_code}")
                return
        with _tally_lock:
            TALLY["reservations"] += 1
        fate = random.random()
        if fate < 0.7:
            self.client.post(f"/v1/reservations/{rid}/commit", headers=HEADERS, name="/v1/reservations/[id]/commit")
            with _tally_lock:
                TALLY["held"][sku] = TALLY["held"].get(sku, 0) + quantity
        elif fate < 0.9:
            self.client.post(f"/v1/reservations/{rid}/release", headers=HEADERS, name="/v1/reservations/[id]/release")
        # else: abandoned, expires after its TTL


class StoreTill(FastHttpUser):
    """POS sales and returns at stores, on the long tail (hot SKUs sell online)."""

    weight = 1
    wait_time = between(0.1, 0.5)

    @task
    def sale(self):
        kind = "pos_sale" if random.random() < 0.9 else "pos_return"
        event = {"event_id": f"pos-{uuid.uuid4().hex}", "type": kind, "source": "pos", "occurred_at": _now(),
                 "sku": random.choice(TAIL), "location": random.choice(STORES), "quantity": 1,
                 "till_id": "till-1"}
        self.client.post("/v1/events", json=event, headers=HEADERS, name="/v1/events (pos)")


class Warehouse(FastHttpUser):
    """WMS receipts landing mid-sale, including restocks of the hot SKUs."""

    weight = 1
    wait_time = between(0.5, 1.5)

    @task
    def receipt(self):
        sku = random.choice(HOT) if random.random() < 0.3 else random.choice(TAIL)
        location = random.choice(CATALOGUE.warehouses[:2])
        quantity = random.randint(1, 5)
        event = {"event_id": f"wms-{uuid.uuid4().hex}", "type": "receipt", "source": "wms", "occurred_at": _now(),
                 "sku": sku, "location": location, "quantity": quantity}
        with self.client.post("/v1/events", json=event, headers=HEADERS, name="/v1/events (wms)",
                              catch_response=True) as response:
            if response.status_code in (200, 202):
                with _tally_lock:
                    key = f"{sku}|{location}"
                    TALLY["received"][key] = TALLY["received"].get(key, 0) + quantity
            else:
                response.failure(f"events answered {response.status_code}")


@events.quitting.add_listener
def _check(environment, **_kw):
    stats = environment.stats.total
    error_rate = stats.num_failures / stats.num_requests if stats.num_requests else 1.0
    path = os.environ.get("AVAILABILITY_LOADTEST_LEDGER")
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({**TALLY, "requests": stats.num_requests, "failures": stats.num_failures}, handle)
    if error_rate > MAX_ERROR_RATE:
        print(f"FAIL: error rate {error_rate:.4f} above {MAX_ERROR_RATE}")
        environment.process_exit_code = 1
