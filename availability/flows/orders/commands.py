"""`availability erp init|serve` and `availability flows orders|exceptions|reconcile`.

Thin: parse, build the flow's parts from settings (`build_parts`), call one function.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from availability.config import Settings
from availability.flows.commandkit import add_exception_commands

log = logging.getLogger(__name__)


def register(sub) -> None:
    erp = sub.add_parser("erp", help="the embedded Tryton ERP of the order flows: init, serve")
    esub = erp.add_subparsers(dest="erp_command", metavar="ERP_COMMAND", required=True)
    p = esub.add_parser("init", help="set up the ERP database under <data_dir>/erp once (company, chart, fiscal "
                                     "year, a product per SKU)")
    p.add_argument("--sku", action="append", default=[], help="a SKU to create a product for (repeatable)")
    p.add_argument("--skus-file", help="a file with one SKU per line")
    p.add_argument("--catalogue", type=int, default=0, help="also the first N SKUs of the demo catalogue")
    p.add_argument("--cache-dir", help="reuse / keep a template database here (set-up takes minutes otherwise)")
    p.set_defaults(handler=_erp_init)
    p = esub.add_parser("serve", help="run trytond over the ERP database on a free (or given) loopback port")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1", help="listen address (0.0.0.0 in a container)")
    p.set_defaults(handler=_erp_serve)

    flows = sub.add_parser("flows", help="sibling sync flows (order to ERP, fulfilment): feed, run, exceptions, reconcile")
    fsub = flows.add_subparsers(dest="flows_command", metavar="FLOWS_COMMAND", required=True)
    orders = fsub.add_parser("orders", help="the order-to-ERP flow")
    osub = orders.add_subparsers(dest="orders_command", metavar="ORDERS_COMMAND", required=True)
    p = osub.add_parser("feed", help="take Shopify order webhooks from JSON files in, as the webhook route does")
    p.add_argument("--topic", required=True, choices=["orders/create", "orders/updated", "orders/paid",
                                                      "orders/cancelled"])
    p.add_argument("--webhook-id", help="X-Shopify-Webhook-Id (a redelivery with the same id is dropped)")
    p.add_argument("--shop", help="X-Shopify-Shop-Domain (default: the configured shop)")
    p.add_argument("files", nargs="+")
    p.set_defaults(handler=_orders_feed)
    p = osub.add_parser("run", help="run the order worker (posts to the ERP)")
    p.add_argument("--once", action="store_true", help="drain what is queued, then exit")
    p.set_defaults(handler=_orders_run)
    p = osub.add_parser("status", help="orders by state (JSON)")
    p.set_defaults(handler=_orders_status)
    p = osub.add_parser("show", help="one order's document and history (JSON)")
    p.add_argument("reference")
    p.set_defaults(handler=_orders_show)

    add_exception_commands(fsub, name="exceptions", dest="exceptions_command",
                           help="the order flow's exception queue: list, retry, resolve",
                           retry_help="close the exception and post its order again",
                           open_parts=_queue_parts, actions="availability.flows.orders.flow")

    from availability.flows.customers.commands import register as register_customers  # noqa: PLC0415
    from availability.flows.fulfilment.commands import register as register_fulfilment  # noqa: PLC0415

    register_fulfilment(fsub)
    register_customers(fsub)

    rec = fsub.add_parser("reconcile", help="compare the flow's orders with the ERP's sales")
    rsub = rec.add_subparsers(dest="reconcile_command", metavar="WHAT", required=True)
    p = rsub.add_parser("orders", help="missing, duplicated and mismatched sales; exit 1 on drift")
    p.add_argument("--day", help="sale date YYYY-MM-DD (default: all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_reconcile_orders)

    from availability.flows.finance.commands import register as register_finance  # noqa: PLC0415

    register_finance(fsub, rsub)  # `flows finance ...` and `flows reconcile finance`


# --- composition ------------------------------------------------------------------------------


def shop_name(settings: Settings) -> str:
    from availability.flows.orders.mapping import default_shop  # noqa: PLC0415

    return default_shop(settings.erp_shop, settings.shopify_url, settings.shopify_shop_domain)


@asynccontextmanager
async def build_parts(settings: Settings, root, *, with_erp: bool = True, names: list[str] | None = None
                      ) -> AsyncIterator[dict]:
    """The flow's parts from the composition root (`args.root.open_erp_flows`); the Redis
    client comes from it too, so these commands join the data dir's embedded server like
    every other command (and start the embedded Tryton when AVAILABILITY_ERP_URL is unset)."""
    redis = root.make_redis(settings.redis_url, cluster=settings.redis_cluster) if settings.redis_url else None
    embedded = None
    if redis is None:
        embedded = root.open_runtime(settings)
        redis = (await embedded.__aenter__()).redis
    try:
        async with root.open_erp_flows(settings, redis, names=names or ["orders"], with_erp=with_erp) as flows:
            yield {"store": flows.order_store, "queue": flows.order_queue, "erp": flows.erp,
                   "intake": flows.order_intake, "worker": flows.order_worker, "flows": flows}
    finally:
        if embedded is not None:
            await embedded.__aexit__(None, None, None)
        else:
            await redis.aclose()


def _queue_parts(args, settings: Settings):
    """The order flow's store and queue, no ERP (the exception commands)."""
    return build_parts(settings, args.root, with_erp=False)


