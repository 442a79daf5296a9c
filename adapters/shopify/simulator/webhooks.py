"""Webhooks out of the simulator, signed and delivered as Shopify does, with the delay,
duplication and reordering real deliveries show.

Headers: ``X-Shopify-Topic``, ``X-Shopify-Hmac-Sha256`` (base64 HMAC-SHA256 of the raw
body with the webhook secret), ``X-Shopify-Shop-Domain``, ``X-Shopify-API-Version``,
``X-Shopify-Webhook-Id``, ``X-Shopify-Event-Id`` and ``X-Shopify-Triggered-At`` (when the
event happened, not when this attempt was sent). A failed delivery (non-2xx or no answer
in ``webhook_timeout_s``) is retried with the same ids. A duplicate carries the same
webhook id and event id (Shopify's guidance: dedupe on the event id).

Simulator's own choices: retries back off from ``webhook_retry_backoff_s`` (Shopify:
8 tries over 4 hours) up to ``webhook_max_attempts``; the delay, reorder and duplicate
draws and the ids come from the simulator's seeded RNG, so a seed replays the same
schedule (the network's own timing still varies).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import uuid
from typing import Any

import httpx

from ._util import now_iso
from .state import SimulatorState, WebhookDelivery

log = logging.getLogger("adapters.shopify.simulator")


def sign_webhook(secret: str, body: bytes) -> str:
    """``X-Shopify-Hmac-Sha256``: base64 of HMAC-SHA256(secret, raw body)."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


class WebhookSender:
    """Delivers webhooks from the simulator's event loop (one shared httpx client)."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def pending(self) -> int:
        """Deliveries scheduled or in flight."""
        return len(self._tasks)

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.state.config.webhook_timeout_s)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(BaseException):
                await t
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def spawn(self, coro: Any) -> None:
        # Keep a reference: the loop only holds weak references to tasks.
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _new_id(self) -> str:
        with self.state.lock:
            return str(uuid.UUID(int=self.state.webhook_rng.getrandbits(128), version=4))

    def _draw(self) -> float:
        with self.state.lock:
            return self.state.webhook_rng.random()

    def _delay(self) -> float:
        """Seconds before the first attempt: delay + jitter, plus a hold if reordered."""
        f = self.state.faults
        delay = f.webhook_delay_ms
        if f.webhook_delay_jitter_ms > 0:
            delay += self._draw() * f.webhook_delay_jitter_ms
        if f.webhook_reorder_rate > 0 and self._draw() < f.webhook_reorder_rate:
            delay += f.webhook_reorder_hold_ms
        return delay / 1000.0

    def emit(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """Schedule delivery of events that just happened (from the server's loop)."""
        if not self.state.webhook_url:
            return
        for topic, body in events:
            webhook_id, event_id, triggered = self._new_id(), self._new_id(), now_iso()
            self.spawn(self.deliver(topic, body, webhook_id, event_id, triggered, self._delay()))
            dup = self.state.faults.webhook_duplicate_rate
            if dup > 0 and self._draw() < dup:
                self.spawn(self.deliver(topic, body, webhook_id, event_id, triggered, self._delay(), duplicate=True))

    def emit_threadsafe(self, loop: asyncio.AbstractEventLoop, events: list[tuple[str, dict[str, Any]]]) -> None:
        loop.call_soon_threadsafe(self.emit, events)

    async def level_update(self, item_id: int, location_id: int) -> WebhookDelivery | None:
        """Announce the current level now and wait for the delivery (external changes)."""
        body = self.state.level_webhook_body(item_id, location_id)
        if body is None or not self.state.webhook_url:
            return None
        webhook_id, event_id, triggered = self._new_id(), self._new_id(), now_iso()
        delivery = await self.deliver("inventory_levels/update", body, webhook_id, event_id, triggered, self._delay())
        dup = self.state.faults.webhook_duplicate_rate
        if dup > 0 and self._draw() < dup:
            await self.deliver("inventory_levels/update", body, webhook_id, event_id, triggered, 0.0, duplicate=True)
        return delivery

    async def deliver(
        self,
        topic: str,
        body: dict[str, Any],
        webhook_id: str | None = None,
        event_id: str | None = None,
        triggered_at: str | None = None,
        delay: float = 0.0,
        duplicate: bool = False,
    ) -> WebhookDelivery | None:
        if delay > 0:
            await asyncio.sleep(delay)
        url, secret = self.state.webhook_url, self.state.webhook_secret
        if not url:
            return None
        if self._client is None:  # app used without lifespan (e.g. a bare TestClient)
            await self.start()
        assert self._client is not None
        raw = json.dumps(body, separators=(",", ":")).encode()
        webhook_id = webhook_id or self._new_id()
        event_id = event_id or self._new_id()
        triggered_at = triggered_at or now_iso()
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": sign_webhook(secret, raw),
            "X-Shopify-Shop-Domain": self.state.config.shop_domain,
            "X-Shopify-API-Version": self.state.config.api_version,
            "X-Shopify-Webhook-Id": webhook_id,
            "X-Shopify-Event-Id": event_id,
            "X-Shopify-Triggered-At": triggered_at,
        }
        status: int | None = None
        error: str | None = None
        attempts = 0
        first_attempt_at = now_iso()
        max_attempts = max(1, self.state.config.webhook_max_attempts)
        while attempts < max_attempts:
            attempts += 1
            try:
                resp = await self._client.post(url, content=raw, headers=headers)
                status, error = resp.status_code, None
                if 200 <= status < 300:
                    break
            except httpx.HTTPError as exc:
                status, error = None, f"{type(exc).__name__}: {exc}"
            if attempts < max_attempts:
                await asyncio.sleep(self.state.config.webhook_retry_backoff_s * 2 ** (attempts - 1))
        ok = status is not None and 200 <= status < 300
        delivery = WebhookDelivery(
            webhook_id=webhook_id,
            topic=topic,
            url=url,
            attempts=attempts,
            status=status,
            ok=ok,
            body=body,
            error=error,
            event_id=event_id,
            triggered_at=triggered_at,
            first_attempt_at=first_attempt_at,
            duplicate=duplicate,
        )
        self.state.record_delivery(delivery)
        if not ok:
            log.warning("webhook %s to %s failed after %d attempt(s): %s", topic, url, attempts, error or status)
        return delivery
