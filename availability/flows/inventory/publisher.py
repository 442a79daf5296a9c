"""The Shopify inventory push: dirty (SKU, location) marks in, `inventorySetQuantities` out.

One round:

1. **Claim** (one Lua call, `scripts/claim.lua`): marks flagged urgent, then marks whose
   first-dirty time is older than the coalescing window (`push_window_seconds`), skipping
   SKUs another round or process holds, and lease those SKUs to this round. A claimed mark
   leaves the dirty set, so a ledger change after the claim marks the pair again and is
   pushed by a later round (after this round's lease is released).
2. **Compute** every Shopify level the claimed pairs feed (`ShopifyMappings`), from one
   `stock_many` read, with the same arithmetic as the API.
3. **Compare** with the last value Shopify is known to hold (`{prefix}:{pN}:SKU:shopify`).
   Equal: nothing to send. Unknown: read it back first (we only ever overwrite a value
   we have read). Different: push.
4. **Push** in batches of up to 250 quantities, compare-and-set (`changeFromQuantity` =
   the known value), each batch written to the outbox (idempotency key + exact
   variables) before it is sent, retried on transient failures with the same key, paced
   by the client's `ThrottleGovernor`.
5. **Resolve**: success records the confirmed values; a stale compare re-reads the
   level, recomputes from the ledger and pushes again with the value just read (counted
   as `stale`); a permanent user error dead-letters that level (and parks it until it is
   replayed); the other entries of a rejected batch go again under a new key.

Urgent path: every `urgent_scan_interval` the publisher also looks at marks still inside
the window and flags those whose new value crosses zero (sold out / back in stock) or the
channel's threshold, so they are claimed at once instead of after the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from adapters.shopify.client import (
    LEVEL_NODE_COST,
    MUTATION_COST,
    STALE_CODES,
    SetQuantity,
    SetResult,
    ShopifyAdminClient,
    ShopifyAuthError,
    ShopifyError,
    ShopifyRequestError,
    ShopifyThrottled,
    ShopifyTransientError,
)
from availability.flows.inventory import metrics as m
from availability.flows.machinery import (
    Backoff,
    Claimed,
    DeadLetter,
    DeadLetterQueue,
    GiveUp,
    Leases,
    Outbox,
    OutboxMessage,
    WorkQueue,
    current_correlation_id,
    new_correlation_id,
    new_idempotency_key,
    now_ms,
    retry_transient,
)
from availability.flows.inventory.mappings import (
    LevelKey,
    ShopifyMappings,
    Target,
    crosses,
    level_value,
)
from availability.flows.inventory.migrate import LegacyPushKeysFound, legacy_keys_left
from availability.flows.inventory.sales import Observation, SalesConfig, SalesInFlight
from availability.flows.inventory.state import DirtyFanout, Known, PushKeys, PushScripts, PushState

if TYPE_CHECKING:
    from availability.ledger.ledger import Ledger

log = logging.getLogger(__name__)

FLOW = m.FLOW


class RuleSource(Protocol):
    """What the publisher needs of `RuleCache`: the current book and its version."""

    @property
    def book(self) -> Any: ...

    @property
    def version(self) -> int: ...


class MappingSource(Protocol):
    """What the publisher needs of `RuleStore`."""

    async def item_mappings(self) -> dict[str, str]: ...

    async def location_mappings(self) -> list[tuple[str, str, str]]: ...


@dataclass(frozen=True)
class PushConfig:
    #: coalescing window: a mark is pushed once its first-dirty time is this old
    window_s: float = 1.0
    #: how often the loop looks for work when there was none
    poll_s: float = 0.05
    #: marks per claim (one round)
    claim_limit: int = 2000
    #: quantities per inventorySetQuantities call (Shopify's cap is 250)
    batch_size: int = 250
    #: rounds in flight at once in one process (each holds its own SKU leases)
    rounds_in_flight: int = 4
    #: SKU lease and outbox lease; renewed before every attempt
    lease_ms: int = 30_000
    #: how often marks inside the window are checked for zero/threshold crossings
    urgent_scan_interval_s: float = 0.1
    urgent_scan_limit: int = 2000
    backoff: Backoff = field(default_factory=Backoff)
    #: stale compare-and-set re-reads per level before it is left to a later round
    stale_rounds: int = 4
    reason: str = "correction"
    #: how often lapsed outbox messages (a crashed worker's) are looked for
    outbox_check_s: float = 5.0
    #: pause after Shopify refused our credentials
    auth_pause_s: float = 30.0
    #: share of the restore rate that window rounds may spend (one set call per round); the
    #: rest and the bucket itself stay free for urgent pushes, read-backs and drift passes
    round_budget_share: float = 0.5

    @classmethod
    def from_settings(cls, settings: Any) -> PushConfig:
        def get(name: str, default: Any) -> Any:
            value = getattr(settings, name, None)
            return default if value is None else value

        return cls(
            window_s=float(get("push_window_seconds", 1.0)),
            batch_size=max(1, min(250, int(get("push_batch_size", 250)))),
            backoff=Backoff(max_attempts=max(1, int(get("push_max_attempts", 8)))),
        )


class Confirmation(msgspec.Struct, frozen=True):
    """A level is known to hold its target: pushed, or found equal (`pushed` False)."""

    key: LevelKey
    value: int
    pushed: bool
    dirty_since_ms: int
    computed_ms: int
    confirmed_ms: int


@dataclass
class PublisherStats:
    rounds: int = 0
    marks_claimed: int = 0
    urgent_claimed: int = 0
    levels_computed: int = 0
    quantities_pushed: int = 0
    unchanged: int = 0
    set_calls: int = 0
    read_calls: int = 0
    throttled: int = 0
    stale: int = 0
    retries: int = 0
    gave_up: int = 0
    dead_lettered: int = 0
    unmapped_marks: int = 0
    parked_skipped: int = 0
    drift_repaired: int = 0
    outbox_recovered: int = 0
    errors: int = 0
    by_path: dict[str, int] = field(default_factory=dict)


@dataclass
class _SendOutcome:
    resend: list[Target]
    stale: list[Target]
    #: stale entries of a call retried after a lost answer: an earlier attempt may have been
    #: applied (always so on API versions without @idempotent), so reading back exactly the
    #: value we sent is our own write, not somebody's change
    ours: dict[LevelKey, int] = field(default_factory=dict)


def _ref_uri(key: str) -> str:
    return f"gid://availability/Push/{key}"


class Publisher:
    """Pushes channel ATS to Shopify. Several instances (processes) may share one Redis."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        rules: RuleSource,
        mappings: MappingSource,
        client: ShopifyAdminClient,
        config: PushConfig | None = None,
        owner: str | None = None,
        on_confirm: Callable[[Confirmation], None] | None = None,
        sales: SalesConfig | None = None,
        shop: str = "",
        fanout: DirtyFanout | None = None,
    ) -> None:
        self.ledger = ledger
        self.redis = ledger.redis
        self.rules = rules
        self.mapping_source = mappings
        self.client = client
        self.config = config or PushConfig()
        self.owner = owner or f"pub-{uuid.uuid4().hex[:10]}"
        self.on_confirm = on_confirm
        #: the shop's name in its keys ("" = the single-shop settings)
        self.shop = shop
        self.keys = PushKeys(ledger.keys, shop)
        self.scripts = PushScripts(self.redis)
        self.leases = Leases(self.redis, self.keys.leases, self.scripts)
        #: each shop claims from its own dirty set, fed from the ledger's per-partition sets
        #: by `fanout` (shared by the shops of a process; one of its own when not given)
        self.fanout = fanout or DirtyFanout(self.redis, ledger.keys, [self.keys.dirty])
        self.queue = WorkQueue(
            self.redis,
            marks_key=self.keys.dirty,
            urgent_key=self.keys.urgent,
            leases=self.leases,
            scripts=self.scripts,
        )
        self.outbox = Outbox(self.redis, self.keys.base, self.scripts)
        self.dlq = DeadLetterQueue(self.redis, self.keys.dlq)
        self.state = PushState(self.redis, self.keys, self.scripts)
        self.sales_config = sales or SalesConfig()
        self.sales = SalesInFlight(
            self.redis,
            known_key=self.keys.known,
            sales_key=self.keys.sales,
            applied=ledger.applied,
            holds_index=self.keys.held_index_of,
            holds_indexes=self.keys.all_held_indexes(),
            config=self.sales_config,
            record_known=self.scripts.record_known,
        )
        self.mappings: ShopifyMappings | None = None
        self.stats = PublisherStats()
        self._round_tasks: set[asyncio.Task] = set()
        self._slots = asyncio.Semaphore(self.config.rounds_in_flight)
        self._task: asyncio.Task | None = None
        self._recovery_task: asyncio.Task | None = None
        self._stopping = False
        self._last_urgent_scan = 0.0
        self._last_window_round = 0.0
        self._last_gauges = 0.0
        self._paused_until = 0.0
        self._mappings_lock = asyncio.Lock()

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        left = await legacy_keys_left(self.redis, self.keys.prefix, self.shop)
        if left:
            # Its outbox, marks and dead letters would look absent (and be pushed again or lost).
            raise LegacyPushKeysFound(
                f"the Shopify push keys of shop {self.shop or 'default'!r} are under their names before "
                f"partitions ({', '.join(left[:3])}...): stop the publishers and run `availability shopify migrate-keys`"
            )
        await self.refresh_mappings(force=True)
        size = await self.dlq.size()
        m.DLQ_SIZE.set(size)
        m.FLOW_DLQ_SIZE.labels(FLOW).set(size)
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name=f"shopify-publisher-{self.owner}")
        self._recovery_task = asyncio.create_task(self._recovery_loop(), name=f"shopify-outbox-{self.owner}")

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; let rounds in flight finish (their pushes confirmed) up to `timeout`."""
        self._stopping = True
        for task in (self._task, self._recovery_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._recovery_task = None
        if self._round_tasks:
            _done, pending = await asyncio.wait(set(self._round_tasks), timeout=timeout)
            for task in pending:
                # Its outbox message stays behind; another worker resends it after the lease.
                task.cancel()
            for task in pending:
                with contextlib.suppress(BaseException):
                    await task

    # --- mappings --------------------------------------------------------------------------------

    async def refresh_mappings(self, force: bool = False) -> bool:
        """Reload the Shopify mappings when the rule store moved (mappings bump its version)."""
        version = self.rules.version
        if not force and self.mappings is not None and self.mappings.version == version:
            return False
        async with self._mappings_lock:  # the loop and the webhook reader may both ask
            if not force and self.mappings is not None and self.mappings.version == version:
                return False
            items = await self.mapping_source.item_mappings()
            rows = await self.mapping_source.location_mappings()
            new = ShopifyMappings(items, rows, version)
            old, self.mappings = self.mappings, new
            # Read back as many levels per item as there are mapped Shopify locations.
            self.client.levels_page_size = max(1, min(250, len(new.shopify_locations) or 1))
            await self._after_mapping_change(old, new)
            return True

    async def _after_mapping_change(self, old: ShopifyMappings | None, new: ShopifyMappings) -> None:
        from availability.rules.dirtying import mark_all_dirty, mark_skus_dirty

        # SKUs seen without a mapping that have one now: push them.
        noted = [sku for sku, _ in await self.state.unmapped(limit=0)]
        now_mapped = [sku for sku in noted if sku in new.items]
        if now_mapped:
            await mark_skus_dirty(self.ledger, now_mapped)
            await self.state.clear_unmapped(now_mapped)
        m.UNMAPPED_SKUS.set(len(noted) - len(now_mapped))
        if old is None:
            return
        changed_items = old.diff_items(new)
        if changed_items:
            mapped = [sku for sku in changed_items if sku in new.items]
            await self.state.forget_known(
                LevelKey(sku, old.items[sku], loc) for sku in changed_items if sku in old.items for loc in old.shopify_locations
            )
            await mark_skus_dirty(self.ledger, mapped)
        if old.rows_changed(new):
            # A location row added, moved or removed changes levels of every SKU there; one
            # process per store version walks the ledger for it.
            if await self.redis.set(self.keys.mappings_seen(new.version), 1, nx=True, ex=24 * 3600):
                marked = await mark_all_dirty(self.ledger)
                log.info("Shopify location mappings changed: marked %d (SKU, location) pairs dirty", marked)

    # --- the loop --------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                if time.monotonic() < self._paused_until:
                    await asyncio.sleep(min(1.0, self._paused_until - time.monotonic()))
                    continue
                await self.refresh_mappings()
                if self.fanout is not None:
                    await self.fanout.run()
                if time.monotonic() - self._last_urgent_scan >= self.config.urgent_scan_interval_s:
                    self._last_urgent_scan = time.monotonic()
                    await self.urgent_scan()
                wait = self._budget_wait()
                if wait > 0:
                    # Out of points: leave the marks in the dirty set, where they keep
                    # coalescing, rather than claim rounds that would queue for the bucket.
                    await asyncio.sleep(min(wait, max(self.config.poll_s, 0.01)))
                    continue
                # Window rounds are spaced so that they spend at most a share of the restore
                # rate; in between only urgent marks are claimed. Marks that come due in the
                # meantime wait a little and ride in the next, larger batch.
                since = time.monotonic() - self._last_window_round
                window_round = since >= self._round_interval()
                if not window_round and not await self.redis.zcard(self.keys.urgent):
                    await asyncio.sleep(min(self.config.poll_s, self._round_interval() - since))
                    continue
                await self._slots.acquire()
                owner = self._round_owner()
                try:
                    claimed = await self.queue.claim(
                        owner,
                        window_ms=int(self.config.window_s * 1000) if window_round else None,
                        limit=self.config.claim_limit,
                        lease_ms=self.config.lease_ms,
                    )
                except BaseException:
                    self._slots.release()
                    raise
                if not claimed:
                    self._slots.release()
                    await asyncio.sleep(self.config.poll_s)
                    continue
                if window_round and not all(c.urgent for c in claimed):
                    self._last_window_round = time.monotonic()
                task = asyncio.create_task(self._round(claimed, owner), name=f"shopify-round-{owner}")
                self._round_tasks.add(task)
                task.add_done_callback(self._round_tasks.discard)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats.errors += 1
                log.exception("Shopify publisher loop failed; retrying in 1 s")
                await asyncio.sleep(1.0)

    def _round_interval(self) -> float:
        """Least time between window rounds: one set call per round at `round_budget_share`
        of the restore rate (0.2 s on a 100 points/s plan, 0.02 s on Plus)."""
        governor = self.client.governor
        if governor is None or governor.status is None or governor.status.restore_rate <= 0:
            return 0.0
        return MUTATION_COST / (governor.status.restore_rate * self.config.round_budget_share)

    def _budget_wait(self) -> float:
        """Seconds until the bucket affords one more set call (0 when unknown or now)."""
        governor = self.client.governor
        if governor is None or governor.status is None:
            return 0.0
        return governor.delay_for(MUTATION_COST)

    def _round_owner(self) -> str:
        return f"{self.owner}:{uuid.uuid4().hex[:8]}"

    async def _round(self, claimed: list[Claimed], owner: str) -> None:
        try:
            await self.process(claimed, owner)
        finally:
            self._slots.release()

    async def run_round(self, *, window_s: float | None = None, limit: int | None = None) -> int:
        """Claim and push one round now, in this task (tools, tests). Returns marks claimed."""
        await self.refresh_mappings()
        if self.fanout is not None:
            await self.fanout.run()
        owner = self._round_owner()
        window = self.config.window_s if window_s is None else window_s
        claimed = await self.queue.claim(
            owner, window_ms=int(window * 1000), limit=limit or self.config.claim_limit, lease_ms=self.config.lease_ms
        )
        if claimed:
            await self.process(claimed, owner)
        return len(claimed)

    async def drain(self, timeout: float = 60.0, *, window_s: float = 0.0) -> bool:
        """Push every pending mark now (ignoring the window), until none is left or `timeout`.
        Returns whether the queue is empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            claimed = await self.run_round(window_s=window_s)
            if claimed:
                continue
            marks, urgent = await self.queue.pending()
            if marks == 0 and urgent == 0:
                return True
            await asyncio.sleep(0.05)  # marks of SKUs another worker holds
        return False

    # --- one round -------------------------------------------------------------------------------

    async def process(self, claimed: Sequence[Claimed], owner: str) -> None:
        """Compute, compare and push what `claimed` (leased to `owner`) moved; release the leases."""
        token = current_correlation_id.set(new_correlation_id())
        skus = sorted({c.group for c in claimed})
        try:
            await self._process(claimed, owner)
        except ShopifyAuthError as exc:
            log.error("Shopify refused the credentials; pausing the push %.0f s: %s", self.config.auth_pause_s, exc)
            m.CALLS.labels("set", "auth_error").inc()
            self._paused_until = time.monotonic() + self.config.auth_pause_s
            await self.queue.mark_many({c.member: c.dirty_since_ms for c in claimed})
        except Exception:
            self.stats.errors += 1
            log.exception("Shopify push round failed; its marks are marked again")
            with contextlib.suppress(Exception):
                await self.queue.mark_many({c.member: c.dirty_since_ms for c in claimed})
        finally:
            with contextlib.suppress(Exception):
                await self.leases.release(skus, owner)
            current_correlation_id.reset(token)

    async def _process(self, claimed: Sequence[Claimed], owner: str) -> None:
        mappings = self.mappings
        assert mappings is not None, "start() or refresh_mappings() first"
        self.stats.rounds += 1
        self.stats.marks_claimed += len(claimed)
        urgent_count = sum(1 for c in claimed if c.urgent)
        self.stats.urgent_claimed += urgent_count
        if urgent_count:
            m.MARKS_CLAIMED.labels("urgent").inc(urgent_count)
        if len(claimed) - urgent_count:
            m.MARKS_CLAIMED.labels("window").inc(len(claimed) - urgent_count)

        by_sku: dict[str, dict[str, Claimed]] = defaultdict(dict)
        for c in claimed:
            by_sku[c.group][c.rest] = c
        unmapped = [sku for sku in by_sku if mappings.item_of(sku) is None]
        if unmapped:
            marks = sum(len(by_sku[sku]) for sku in unmapped)
            self.stats.unmapped_marks += marks
            m.UNMAPPED_MARKS.inc(marks)
            m.UNMAPPED_SKUS.set(await self.state.note_unmapped(unmapped))
        skus = [sku for sku in by_sku if sku not in unmapped]
        if not skus:
            return
        levels = [key for sku in skus for key in mappings.levels_for(sku, by_sku[sku])]
        # In this order: what Shopify holds (the compare values), then Shopify's sales in
        # flight, then the stock. A drop is recorded with its hold before its known value,
        # so a compare value read here comes with its hold; an order found in the ledger
        # by `held` is in the stock read after it.
        known = await self.state.known_many(levels)
        held = await self.sales.held(levels)
        # Taken before the read: a value computed "at" computed_ms includes every change
        # applied before it (freshness is measured from here).
        computed_ms = now_ms()
        stock = await self.ledger.stock_many(skus)
        book = self.rules.book
        targets: list[Target] = []
        for key in levels:
            marks = by_sku[key.sku]
            behind = [marks[p.split("|", 1)[1]] for p in mappings.pairs_of(key) if p.split("|", 1)[1] in marks]
            targets.append(
                mappings.target(
                    book,
                    key,
                    stock[key.sku],
                    dirty_since_ms=min(c.dirty_since_ms for c in behind),
                    computed_ms=computed_ms,
                    urgent=any(c.urgent for c in behind),
                    held=held.get(key, 0),
                )
            )
        self.stats.levels_computed += len(targets)
        parked = await self.state.parked([t.key for t in targets])
        if parked:
            self.stats.parked_skipped += len(parked)
            m.PARKED_SKIPPED.inc(len(parked))
            targets = [t for t in targets if t.key not in parked]
        await self.push(targets, owner, known=known)

    # --- pushing ---------------------------------------------------------------------------------

    async def push(
        self, targets: Sequence[Target], owner: str, *, known: dict[LevelKey, Known | None] | None = None
    ) -> None:
        """Bring these levels (whose SKUs `owner` leases) to their target values. `known`:
        the compare values, read before the targets' holds and stock (default: read now)."""
        if not targets:
            return
        known = dict(known) if known is not None else await self.state.known_many([t.key for t in targets])
        unknown = [t for t in targets if known[t.key] is None]
        if unknown:
            read = await self._read_levels([t.key for t in unknown], "read", unknown)
            if read is None:
                await self._mark_again(unknown)
                read = {}
            known.update(read)
        todo: list[Target] = []
        for t in targets:
            k = known.get(t.key)
            if k is None:
                continue  # dead-lettered, or marked again for a later round
            if k.value == t.value:
                await self._confirmed([t], pushed=False, known_before=known)
            else:
                todo.append(t)

        passes = 0
        while todo:
            passes += 1
            if passes > self.config.stale_rounds + 1:
                log.warning("%d level(s) still stale after %d re-reads; left for a later round", len(todo), passes - 1)
                await self._mark_again(todo)
                return
            resend: list[Target] = []
            stale: list[Target] = []
            ours: dict[LevelKey, int] = {}
            size = self.config.batch_size
            for i in range(0, len(todo), size):
                outcome = await self._send(todo[i : i + size], known, owner)
                resend.extend(outcome.resend)
                stale.extend(outcome.stale)
                ours.update(outcome.ours)
            if stale:
                resend.extend(await self._resolve_stale(stale, known, ours))
            todo = resend

    async def _send(self, chunk: list[Target], known: dict[LevelKey, Known | None], owner: str) -> _SendOutcome:
        entries = [SetQuantity(t.key.item, t.key.location, t.value, known[t.key].value) for t in chunk]  # type: ignore[union-attr]
        key = new_idempotency_key()
        stamp = now_ms()
        message = OutboxMessage(
            id=uuid.uuid4().hex,
            flow=FLOW,
            idempotency_key=key,
            payload=self._payload(entries, chunk, key),
            correlation_id=current_correlation_id.get() or new_correlation_id(),
            created_ms=stamp,
            sent_ms=stamp,
            owner=owner,
        )
        await self.outbox.put(message, self.config.lease_ms)
        groups = sorted({t.key.sku for t in chunk})
        try:
            result = await self._deliver(message, entries, groups, owner)
        except _BatchRejected as exc:
            await self.outbox.done(message.id)
            await self._dead_letter([(t, exc.code, exc.detail) for t in chunk], message.correlation_id, message.attempts)
            return _SendOutcome([], [])
        except ShopifyAuthError:
            await self.outbox.done(message.id)  # refused before anything was applied
            raise
        # Not in a `finally`: if this task dies mid-call the message must stay for recovery.
        await self.outbox.done(message.id)
        if result is None:
            # Out of attempts; a timed-out attempt may or may not have been applied, so read
            # the levels back next time instead of trusting either value.
            await self.state.forget_known(t.key for t in chunk)
            await self._mark_again(chunk)
            return _SendOutcome([], [])
        if result.ok:
            await self.state.record_known((t.key, t.value, message.sent_ms, "push") for t in chunk)
            await self._confirmed(chunk, pushed=True, known_before=known)
            return _SendOutcome([], [])
        outcome = await self._rejected(chunk, result, message)
        if message.attempts > 1:
            outcome.ours = {t.key: t.value for t in outcome.stale}
        return outcome

    def _payload(self, entries: list[SetQuantity], chunk: list[Target], key: str) -> dict[str, Any]:
        return {
            "variables": {
                "input": self.client.build_set_input(entries, "available", self.config.reason, _ref_uri(key))
            },
            "entries": [[e.inventory_item_id, e.location_id, e.quantity, e.compare_quantity] for e in entries],
            "levels": [[t.key.sku, t.value, t.dirty_since_ms, list(t.pairs)] for t in chunk],
        }

    async def _deliver(
        self, message: OutboxMessage, entries: list[SetQuantity], groups: list[str], owner: str
    ) -> SetResult | None:
        """Send one outbox message until Shopify answers it, retrying transient failures with the
        same key. Returns the answer, or None when the attempts ran out."""
        backoff = self.config.backoff
        attempt = 0
        while True:
            attempt += 1
            message.attempts += 1
            wait: float | None = None
            kind = ""
            try:
                self.stats.set_calls += 1
                result = await self.client.set_available(
                    entries, message.idempotency_key, self.config.reason, _ref_uri(message.idempotency_key)
                )
            except ShopifyThrottled as exc:
                m.CALLS.labels("set", "throttled").inc()
                m.THROTTLED.inc()
                self.stats.throttled += 1
                kind, wait, message.last_error = "throttled", backoff.delay(attempt, exc.retry_after), str(exc)
            except ShopifyTransientError as exc:
                m.CALLS.labels("set", "transient").inc()
                kind, wait, message.last_error = "transient", backoff.delay(attempt, exc.retry_after), str(exc)
            except ShopifyRequestError as exc:
                m.CALLS.labels("set", "request_error").inc()
                codes = ",".join(sorted(exc.codes)) or "REQUEST_ERROR"
                raise _BatchRejected(codes, str(exc)) from exc
            else:
                m.CALLS.labels("set", "ok" if result.ok else "user_error").inc()
                if result.in_progress:
                    kind, wait = "in_progress", backoff.delay(attempt)
                elif result.retry_with_new_key or "IDEMPOTENCY_KEY_PARAMETER_MISMATCH" in result.codes:
                    # Shopify says this key is spent (its first attempt failed): same entries, new key.
                    message.idempotency_key = new_idempotency_key()
                    message.sent_ms = now_ms()
                    message.payload = {**message.payload, "variables": {
                        "input": self.client.build_set_input(
                            entries, "available", self.config.reason, _ref_uri(message.idempotency_key)
                        )
                    }}
                    kind, wait = "new_key", 0.0
                else:
                    return result
            if attempt >= backoff.max_attempts:
                m.FLOW_GAVE_UP.labels(FLOW).inc()
                self.stats.gave_up += 1
                log.warning("push %s gave up after %d attempts: %s", message.id, attempt, message.last_error)
                return None
            m.FLOW_RETRIES.labels(FLOW, kind).inc()
            self.stats.retries += 1
            await self.outbox.save(message)
            await self.outbox.renew(message.id, self.config.lease_ms)
            await self.leases.renew(groups, owner, self.config.lease_ms)
            if wait:
                await asyncio.sleep(wait)

    async def _rejected(self, chunk: list[Target], result: SetResult, message: OutboxMessage) -> _SendOutcome:
        """Shopify applied nothing: sort the entries into stale, dead and innocent bystanders."""
        stale_idx = set(result.stale_indexes)
        dead: dict[int, tuple[str, str]] = {}
        batch_errors = []
        for error in result.user_errors:
            if error.code in STALE_CODES:
                continue
            index = error.entry_index
            if index is None or not 0 <= index < len(chunk):
                batch_errors.append(error)
            else:
                dead.setdefault(index, (error.code or "USER_ERROR", error.message))
        if batch_errors:
            # Something about the whole call (name, reason, reference): retrying cannot help.
            first = batch_errors[0]
            await self._dead_letter(
                [(t, first.code or "USER_ERROR", first.message) for t in chunk], message.correlation_id, message.attempts
            )
            return _SendOutcome([], [])
        if dead:
            await self._dead_letter(
                [(chunk[i], code, text) for i, (code, text) in sorted(dead.items())],
                message.correlation_id,
                message.attempts,
            )
        stale = [chunk[i] for i in sorted(stale_idx) if i not in dead]
        resend = [t for i, t in enumerate(chunk) if i not in stale_idx and i not in dead]
        return _SendOutcome(resend, stale)

    async def _resolve_stale(
        self, stale: list[Target], known: dict[LevelKey, Known | None], ours: dict[LevelKey, int] | None = None
    ) -> list[Target]:
        """Someone changed these levels since we last knew them. Read what Shopify holds now,
        recompute ATS from the ledger now (so what we send is computed after the change we
        just read) and return what still needs pushing, with the value read as the compare."""
        self.stats.stale += len(stale)
        m.STALE.inc(len(stale))
        read = await self._read_levels([t.key for t in stale], "stale", stale, ours=ours)
        if read is None:
            await self.state.forget_known(t.key for t in stale)
            await self._mark_again(stale)
            return []
        known.update(read)
        skus = sorted({t.key.sku for t in stale if t.key in read})
        # The read recorded its drop (if any) as held: holds, then stock, as in a round.
        held = await self.sales.held([t.key for t in stale if t.key in read])
        computed_ms = now_ms()
        stock = await self.ledger.stock_many(skus) if skus else {}
        book = self.rules.book
        mappings = self.mappings
        assert mappings is not None
        again: list[Target] = []
        for t in stale:
            if t.key not in read:
                continue
            fresh = mappings.target(
                book,
                t.key,
                stock[t.key.sku],
                dirty_since_ms=t.dirty_since_ms,
                computed_ms=computed_ms,
                urgent=t.urgent,
                held=held.get(t.key, 0),
            )
            if fresh.value == read[t.key].value:
                await self._confirmed([fresh], pushed=False, known_before=known)
            else:
                again.append(fresh)
        return again

    async def _read_levels(
        self,
        keys: Sequence[LevelKey],
        source: str,
        targets: Sequence[Target] | None = None,
        *,
        ours: dict[LevelKey, int] | None = None,
    ) -> dict[LevelKey, Known] | None:
        """Read levels back from Shopify (paced, retried). Levels Shopify does not have are
        dead-lettered. None when the reads kept failing. What is read is an observation
        (flows/inventory/sales.py: a drop we did not push is held), except a level reading exactly
        the value in `ours`: an attempt of ours that may have been applied."""
        items = sorted({k.item for k in keys})
        as_of = now_ms()

        def on_retry(attempt: int, exc: BaseException, wait: float) -> None:
            self.stats.retries += 1
            if isinstance(exc, ShopifyThrottled):
                self.stats.throttled += 1
                m.THROTTLED.inc()
            m.CALLS.labels("read", "throttled" if isinstance(exc, ShopifyThrottled) else "transient").inc()
            m.FLOW_RETRIES.labels(FLOW, "read").inc()

        levels: dict[tuple[str, str], int] = {}
        missing: set[str] = set()
        size = self.read_chunk_items()
        for i in range(0, len(items), size):
            chunk = items[i : i + size]
            try:
                result = await retry_transient(
                    lambda chunk=chunk: self.client.read_levels_detailed(chunk),
                    backoff=self.config.backoff,
                    transient=(ShopifyTransientError,),
                    on_retry=on_retry,
                )
            except GiveUp as exc:
                self.stats.gave_up += 1
                m.FLOW_GAVE_UP.labels(FLOW).inc()
                log.warning("reading %d Shopify item(s) back failed: %s", len(chunk), exc)
                return None
            except ShopifyRequestError as exc:
                m.CALLS.labels("read", "request_error").inc()
                log.error("reading Shopify levels was refused: %s", exc)
                return None
            self.stats.read_calls += result.calls
            m.CALLS.labels("read", "ok").inc(result.calls)
            levels.update(result.levels)
            missing.update(result.missing_items)
        out: dict[LevelKey, Known] = {}
        dead: list[tuple[Any, str, str]] = []
        by_key = {t.key: t for t in targets or ()}
        for key in keys:
            value = levels.get((key.item, key.location))
            if value is None:
                if key.item in missing:
                    dead.append((by_key.get(key, key), "INVALID_INVENTORY_ITEM", "Shopify has no such inventory item"))
                else:
                    dead.append(
                        (by_key.get(key, key), "ITEM_NOT_STOCKED_AT_LOCATION", "the item is not stocked at that location")
                    )
                continue
            out[key] = Known(value, as_of, source)
        ours = ours or {}
        mine = [(k, v.value, v.as_of_ms, "push") for k, v in out.items() if ours.get(k) == v.value]
        if mine:
            await self.state.record_known(mine)
        decided = await self.sales.observe(
            (k, v.value, v.as_of_ms, source) for k, v in out.items() if ours.get(k) != v.value
        )
        await self.observed(decided, source)
        if dead:
            await self._dead_letter(dead, current_correlation_id.get() or "", 1)
        return out

    async def observed(self, decided: dict[LevelKey, tuple[Known | None, Observation]], source: str) -> list[LevelKey]:
        """Count and report what observations of Shopify's values meant (flows/inventory/sales.py);
        book adopted increases in the ledger. Returns the levels that moved externally up."""
        rises: list[LevelKey] = []
        for key, (_before, obs) in decided.items():
            if obs.kind == "sale_in_flight":
                m.SALES_HELD.inc(obs.held)
                log.info(
                    "Shopify level %s @ %s dropped %d unit(s) we did not push: held as sales in flight (%s)",
                    key.sku, key.location, obs.held, source,
                )
            elif obs.kind == "increase":
                rises.append(key)
                policy = self.sales_config.policy
                m.EXTERNAL_EDITS.labels("increase", policy).inc()
                log.warning(
                    "Shopify level %s @ %s rose %d unit(s) outside our pushes (%s): %s",
                    key.sku, key.location, obs.increase, source,
                    "booked in the ledger (adopt)" if policy == "adopt" else "ATS pushed back (revert)",
                )
        if rises and self.sales_config.policy == "adopt":
            await self.adopt(
                [(key, decided[key][1].increase, decided[key][0]) for key in rises], direction="increase"
            )
        return rises

    async def adopt(self, changes: Sequence[tuple[LevelKey, int, Known | None]], *, direction: str) -> int:
        """Book external changes of Shopify levels in the ledger as stock adjustments (found
        for an increase, lost for a decrease) at the first of our locations the level is
        computed from: the merchant's edit becomes the truth everywhere, not only in Shopify."""
        from availability.domain.events import StockEvent

        mappings = self.mappings
        if mappings is None:
            return 0
        events = []
        stamp = now_ms()
        for key, units, before in changes:
            rows = mappings.rows_of.get(key.location, ())
            if units <= 0 or not rows:
                continue
            location = rows[0][1]
            at = before.as_of_ms if before is not None else stamp
            events.append(
                StockEvent(
                    event_id=f"shopify:{self.shop or 'default'}:adopt:{key.item}:{key.location}:{direction}:{at}:{units}",
                    type="adjustment",
                    reason="found" if direction == "increase" else "lost",
                    source="shopify",
                    occurred_at=datetime.fromtimestamp(stamp / 1000, tz=timezone.utc),
                    sku=key.sku,
                    location=location,
                    quantity=units,
                    reference=f"shopify-external-edit:{key.location}",
                )
            )
        if events:
            await self.ledger.apply_batch(events)
        return len(events)

    def read_chunk_items(self) -> int:
        """Items per levels read, so one read asks for at most half the bucket (and never
        more than the per-query cap): a read must never starve pushes or be unaffordable."""
        per_item = 3 + LEVEL_NODE_COST * self.client.levels_page_size
        cap = float(self.client.max_query_cost)
        governor = self.client.governor
        if governor is not None:
            # Before the first answer the bucket size is unknown: start small.
            cap = min(cap, governor.status.maximum_available / 2 if governor.status else 100.0)
        return max(1, int(cap // per_item))

    # --- outcomes --------------------------------------------------------------------------------

    async def _confirmed(self, targets: Iterable[Target], *, pushed: bool, known_before: dict[LevelKey, Known | None]) -> None:
        stamp = now_ms()
        for t in targets:
            m.PUSH_LAG.observe(max(0.0, (stamp - t.dirty_since_ms) / 1000.0))
            if pushed:
                self.stats.quantities_pushed += 1
                m.QUANTITIES_PUSHED.inc()
                before = known_before.get(t.key)
                if before is not None and before.source in ("webhook", "drift"):
                    self.stats.drift_repaired += 1
                    m.DRIFT_REPAIRED.labels(before.source).inc()
            else:
                self.stats.unchanged += 1
                m.QUANTITIES_UNCHANGED.inc()
            if self.on_confirm is not None:
                self.on_confirm(Confirmation(t.key, t.value, pushed, t.dirty_since_ms, t.computed_ms, stamp))
        if self.stats.quantities_pushed:
            m.COALESCING_RATIO.set(self.stats.marks_claimed / self.stats.quantities_pushed)

    async def _mark_again(self, targets: Iterable[Target]) -> None:
        """Leave levels for a later round, keeping their first-dirty times."""
        scored: dict[str, int] = {}
        for t in targets:
            for pair in t.pairs:
                scored[pair] = min(scored.get(pair, t.dirty_since_ms), t.dirty_since_ms)
        await self.queue.mark_many(scored)

    async def _dead_letter(self, items: Sequence[tuple[Any, str, str]], correlation_id: str, attempts: int) -> None:
        """Dead-letter levels (a `Target` or a bare `LevelKey`) with a reason, and park them."""
        for item, reason, detail in items:
            key = item.key if isinstance(item, Target) else item
            payload: dict[str, Any] = {"sku": key.sku, "item": key.item, "location": key.location}
            if isinstance(item, Target):
                payload.update(value=item.value, pairs=list(item.pairs))
            letter = DeadLetter(
                id=uuid.uuid4().hex,
                flow=FLOW,
                reason=reason,
                detail=detail,
                payload=payload,
                correlation_id=correlation_id,
                at_ms=now_ms(),
                attempts=attempts,
            )
            await self.dlq.put(letter)
            await self.state.park([key], letter.id)
            self.stats.dead_lettered += 1
            m.FLOW_DEAD_LETTERS.labels(FLOW, reason).inc()
            log.warning("dead-lettered Shopify level %s @ %s (%s): %s", key.sku, key.location, reason, detail)
        size = await self.dlq.size()
        m.DLQ_SIZE.set(size)
        m.FLOW_DLQ_SIZE.labels(FLOW).set(size)

    # --- urgent path -----------------------------------------------------------------------------

    async def urgent_scan(self) -> int:
        """Flag marks inside the window whose new value crosses zero or the threshold.
        Returns how many marks were flagged."""
        mappings = self.mappings
        if mappings is None:
            return 0
        if time.monotonic() - self._last_gauges >= 1.0:
            self._last_gauges = time.monotonic()
            m.PENDING_MARKS.set((await self.queue.pending())[0])
        rows = await self.queue.not_due(
            window_ms=int(self.config.window_s * 1000), limit=self.config.urgent_scan_limit
        )
        if not rows:
            return 0
        by_sku: dict[str, set[str]] = defaultdict(set)
        for member, _score in rows:
            sku, _, location = member.partition("|")
            if mappings.item_of(sku) is not None:
                by_sku[sku].add(location)
        if not by_sku:
            return 0
        levels = [key for sku, locs in by_sku.items() for key in mappings.levels_for(sku, locs)]
        known = await self.state.known_many(levels)
        held = await self.sales.held(levels)
        stock = await self.ledger.stock_many(list(by_sku))
        book = self.rules.book
        flagged: list[str] = []
        for key in levels:
            value, threshold = level_value(book, key.sku, mappings.rows_of.get(key.location, ()), stock[key.sku])
            value = max(0, value - held.get(key, 0))  # what would be pushed: sold out on Shopify's sales too
            before = known.get(key)
            if crosses(before.value if before else None, value, threshold):
                dirty = by_sku[key.sku]
                flagged.extend(p for p in mappings.pairs_of(key) if p.split("|", 1)[1] in dirty)
        if flagged:
            await self.queue.flag_urgent(flagged)
        return len(flagged)

    # --- outbox recovery -------------------------------------------------------------------------

    async def _recovery_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.config.outbox_check_s)
            try:
                await self.recover_outbox()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Shopify outbox recovery failed; retrying")

    async def recover_outbox(self) -> int:
        """Resend messages a dead worker left in the outbox, with their own key and payload
        (so Shopify applies each at most once). Their levels are then marked again and read
        back first, so a fresh computation settles the current truth."""
        recovered = 0
        for message in await self.outbox.take_over(self.config.lease_ms):
            if message.flow != FLOW:
                continue
            levels = [
                (LevelKey(sku, item, location), value, dirty_since, tuple(pairs))
                for (sku, value, dirty_since, pairs), (item, location, _q, _c) in zip(
                    message.payload["levels"], message.payload["entries"]
                )
            ]
            groups = sorted({k.sku for k, *_ in levels})
            owner = self._round_owner()
            if not await self.leases.acquire(groups, owner, self.config.lease_ms):
                await self.outbox.renew(message.id, 1000)  # a live round holds them: look again soon
                continue
            token = current_correlation_id.set(message.correlation_id)
            try:
                entries = [SetQuantity(item, location, q, c) for item, location, q, c in message.payload["entries"]]
                log.info("resending outbox message %s (key %s) left by %s", message.id, message.idempotency_key, message.owner)
                try:
                    await self._deliver(message, entries, groups, owner)
                except _BatchRejected:
                    pass  # the pairs are marked again below; the next push dead-letters them
                except ShopifyError as exc:
                    log.warning("outbox message %s not resent yet: %s", message.id, exc)
                    await self.outbox.renew(message.id, int(self.config.auth_pause_s * 1000))
                    continue
                targets = [Target(k, v, 0, pairs, since, message.created_ms) for k, v, since, pairs in levels]
                # Applied now or long ago, the levels may have moved since the worker died:
                # read them back on the next push rather than trust the message's values.
                await self.state.forget_known(t.key for t in targets)
                await self._mark_again(targets)
                await self.outbox.done(message.id)
                recovered += 1
                self.stats.outbox_recovered += 1
                m.FLOW_OUTBOX_RECOVERED.labels(FLOW).inc()
            finally:
                current_correlation_id.reset(token)
                await self.leases.release(groups, owner)
        return recovered

    # --- dead letters ----------------------------------------------------------------------------

    async def replay_dead_letters(self, ids: Iterable[str] | None = None) -> list[DeadLetter]:
        """Unpark dead-lettered levels and push them again (reading Shopify's value first)."""

        async def handler(letter: DeadLetter) -> None:
            p = letter.payload
            if not {"sku", "item", "location"} <= p.keys():
                return
            key = LevelKey(p["sku"], p["item"], p["location"])
            await self.state.unpark([key])
            await self.state.forget_known([key])
            pairs = p.get("pairs") or (list(self.mappings.pairs_of(key)) if self.mappings else [])
            await self.queue.mark(pairs)
            await self.queue.flag_urgent(pairs)

        replayed = await self.dlq.replay(handler, ids)
        size = await self.dlq.size()
        m.DLQ_SIZE.set(size)
        m.FLOW_DLQ_SIZE.labels(FLOW).set(size)
        return replayed


class _BatchRejected(Exception):
    """Shopify refused the call itself (GraphQL error): retrying as is cannot help."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail

