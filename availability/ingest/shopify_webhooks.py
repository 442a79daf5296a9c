"""Shopify webhooks in: which shop, genuine or not, seen before or not, where it goes.

`ShopifyWebhookHandler.handle(headers, body)` is everything `POST /webhooks/shopify`
does (the route only reads the body and turns the `WebhookAnswer` into a response):

1. **Shop**: `X-Shopify-Shop-Domain` must name a configured shop (`AVAILABILITY_SHOPIFY_SHOPS`,
   or `AVAILABILITY_SHOPIFY_SHOP_DOMAIN` for the single-shop settings); else 401.
2. **Signature**: the body's HMAC under one of *that shop's* secrets; else 401. A webhook
   signed with the right secret but claiming another shop is 401 too.
3. **Headers**: topic, webhook id, shop domain required (400 otherwise).
4. **Duplicates**: a delivery seen before by `X-Shopify-Webhook-Id` (retries of one
   delivery) or by `X-Shopify-Event-Id` (one event delivered again, Shopify's guidance) is
   answered 200 "duplicate" and goes nowhere.
5. **Stale retries**: an `inventory_levels/update` whose `X-Shopify-Triggered-At` is older
   than one already taken for the same (shop, item, location) is answered 200 "stale":
   the newer state is known (Shopify retries for up to 4 hours).
6. **Routing**: `inventory_levels/update` goes to the shop's drift-repair stream; order,
   fulfilment and refund topics become canonical events (booked under the shop's channel)
   published to the ingest stream; `orders/create` lines are also noted as the shop's
   Shopify sales, which settle units held as sales in flight once the ledger has them
   (availability/flows/inventory/sales.py). Unmappable but genuine: dead-lettered, 200.
7. **ERP flows**: the topics of the sibling flows AVAILABILITY_FLOWS names go to the
   intakes the composition root built (`runtime.erp_flows.webhook_intakes()`), each of
   which records the document in SQL before the answer: order topics (create, updated,
   paid, cancelled) to the order flow, beside the ledger events they already make;
   `customers/create|update|merge` to the customer identity flow; `refunds/create`,
   `returns/*` and `reverse_fulfillment_orders/dispose` to the returns flow, which then
   owns the refund's restocks (the route publishes no ledger events for `refunds/create`,
   `FLOW_OWNS_STOCK`, so a restock is booked once). A payload a flow cannot read is
   dead-lettered with the reason (`order_flow_rejected`, `customer_flow_rejected`,
   `returns_flow_rejected`), 200.

Any failure after the dedupe marks were set removes them, so Shopify's retry gets another
chance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from redis.exceptions import RedisError

from availability.domain.errors import InvalidEvent
from availability.flows.inventory.sales import note_orders
from availability.flows.inventory.shops import ShopConfig, configured_shops, shop_for_domain
from availability.flows.inventory.state import PushKeys
from availability.ingest import metrics
from availability.ingest.deadletters import DeadLetter, DeadLetters
from availability.ingest.publisher import EventPublisher
from availability.ingest.sources import INTAKE_PREFIX
from availability.ingest.streams import StreamNames

if TYPE_CHECKING:
    from availability.bootstrap import Runtime

log = logging.getLogger(__name__)

LEVELS_STREAM_CAP = 100_000

#: KEYS[1] hash field -> newest X-Shopify-Triggered-At ms taken; ARGV[1] field, ARGV[2] ms,
#: ARGV[3] ttl seconds of the hash. Returns 1 if ARGV[2] is not older than what is stored
#: (and stores it), 0 if a newer delivery was already taken.
_NEWEST_WINS = """
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if cur > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""


@dataclass
class WebhookAnswer:
    status: int
    body: dict[str, Any]
    #: problem slug for a 4xx/5xx (the route renders application/problem+json)
    problem: str | None = None


class ShopLocations:
    """A shop's Shopify location id/GID -> our location code, and its default location;
    reloaded when the rule store's version moves (the returns worker maps restocks with it)."""

    def __init__(self, runtime: Runtime, shop: ShopConfig) -> None:
        self.runtime = runtime
        self.shop = shop
        self._version: int | None = None
        self._map: dict[int | str, str] = {}
        self._default = "DEFAULT"

    async def get(self) -> tuple[dict[int | str, str], str]:
        rules = self.runtime.rules
        version = rules.version
        if version != self._version:
            if self.shop.locations is not None:
                rows = [(self.shop.channel, loc, gid) for loc, gid in self.shop.locations.items()]
            else:
                rows = await self.runtime.store.mappings.location_mappings()
            mapping: dict[int | str, str] = {}
            for _channel, location, gid in rows:
                mapping[gid] = location
                numeric = gid.rsplit("/", 1)[-1]
                if numeric.isdigit():
                    mapping[numeric] = location
                    mapping[int(numeric)] = location
            book = rules.book
            default = self.shop.default_location
            if not default:
                channel = self.shop.channel
                sells = book.channel_locations(channel) if channel in book.channels else ()
                default = (sells[0] if sells else None) or next(iter(book.locations), None) or "DEFAULT"
            self._map, self._default, self._version = mapping, default, version
        return self._map, self._default


