"""After a rule or master-data change, mark the affected (SKU, location) pairs dirty so the
publisher recomputes and pushes them.

A global change (a new global buffer, a channel that sells from one more store) touches
every pair in the ledger, possibly millions, so the marking:

- runs in a background task (`RuleChangeMarker`, service "rules-dirty"), never in the
  request that changed the rule;
- walks the stock keys with SCAN in batches and marks each batch with one pipelined
  HKEYS and one ZADD NX (the publisher's first-dirty time of a pair already waiting is
  kept), so neither Redis nor this process holds all pairs at once;
- is scoped when the change is: rules that name a SKU (or a SKU category) mark only
  those SKUs' pairs;
- coalesces: changes that arrive during a pass are merged into one further pass;
- survives restarts and is shared by every process: what is still to do is kept in
  Redis (`{prefix}:rules-dirty:all` holds the rule version of a pending full pass,
  `{prefix}:rules-dirty:skus` the SKUs of scoped changes), the first process to see a rule
  version claims it (`{prefix}:rules-dirty:seen:{version}`), and one process at a time
  drains the work under a lock (`{prefix}:rules-dirty:lock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable, Iterable

from availability.domain.rules import Rule, RuleBook

if TYPE_CHECKING:
    from availability.bootstrap import Runtime
    from availability.ledger.ledger import Ledger

log = logging.getLogger(__name__)

DEFAULT_BATCH = 5000
LOCK_TTL_MS = 30_000
SEEN_TTL_SECONDS = 24 * 3600

#: compare-and-delete: drop the pending full pass only if no newer change replaced it
_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


# --- what a change affects ------------------------------------------------------------------


def affected_skus(old: RuleBook, new: RuleBook) -> frozenset[str] | None:
    """The SKUs whose ATS a change from `old` to `new` may move; None = possibly every SKU.

    Master data (locations, channels) changes move every SKU; rules that name a SKU move
    that SKU; rules that name a category move the SKUs in that category (before or after);
    a SKU whose category changed moves; any other rule moves everything.
    """
    if old.locations != new.locations or old.channels != new.channels:
        return None
    skus: set[str] = set()
    for rule in changed_rules(old.rules, new.rules):
        if rule.sku is not None:
            skus.add(rule.sku)
        elif rule.category is not None:
            skus.update(s for s, c in old.sku_categories.items() if c == rule.category)
            skus.update(s for s, c in new.sku_categories.items() if c == rule.category)
        else:
            return None
    if old.sku_categories != new.sku_categories:
        for sku in old.sku_categories.keys() | new.sku_categories.keys():
            if old.sku_categories.get(sku) != new.sku_categories.get(sku):
                skus.add(sku)
    return frozenset(skus)


def changed_rules(old: Iterable[Rule], new: Iterable[Rule]) -> list[Rule]:
    """Rules present, absent or different between two rule lists (both versions of an updated rule)."""
    before = {r.id: r for r in old}
    after = {r.id: r for r in new}
    out = []
    for rule_id in before.keys() | after.keys():
        a, b = before.get(rule_id), after.get(rule_id)
        if a != b:
            out.extend(r for r in (a, b) if r is not None)
    return out


# --- marking --------------------------------------------------------------------------------


async def mark_all_dirty(
    ledger: "Ledger",
    batch: int = DEFAULT_BATCH,
    *,
    at_ms: int | None = None,
    on_batch: Callable[[int], Awaitable[None]] | None = None,
) -> int:
    """Mark every (SKU, location) pair that has stock buckets dirty. Returns pairs marked.

    SCAN may return a key twice (Redis rehashing); ZADD NX makes that harmless, though the
    count then includes it twice.
    """
    total = 0
    async for skus in ledger.stock_skus(batch):  # every primary's keys on a cluster
        total += await mark_skus_dirty(ledger, skus, at_ms=at_ms)
        if on_batch is not None:
            await on_batch(total)
    return total


async def mark_skus_dirty(ledger: "Ledger", skus: Iterable[str], *, at_ms: int | None = None) -> int:
    """Mark every location of these SKUs that has stock buckets. Returns pairs marked."""
    skus = list(skus)
    if not skus:
        return 0
    pipe = ledger.redis.pipeline(transaction=False)
    for sku in skus:
        pipe.hkeys(ledger.keys.stock(sku))
    replies = await pipe.execute()
    pairs = [(sku, loc.decode() if isinstance(loc, bytes) else loc) for sku, locs in zip(skus, replies) for loc in locs]
    if pairs:
        await ledger.mark_dirty(pairs, at_ms=at_ms)
    return len(pairs)


# --- the service ------------------------------------------------------------------------------


class RuleChangeMarker:
    """Service "rules-dirty": listens to the rule cache and marks affected pairs in the background."""

    name = "rules-dirty"

    def __init__(self, runtime: "Runtime", *, idle_check_seconds: float = 5.0) -> None:
        self.ledger = runtime.ledger
        self.redis = runtime.redis
        self.cache = runtime.rules
        self.batch = int(getattr(runtime.settings, "rules_dirty_batch", DEFAULT_BATCH) or DEFAULT_BATCH)
        prefix = self.ledger.keys.prefix
        self.key_all = f"{prefix}:rules-dirty:all"
        self.key_skus = f"{prefix}:rules-dirty:skus"
        self.key_lock = f"{prefix}:rules-dirty:lock"
        self.key_seen = f"{prefix}:rules-dirty:seen:"
        self.idle_check_seconds = idle_check_seconds
        self.marked_total = 0
        self.passes = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task | None = None
        self._subscribed = False
        self._running = False
        self._token = secrets.token_hex(8)

    # lifecycle

    async def start(self) -> None:
        if not self._subscribed:
            self.cache.on_change(self._on_change)
            self._subscribed = True
        self._running = True
        self._task = asyncio.create_task(self._run(), name="rules-dirty-marker")
        self._wake.set()  # pick up work a stopped process left behind

    async def stop(self) -> None:
        # Whatever is unfinished stays recorded in Redis; the next process to start resumes it.
        self._running = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.redis.eval(_DELETE_IF_EQUAL, 1, self.key_lock, self._token)

    # recording changes

    async def _on_change(self, old: RuleBook, new: RuleBook) -> None:
        if not self._running:
            return
        await self.record_change(old, new)
        self._idle.clear()
        self._wake.set()

    async def record_change(self, old: RuleBook, new: RuleBook) -> bool:
        """Note in Redis what a book swap affects; False if another process already claimed it."""
        claimed = await self.redis.set(f"{self.key_seen}{new.version}", old.version, nx=True, ex=SEEN_TTL_SECONDS)
        if not claimed:
            return False
        skus = affected_skus(old, new)
        if skus is None:
            await self.redis.set(self.key_all, new.version)
            log.info("rules v%s -> v%s: every (SKU, location) pair will be marked dirty", old.version, new.version)
        elif skus:
            items = sorted(skus)
            for i in range(0, len(items), 10_000):
                await self.redis.sadd(self.key_skus, *items[i : i + 10_000])
            log.info("rules v%s -> v%s: %d SKU(s) will be marked dirty", old.version, new.version, len(items))
        return True

    async def pending(self) -> int:
        """1 if a full pass is pending, else the number of SKUs waiting."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(self.key_all)
        pipe.scard(self.key_skus)
        full, skus = await pipe.execute()
        return 1 if full else int(skus)

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Until the work this process knows of is done (tests, benchmarks)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    # draining

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.idle_check_seconds)
            self._wake.clear()
            try:
                await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception:  # a Redis blip must not end the service; the work stays recorded
                log.exception("marking pairs dirty after a rule change failed; retrying")
                await asyncio.sleep(1.0)
                self._wake.set()
                continue
            if not self._wake.is_set():
                self._idle.set()

    async def drain(self) -> int:
        """Mark whatever is pending (from any process) while holding the lock. Returns pairs marked."""
        if not await self.redis.set(self.key_lock, self._token, nx=True, px=LOCK_TTL_MS):
            return 0  # another process is draining; the periodic check retries later
        total = 0
        try:
            while True:
                version = await self.redis.get(self.key_all)
                if version is not None:
                    marked = await mark_all_dirty(self.ledger, self.batch, on_batch=self._renew)
                    total += marked
                    self.passes += 1
                    log.info("rule change: marked %d (SKU, location) pairs dirty", marked)
                    await self.redis.eval(_DELETE_IF_EQUAL, 1, self.key_all, version)
                    continue
                members = await self.redis.srandmember(self.key_skus, self.batch)
                if not members:
                    break
                skus = [m.decode() if isinstance(m, bytes) else m for m in members]
                total += await mark_skus_dirty(self.ledger, skus)
                await self.redis.srem(self.key_skus, *members)
                await self._renew(total)
        finally:
            await self.redis.eval(_DELETE_IF_EQUAL, 1, self.key_lock, self._token)
            self.marked_total += total
        return total

    async def _renew(self, _progress: int) -> None:
        await self.redis.eval(_RENEW_IF_OWNER, 1, self.key_lock, self._token, LOCK_TTL_MS)
        await asyncio.sleep(0)  # let requests run between batches
