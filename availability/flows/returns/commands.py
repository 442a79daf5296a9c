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
from typing import AsyncIterator

from availability.config import Settings
from availability.flows.commandkit import add_exception_commands, feed_files, print_json, run_worker, show_document

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
                           open_parts=_queue_parts, actions="availability.flows.returns.flow")


@asynccontextmanager
async def build_parts(settings: Settings, root, *, with_worker: bool = True) -> AsyncIterator[dict]:
    """The flow's parts from the composition root (`root.open_erp_flows` over a runtime: the
    worker books restocks through the runtime's ledger and event publisher)."""
    async with root.open_runtime(settings) as runtime, root.open_erp_flows(
            settings, runtime.redis, names=["orders", "returns"], with_erp=with_worker, runtime=runtime) as flows:
        returns = flows.returns
        yield {"store": returns.store, "queue": returns.queue, "intake": returns.intake, "worker": returns.worker}


def _queue_parts(args, settings: Settings):
    """The flow's store and queue, no ERP (the exception commands)."""
    return build_parts(settings, args.root, with_worker=False)


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