def _print(value) -> None:
    print(json.dumps(value, default=str, sort_keys=True))


# --- erp ----------------------------------------------------------------------------------------


def _erp_init(args, settings: Settings) -> int:
    from adapters.erp.tryton.server import ErpHome, trytond_available  # noqa: PLC0415

    reason = trytond_available()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    skus = list(args.sku)
    if args.skus_file:
        skus += [s.strip() for s in Path(args.skus_file).read_text().splitlines() if s.strip()]
    if args.catalogue:
        from availability.demo.catalogue import build_catalogue  # noqa: PLC0415

        skus += build_catalogue(skus=args.catalogue).skus
    home = ErpHome(settings.data_dir)
    created = home.init(sorted(set(skus)), cache_dir=Path(args.cache_dir) if args.cache_dir else None,
                        password=settings.erp_password)
    _print({"database": str(home.database), "created": created, "products": len(set(skus))})
    return 0


def _erp_serve(args, settings: Settings) -> int:
    from adapters.erp.tryton.server import TrytonServer  # noqa: PLC0415

    server = TrytonServer(settings.data_dir, port=args.port, host=args.host).start()
    print(f"Tryton serving {server.home.database} at {server.url} (login {server.login}, password in "
          f"{server.home.password_file})", flush=True)
    print(f"  export AVAILABILITY_ERP_URL={server.url} AVAILABILITY_ERP_PASSWORD=$(cat {server.home.password_file})",
          flush=True)
    stopped = False

    def _stop(*_):
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stopped and server.process and server.process.poll() is None:
            time.sleep(0.5)
    finally:
        code = server.process.poll() if server.process else 0
        server.stop()
    return 0 if stopped else (code or 1)


# --- flows orders ------------------------------------------------------------------------------


def _orders_feed(args, settings: Settings) -> int:
    async def run() -> int:
        from availability.flows.commandkit import feed_files  # noqa: PLC0415
        from availability.flows.orders.mapping import InvalidOrder  # noqa: PLC0415

        async with build_parts(settings, args.root, with_erp=False) as parts:
            return await feed_files(parts["intake"].enqueue_order_webhook, args.files, topic=args.topic,
                                    webhook_id=args.webhook_id, shop=args.shop, rejected=(InvalidOrder,))

    return asyncio.run(run())


def _orders_run(args, settings: Settings) -> int:
    async def run() -> int:
        from availability.flows.commandkit import run_worker  # noqa: PLC0415

        async with build_parts(settings, args.root) as parts:
            return await run_worker(parts["worker"], parts["store"].counts, once=args.once)

    return asyncio.run(run())


def _orders_status(args, settings: Settings) -> int:
    async def run() -> int:
        async with build_parts(settings, args.root, with_erp=False) as parts:
            marks, urgent = await parts["queue"].work.pending()
            _print({"states": await parts["store"].counts(), "queued": marks + urgent,
                    "outbox": await parts["queue"].outbox.pending(),
                    "open_exceptions": len(await parts["store"].list_exceptions())})
        return 0

    return asyncio.run(run())


def _orders_show(args, settings: Settings) -> int:
    async def run() -> int:
        from availability.flows.commandkit import show_document  # noqa: PLC0415

        async with build_parts(settings, args.root, with_erp=False) as parts:
            return await show_document(parts["store"], args.reference, "order")

    return asyncio.run(run())


# --- reconcile ----------------------------------------------------------------------------------


def _reconcile_orders(args, settings: Settings) -> int:
    async def run() -> int:
        import datetime as dt  # noqa: PLC0415

        from availability.flows.orders.reconcile import reconcile, render_table  # noqa: PLC0415

        day = dt.date.fromisoformat(args.day) if args.day else None
        async with build_parts(settings, args.root) as parts:
            report = await reconcile(parts["store"], parts["erp"], shop=shop_name(settings), day=day)
        print(json.dumps(report, default=str, indent=2) if args.json else render_table(report))
        return 1 if report["drift"] else 0

    return asyncio.run(run())
