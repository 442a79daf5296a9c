"""RuleCache: reload only on a version change, pick up other processes' writes, notify listeners."""

from __future__ import annotations

import asyncio
import time

import pytest

from availability.domain.rules import Location, RuleBook
from availability.rules.cache import RuleCache
from availability.rules.store import RuleStore


async def test_refresh_only_when_version_changed(store: RuleStore):
    cache = RuleCache(store)
    with pytest.raises(RuntimeError):
        cache.book  # noqa: B018 - not started yet
    await cache.start()
    first = cache.book
    assert first.version == 0
    assert await cache.refresh() is False
    assert cache.book is first

    await store.create_rule({"kind": "safety_stock", "units": 2}, actor="p", reason="")
    assert await cache.apply_local_change() is True
    assert cache.book.version == 1
    assert cache.book.terms("A", "DC1", "online").safety_units == 2
    assert await cache.refresh() is False
    assert await cache.refresh(force=True) is True


async def test_cache_picks_up_change_from_another_store_instance(sqlite_url):
    """A second RuleStore on the same file stands in for another process (CLI, replica)."""
    reader, writer = RuleStore(sqlite_url), RuleStore(sqlite_url)
    await reader.start()
    await writer.start()
    # The background loop's polls are counted (the reader's own version(), wrapped): the
    # change must show at the first poll after the write, however slow the machine is.
    polls = 0
    version = reader.version

    async def counted_version() -> int:
        nonlocal polls
        polls += 1
        return await version()

    reader.version = counted_version  # type: ignore[method-assign]
    cache = RuleCache(reader, refresh_interval=0.2)
    seen: list[tuple[int, int, int]] = []  # (old version, new version, polls made by then)
    cache.on_change(lambda old, new: seen.append((old.version, new.version, polls)))
    await cache.start_background()
    try:
        assert cache.book.version == 0
        await writer.upsert_location(Location(code="DC1"), actor="ops", reason="")
        await writer.create_rule({"kind": "safety_stock", "units": 4, "location": "DC1"}, actor="p", reason="")
        polls_at_write = polls
        deadline = time.monotonic() + 60  # generous: the bound that matters is in polls
        while cache.book.version != 2:
            assert time.monotonic() < deadline, f"cache did not pick up the change ({polls - polls_at_write} polls)"
            await asyncio.sleep(0.02)
        # the first poll begun after the write swapped the book in, or one in flight during
        # it that read after the commit (the count is the one the swap saw: the loop polls
        # on, however late this test wakes)
        assert seen[-1][1] == 2 and seen[-1][2] - polls_at_write in (0, 1), (seen, polls_at_write)
        assert cache.book.terms("SKU", "DC1", "online").safety_units == 4
        # versions are seen in order, each old book being the previous new one
        assert all(a[1] == b[0] for a, b in zip(seen, seen[1:]))
    finally:
        await cache.stop()
        await reader.close()
        await writer.close()


async def test_listeners_sync_async_and_failing(store: RuleStore):
    cache = RuleCache(store)
    await cache.start()
    calls: list[str] = []

    @cache.on_change
    def broken(old: RuleBook, new: RuleBook) -> None:
        raise ValueError("listener bug")

    @cache.on_change
    async def dirty_marker(old: RuleBook, new: RuleBook) -> None:
        await asyncio.sleep(0)
        calls.append(f"{old.version}->{new.version}")

    await store.create_rule({"kind": "safety_stock", "units": 1}, actor="p", reason="")
    assert await cache.refresh() is True
    assert calls == ["0->1"]


class _FlakyStore:
    """A store whose database goes away: the cache must keep the last book and keep polling."""

    def __init__(self) -> None:
        self.current = 1
        self.down = False
        self.polls = 0

    async def version(self) -> int:
        self.polls += 1
        if self.down:
            raise ConnectionError("database unreachable")
        return self.current

    async def load_book(self) -> RuleBook:
        return RuleBook(version=self.current, locations=[], channels=[], rules=[])


async def test_background_refresh_survives_store_errors():
    source = _FlakyStore()
    cache = RuleCache(source, refresh_interval=0.01)  # type: ignore[arg-type]
    await cache.start_background()
    try:
        source.down = True
        polls = source.polls
        deadline = time.monotonic() + 60  # generous: a loaded machine may stall the loop
        while source.polls <= polls + 2:  # still polling, past failed polls
            assert time.monotonic() < deadline, source.polls - polls
            await asyncio.sleep(0.01)
        assert cache.book.version == 1  # still serving
        source.down = False
        source.current = 2
        while cache.book.version != 2:
            assert time.monotonic() < deadline, "the cache never recovered"
            await asyncio.sleep(0.01)
    finally:
        await cache.stop()
    await cache.stop()  # idempotent
