"""Running a backtest against the ledger: read the journal window a page at a time and
feed both replays (availability/planning/backtest.py holds the model; this only does I/O).

With `workers` > 1 the journal's partitions are split into that many shards
(journal.partition_shards), each replayed by a process of its own that reads only its
partitions' streams: a SKU's entries all sit in its partition, and every measure is per
SKU, so the shards' counts add up to the one-process report (`backtest.merge`;
tests/planning checks they are equal), and no entry is read twice. The API runs its jobs
this way, so a backtest never holds the event loop that serves lookups.

The replay reads raw XRANGE pages (`journal.raw_pages`): no typed object per entry.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import queue as queue_module
from collections.abc import Callable

import msgspec

from availability.domain.rules import RuleBook
from availability.ledger.journal import PAGE, estimate_entries, partition_shards, raw_pages
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger
from availability.planning.backtest import Backtest, BacktestPartial, BacktestReport, merge

DAY_MS = 24 * 3600 * 1000

#: entries replayed between two yields to the event loop when run in the serving process
#: (a few ms of work), so lookups served by the same process keep answering
SERVED_SLICE = 250

#: the API and the CLI use this many worker processes for a window of at least WORKERS_FROM
#: entries (starting a process costs about a second; below that one process is quicker)
WORKERS = 2
WORKERS_FROM = 20_000

#: seconds between two looks at the workers' progress
POLL_S = 0.1

Progress = Callable[[int, int], None]


class BacktestFailed(Exception):
    """A worker process failed (its reason), or died without one."""


async def run_backtest(
    ledger: Ledger,
    current: RuleBook,
    draft: RuleBook,
    *,
    days: int,
    until_ms: int,
    on_progress: Progress | None = None,
    slice_size: int | None = None,
    page: int = PAGE,
    workers: int = 0,
    workers_from: int = 0,
    redis_url: str | None = None,
) -> BacktestReport:
    """Replay the journal of the `days` before `until_ms` under `current` and `draft`.

    `on_progress(done, total)` as pages are read (`total` is an estimate until the end);
    `slice_size`: yield to the event loop every that many entries (None: once a page);
    `workers` > 1: that many processes (they need `redis_url`) when the window holds about
    `workers_from` entries or more."""
    since_ms = until_ms - days * DAY_MS
    total = await estimate_entries(ledger.redis, ledger.keys, since_ms=since_ms, until_ms=until_ms)
    if workers > 1 and total >= workers_from:
        if redis_url is None:
            raise ValueError("worker processes need the Redis URL")
        parts = await _in_workers(redis_url, ledger.keys, current, draft, days, since_ms, until_ms,
                                  workers, total, on_progress, page)
        return merge(parts, days=days)
    backtest = Backtest(current, draft, days=days)
    done = 0
    async for items in raw_pages(ledger.redis, ledger.keys, since_ms=since_ms, until_ms=until_ms, page=page):
        if slice_size:
            for start in range(0, len(items), slice_size):
                backtest.feed_raw(items[start : start + slice_size])
                await asyncio.sleep(0)
        else:
            backtest.feed_raw(items)
        done += len(items)
        total = max(total, done)
        if on_progress is not None:
            on_progress(done, total)
    report = backtest.finish()
    if on_progress is not None:
        on_progress(done, done)
    return report


def _book_parts(book: RuleBook) -> tuple:
    # A RuleBook holds memoised lookups (not picklable): send what builds it.
    return (book.version, list(book.locations.values()), list(book.channels.values()), list(book.rules),
            dict(book.sku_categories))


def _rebuild(parts: tuple) -> RuleBook:
    version, locations, channels, rules, categories = parts
    return RuleBook(version=version, locations=locations, channels=channels, rules=rules, sku_categories=categories)


async def _in_workers(redis_url, keys: KeyLayout, current, draft, days, since_ms, until_ms, workers, total, on_progress,
                      page) -> list[BacktestPartial]:
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads and sockets
    messages = context.Queue()
    shards = partition_shards(keys, workers)
    layout = (keys.prefix, keys.partitions)
    processes = [
        context.Process(
            target=_worker,
            args=(redis_url, layout, _book_parts(current), _book_parts(draft), days, since_ms, until_ms,
                  (index, shards[index]), page, messages),
            daemon=True,
            name=f"backtest-{index}",
        )
        for index in range(workers)
    ]
    for process in processes:
        process.start()
    read = [0] * workers
    parts: dict[int, BacktestPartial] = {}
    try:
        while len(parts) < workers:
            try:
                index, kind, value = messages.get_nowait()
            except queue_module.Empty:
                if any(not p.is_alive() and p.exitcode not in (0, None) for p in processes):
                    # a worker that died hard (killed, out of memory) sends nothing: say so
                    await asyncio.sleep(POLL_S)
                    if messages.empty():
                        codes = [p.exitcode for p in processes]
                        raise BacktestFailed(f"a backtest worker process died (exit codes {codes})") from None
                await asyncio.sleep(POLL_S)
                continue
            if kind == "read":
                read[index] = value
                # each worker reads its own partitions: together they are how far the job is
                if on_progress is not None:
                    done = sum(read)
                    on_progress(done, max(total, done))
            elif kind == "done":
                parts[index] = msgspec.msgpack.decode(value, type=BacktestPartial)
            else:
                raise BacktestFailed(f"backtest worker {index}: {value}")
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=5)
    done = sum(read)
    if on_progress is not None:
        on_progress(done, done)
    return [parts[index] for index in range(workers)]


def _worker(redis_url, layout, current_parts, draft_parts, days, since_ms, until_ms, shard, page, messages) -> None:
    """One shard's replay (`shard`: its index and its partitions), in a process of its own
    (spawned: imports afresh)."""
    index = shard[0]
    # The replay makes no reference cycles, and a long window holds hundreds of thousands of
    # pair states: the cyclic collector's full passes over them would only cost time here.
    gc.disable()
    try:
        partial = asyncio.run(_replay_shard(redis_url, layout, current_parts, draft_parts, days, since_ms, until_ms,
                                            shard, page, messages))
        messages.put((index, "done", msgspec.msgpack.encode(partial)))
    except Exception as exc:  # noqa: BLE001 - reported to the job, which fails with it
        messages.put((index, "error", f"{type(exc).__name__}: {exc}"))


async def _replay_shard(redis_url, layout, current_parts, draft_parts, days, since_ms, until_ms, shard, page,
                        messages) -> BacktestPartial:
    from redis.asyncio import Redis  # noqa: PLC0415 - in the worker only

    redis = Redis.from_url(redis_url)
    try:
        backtest = Backtest(_rebuild(current_parts), _rebuild(draft_parts), days=days)
        read = 0
        async for items in raw_pages(redis, KeyLayout(*layout), since_ms=since_ms, until_ms=until_ms, page=page,
                                     partitions=shard[1]):
            backtest.feed_raw(items)
            read += len(items)
            messages.put((shard[0], "read", read))
        backtest.finish()
        return backtest.partial()
    finally:
        await redis.aclose()
