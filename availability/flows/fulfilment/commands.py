"""`availability flows fulfilment feed-945|run|status|show|exceptions` (registered under
`flows` by availability/flows/orders/commands.py). Thin: parse, build the flows from the
composition root (`args.root.open_erp_flows`), call one function."""

from __future__ import annotations

import asyncio
import signal
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from availability.config import Settings
from availability.flows.commandkit import add_exception_commands


def register(fsub) -> None:
    ful = fsub.add_parser("fulfilment", help="the fulfilment flow: shipments (WMS 945, ERP) to Shopify fulfillments")
    sub = ful.add_subparsers(dest="fulfilment_command", metavar="FULFILMENT_COMMAND", required=True)
    p = sub.add_parser("feed-945", help="take WMS 945 shipping advices (X12 files) in")
    p.add_argument("files", nargs="+")
    p.set_defaults(handler=_feed_945)
    p = sub.add_parser("run", help="run the fulfilment worker and the ERP shipment watcher")
    p.add_argument("--once", action="store_true", help="read the ERP's done shipments once, drain, exit")
    p.set_defaults(handler=_run)
    p = sub.add_parser("status", help="shipments by state (JSON)")
    p.set_defaults(handler=_status)
    p = sub.add_parser("show", help="one shipment's document and history (JSON)")
    p.add_argument("shipment_id")
    p.set_defaults(handler=_show)
    add_exception_commands(sub, name="exceptions", dest="fulfilment_exceptions_command",
                           help="the fulfilment flow's exception queue: list, retry, resolve",
                           retry_help="close the exception and settle its shipment again",
                           open_parts=_queue_parts, actions="availability.flows.fulfilment.flow", key="shipment_id")


def _parts(settings: Settings, args, *, with_erp: bool = False):
    from availability.flows.orders.commands import build_parts

    return build_parts(settings, args.root, with_erp=with_erp, names=["orders", "fulfilment"])


@asynccontextmanager
async def _queue_parts(args, settings: Settings) -> AsyncIterator[dict]:
    """The fulfilment flow's store and queue, no ERP (the exception commands)."""
    async with _parts(settings, args) as parts:
        yield {"store": parts["flows"].fulfilment.store, "queue": parts["flows"].fulfilment.queue}


def _print(value) -> None:
    from availability.flows.orders.commands import _print as out

    out(value)


def _feed_945(args, settings: Settings) -> int:
    async def run() -> int:
        from availability.flows.fulfilment.mapping import InvalidShipment

        failed = 0
        async with _parts(settings, args) as parts:
            intake = parts["flows"].fulfilment.intake
            for name in args.files:
                try:
                    for answer in await intake.take_945(Path(name).read_bytes()):
                        _print({"file": name, **answer})
                except (InvalidShipment, OSError) as exc:
                    failed += 1
                    _print({"file": name, "outcome": "rejected", "reason": str(exc)})
        return 1 if failed else 0

    return asyncio.run(run())


def _run(args, settings: Settings) -> int:
    async def run() -> int:
        async with _parts(settings, args, with_erp=True) as parts:
            ful = parts["flows"].fulfilment
            if args.once:
                if ful.watcher is not None:
                    await ful.watcher.poll_once()
                await ful.worker.drain(timeout=600)
                _print(await ful.store.counts())
                return 0
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            tasks = [asyncio.create_task(ful.worker.run(stop))]
            if ful.watcher is not None:
                tasks.append(asyncio.create_task(ful.watcher.run(stop)))
            await asyncio.gather(*tasks)
            return 0

    return asyncio.run(run())


def _status(args, settings: Settings) -> int:
    async def run() -> int:
        async with _parts(settings, args) as parts:
            ful = parts["flows"].fulfilment
            marks, urgent = await ful.queue.work.pending()
            _print({"states": await ful.store.counts(), "queued": marks + urgent,
                    "outbox": await ful.queue.outbox.pending(),
                    "open_exceptions": len(await ful.store.list_exceptions())})
        return 0

    return asyncio.run(run())


def _show(args, settings: Settings) -> int:
    async def run() -> int:
        async with _parts(settings, args) as parts:
            store = parts["flows"].fulfilment.store
            doc = await store.get(args.shipment_id)
            if doc is None:
                print(f"no shipment {args.shipment_id}", file=sys.stderr)
                return 1
            _print({"document": doc.as_dict(), "history": await store.history(args.shipment_id)})
        return 0

    return asyncio.run(run())