class ShopifyWebhookHandler:
    def __init__(self, runtime: Runtime, shops: list[ShopConfig] | None = None) -> None:
        self.runtime, self.settings, self.redis = runtime, runtime.settings, runtime.redis
        self.shops = shops if shops is not None else configured_shops(runtime.settings)
        self.names = StreamNames.from_settings(self.settings)
        self.publisher, self.dead_letters = EventPublisher(runtime), DeadLetters(self.redis, self.names)
        self._locations = {shop.name: ShopLocations(runtime, shop) for shop in self.shops}
        self._newest = self.redis.register_script(_NEWEST_WINS)
        flows = getattr(runtime, "erp_flows", None)
        #: topic -> (flow, intake, rejected errors) of the sibling flows this process feeds
        self.flow_intakes = flows.webhook_intakes() if flows is not None else {}

    def keys(self, shop: ShopConfig) -> PushKeys:
        return PushKeys(self.runtime.ledger.keys, shop.name)

    async def locations(self, shop: ShopConfig) -> tuple[dict[int | str, str], str]:
        return await self._locations[shop.name].get()

    async def handle(self, headers: Mapping[str, str] | Iterable[tuple[Any, Any]], body: bytes) -> WebhookAnswer:
        from adapters.shopify.webhooks import (
            HEADER_HMAC,
            IGNORED_TOPICS,
            MAPPED_TOPICS,
            InventoryLevelUpdate,
            ShopifyWebhook,
            map_webhook,
            shop_domain_of,
            verify_hmac,
        )

        pairs = list(headers.items() if hasattr(headers, "items") else headers)
        domain = shop_domain_of(pairs)
        shop = shop_for_domain(self.shops, domain)
        if shop is None:
            metrics.WEBHOOKS.labels("unverified", "forged").inc()
            known = ", ".join(s.domain for s in self.shops if s.domain) or "none"
            detail = (
                f"X-Shopify-Shop-Domain {domain!r} is not a configured shop (configured: {known}; "
                "AVAILABILITY_SHOPIFY_SHOP_DOMAIN or AVAILABILITY_SHOPIFY_SHOPS)"
            )
            return WebhookAnswer(401, {"detail": detail}, "unknown-shop")
        secrets = [s for s in shop.webhook_secrets if s]
        hmac_header = next((str(v) for k, v in pairs if _name(k) == HEADER_HMAC), None)
        if not verify_hmac(body, hmac_header, secrets):
            metrics.WEBHOOKS.labels("unverified", "forged").inc()
            detail = f"X-Shopify-Hmac-Sha256 does not match the body under any secret of shop {shop.label!r}"
            if not secrets:
                detail = f"no webhook secret is configured for shop {shop.label!r} (AVAILABILITY_SHOPIFY_WEBHOOK_SECRETS)"
            return WebhookAnswer(401, {"detail": detail}, "invalid-signature")
        try:
            hook = ShopifyWebhook.from_headers(pairs)
        except InvalidEvent as exc:
            return WebhookAnswer(400, {"detail": exc.detail}, "invalid-webhook")
        topic = hook.topic.strip().lower()
        label = topic if topic in MAPPED_TOPICS or topic in IGNORED_TOPICS else "other"

        marks = [self.names.webhook_seen(hook.webhook_id)]
        if hook.event_id:
            marks.append(f"{self.names.prefix}:webhook-event-seen:{shop.name}:{hook.event_id}")
        taken: list[str] = []
        try:
            for key in marks:
                if not await self.redis.set(key, topic, nx=True, ex=self.settings.webhook_dedupe_seconds):
                    for k in taken:
                        await self.redis.delete(k)
                    metrics.WEBHOOKS.labels(label, "duplicate").inc()
                    return WebhookAnswer(200, {"status": "duplicate", "webhook_id": hook.webhook_id})
                taken.append(key)
        except RedisError:
            return WebhookAnswer(503, {"detail": "the event stream is unavailable; retry later"}, "unavailable")
        try:
            to_flow = await self.to_flow(topic, body, pairs, hook)
            if label == "other" or (to_flow is not None and topic in FLOW_OWNS_STOCK.get(to_flow[0], ())):
                if to_flow is not None:  # a flow's topic: a bounded label
                    metrics.WEBHOOKS.labels(topic, "accepted").inc()
                    return WebhookAnswer(200, {"status": "accepted", "events": 0, **_flow_answer(to_flow)})
                metrics.WEBHOOKS.labels(label, "unhandled").inc()
                return WebhookAnswer(200, {"status": "ignored", "topic": topic})
            location_map, default_location = await self.locations(shop)
            try:
                mapped = map_webhook(
                    topic, body, location_map, default_location=default_location, webhook=hook, channel=shop.channel
                )
            except InvalidEvent as exc:
                # Genuine (signed) but unmappable: answer 200 so Shopify does not retry and then
                # drop the subscription; the body waits in the DLQ for a fix and a replay.
                await self.dead_letters.add(
                    [
                        DeadLetter(
                            reason="unmapped",
                            detail=exc.detail,
                            payload=body,
                            stream=f"{INTAKE_PREFIX}shopify:{topic}",
                            entry_id=hook.webhook_id,
                            source="shopify",
                        )
                    ]
                )
                metrics.WEBHOOKS.labels(label, "dead_lettered").inc()
                answer = {"status": "dead_lettered", "reason": exc.detail, **_flow_answer(to_flow)}
                return WebhookAnswer(200, answer)
            keys = self.keys(shop)
            if isinstance(mapped, InventoryLevelUpdate):
                if hook.triggered_at is not None:
                    field = f"{mapped.inventory_item_id}|{mapped.location_id}"
                    fresh = await self._newest(
                        keys=[f"{keys.base}:levels:triggered"],
                        args=[field, int(hook.triggered_at.timestamp() * 1000), self.settings.webhook_dedupe_seconds],
                    )
                    if not int(fresh):
                        metrics.WEBHOOKS.labels(label, "stale").inc()
                        return WebhookAnswer(200, {"status": "stale", "webhook_id": hook.webhook_id})
                await self.redis.xadd(
                    keys.levels_stream,
                    {
                        "level": msgspec.json.encode(mapped),
                        "webhook_id": hook.webhook_id,
                        "shop": hook.shop_domain,
                        "received_at": int(time.time() * 1000),
                    },
                    maxlen=LEVELS_STREAM_CAP,
                    approximate=True,
                )
                metrics.WEBHOOKS.labels(label, "accepted").inc()
                return WebhookAnswer(200, {"status": "accepted", "stream": keys.levels_stream})
            if topic == "orders/create":
                await self.note_sales(keys, mapped)
            await self.publisher.publish(list(mapped))
        except BaseException:
            # Not recorded as seen: Shopify's retry must get another chance.
            for key in taken:
                try:
                    await self.redis.delete(key)
                except RedisError:
                    pass
            raise
        metrics.WEBHOOKS.labels(label, "accepted").inc()
        answer = {"status": "accepted", "events": len(mapped), "skipped_without_sku": mapped.skipped_without_sku,
                  **_flow_answer(to_flow)}
        return WebhookAnswer(200, answer)

    async def to_flow(self, topic: str, body: bytes, pairs: list, hook: Any) -> tuple[str, str] | None:
        """Hand a topic a sibling flow takes (order, customer, refund, return) to that flow's
        intake, durable in SQL before we answer. Returns (flow, its outcome), or None when
        no flow of this process takes the topic. A payload the flow cannot read is
        dead-lettered with the reason (Shopify gets 200: retrying cannot fix it)."""
        target = self.flow_intakes.get(topic)
        if target is None:
            return None
        flow, enqueue, rejected = target
        headers = {_name(k): (v.decode("latin-1") if isinstance(v, bytes) else str(v)) for k, v in pairs}
        try:
            payload = msgspec.json.decode(body)
            if not isinstance(payload, dict):
                raise msgspec.DecodeError("the body is not a JSON object")
            answer = await enqueue(topic, payload, headers)
        except (*rejected, msgspec.DecodeError, ValueError, TypeError, KeyError, AttributeError) as exc:
            if not isinstance(exc, (*rejected, msgspec.DecodeError)):
                # a payload shape the flow's parser did not expect: parked with the reason
                # (the body waits in the DLQ for a fix and a replay), never a 500
                log.warning("%s flow could not read a %s webhook", flow, topic, exc_info=True)
            await self.dead_letters.add([DeadLetter(
                reason=f"{FLOW_LABELS[flow]}_rejected", detail=str(exc) or type(exc).__name__, payload=body,
                stream=f"{INTAKE_PREFIX}shopify:{topic}", entry_id=hook.webhook_id, source="shopify",
            )])
            return flow, "dead_lettered"
        return flow, str(answer.get("outcome", "queued"))

    async def note_sales(self, keys: PushKeys, events: Iterable[Any]) -> None:
        """Note the order's lines as the shop's Shopify sales (flows/inventory/sales.py): once the
        ledger has applied their events, they settle units held as sales in flight."""
        await note_orders(
            self.redis,
            keys.sales,
            [(e.sku, e.event_id, e.quantity) for e in events if e.type in ("reserve", "pos_sale")],
        )


#: dead-letter reason and answer field of each flow ("order_flow_rejected", "order_flow": ...)
FLOW_LABELS = {"orders": "order_flow", "customers": "customer_flow", "returns": "returns_flow"}

#: topics whose ledger effects a flow books itself when this process feeds it: the returns
#: flow restocks a refund's lines (and releases CANCEL lines only once the order's reserve
#: is in the ledger), so the route must not publish them too: an event id is only
#: idempotent inside the ledger's window, and a worker kept down past it would count the
#: restock twice
FLOW_OWNS_STOCK = {"returns": ("refunds/create",)}


def _flow_answer(to_flow: tuple[str, str] | None) -> dict[str, str]:
    return {FLOW_LABELS[to_flow[0]]: to_flow[1]} if to_flow is not None else {}


def _name(key: Any) -> str:
    return (key.decode("latin-1") if isinstance(key, bytes) else str(key)).strip().lower()
