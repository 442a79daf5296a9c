"""`availability flows customers feed|run|report`: the customer identity flow's CLI.

Thin, like the order commands (whose `build_parts` supplies the store, Redis and ERP)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from availability.config import Settings


def register(fsub) -> None:
    cust = fsub.add_parser("customers", help="customer identity: Shopify customers and buyers to ERP parties")
    csub = cust.add_subparsers(dest="customers_command", metavar="CUSTOMERS_COMMAND", required=True)
    p = csub.add_parser("feed", help="take Shopify customer webhooks from JSON files in, as the webhook route does")
    p.add_argument("--topic", required=True, choices=["customers/create", "customers/update", "customers/merge"])
    p.add_argument("--shop", help="X-Shopify-Shop-Domain (default: the configured shop)")
    p.add_argument("files", nargs="+")
    p.set_defaults(handler=_feed)
    p = csub.add_parser("run", help="match received customers to ERP parties")
    p.add_argument("--once", action="store_true", help="drain what is queued, then exit")
    p.set_defaults(handler=_run)
    p = csub.add_parser("report", help="why each customer / order maps to its party, with what confidence")
    p.add_argument("--json", action="store_true")
    p.add_argument("--shop", help="only this shop's customers")
    p.set_defaults(handler=_report)


def _parts(settings: Settings, root, *, with_erp: bool):
    from availability.flows.orders.commands import build_parts  # noqa: PLC0415

    return build_parts(settings, root, with_erp=with_erp, names=["orders", "customers"])


def _customer_parts(settings: Settings, parts: dict) -> dict:
    """The flow the composition root built (`open_erp_flows`): store, queue, intake, worker."""
    customers = parts["flows"].customers
    return {"store": customers.store, "queue": customers.queue, "intake": customers.intake,
            "worker": customers.worker}


def _feed(args, settings: Settings) -> int:
    async def run() -> int:
        from availability.flows.customers.flow import InvalidCustomer  # noqa: PLC0415

        failed = 0
        async with _parts(settings, args.root, with_erp=False) as parts:
            intake = _customer_parts(settings, parts)["intake"]
            headers = {"X-Shopify-Shop-Domain": args.shop} if args.shop else {}
            for name in args.files:
                try:
                    payload = json.loads(Path(name).read_text())
                    out = await intake.enqueue_customer_webhook(args.topic, payload, headers)
                    print(json.dumps({"file": name, **out}, sort_keys=True))
                except (InvalidCustomer, ValueError, OSError) as exc:
                    failed += 1
                    print(json.dumps({"file": name, "outcome": "rejected", "reason": str(exc)}, sort_keys=True))
        return 1 if failed else 0

    return asyncio.run(run())


def _run(args, settings: Settings) -> int:
    async def run() -> int:
        from availability.flows.commandkit import run_worker  # noqa: PLC0415

        async with _parts(settings, args.root, with_erp=True) as parts:
            return await run_worker(_customer_parts(settings, parts)["worker"], once=args.once)

    return asyncio.run(run())


def _report(args, settings: Settings) -> int:
    async def run() -> int:
        from availability.flows.customers.identity import match_report, render_report  # noqa: PLC0415

        async with _parts(settings, args.root, with_erp=False) as parts:
            report = await match_report(_customer_parts(settings, parts)["store"], shop=args.shop)
        print(json.dumps(report, default=str, indent=2, sort_keys=True) if args.json else render_report(report))
        return 0

    code = asyncio.run(run())
    sys.stdout.flush()
    return code
