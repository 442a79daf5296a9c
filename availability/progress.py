"""Progress of long CLI jobs (`ingest file`, `apply`, `dlq replay --all`, `rules import`,
`shopify resync`, mapping import): a bar with rate and ETA on a terminal (rich, which the
project already has through litestar), a log line every few seconds otherwise (a job run
by cron or in a container logs, it does not draw), every `AVAILABILITY_PROGRESS_EVERY_S`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import IO

log = logging.getLogger("availability.progress")


#: seconds between two log lines off a terminal; the CLI sets it from
#: `AVAILABILITY_PROGRESS_EVERY_S` (configure)
_every_s = 5.0


def configure(every_s: float) -> None:
    global _every_s  # noqa: PLW0603 - one process-wide setting, set by the entry point
    _every_s = every_s


def rate_and_eta(done: int, total: int | None, elapsed: float) -> tuple[float, float | None]:
    """(items per second, seconds left or None when unknown)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    if total is None or rate <= 0:
        return rate, None
    return rate, max(0.0, (total - done) / rate)


def describe(label: str, done: int, total: int | None, elapsed: float, unit: str = "items") -> str:
    rate, eta = rate_and_eta(done, total, elapsed)
    of = f"/{total}" if total is not None else ""
    tail = f", ETA {eta:.0f} s" if eta is not None else ""
    return f"{label}: {done}{of} {unit} ({rate:.1f}/s{tail}, {elapsed:.0f} s)"


class Progress:
    """`update(done, total)` as the job goes, `close()` at the end (also a context manager)."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        unit: str = "items",
        stream: IO[str] | None = None,
        interactive: bool | None = None,
        log_every_s: float | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0
        self.started = time.monotonic()
        self.log_every_s = _every_s if log_every_s is None else log_every_s
        self._last_log = 0.0
        stream = stream or sys.stderr
        self.interactive = stream.isatty() if interactive is None else interactive
        self._bar = None
        if self.interactive:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress as RichProgress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(file=stream),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(label, total=total, rate="")

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        elapsed = time.monotonic() - self.started
        if self._bar is not None:
            rate, _eta = rate_and_eta(done, self.total, elapsed)
            self._bar.update(self._task, completed=done, total=self.total, rate=f"{rate:.1f} {self.unit}/s")
        elif time.monotonic() - self._last_log >= self.log_every_s:
            self._last_log = time.monotonic()
            log.info("%s", describe(self.label, done, self.total, elapsed, self.unit))

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def close(self) -> str:
        text = describe(self.label, self.done, self.total, time.monotonic() - self.started, self.unit)
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        else:
            log.info("%s (done)", text)
        return text

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.asynccontextmanager
async def following(progress: Progress, probe: Callable[[], int], every_s: float = 0.5) -> AsyncIterator[Progress]:
    """Report `probe()` (e.g. how far into its file a parser is) every `every_s` while the
    block runs, for jobs whose work happens where no callback reaches (a parser thread)."""

    async def poll() -> None:
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(ValueError, OSError):  # the file closed under us: the end
                progress.update(probe())

    task = asyncio.create_task(poll())
    try:
        yield progress
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
