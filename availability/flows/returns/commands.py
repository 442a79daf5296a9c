"""`availability flows returns feed|run|status|show` and `availability flows returns
exceptions list|retry|resolve`.

Thin: parse, build the flow's parts from settings (`build_parts`), call one function. The
worker sends its stock events to the ingest stream (`StreamSink`), like every source; the
ERP is the order flow's (the configured Tryton, else the embedded one); the lease, retry
cap and ERP-down threshold are the order flow's settings (`AVAILABILITY_ORDERS_*`).
"""

from __future__ import annotations

import argparse
import asyncio
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from availability.config import Settings
from availability.flows.commandkit import (
    add_exception_commands, feed_files, list_exceptions, print_json, run_worker, show_document, work_exceptions,
)

TOPICS = ("refunds/create", "returns/request", "returns/approve", "returns/decline", "returns/cancel",
          "returns/close", "returns/reopen", "returns/update", "reverse_fulfillment_orders/dispose")


def register(sub) -> None:
    flows = sub.choices.get("flows")
    if flows is None:  # the order flow's module registers `flows`; this one adds to it
        return
    fsub = next(a for a in flows._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    returns = fsub.add_parser("returns", help="the return-to-refund flow (credit notes, restocks)")
    rsub = returns.add_subparsers(dest="returns_command", metavar="RETURNS_COMMAND", required=True)
    p = rsub.add_parser("feed", help="take Shopify refund/return webhooks from JSON files in")
    p.add_argument("--topic", required=True, choices=TOPICS)
    p.add_argument("--webhook-id", help="X-Shopify-Webhook-Id (a redelivery with the same id is dropped)")
    p.add_argument("--shop", help="X-Shopify-Shop-Domain (default: the configured shop)")
    p.add_argument("files", nargs="+")
    p.set_defaults(handler=_feed)
    p = rsub.add_parser("run", help="run the returns worker (credit notes to the ERP, restocks to the ledger)")
    p.add_argument("--once", action="store_true", help="drain what is queued, then exit")
    p.set_defaults(handler=_run)
    p = rsub.add_parser("status", help="refunds by state (JSON)")
    p.set_defaults(handler=_status)
    p = rsub.add_parser("show", help="one refund's or return's document and history (JSON)")
    p.add_argument("key", help="e.g. shop.myshopify.com#refund-938271234624")
    p.set_defaults(handler=_show)
    add_exception_commands(rsub, name="exceptions", dest="returns_exceptions_command",
                           help="the returns flow's exception queue: list, retry, resolve",
                           retry_help="close the exception and settle its document again",
                           handlers=(_exceptions_list, _exceptions_retry, _exceptions_resolve))


@asynccontextmanager
async def build_parts(settings: Settings, root, *, with_worker: bool = True) -> AsyncIterator[dict]:
    from availability.flows.orders.commands import shop_name  # noqa: PLC0415
    from availability.flows.returns.flow import (  # noqa: PLC0415
        ReturnsIntake, ReturnsQueue, ReturnsWorker, SaleLookup, StreamSink, WorkerConfig,
    )
    from availability.flows.returns.store import ReturnStore  # noqa: PLC0415
    from availability.flows.inventory.shops import configured_shops  # noqa: PLC0415
    from availability.ingest.publisher import EventPublisher  # noqa: PLC0415
    from availability.ingest.shopify_webhooks import _Locations  # noqa: PLC0415

    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    async with root.open_runtime(settings) as runtime:
        url = settings.resolved_database_url()
        store = await ReturnStore(url).open()
        queue = ReturnsQueue(runtime.redis, settings.key_prefix)
        parts: dict = {"store": store, "queue": queue, "intake": ReturnsIntake(store, queue, shop=shop_name(settings))}
        erp = server = publisher = sales = None
        try:
            if with_worker:
                erp, server = root.erp_client(settings)
                publisher = EventPublisher(runtime)
                await publisher.start()
                shops = configured_shops(settings)
                if not shops:
                    raise SystemExit("no Shopify shop configured: the location map comes from its settings")
                sales = SaleLookup(url)
                parts["worker"] = ReturnsWorker(
                    store, queue, erp, StreamSink(publisher, runtime.ledger), sales,
                    _Locations(runtime, shops[0]).get, config=WorkerConfig(
                        lease_ms=int(settings.orders_lease_seconds * 1000),
                        retry_cap_s=settings.orders_retry_cap_seconds,
                        erp_down_exception_after=settings.orders_erp_down_exception_after))
            yield parts
        finally:
            if publisher is not None:
                await publisher.close()
            if sales is not None:
                await sales.engine.dispose()
            if erp is not None:
                await erp.aclose()
            if server is not None:
                server.stop()
            await store.close()


def _feed(args, settings: Settings) -> int:
    async def run() -> int:
        from availability.flows.returns.mapping import InvalidRefund  # noqa: PLC0415

        async with build_parts(settings, args.root, with_worker=False) as parts:
            return await feed_files(parts["intake"].enqueue_webhook, args.files, topic=args.topic,
                                    webhook_id=args.webhook_id, shop=args.shop, rejected=(InvalidRefund,))

    return asyncio.run(run())


def _run(args, settings: Settings) -> int:
    async def run() -> int:
        async with build_parts(settings, args.root) as parts:
            return await run_worker(parts["worker"], parts["store"].counts, once=args.once)

    return asyncio.run(run())


def _status(args, settings: Settings) -> int:
    async def run() -> int:
        async with build_parts(settings, args.root, with_worker=False) as parts:
            marks, urgent = await parts["queue"].work.pending()
            print_json({"refunds": await parts["store"].counts("refund"),
                        "returns": await parts["store"].counts("return"), "queued": marks + urgent,
                        "outbox": await parts["queue"].outbox.pending(),
                        "open_exceptions": len(await parts["store"].list_exceptions())})
        return 0

    return asyncio.run(run())


def _show(args, settings: Settings) -> int:
    async def run() -> int:
        async with build_parts(settings, args.root, with_worker=False) as parts:
            return await show_document(parts["store"], args.key, "refund or return")

    return asyncio.run(run())


def _exceptions_list(args, settings: Settings) -> int:
    async def run() -> int:
        async with build_parts(settings, args.root, with_worker=False) as parts:
            return await list_exceptions(parts["store"], include_resolved=args.all, reason=args.reason)

    return asyncio.run(run())


def _exceptions_retry(args, settings: Settings) -> int:
    async def run() -> int:
        from availability.flows.returns.flow import retry_exception  # noqa: PLC0415

        async with build_parts(settings, args.root, with_worker=False) as parts:
            return await work_exceptions(
                args.ids, lambda i: retry_exception(parts["store"], parts["queue"], i, by=args.by), "retrying", "key")

    return asyncio.run(run())


def _exceptions_resolve(args, settings: Settings) -> int:
    async def run() -> int:
        from availability.flows.returns.flow import resolve_exception  # noqa: PLC0415

        async with build_parts(settings, args.root, with_worker=False) as parts:
            return await work_exceptions(
                args.ids, lambda i: resolve_exception(parts["store"], i, by=args.by, note=args.note), "resolved", "key")

    return asyncio.run(run())
