"""Ledger tools: run the embedded Redis alone, apply events from a file, show a SKU, list
oversell exceptions."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
import threading

import msgspec

from availability.config import Settings
from availability.domain.ats import explain
from availability.domain.errors import InvalidEvent
from availability.domain.events import decode_event
from availability.progress import Progress


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

    p = sub.add_parser("ledger", help="ledger maintenance: move a ledger to the partitioned key layout")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    migrate = actions.add_parser(
        "migrate-layout",
        help="move a ledger in the old per-SKU layout to the partitioned one, and ingest streams to their "
             "tagged names (resumable; stop writers first)",
    )
    migrate.add_argument("--to", metavar="URL", help="another server to move it to (default: in place)")
    migrate.add_argument("--to-cluster", action="store_true", help="--to names a node of a Redis Cluster")
    migrate.add_argument("--partitions", type=int, help="ledger partitions (default AVAILABILITY_LEDGER_PARTITIONS)")
    migrate.add_argument("--batch", type=int, default=500, help="keys a step")
    migrate.add_argument("--keep-old", action="store_true", help="in place: keep the old keys after verifying")
    migrate.set_defaults(handler=lambda args, settings: asyncio.run(migrate_layout(args, settings)))

    p = sub.add_parser("oversells", help="oversell exceptions: orders and sales beyond what a location had")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="newest first: order, SKU, location, units short")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=lambda args, settings: asyncio.run(list_oversells(args, settings)))


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
    # bytes, so progress is exact (decode_event takes bytes); a file's size is the total
    source = getattr(sys.stdin, "buffer", sys.stdin) if args.path == "-" else open(args.path, "rb")  # noqa: SIM115
    total = None if args.path == "-" else os.fstat(source.fileno()).st_size
    counts: dict[str, int] = {}
    rejected = 0

    def tally(results) -> None:
        for result in results:
            counts[result.status] = counts.get(result.status, 0) + 1
            if result.error:  # refused by the ledger (a corrupt stored value): nothing written
                print(f"event {result.event_id}: {result.error}", file=sys.stderr)
    async with args.root.open_runtime(settings) as runtime:
        progress = Progress("apply", total, unit="bytes")
        batch = []
        read = 0
        for line_no, line in enumerate(source, 1):
            read += len(line)
            if not line.strip():
                continue
            try:
                batch.append(decode_event(line))
            except InvalidEvent as exc:
                rejected += 1
                print(f"line {line_no}: {exc.detail}", file=sys.stderr)
                continue
            if len(batch) >= args.batch:
                tally(await runtime.ledger.apply_batch(batch))
                batch = []
                progress.update(read)
        tally(await runtime.ledger.apply_batch(batch))
        progress.update(read)
        progress.close()
    print(json.dumps({"applied": counts, "rejected": rejected}))
    return 1 if rejected or counts.get("error") else 0


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


async def list_oversells(args, settings: Settings) -> int:
    async with args.root.open_runtime(settings) as runtime:
        rows = await runtime.ledger.oversells(limit=max(1, args.limit))
    if args.json:
        for entry_id, o in rows:
            print(json.dumps({"id": entry_id, **msgspec.to_builtins(o)}))
        return 0
    if not rows:
        print("no oversells recorded")
        return 0
    print(f"{'when (UTC)':<20} {'order':<24} {'sku':<20} {'location':<10} {'short':>6}  source/type")
    for _, o in rows:
        when = datetime.fromtimestamp(o.at_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{when:<20} {o.order or '-':<24} {o.sku:<20} {o.location:<10} {o.units_short:>6}  {o.source}/{o.type}")
    return 0


async def migrate_layout(args, settings: Settings) -> int:
    from availability.ledger.keys import KeyLayout
    from availability.ledger.migrate import LayoutMigration, MigrationFailed

    partitions = args.partitions or settings.ledger_partitions
    async with args.root.open_runtime(settings, check_layout=False) as runtime:
        source = runtime.redis
        target = source
        if args.to:
            if args.to_cluster:
                from redis.asyncio.cluster import RedisCluster

                target = RedisCluster.from_url(args.to)
            else:
                target = args.root.make_redis(args.to)
        bars: dict[str, Progress] = {}

        def on_progress(phase: str, done: int) -> None:
            bar = bars.get(phase)
            if bar is None:
                for other in bars.values():
                    other.close()
                bar = bars[phase] = Progress(f"migrate-layout {phase}", unit="keys" if phase in ("keys", "cleanup") else "entries")
            if phase == "cleanup":
                bar.advance(done)
            else:
                bar.update(done)

        migration = LayoutMigration(source, target, KeyLayout(settings.key_prefix, partitions, cluster=args.to_cluster),
                                    same_server=not args.to, batch=args.batch, keep_old=args.keep_old,
                                    on_progress=on_progress,
                                    stream_partitions=settings.partitions if settings.broker == "redis" else 0,
                                    group=settings.consumer_group)
        try:
            report = await migration.run()
        except MigrationFailed as exc:
            print(f"migrate-layout: {exc}", file=sys.stderr)
            return 1
        finally:
            for bar in bars.values():
                bar.close()
            if target is not source:
                await target.aclose()
    print(json.dumps(report, indent=2))
    return 0
