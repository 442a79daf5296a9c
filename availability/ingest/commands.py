"""CLI of ingestion:

    availability consume [--consumer NAME] [--partitions 0,1,...]
    availability dlq list [--limit N] [--reason KIND] [--json]
    availability dlq show ID
    availability dlq replay ID [--payload-file FILE] [--force]
    availability dlq replay --all [--reason KIND] [--force]
    availability ingest file --format FORMAT PATH [--location-map FILE]
    availability ingest dropfolder PATH [--once] [--interval SECONDS]
    availability ingest status
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

from availability.config import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    consume = subparsers.add_parser("consume", help="run the stream consumer (apply events to the ledger)")
    consume.add_argument("--consumer", help="consumer name in the group (default: host-pid)")
    consume.add_argument("--partitions", help="comma-separated partition numbers (default: all)")
    consume.set_defaults(handler=cmd_consume)

    dlq = subparsers.add_parser("dlq", help="dead letters: list, show, replay")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    listing = dlq_sub.add_parser("list", help="list dead letters, oldest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--reason", help="only this reason kind (unparseable, invalid, ...)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=cmd_dlq_list)
    show = dlq_sub.add_parser("show", help="show one dead letter with its payload")
    show.add_argument("id")
    show.set_defaults(handler=cmd_dlq_show)
    replay = dlq_sub.add_parser("replay", help="re-publish dead letters and remove them from the DLQ")
    replay.add_argument("id", nargs="?", help="the dead letter's id (see `dlq list`)")
    replay.add_argument("--all", action="store_true", help="replay every dead letter (of --reason)")
    replay.add_argument("--reason", help="with --all: only this reason kind")
    replay.add_argument("--payload-file", help="replay this (edited) payload instead of the original")
    replay.add_argument("--force", action="store_true", help="publish even if the payload still fails validation")
    replay.set_defaults(handler=cmd_dlq_replay)

    ingest = subparsers.add_parser("ingest", help="load source files onto the event stream")
    ingest_sub = ingest.add_subparsers(dest="ingest_command", metavar="ACTION", required=True)
    from availability.ingest.sources import FORMATS

    one = ingest_sub.add_parser("file", help="parse one file and publish its events")
    one.add_argument("--format", required=True, choices=sorted(FORMATS))
    one.add_argument("--location-map", help="JSON file {source location code: our location code}")
    one.add_argument("--default-location", help="location for documents that name none (x12, oms)")
    one.add_argument("path")
    one.set_defaults(handler=cmd_ingest_file)
    drop = ingest_sub.add_parser("dropfolder", help="watch a WMS drop folder of X12 files")
    drop.add_argument("path")
    drop.add_argument("--once", action="store_true", help="process what is there now, then exit")
    drop.add_argument("--interval", type=float, help="seconds between scans")
    drop.add_argument("--location-map", help="JSON file {partner warehouse code: our location code}")
    drop.set_defaults(handler=cmd_ingest_dropfolder)
    status = ingest_sub.add_parser("status", help="lag, pending and dead letters per partition")
    status.set_defaults(handler=cmd_ingest_status)


# --- helpers ---------------------------------------------------------------------------------


def _run(coro) -> int:
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        return 130


def _location_map(path: str | None) -> dict[str, str] | None:
    if not path:
        return None
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: a location map is a JSON object {{source code: location code}}")
    return {str(k): str(v) for k, v in data.items()}


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    await stop.wait()


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ms else "-"


# --- consume ---------------------------------------------------------------------------------


def cmd_consume(args, settings: Settings) -> int:
    return _run(_consume(args, settings))


async def _consume(args, settings: Settings) -> int:
    from availability.ingest.consumer import StreamConsumer

    partitions = [int(p) for p in args.partitions.split(",")] if args.partitions else None
    async with args.root.open_runtime(settings) as runtime:
        await runtime.rules.start_background()  # unknown-location counts follow master-data edits
        consumer = StreamConsumer(runtime, consumer_name=args.consumer, partitions=partitions)
        await consumer.start()
        print(f"consumer {consumer.consumer_name} running on {settings.broker}; Ctrl-C to stop", file=sys.stderr)
        try:
            await _wait_for_signal()
        finally:
            await consumer.stop()
    return 0


# --- dlq -------------------------------------------------------------------------------------


def _open_dlq(args, settings: Settings):
    return args.root.open_runtime(settings)


def cmd_dlq_list(args, settings: Settings) -> int:
    async def go() -> int:
        from availability.ingest.deadletters import DeadLetters
        from availability.ingest.streams import StreamNames

        async with _open_dlq(args, settings) as runtime:
            dlq = DeadLetters(runtime.redis, StreamNames.from_settings(settings))
            letters = await dlq.list(limit=args.limit, reason=args.reason)
            total = await dlq.count()
            for letter in letters:
                if args.json:
                    print(json.dumps({
                        "id": letter.id, "reason": letter.reason, "detail": letter.detail,
                        "stream": letter.stream, "entry_id": letter.entry_id, "at": _when(letter.at),
                        "source": letter.source, "event_id": letter.event_id,
                        "payload": letter.payload_text(),
                    }))
                else:
                    print(f"{letter.id}  {_when(letter.at)}  {letter.reason:<20} {letter.stream} {letter.entry_id}")
                    print(f"    {letter.detail[:200]}")
            if not args.json:
                print(f"{len(letters)} shown, {total} in {dlq.names.dlq}", file=sys.stderr)
        return 0

    return _run(go())


def cmd_dlq_show(args, settings: Settings) -> int:
    async def go() -> int:
        from availability.ingest.deadletters import DeadLetters
        from availability.ingest.streams import StreamNames

        async with _open_dlq(args, settings) as runtime:
            dlq = DeadLetters(runtime.redis, StreamNames.from_settings(settings))
            letter = await dlq.get(args.id)
            if letter is None:
                print(f"no dead letter {args.id}", file=sys.stderr)
                return 1
            print(f"id        {letter.id}")
            print(f"at        {_when(letter.at)}")
            print(f"reason    {letter.reason}")
            print(f"detail    {letter.detail}")
            print(f"stream    {letter.stream}")
            print(f"entry_id  {letter.entry_id}")
            if letter.source:
                print(f"source    {letter.source}")
            if letter.event_id:
                print(f"event_id  {letter.event_id}")
            print("payload:")
            print(letter.payload_text())
        return 0

    return _run(go())


def cmd_dlq_replay(args, settings: Settings) -> int:
    if bool(args.id) == bool(args.all):
        print("give a dead letter id or --all", file=sys.stderr)
        return 2
    if args.payload_file and args.all:
        print("--payload-file replays one dead letter: give its id", file=sys.stderr)
        return 2

    async def go() -> int:
        from availability.ingest.deadletters import DeadLetters
        from availability.ingest.publisher import EventPublisher
        from availability.ingest.replay import (
            ReplayRefused,
            UnknownDeadLetter,
            replay,
            replay_all,
        )
        from availability.ingest.streams import StreamNames
        from availability.progress import Progress

        async with _open_dlq(args, settings) as runtime:
            dlq = DeadLetters(runtime.redis, StreamNames.from_settings(settings))
            async with EventPublisher(runtime) as publisher:
                if args.all:
                    # the total is the whole DLQ (with --reason, an upper bound: the ETA errs long)
                    with Progress("dlq replay", await dlq.count(), unit="letters") as progress:
                        replayed, kept = await replay_all(
                            runtime, dlq, publisher, reason=args.reason, force=args.force, progress=progress.advance
                        )
                    for letter_id, why in kept:
                        print(f"kept {letter_id}: {why}", file=sys.stderr)
                    print(f"replayed {replayed}, kept {len(kept)}")
                    return 0 if not kept else 1
                payload = Path(args.payload_file).read_bytes() if args.payload_file else None
                try:
                    events = await replay(runtime, dlq, publisher, args.id, payload=payload, force=args.force)
                except (ReplayRefused, UnknownDeadLetter) as exc:
                    print(exc.detail, file=sys.stderr)
                    return 1
                print(f"replayed {args.id}: {events} event(s) published")
        return 0

    return _run(go())


# --- ingest ----------------------------------------------------------------------------------


def cmd_ingest_file(args, settings: Settings) -> int:
    async def go() -> int:
        from availability.domain.errors import InvalidEvent
        from availability.ingest.deadletters import DeadLetters
        from availability.ingest.publisher import EventPublisher
        from availability.ingest.sources import load
        from availability.ingest.streams import StreamNames
        from availability.progress import Progress, following

        path = Path(args.path)
        if not path.is_file():
            print(f"{path}: no such file", file=sys.stderr)
            return 2
        options = {"location_map": _location_map(args.location_map), "default_location": args.default_location}
        async with args.root.open_runtime(settings) as runtime:
            dlq = DeadLetters(runtime.redis, StreamNames.from_settings(settings))
            async with EventPublisher(runtime) as publisher:
                size = path.stat().st_size
                with (
                    path.open("rb") as source,  # noqa: ASYNC230 - a CLI run, nothing else on the loop
                    Progress(f"ingest {path.name}", size, unit="bytes") as progress,
                ):
                    try:
                        # the parser reads in a worker thread: follow how far into the file it is
                        async with following(progress, source.tell):
                            report = await load(args.format, source, publisher, dlq, label=str(path), options=options)
                    except InvalidEvent as exc:
                        print(f"{path}: refused: {exc.detail}", file=sys.stderr)
                        return 1
                    progress.update(size)
        print(json.dumps(report.as_dict()))
        return 0 if not report.rejected else 3

    return _run(go())


def cmd_ingest_dropfolder(args, settings: Settings) -> int:
    async def go() -> int:
        from availability.ingest.dropfolder import DropFolderWatcher

        async with contextlib.AsyncExitStack() as stack:
            runtime = await stack.enter_async_context(args.root.open_runtime(settings))
            intake = None
            if "fulfilment" in settings.flows:  # its 945s go to the fulfilment flow's intake
                flows = await stack.enter_async_context(args.root.open_erp_flows(
                    settings, runtime.redis, names=["orders", "fulfilment"], with_erp=False))
                intake = flows.fulfilment.intake
            watcher = DropFolderWatcher(
                runtime, args.path, interval=args.interval, location_map=_location_map(args.location_map),
                min_age_seconds=0.0 if args.once else 1.0, fulfilment=intake,
            )
            if args.once:
                Path(args.path).mkdir(parents=True, exist_ok=True)
                results = await watcher.scan_once()
                for result in results:
                    outcome = f"{len(result.events)} events" if result.ok else f"error: {result.error}"
                    print(f"{result.path.name}: {outcome}")
                return 0 if all(r.ok for r in results) else 1
            await watcher.start()
            try:
                await _wait_for_signal()
            finally:
                await watcher.stop()
        return 0

    return _run(go())


def cmd_ingest_status(args, settings: Settings) -> int:
    async def go() -> int:
        from availability.ingest.deadletters import DeadLetters
        from availability.ingest.pipeline import IngestPipeline
        from availability.ingest.reclaim import Reclaimer
        from availability.ingest.streams import StreamNames

        names = StreamNames.from_settings(settings)
        async with args.root.open_runtime(settings) as runtime:
            reclaimer = Reclaimer(runtime.redis, names, IngestPipeline(runtime.ledger, names), "status")
            observed = await reclaimer.observe()
            dlq = await DeadLetters(runtime.redis, names).count()
        for p in range(names.partitions):
            lag, pending = observed.get(p, (0, 0))
            print(f"{names.partition(p)}  lag {lag}  pending {pending}")
        print(f"{names.dlq}  {dlq} dead letters")
        return 0

    return _run(go())
