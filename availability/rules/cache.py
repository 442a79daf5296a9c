"""The in-process copy of the compiled `RuleBook`, kept current by polling one row.

Every availability answer reads rules, so they must come from memory, not the
database. Rules change rarely and may be changed by another process (the CLI, a
second API replica), so each process polls `store.version()` (a single-row read)
every `refresh_interval` seconds and rebuilds the book only when the number has
moved. A write made through this process calls `apply_local_change()` so the
writer sees its own change at once instead of up to one interval later.

The book is swapped, never mutated: a request that already holds the old book
finishes with a consistent view. Listeners registered with `on_change` get
`(old_book, new_book)` after each swap, which is how the ledger / push side
learns which (SKU, location) pairs to recompute.

If the database is unreachable the cache keeps serving the last book and retries
on the next tick: stale rules beat no answers.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from availability.domain.rules import RuleBook

log = logging.getLogger(__name__)

__all__ = ["RuleCache", "ChangeListener"]

#: called with (old_book, new_book); may be a plain function or a coroutine function
ChangeListener = Callable[[RuleBook, RuleBook], Awaitable[None] | None]


class _VersionedSource(Protocol):
    async def version(self) -> int: ...

    async def load_book(self) -> RuleBook: ...


class RuleCache:
    def __init__(self, store: _VersionedSource, *, refresh_interval: float = 1.0) -> None:
        self.store = store
        self.refresh_interval = refresh_interval
        self._book: RuleBook | None = None
        self._listeners: list[ChangeListener] = []
        # One reload at a time: the poller and a local write may both ask at once,
        # and listeners must see swaps in order (old of one == new of the previous).
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def book(self) -> RuleBook:
        """The current book. Never None once `start()` has returned."""
        if self._book is None:
            raise RuntimeError("RuleCache not started: await cache.start() first")
        return self._book

    @property
    def version(self) -> int:
        return self.book.version

    def on_change(self, callback: ChangeListener) -> ChangeListener:
        """Register a listener for book swaps (usable as a decorator). Not called for the initial load."""
        self._listeners.append(callback)
        return callback

    async def start(self) -> RuleBook:
        """Load the book once (no background polling; see `start_background`)."""
        if self._book is None:
            async with self._lock:
                if self._book is None:
                    self._book = await self.store.load_book()
        return self._book

    async def refresh(self, force: bool = False) -> bool:
        """Reload if the store version differs from the book's (or if `force`).
        Returns whether a new book was swapped in."""
        if self._book is None:
            await self.start()
            return True
        async with self._lock:
            old = self._book
            if not force and await self.store.version() == old.version:
                return False
            new = await self.store.load_book()
            if not force and new.version == old.version:
                return False
            self._book = new
        log.info("rule book reloaded: store version %s -> %s", old.version, new.version)
        await self._notify(old, new)
        return True

    async def apply_local_change(self) -> bool:
        """Call after writing through this process's store, so this process sees it now."""
        return await self.refresh()

    async def run(self) -> None:
        """Poll forever (until cancelled). Errors are logged and retried on the next tick."""
        await self.start()
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rule book refresh failed; serving store version %s", self.version)

    async def start_background(self) -> asyncio.Task[None]:
        """Load the book, then poll in a background task until `stop()`."""
        await self.start()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="rule-cache-refresh")
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _notify(self, old: RuleBook, new: RuleBook) -> None:
        for callback in list(self._listeners):
            try:
                result = callback(old, new)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                # One broken listener must not stop the others or the poller.
                log.exception("rule book change listener %r failed", callback)
