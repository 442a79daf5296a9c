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
                           open_parts=lambda args, settings: build_parts(settings, args.root, with_erp=False),
                           actions="availability.flows.finance.flow")

    p = rsub.add_parser("finance", help="payouts, captured payments and refunds of a day against the ERP; "
                                        "exit 1 on drift")
    p.add_argument("--day", required=True, help="YYYY-MM-DD (UTC)")
    p.add_argument("--json", action="store_true", help="the JSON report instead of the readable one")
    p.set_defaults(handler=_reconcile_finance)


@asynccontextmanager
async def build_parts(settings: Settings, root, *, with_erp: bool = True) -> AsyncIterator[dict]:
    """The flow's parts from the composition root (`root.open_erp_flows`, through the order
    commands' `build_parts`: Redis, the embedded or configured ERP); with the ERP, the
    poller (`flow`) and its Shopify Payments client."""
    from availability.flows.orders.commands import build_parts as order_parts, shop_name  # noqa: PLC0415

    async with order_parts(settings, root, with_erp=with_erp, names=["orders", "finance"]) as base:
        finance = base["flows"].finance
        flow = finance.worker
        yield {"store": finance.store, "queue": finance.queue, "erp": base["erp"], "shop": shop_name(settings),
               "flow": flow, "payments": flow.payments if flow is not None else None}


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
