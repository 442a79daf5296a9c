"""CLI of the sync flows (thin: parse, call one function, print).

    availability publish                                  run the Shopify publisher alone
    availability shopify status                           pending marks, outbox, dead letters, unmapped
    availability shopify resync [--dry-run] [--sku S]...  compare every mapped level with ATS and repair
                                [--bulk] [--shop NAME]    (bulk operations: the whole catalogue in two)
    availability shopify import-mappings PATH             SKU -> item and (channel, location) -> location GIDs
    availability shopify unmapped [--scan] [--limit N]    SKUs with stock changes but no item mapping
    availability shopify dlq list [--limit N]             dead-lettered pushes with their reasons
    availability shopify dlq replay (ID... | --all)       push them again (Shopify's value read first)
    availability shopify migrate-keys [--shop NAME]...    move the push's keys to the partitioned names
    availability sim shopify [--port 8765 --plan ...]     the local Shopify Admin API simulator
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from availability.config import Settings
from availability.progress import Progress


def register(sub) -> None:
    p = sub.add_parser("publish", help="run the Shopify publisher (push, outbox recovery, drift repair) alone")
    p.set_defaults(handler=lambda args, settings: asyncio.run(run_publish(args, settings)))

    shopify = sub.add_parser("shopify", help="Shopify inventory push tools: resync, mappings, unmapped, dead letters")
    ssub = shopify.add_subparsers(dest="shopify_command", metavar="ACTION")
    shopify.set_defaults(handler=lambda args, settings: _help(shopify))

    p = ssub.add_parser("status", help="pending marks, outbox, dead letters and unmapped SKUs (JSON)")
    p.add_argument("--shop", default=None, help="which shop (AVAILABILITY_SHOPIFY_SHOPS name; default: the first)")
    p.set_defaults(handler=lambda args, settings: asyncio.run(show_status(args, settings)))

    p = ssub.add_parser("resync", help="read every mapped Shopify level back, compare with ATS, repair differences")
    p.add_argument("--dry-run", action="store_true", help="only print the differences")
    p.add_argument("--sku", action="append", default=None, help="only this SKU (repeatable)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the repairs to be pushed")
    p.add_argument("--bulk", action="store_true", help="read and write the whole catalogue with bulk operations")
    p.add_argument("--shop", default=None, help="which shop (AVAILABILITY_SHOPIFY_SHOPS name; default: the first)")
    p.set_defaults(handler=lambda args, settings: asyncio.run(resync(args, settings)))

    p = ssub.add_parser("import-mappings", help="import Shopify mappings from a .csv or .json file")
    p.add_argument("path")
    p.add_argument("--actor", default="cli")
    p.add_argument("--reason", default="import-mappings")
    p.set_defaults(handler=lambda args, settings: asyncio.run(import_mappings(args, settings)))

    p = ssub.add_parser("unmapped", help="SKUs whose stock changed but that have no InventoryItem mapping")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--scan", action="store_true", help="scan the whole ledger instead of the SKUs seen by the publisher")
    p.add_argument("--shop", default=None, help="which shop (AVAILABILITY_SHOPIFY_SHOPS name; default: the first)")
    p.set_defaults(handler=lambda args, settings: asyncio.run(list_unmapped(args, settings)))

    dlq = ssub.add_parser("dlq", help="dead-lettered pushes: list, replay")
    dsub = dlq.add_subparsers(dest="dlq_command", metavar="ACTION")
    dlq.set_defaults(handler=lambda args, settings: _help(dlq))
    p = dsub.add_parser("list", help="dead letters, oldest first (JSON lines)")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--shop", default=None, help="which shop (AVAILABILITY_SHOPIFY_SHOPS name; default: the first)")
    p.set_defaults(handler=lambda args, settings: asyncio.run(dlq_list(args, settings)))
    p = dsub.add_parser("replay", help="unpark dead-lettered levels and push them again")
    p.add_argument("ids", nargs="*", help="dead letter ids (see `dlq list`)")
    p.add_argument("--all", action="store_true", help="replay every dead letter")
    p.add_argument("--shop", default=None, help="which shop (AVAILABILITY_SHOPIFY_SHOPS name; default: the first)")
    p.set_defaults(handler=lambda args, settings: asyncio.run(dlq_replay(args, settings)))

    p = ssub.add_parser(
        "migrate-keys",
        help="move the push's Redis keys from their names before partitions (publishers stopped)",
    )
    p.add_argument("--shop", action="append", default=None,
                   help="a shop name to move besides the configured ones (repeatable)")
    p.set_defaults(handler=lambda args, settings: asyncio.run(migrate_keys(args, settings)))

    _register_sim(sub)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def _register_sim(sub) -> None:
    """`availability sim shopify`. Another area may own `sim` (other simulators): join it."""
    existing = sub.choices.get("sim") if hasattr(sub, "choices") else None
    if existing is None:
        existing = sub.add_parser("sim", help="local simulators of outside systems")
        existing.set_defaults(handler=lambda args, settings: _help(existing))
    actions = [a for a in existing._actions if isinstance(a, argparse._SubParsersAction)]
    sims = actions[0] if actions else existing.add_subparsers(dest="sim_command", metavar="SYSTEM")
    if "shopify" in sims.choices:
        return
    from adapters.shopify.simulator import add_simulator_arguments

    # The simulator owns its option list (one place, so `python -m adapters.shopify.simulator`
    # and this command cannot drift apart).
    p = sims.add_parser(
        "shopify",
        help="the Shopify GraphQL Admin API simulator (cost-based rate limits, faults, sales, webhooks, bulk)",
    )
    add_simulator_arguments(p)
    p.set_defaults(handler=run_sim_shopify)


def run_sim_shopify(args, settings: Settings) -> int:
    from adapters.shopify.simulator import config_from_args, run_simulator

    run_simulator(args.host, args.port, config_from_args(args))
    return 0


# --- handlers -------------------------------------------------------------------------------------


def _shop(args, settings: Settings):
    """The shop `--shop` names (None, after saying why, if there is no such shop)."""
    from availability.flows.inventory.service import select_shop
    from availability.flows.inventory.shops import ShopConfigError

    try:
        return select_shop(settings, getattr(args, "shop", None))
    except ShopConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None


def _count_rows(path: str) -> int | None:
    """Rows of a mappings file (CSV lines after the header; JSON items and locations)."""
    try:
        if path.lower().endswith(".csv"):
            with open(path, encoding="utf-8-sig") as fh:
                return max(0, sum(1 for line in fh if line.strip()) - 1)
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        return len(doc.get("items") or ()) + len(doc.get("locations") or ())
    except (OSError, ValueError, AttributeError):
        return None


def _print(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=False, default=str))


async def run_publish(args, settings: Settings) -> int:
    from availability.flows.inventory.service import PublisherService, shopify_configured

    if not shopify_configured(settings):
        print("set AVAILABILITY_SHOPIFY_URL and AVAILABILITY_SHOPIFY_TOKEN first", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with args.root.open_runtime(settings) as runtime:
        service = PublisherService(runtime)
        await service.start()
        shops = ", ".join(f"{p.shop.label} ({p.shop.url})" for p in service.pushes)
        print(f"publishing to {shops}; Ctrl-C stops", file=sys.stderr, flush=True)
        try:
            await stop.wait()
        finally:
            await service.stop()
    return 0


async def migrate_keys(args, settings: Settings) -> int:
    from availability.flows.inventory.migrate import PushKeyMigration
    from availability.flows.inventory.shops import ShopConfigError, configured_shops

    try:
        names = [shop.name for shop in configured_shops(settings)]
    except ShopConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    names = list(dict.fromkeys([*names, *(args.shop or ())]))
    async with args.root.open_runtime(settings) as runtime:
        with Progress("migrate push keys", unit="keys") as bar:
            migration = PushKeyMigration(runtime.redis, runtime.ledger.keys, names,
                                         on_progress=lambda _phase, n: bar.update(n))
            report = await migration.run()
        _print({"shops": [n or "default" for n in names], **report.as_dict()})
    return 0


async def show_status(args, settings: Settings) -> int:
    from availability.flows.inventory.service import build_publisher

    shop = _shop(args, settings)
    if shop is None:
        return 2
    async with args.root.open_runtime(settings) as runtime:
        publisher = build_publisher(runtime, shop=shop)
        try:
            await publisher.fanout.run()  # the ledger partitions' marks, handed over as before a round
            marks, urgent = await publisher.queue.pending()
            oldest = await publisher.queue.oldest_ms()
            outbox = await publisher.outbox.messages()
            _print(
                {
                    "shop": shop.label,
                    "shopify_url": shop.url,
                    # the partition-tagged names, for redis-cli (docs/shopify-push.md "Keys")
                    "queue_keys": f"{publisher.keys.base}:*",
                    "levels_stream": publisher.keys.levels_stream,
                    "pending_marks": marks,
                    "urgent_marks": urgent,
                    "oldest_mark_ms": oldest,
                    "outbox": [{"id": o.id, "key": o.idempotency_key, "attempts": o.attempts, "owner": o.owner,
                                "last_error": o.last_error} for o in outbox],
                    "dead_letters": await publisher.dlq.size(),
                    "parked_levels": len(await publisher.state.parked_all()),
                    "unmapped_skus": await publisher.state.unmapped_count(),
                    # SKUs with units held as Shopify's own sales in flight (flows/inventory/sales.py)
                    "skus_with_sales_in_flight": await publisher.sales.holding(),
                }
            )
        finally:
            await publisher.client.aclose()
    return 0


async def resync(args, settings: Settings) -> int:
    from availability.flows.inventory.service import build_publisher, build_repairer

    shop = _shop(args, settings)
    if shop is None:
        return 2
    if not shop.pushes:
        print("set AVAILABILITY_SHOPIFY_URL and AVAILABILITY_SHOPIFY_TOKEN first", file=sys.stderr)
        return 2
    async with args.root.open_runtime(settings) as runtime:
        publisher = build_publisher(runtime, shop=shop)
        try:
            await publisher.refresh_mappings(force=True)
            repairer = build_repairer(publisher, settings)
            if getattr(args, "bulk", False):
                if args.sku:
                    print("--bulk reads the whole catalogue; leave out --sku", file=sys.stderr)
                    return 2
                bars: dict[str, Progress] = {}

                def phase(name: str, done: int, total: int | None) -> None:
                    for other in [k for k in bars if k != name]:
                        bars.pop(other).close()
                    unit = "SKUs" if name == "compare" else "objects"
                    bar = bars.get(name) or bars.setdefault(name, Progress(f"resync ({name})", total, unit=unit))
                    bar.update(done, total)

                try:
                    result = await repairer.bulk_resync(dry_run=args.dry_run, on_progress=phase)
                finally:
                    for bar in bars.values():
                        bar.close()
            else:
                with Progress("resync", unit="SKUs") as bar:
                    result = await repairer.resync(
                        skus=args.sku, dry_run=args.dry_run, timeout=args.timeout, on_progress=bar.update
                    )
            result["dry_run"] = args.dry_run
            _print(result)
        finally:
            await publisher.client.aclose()
    return 0


async def import_mappings(args, settings: Settings) -> int:
    from availability.domain.errors import AvailabilityError
    from availability.rules.errors import InvalidMasterData

    rows = _count_rows(args.path)
    async with args.root.open_runtime(settings) as runtime:
        # The store imports the file in one transaction (all or nothing), so the bar moves
        # once, at the end: what it adds on a long import is the elapsed time and the rate.
        with Progress(f"import {args.path}", rows, unit="rows") as bar:
            try:
                changed = await runtime.store.mappings.import_mappings_file(args.path, actor=args.actor, reason=args.reason)
            except (InvalidMasterData, AvailabilityError, OSError) as exc:
                print(f"{args.path}: {getattr(exc, 'detail', None) or exc}", file=sys.stderr)
                return 1
            bar.update(rows or 0)
        _print({"changed": changed, "store_version": await runtime.store.version()})
    return 0


async def list_unmapped(args, settings: Settings) -> int:
    from availability.flows.inventory.state import PushKeys, PushScripts, PushState

    async with args.root.open_runtime(settings) as runtime:
        items = await runtime.store.mappings.item_mappings()
        if args.scan:
            skus = sorted({sku async for batch in runtime.ledger.stock_skus() for sku in batch if sku not in items})
            _print({"unmapped": len(skus), "skus": skus[: args.limit] if args.limit > 0 else skus})
            return 0
        shop = _shop(args, settings)
        if shop is None:
            return 2
        state = PushState(runtime.redis, PushKeys(runtime.ledger.keys, shop.name), PushScripts(runtime.redis))
        seen = [(sku, at) for sku, at in await state.unmapped(limit=0) if sku not in items]
        _print(
            {
                "unmapped": len(seen),
                "skus": [{"sku": sku, "last_seen_ms": at} for sku, at in seen[: args.limit if args.limit > 0 else None]],
            }
        )
    return 0


async def dlq_list(args, settings: Settings) -> int:
    import msgspec
    from availability.flows.machinery import DeadLetterQueue
    from availability.flows.inventory.state import PushKeys

    shop = _shop(args, settings)
    if shop is None:
        return 2
    async with args.root.open_runtime(settings) as runtime:
        dlq = DeadLetterQueue(runtime.redis, PushKeys(runtime.ledger.keys, shop.name).dlq)
        print(json.dumps({"dead_letters": await dlq.size()}), file=sys.stderr)
        for letter in await dlq.list(0, args.limit):
            print(msgspec.json.encode(letter).decode())
    return 0


async def dlq_replay(args, settings: Settings) -> int:
    from availability.flows.inventory.service import build_publisher

    if not args.ids and not args.all:
        print("name dead letter ids, or --all", file=sys.stderr)
        return 2
    shop = _shop(args, settings)
    if shop is None:
        return 2
    async with args.root.open_runtime(settings) as runtime:
        publisher = build_publisher(runtime, shop=shop)
        try:
            await publisher.refresh_mappings(force=True)
            replayed = await publisher.replay_dead_letters(None if args.all else args.ids)
            _print({"replayed": [r.id for r in replayed], "left": await publisher.dlq.size()})
        finally:
            await publisher.client.aclose()
    return 0
