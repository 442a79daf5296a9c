"""Ledger tools: run the embedded Redis alone, apply events from a file, show a SKU."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading

import msgspec

from availability.config import Settings
from availability.domain.ats import explain
from availability.domain.errors import InvalidEvent
from availability.domain.events import decode_event


def register(sub) -> None:
    p = sub.add_parser("redis", help="run the embedded redis-server alone (data under AVAILABILITY_DATA_DIR)")
    p.add_argument("--port", type=int, default=6380)
    p.set_defaults(handler=run_redis)

    p = sub.add_parser("apply", help="apply canonical events (JSON lines) straight to the ledger")
    p.add_argument("path", help="file of JSON lines, or - for standard input")
    p.add_argument("--batch", type=int, default=500)
    p.set_defaults(handler=lambda args, settings: asyncio.run(apply_file(args, settings)))

    p = sub.add_parser("stock", help="show a SKU's buckets and its explained ATS for a channel")
    p.add_argument("sku")
    p.add_argument("--channel", default="online")
    p.set_defaults(handler=lambda args, settings: asyncio.run(show_stock(args, settings)))


def run_redis(args, settings: Settings) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = args.root.start_embedded_redis(settings, port=args.port)
    server.supervise(on_failure=lambda reason: stop.set())
    print(f"embedded server listening on {server.url} (data in {server.data_dir}); other commands on this "
          f"data dir use it; Ctrl-C stops it", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
    return 1 if server.failed.is_set() else 0


async def apply_file(args, settings: Settings) -> int:
    source = sys.stdin if args.path == "-" else open(args.path, encoding="utf-8")
    counts: dict[str, int] = {}
    rejected = 0
    async with args.root.open_runtime(settings) as runtime:
        batch = []
        for line_no, line in enumerate(source, 1):
            if not line.strip():
                continue
            try:
                batch.append(decode_event(line))
            except InvalidEvent as exc:
                rejected += 1
                print(f"line {line_no}: {exc.detail}", file=sys.stderr)
                continue
            if len(batch) >= args.batch:
                for result in await runtime.ledger.apply_batch(batch):
                    counts[result.status] = counts.get(result.status, 0) + 1
                batch = []
        for result in await runtime.ledger.apply_batch(batch):
            counts[result.status] = counts.get(result.status, 0) + 1
    print(json.dumps({"applied": counts, "rejected": rejected}))
    return 1 if rejected else 0


async def show_stock(args, settings: Settings) -> int:
    async with args.root.open_runtime(settings) as runtime:
        stock = await runtime.ledger.stock(args.sku)
        book = runtime.rules.book
        if args.channel not in book.channels:
            print(f"unknown channel {args.channel!r}; channels: {', '.join(book.channels)}", file=sys.stderr)
            return 2
        result = explain(book, args.sku, args.channel, stock)
        print(json.dumps({"buckets": msgspec.to_builtins(stock), "explain": msgspec.to_builtins(result)}, indent=2))
    return 0
