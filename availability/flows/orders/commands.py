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
from urllib.parse import urlparse

from availability.config import Settings

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
    p.set_defaults(handler=_erp_serve)

    flows = sub.add_parser("flows", help="sibling sync flows (order to ERP): feed, run, exceptions, reconcile")
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

    exc = fsub.add_parser("exceptions", help="the order flow's exception queue: list, retry, resolve")
    xsub = exc.add_subparsers(dest="exceptions_command", metavar="EXCEPTIONS_COMMAND", required=True)
    p = xsub.add_parser("list", help="exceptions (JSON lines)")
    p.add_argument("--all", action="store_true", help="resolved ones too")
    p.add_argument("--reason")
    p.set_defaults(handler=_exceptions_list)
    p = xsub.add_parser("retry", help="close the exception and post its order again")
    p.add_argument("ids", nargs="+", type=int)
    p.add_argument("--by", default="cli")
    p.set_defaults(handler=_exceptions_retry)
    p = xsub.add_parser("resolve", help="close the exception without posting (handled elsewhere)")
    p.add_argument("ids", nargs="+", type=int)
    p.add_argument("--by", default="cli")
    p.add_argument("--note", default="")
    p.set_defaults(handler=_exceptions_resolve)

    rec = fsub.add_parser("reconcile", help="compare the flow's orders with the ERP's sales")
    rsub = rec.add_subparsers(dest="reconcile_command", metavar="WHAT", required=True)
    p = rsub.add_parser("orders", help="missing, duplicated and mismatched sales; exit 1 on drift")
    p.add_argument("--day", help="sale date YYYY-MM-DD (default: all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_reconcile_orders)


# --- composition ------------------------------------------------------------------------------


def shop_name(settings: Settings) -> str:
    if settings.erp_shop:
        return settings.erp_shop
    if settings.shopify_url:
        return urlparse(settings.shopify_url).netloc or "shopify"
    return "shopify"


def erp_client(settings: Settings):
    """(client, embedded server or None): the configured Tryton, else the embedded one
    under the data dir, started here the way the embedded Redis is."""
    from adapters.erp.tryton.client import TrytonErp  # noqa: PLC0415
    from adapters.erp.tryton.server import ErpHome, TrytonServer  # noqa: PLC0415

    if settings.erp_url:
        if not settings.erp_password:
            raise SystemExit("AVAILABILITY_ERP_PASSWORD is required with AVAILABILITY_ERP_URL")
        return TrytonErp(settings.erp_url, settings.erp_login, settings.erp_password), None
    home = ErpHome(settings.data_dir)
    if not home.initialised():
        raise SystemExit(f"no ERP configured and none set up in {home.dir}: run `availability erp init`, or set "
                         "AVAILABILITY_ERP_URL (+ _LOGIN, _PASSWORD) for an existing Tryton")
    server = TrytonServer(settings.data_dir).start()
    log.info("embedded Tryton on %s (database %s)", server.url, home.database)
    return TrytonErp(server.url, server.login, server.password()), server


@asynccontextmanager
async def build_parts(settings: Settings, root, *, with_erp: bool = True) -> AsyncIterator[dict]:
    """`root` is the CLI's composition root (`args.root`): the Redis client comes from it, so
    these commands join the data dir's embedded server like every other command."""
    from availability.flows.orders.flow import OrderIntake, OrderQueue, OrderWorker, WorkerConfig  # noqa: PLC0415
    from availability.flows.orders.store import OrderStore  # noqa: PLC0415

    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    redis = root.make_redis(settings.redis_url, cluster=settings.redis_cluster) if settings.redis_url else None
    embedded = None
    if redis is None:
        embedded = root.open_runtime(settings)
        redis = (await embedded.__aenter__()).redis
    store = await OrderStore(settings.resolved_database_url()).open()
    erp, server = erp_client(settings) if with_erp else (None, None)
    queue = OrderQueue(redis, settings.key_prefix)
    parts = {"store": store, "queue": queue, "erp": erp,
             "intake": OrderIntake(store, queue, shop=shop_name(settings))}
    if erp is not None:
        parts["worker"] = OrderWorker(store, queue, erp, config=WorkerConfig(
            lease_ms=int(settings.orders_lease_seconds * 1000), retry_cap_s=settings.orders_retry_cap_seconds,
            erp_down_exception_after=settings.orders_erp_down_exception_after))
    try:
        yield parts
    finally:
        if erp is not None:
            await erp.aclose()
        if server is not None:
            server.stop()
        await store.close()
        if embedded is not None:
            await embedded.__aexit__(None, None, None)
        else:
            await redis.aclose()


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
    created = home.init(sorted(set(skus)), cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    _print({"database": str(home.database), "created": created, "products": len(set(skus))})
    return 0


def _erp_serve(args, settings: Settings) -> int:
    from adapters.erp.tryton.server import TrytonServer  # noqa: PLC0415

    server = TrytonServer(settings.data_dir, port=args.port).start()
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
        from availability.flows.orders.mapping import InvalidOrder  # noqa: PLC0415

        failed = 0
        async with build_parts(settings, args.root, with_erp=False) as parts:
            for i, name in enumerate(args.files):
                headers = {}
                if args.webhook_id:
                    headers["X-Shopify-Webhook-Id"] = args.webhook_id if len(args.files) == 1 else f"{args.webhook_id}-{i}"
                if args.shop:
                    headers["X-Shopify-Shop-Domain"] = args.shop
                try:
                    payload = json.loads(Path(name).read_text())
                    _print({"file": name, **await parts["intake"].enqueue_order_webhook(args.topic, payload, headers)})
                except (InvalidOrder, ValueError, OSError) as exc:
                    failed += 1
                    _print({"file": name, "outcome": "rejected", "reason": str(exc)})
        return 1 if failed else 0

    return asyncio.run(run())


def _orders_run(args, settings: Settings) -> int:
    async def run() -> int:
        async with build_parts(settings, args.root) as parts:
            worker = parts["worker"]
            if args.once:
                await worker.drain(timeout=600)
                _print(await parts["store"].counts())
                return 0
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await worker.run(stop)
            return 0

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
        async with build_parts(settings, args.root, with_erp=False) as parts:
            doc = await parts["store"].get(args.reference)
            if doc is None:
                print(f"no order {args.reference}", file=sys.stderr)
                return 1
            _print({"document": doc.as_dict(), "history": await parts["store"].history(args.reference)})
        return 0

    return asyncio.run(run())


# --- exceptions ---------------------------------------------------------------------------------


def _exceptions_list(args, settings: Settings) -> int:
    async def run() -> int:
        async with build_parts(settings, args.root, with_erp=False) as parts:
            for row in await parts["store"].list_exceptions(status=None if args.all else "open", reason=args.reason):
                _print(row)
        return 0

    return asyncio.run(run())


def _exceptions_retry(args, settings: Settings) -> int:
    async def run() -> int:
        from availability.flows.orders.flow import retry_exception  # noqa: PLC0415

        missing = 0
        async with build_parts(settings, args.root, with_erp=False) as parts:
            for exception_id in args.ids:
                try:
                    row = await retry_exception(parts["store"], parts["queue"], exception_id, by=args.by)
                    _print({"id": exception_id, "reference": row["reference"], "outcome": "retrying"})
                except KeyError:
                    missing += 1
                    _print({"id": exception_id, "outcome": "not found"})
        return 1 if missing else 0

    return asyncio.run(run())


def _exceptions_resolve(args, settings: Settings) -> int:
    async def run() -> int:
        from availability.flows.orders.flow import resolve_exception  # noqa: PLC0415

        missing = 0
        async with build_parts(settings, args.root, with_erp=False) as parts:
            for exception_id in args.ids:
                try:
                    row = await resolve_exception(parts["store"], exception_id, by=args.by, note=args.note)
                    _print({"id": exception_id, "reference": row["reference"], "outcome": "resolved"})
                except KeyError:
                    missing += 1
                    _print({"id": exception_id, "outcome": "not found"})
        return 1 if missing else 0

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
