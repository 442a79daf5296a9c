"""`availability flows finance poll|run|status|show|exceptions` and
`availability flows reconcile finance --day D`.

Thin: parse, build the flow's parts from settings (`build_parts`), call one function.
Registered by `availability.flows.orders.commands.register` under its `flows` and
`flows reconcile` parsers (one `flows` command tree).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import sys
from contextlib import asynccontextmanager
from typing import AsyncIterator

from availability.config import Settings
from availability.flows.commandkit import add_exception_commands
from availability.flows.orders.commands import _print


def register(fsub, rsub) -> None:
    fin = fsub.add_parser("finance", help="finance posting: Shopify Payments payouts to ERP journal entries")
    sub = fin.add_subparsers(dest="finance_command", metavar="FINANCE_COMMAND", required=True)
    p = sub.add_parser("run", help="poll Shopify's payouts and post them to the ERP")
    p.add_argument("--once", action="store_true", help="poll once, post what is due, then exit")
    p.add_argument("--since", help="payouts issued from this day (YYYY-MM-DD; default: the lookback window)")
    p.set_defaults(handler=_finance_run)
    p = sub.add_parser("status", help="payouts by state (JSON)")
    p.set_defaults(handler=_finance_status)
    p = sub.add_parser("show", help="one payout's document and history (JSON)")
    p.add_argument("payout", help="payout GID or legacy id")
    p.set_defaults(handler=_finance_show)
    add_exception_commands(sub, name="exceptions", dest="finance_exceptions_command",
                           help="the finance exception queue: list, retry, resolve",
                           retry_help="close the exception and post its payout again",
                           handlers=(_exceptions_list, _exceptions_retry, _exceptions_resolve))

    p = rsub.add_parser("finance", help="payouts, captured payments and refunds of a day against the ERP; "
                                        "exit 1 on drift")
    p.add_argument("--day", required=True, help="YYYY-MM-DD (UTC)")
    p.add_argument("--json", action="store_true", help="the JSON report instead of the readable one")
    p.set_defaults(handler=_reconcile_finance)


@asynccontextmanager
async def build_parts(settings: Settings, root, *, with_erp: bool = True) -> AsyncIterator[dict]:
    """The order flow's parts (Redis, embedded or configured ERP) plus this flow's."""
    from adapters.shopify.client import ShopifyAdminClient  # noqa: PLC0415
    from adapters.shopify.payments import ShopifyPayments  # noqa: PLC0415
    from availability.flows.finance.flow import FinanceConfig, FinanceFlow, FinanceQueue  # noqa: PLC0415
    from availability.flows.finance.store import FinanceStore  # noqa: PLC0415
    from availability.flows.orders.commands import build_parts as order_parts, shop_name  # noqa: PLC0415

    if with_erp and not (settings.shopify_url and settings.shopify_token):
        raise SystemExit("the finance flow reads Shopify Payments: set AVAILABILITY_SHOPIFY_URL and "
                         "AVAILABILITY_SHOPIFY_TOKEN (scope shopify_payments_payouts)")
    async with order_parts(settings, root, with_erp=with_erp) as base:
        store = await FinanceStore(settings.resolved_database_url()).open()
        queue = FinanceQueue(base["queue"].redis, settings.key_prefix)
        parts = {"store": store, "queue": queue, "erp": base["erp"], "shop": shop_name(settings)}
        shopify = None
        if base["erp"] is not None:
            shopify = ShopifyAdminClient(settings.shopify_url, settings.shopify_token, settings.shopify_api_version,
                                         timeout=settings.shopify_timeout_seconds)
            parts["payments"] = ShopifyPayments(shopify)
            parts["flow"] = FinanceFlow(store, queue, base["erp"], parts["payments"], shop=parts["shop"],
                                        config=FinanceConfig(
                # a payout's listing and entry take longer than a sale: twice the order flow's lease
                lease_ms=int(settings.orders_lease_seconds * 2000),
                retry_cap_s=settings.orders_retry_cap_seconds,
                erp_down_exception_after=settings.orders_erp_down_exception_after))
        try:
            yield parts
        finally:
            if shopify is not None:
                await shopify.aclose()
            await store.close()


def _finance_run(args, settings: Settings) -> int:
    async def run() -> int:
        since = dt.date.fromisoformat(args.since) if args.since else None
        async with build_parts(settings, args.root) as parts:
            flow = parts["flow"]
            if args.once:
                polled = await flow.poll(issued_from=since)
                await flow.drain(timeout=3600)
                _print({"polled": polled, "states": await parts["store"].counts()})
                return 0
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await flow.run(stop)
            return 0

    return asyncio.run(run())


def _finance_status(args, settings: Settings) -> int:
    async def run() -> int:
        async with build_parts(settings, args.root, with_erp=False) as parts:
            marks, urgent = await parts["queue"].work.pending()
            _print({"states": await parts["store"].counts(), "queued": marks + urgent,
                    "outbox": await parts["queue"].outbox.pending(),
                    "transactions_posted": await parts["store"].transaction_count(),
                    "open_exceptions": len(await parts["store"].list_exceptions())})
        return 0

    return asyncio.run(run())


def _finance_show(args, settings: Settings) -> int:
    async def run() -> int:
        payout_id = args.payout if args.payout.startswith("gid://") else f"gid://shopify/ShopifyPaymentsPayout/{args.payout}"
        async with build_parts(settings, args.root, with_erp=False) as parts:
            doc = await parts["store"].get(payout_id)
            if doc is None:
                print(f"no payout {payout_id}", file=sys.stderr)
                return 1
            _print({"document": doc.as_dict(), "history": await parts["store"].history(payout_id)})
        return 0

    return asyncio.run(run())


def _exceptions_list(args, settings: Settings) -> int:
    async def run() -> int:
        async with build_parts(settings, args.root, with_erp=False) as parts:
            for row in await parts["store"].list_exceptions(status=None if args.all else "open", reason=args.reason):
                _print(row)
        return 0

    return asyncio.run(run())


def _exceptions_act(args, settings: Settings, *, retry: bool) -> int:
    async def run() -> int:
        from availability.flows.finance.flow import resolve_exception, retry_exception  # noqa: PLC0415

        missing = 0
        async with build_parts(settings, args.root, with_erp=False) as parts:
            for exception_id in args.ids:
                try:
                    if retry:
                        row = await retry_exception(parts["store"], parts["queue"], exception_id, by=args.by)
                    else:
                        row = await resolve_exception(parts["store"], exception_id, by=args.by, note=args.note)
                    _print({"id": exception_id, "reference": row["reference"],
                            "outcome": "retrying" if retry else "resolved"})
                except KeyError:
                    missing += 1
                    _print({"id": exception_id, "outcome": "not found"})
        return 1 if missing else 0

    return asyncio.run(run())


def _exceptions_retry(args, settings: Settings) -> int:
    return _exceptions_act(args, settings, retry=True)


def _exceptions_resolve(args, settings: Settings) -> int:
    return _exceptions_act(args, settings, retry=False)


def _reconcile_finance(args, settings: Settings) -> int:
    async def run() -> int:
        from availability.flows.finance.reconcile import reconcile, render_report  # noqa: PLC0415

        try:
            day = dt.date.fromisoformat(args.day)
        except ValueError:
            print(f"--day must be YYYY-MM-DD, got {args.day!r}", file=sys.stderr)
            return 2
        async with build_parts(settings, args.root) as parts:
            report = await reconcile(parts["store"], parts["erp"], parts["payments"], shop=parts["shop"], day=day)
        print(json.dumps(report, default=str, indent=2) if args.json else render_report(report))
        return 1 if report["drift"] else 0

    return asyncio.run(run())
