"""The customer flow: Shopify `customers/create`, `customers/update`, `customers/merge`
webhooks in, each customer matched to one ERP party (identity.py) by a worker.

Intake is SQL before it answers, like the order flow: the customer's document is merged
(newest `updated_at` wins) and the customer is marked urgent in the flow's `WorkQueue`
(flows/machinery.py). A merge needs no ERP call at intake: the merged-away customer is
pointed at the survivor (`resultingCustomerId`) there and then, so an order of either that
arrives later goes to the survivor's party. When the merged-away customer had an ERP party
of its own, the survivor is marked again and its worker has the ERP replace that party by
the survivor's (`CustomerIdentity.settle_merges`, Tryton's party replacement: its sales
move to the kept party, it is deactivated), once.

The worker claims marked customers with a lease (one worker per customer), and also
sweeps documents still `received` after a lease (a worker killed after its claim took
the marks: the SQL state is what is left to do, not the Redis mark).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from redis.asyncio import Redis

from adapters.erp.port import ErpError
from availability.flows.customers import matching
from availability.flows.customers.identity import CustomerIdentity, customer_source
from availability.flows.customers.store import CustomerStore

from availability.flows.machinery import FlowKeys, Leases, Scripts, WorkQueue, now_ms, run_rounds

log = logging.getLogger(__name__)

CUSTOMER_TOPICS = ("customers/create", "customers/update", "customers/merge")


class InvalidCustomer(ValueError):
    """A customer webhook that names no customer (the route answers 422)."""

    reason = "invalid_customer"


class CustomerQueue:
    """The flow's marks and leases under `{prefix}:{customers}` (machinery.py `FlowKeys`: one
    hash tag, so the claim names one slot on Redis Cluster); no outbox or retry schedule."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.keys = FlowKeys(prefix, "customers")
        scripts = Scripts(redis)
        self.redis = redis
        self.leases = Leases(redis, self.keys.leases, scripts)
        self.work = WorkQueue(redis, marks_key=self.keys.marks, urgent_key=self.keys.urgent, leases=self.leases,
                              scripts=scripts)

    async def wake(self, sources: list[str]) -> None:
        if sources:
            await self.work.flag_urgent([f"{s}|customer" for s in sources])


def _gid_id(value) -> str | None:
    if value in (None, ""):
        return None
    return str(value).rsplit("/", 1)[-1]


def merge_parties(payload: dict) -> tuple[str, list[str]]:
    """(surviving customer id, merged-away ids) of a `customers/merge` body: Shopify's
    `customerMerge` names `resultingCustomerId` among `customerOneId` / `customerTwoId`."""
    survivor = _gid_id(payload.get("resultingCustomerId") or payload.get("admin_graphql_api_customer_kept_id"))
    others = [payload.get("customerOneId"), payload.get("customerTwoId"),
              payload.get("admin_graphql_api_customer_deleted_id"), *(payload.get("mergedCustomerIds") or [])]
    losers = sorted({i for i in (_gid_id(o) for o in others) if i and i != survivor})
    if not survivor or not losers:
        raise InvalidCustomer("a customer merge needs resultingCustomerId and the merged-away customer id")
    return survivor, losers


class CustomerIntake:
    def __init__(self, store: CustomerStore, queue: CustomerQueue, *, shop: str) -> None:
        self.store = store
        self.queue = queue
        self.shop = shop

    async def enqueue_customer_webhook(self, topic: str, payload: dict, headers: dict[str, str] | None = None) -> dict:
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        if topic not in CUSTOMER_TOPICS:
            raise InvalidCustomer(f"not a customer topic: {topic!r}")
        if not isinstance(payload, dict):
            raise InvalidCustomer("the payload is not a JSON object")
        shop = headers.get("x-shopify-shop-domain") or self.shop
        if topic == "customers/merge":
            survivor_id, loser_ids = merge_parties(payload)
            survivor = customer_source(shop, survivor_id)
            losers = [customer_source(shop, i) for i in loser_ids]
            for loser in losers:
                await self.store.merge(loser=loser, survivor=survivor, shop=shop,
                                       detail=f"merged in Shopify into {survivor}")
            await self.queue.wake([survivor])
            return {"outcome": "merged", "survivor": survivor, "merged": losers}
        cid = matching.customer_id(payload)
        if not cid:
            raise InvalidCustomer("the customer has no id")
        source = customer_source(shop, cid)
        await self.store.receive(source=source, shop=shop, customer_id=cid, payload=payload)
        await self.queue.wake([source])
        return {"outcome": "queued", "source": source}


class CustomerWorker:
    def __init__(self, identity: CustomerIdentity, queue: CustomerQueue, *, lease_ms: int = 60_000,
                 batch: int = 50, owner: str | None = None) -> None:
        self.identity = identity
        self.store = identity.store
        self.queue = queue
        self.lease_ms = lease_ms
        self.batch = batch
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    async def run_once(self) -> int:
        claimed = await self.queue.work.claim(self.owner, window_ms=None, limit=self.batch, lease_ms=self.lease_ms)
        sources = [item.group for item in claimed]
        # a worker that died after claiming took the marks; the documents still say received
        stale = [s for s in await self.store.pending(self.batch) if s not in sources]
        for source in stale:
            row = await self.store.get(source)
            if row is not None and row.updated_ms < now_ms() - self.lease_ms and \
                    await self.queue.leases.acquire([source], self.owner, self.lease_ms):
                sources.append(source)
        for source in sources:
            try:
                await self.identity.resolve_customer(source)
            except ErpError as exc:
                # the document stays `received`: the next round (or the sweep) tries again
                log.warning("customer %s: not matched yet: %s", source, exc)
                await self.queue.wake([source])
            finally:
                await self.queue.leases.release([source], self.owner)
        return len(sources)

    async def drain(self, *, timeout: float = 60.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            await self.run_once()
            marks, urgent = await self.queue.work.pending()
            if not (marks or urgent) and not await self.store.pending(1):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("customer flow did not drain")

    async def run(self, stop: asyncio.Event) -> None:
        await run_rounds(self.run_once, stop, logger=log, what="customer worker")
