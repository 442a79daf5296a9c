"""Running a backtest against the ledger: read the journal window a page at a time and
feed both replays (availability/planning/backtest.py holds the model; this only does I/O)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from availability.domain.rules import RuleBook
from availability.ledger.journal import PAGE, estimate_entries, read_journal
from availability.ledger.ledger import Ledger
from availability.planning.backtest import Backtest, BacktestReport

DAY_MS = 24 * 3600 * 1000

#: entries replayed between two yields to the event loop when serving (a few ms of work),
#: so a backtest run by the API does not hold up the lookups served by the same process
SERVED_SLICE = 250

Progress = Callable[[int, int], None]


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
) -> BacktestReport:
    """Replay the journal of the `days` before `until_ms` under `current` and `draft`.

    `on_progress(done, total)` after every page (`total` is an estimate until the end);
    `slice_size`: yield to the event loop every that many entries (None: once a page)."""
    since_ms = until_ms - days * DAY_MS
    total = await estimate_entries(ledger.redis, ledger.keys, since_ms=since_ms, until_ms=until_ms)
    backtest = Backtest(current, draft, days=days)
    done = 0
    async for entries in read_journal(ledger.redis, ledger.keys, since_ms=since_ms, until_ms=until_ms, page=page):
        if slice_size:
            for start in range(0, len(entries), slice_size):
                backtest.feed(entries[start : start + slice_size])
                await asyncio.sleep(0)
        else:
            backtest.feed(entries)
        done += len(entries)
        total = max(total, done)
        if on_progress is not None:
            on_progress(done, total)
    report = backtest.finish()
    if on_progress is not None:
        on_progress(done, done)
    return report
