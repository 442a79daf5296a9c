"""Order payloads for the tests, from the shipped samples, and a plain-Python oracle."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from importlib import resources


def sample(name: str = "shopify_orders_create") -> dict:
    return json.loads(resources.files("adapters").joinpath("samples", f"{name}.json").read_text())


def order(number: int, *, lines: list[tuple[str | None, int, str]] | None = None, paid: bool = True,
          updated: str = "2026-11-20T05:15:02-05:00", shipping: str | None = None, tax: str | None = None,
          discount: str | None = None, email: str = "jane.doe@example.com") -> dict:
    """A Shopify order payload (the shape of the orders/create sample) with these lines."""
    body = copy.deepcopy(sample())
    body["id"] = 5960412000000 + number
    body["order_number"] = number
    body["name"] = f"#{number}"
    body["updated_at"] = updated
    body["email"] = email
    body["financial_status"] = "paid" if paid else "pending"
    if lines is not None:
        template = body["line_items"][0]
        body["line_items"] = []
        for i, (sku, qty, price) in enumerate(lines):
            item = dict(template, id=100 + i, sku=sku, quantity=qty, current_quantity=qty, price=price,
                        name=f"item {sku}")
            if discount and i == 0:
                item["discount_allocations"] = [{"amount": discount}]
            body["line_items"].append(item)
    if shipping:
        body["shipping_lines"] = [{"title": "Standard", "price": shipping, "discounted_price": shipping}]
    if tax:
        body["total_tax"] = tax
    total = sum(Decimal(i["price"]) * i["current_quantity"] for i in body["line_items"])
    total += Decimal(shipping or 0) + Decimal(tax or 0) - Decimal(discount or 0)
    body["total_price"] = str(total)
    return body


def expected_total(payload: dict) -> Decimal:
    """The oracle: what the ERP sale must total, computed independently of the flow's mapping."""
    return Decimal(payload["total_price"])


async def kill_at_marker(argv: list[str], marker, *, cwd, timeout: float = 120.0) -> str:
    """Run a worker process until it writes `marker` (right after an ERP create), SIGKILL
    it there, and return what it wrote (the reference it was posting)."""
    import asyncio
    import os
    import signal
    import subprocess
    import time

    child = subprocess.Popen(argv, cwd=cwd, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists() and time.monotonic() < deadline and child.poll() is None:
            await asyncio.sleep(0.05)
        assert marker.exists(), child.stderr.read().decode()[-2000:] if child.poll() is not None else "no create"
        killed_on = marker.read_text()
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        return killed_on
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
