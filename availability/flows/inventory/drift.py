"""Drift repair: making Shopify equal ATS again when it moved behind our back.

Three ways in, one way out:

- **webhooks**: `inventory_levels/update` bodies that ingestion puts on the Redis stream
  `{prefix}:shopify:levels` are read with a consumer group (`shopify-drift`). A level whose
  `available` differs from the last value we know Shopify holds is an external change
  (an admin edit, another app); newer than what we know, it becomes the known value, and
  if it differs from ATS the level is flagged urgent, so the publisher pushes ATS with the
  webhook's value as the compare value. Our own writes come back as webhooks too (Shopify
  announces them); they equal the known value and are ignored.
- **periodic**: every `shopify_drift_interval_seconds` one process (a Redis lock) reads
  every mapped level back (paginated, batched, paced so pushes keep priority) and does
  the same comparison (`DriftRepairer.run_pass`).
- **resync** (`availability shopify resync [--dry-run]`): the same pass on demand, for the
  whole catalogue or some SKUs; `--dry-run` only reports the differences.

The way out is always the publisher: a repair is a known value plus an urgent mark, so it
goes through the same leases, compare-and-set, outbox and retries as every other push.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from adapters.shopify.client import SetQuantity, ShopifyTransientError
from adapters.shopify.gid import GidError, item_gid, location_gid
from availability.flows.inventory import metrics as m
from availability.flows.machinery import Backoff, GiveUp, _s, now_ms, retry_transient
from availability.flows.inventory.mappings import LevelKey, level_value
from availability.flows.inventory.sales import pushable

if TYPE_CHECKING:
    from availability.flows.inventory.publisher import Publisher

log = logging.getLogger(__name__)

GROUP = "shopify-drift"


# --- webhook entries ----------------------------------------------------------------------------


class LevelUpdate(msgspec.Struct, frozen=True):
    """Shopify's view of one level, from an inventory_levels/update webhook."""

    item: str
    location: str
    available: int | None
    updated_ms: int | None


def _as_gid(value: Any, kind: str) -> str:
    if isinstance(value, str) and value.startswith("gid://"):
        return value
    return item_gid(value) if kind == "InventoryItem" else location_gid(value)


def _to_ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value)
    try:
        return int(datetime.fromisoformat(str(value)).timestamp() * 1000)
    except ValueError:
        return None


def parse_level_entry(fields: dict[Any, Any]) -> LevelUpdate:
    """A stream entry of `{prefix}:shopify:levels` -> `LevelUpdate`. Raises ValueError.

    Accepted shapes (whatever the webhook intake writes): a JSON document in one of the
    fields `level`, `payload`, `body`, `data`, `event` (the webhook body, or ingestion's
    `InventoryLevelUpdate`), or the body's keys as flat fields. Item and location are the
    numeric ids Shopify sends or GIDs.
    """
    decoded = {_s(k): v for k, v in fields.items()}
    doc: Any = None
    for name in ("level", "payload", "body", "data", "event"):
        if name in decoded:
            try:
                doc = msgspec.json.decode(decoded[name])
            except msgspec.DecodeError as exc:
                raise ValueError(f"field {name!r} is not JSON: {exc}") from None
            break
    if doc is None:
        doc = {k: _s(v) for k, v in decoded.items()}
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    try:
        item = _as_gid(doc["inventory_item_id"], "InventoryItem")
        location = _as_gid(doc["location_id"], "Location")
    except KeyError as exc:
        raise ValueError(f"missing {exc.args[0]!r}") from None
    except GidError as exc:
        raise ValueError(str(exc)) from None
    available = doc.get("available")
    if available in (None, "", "None", "null"):
        available = None
    else:
        try:
            available = int(available)
        except (TypeError, ValueError):
            raise ValueError(f"available {available!r} is not a number") from None
    return LevelUpdate(item, location, available, _to_ms(doc.get("updated_at")))


# --- the repairer -------------------------------------------------------------------------------


@dataclass
class Difference:
    sku: str
    item: str
    location: str
    shopify: int | None
    ats: int

    def as_dict(self) -> dict[str, Any]:
        return {"sku": self.sku, "item": self.item, "location": self.location, "shopify": self.shopify, "ats": self.ats}


@dataclass
class DriftReport:
    source: str
    skus: int = 0
    levels: int = 0
    equal: int = 0
    different: list[Difference] = field(default_factory=list)
    missing: list[Difference] = field(default_factory=list)
    skipped_in_flight: int = 0
    read_calls: int = 0
    points: float = 0.0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "skus": self.skus,
            "levels": self.levels,
            "equal": self.equal,
            "different": len(self.different),
            "not_stocked_in_shopify": len(self.missing),
            "skipped_in_flight": self.skipped_in_flight,
            "read_calls": self.read_calls,
            "points": self.points,
            "seconds": round(self.seconds, 3),
        }


class DriftRepairer:
    """Compares Shopify with ATS and hands differences to the publisher."""

    def __init__(
        self,
        publisher: Publisher,
        *,
        interval_s: float = 900.0,
        chunk_skus: int = 50,
        push_reserve: float = 0.5,
        consumer: str | None = None,
        block_ms: int = 1000,
    ) -> None:
        self.publisher = publisher
        self.redis = publisher.redis
        self.keys = publisher.keys
        self.interval_s = interval_s
        self.chunk_skus = chunk_skus
        #: a periodic pass waits while the bucket is below this share of its size
        self.push_reserve = push_reserve
        self.consumer = consumer or publisher.owner
        self.block_ms = block_ms
        self.webhooks_seen = 0
        self.webhook_drift = 0
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, *, webhooks: bool = True, periodic: bool = True, sales: bool = True) -> None:
        self._stopping = False
        if webhooks:
            self._tasks.append(asyncio.create_task(self._webhook_loop(), name="shopify-drift-webhooks"))
        if periodic and self.interval_s > 0:
            self._tasks.append(asyncio.create_task(self._periodic_loop(), name="shopify-drift-periodic"))
        if sales and self.publisher.sales_config.enabled:
            self._tasks.append(asyncio.create_task(self._sales_loop(), name="shopify-sales-sweep"))

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    # --- webhooks ----------------------------------------------------------------------------

    async def _ensure_group(self) -> None:
        try:
            # From the start of what the stream retains: a repair is idempotent, and an
            # update older than what we know is recognised and skipped.
            await self.redis.xgroup_create(self.keys.levels_stream, GROUP, id="0", mkstream=True)
        except Exception as exc:  # BUSYGROUP: exists already
            if "BUSYGROUP" not in str(exc):
                raise

    async def _webhook_loop(self) -> None:
        await self._ensure_group()
        last_claim = 0.0
        while not self._stopping:
            try:
                if time.monotonic() - last_claim > 30:
                    last_claim = time.monotonic()
                    await self._claim_abandoned()
                reply = await self.redis.xreadgroup(
                    GROUP, self.consumer, {self.keys.levels_stream: ">"}, count=200, block=self.block_ms
                )
                for _stream, entries in reply or []:
                    await self.handle_entries(entries)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading Shopify level webhooks failed; retrying in 1 s")
                await asyncio.sleep(1.0)

    async def _claim_abandoned(self) -> None:
        """Entries a dead consumer read but never acknowledged."""
        with contextlib.suppress(Exception):
            _next, entries, *_ = await self.redis.xautoclaim(
                self.keys.levels_stream, GROUP, self.consumer, min_idle_time=30_000, start_id="0-0", count=200
            )
            if entries:
                await self.handle_entries(entries)

    async def handle_entries(self, entries: list) -> None:
        updates: list[LevelUpdate] = []
        ids = []
        for entry_id, fields in entries:
            ids.append(entry_id)
            if not fields:
                continue
            try:
                updates.append(parse_level_entry(fields))
            except ValueError as exc:
                log.warning("skipping Shopify level webhook entry %s: %s", _s(entry_id), exc)
        if updates:
            await self.handle_updates(updates)
        if ids:
            await self.redis.xack(self.keys.levels_stream, GROUP, *ids)

    async def handle_updates(self, updates: list[LevelUpdate]) -> int:
        """Compare webhook levels with what we know and ATS; flag repairs. Returns repairs flagged."""
        publisher = self.publisher
        await publisher.refresh_mappings()
        mappings = publisher.mappings
        assert mappings is not None
        self.webhooks_seen += len(updates)
        levels: list[tuple[LevelKey, LevelUpdate]] = []
        for u in updates:
            sku = mappings.skus_by_item.get(u.item)
            if sku is None or u.location not in mappings.rows_of or u.available is None:
                continue
            levels.append((LevelKey(sku, u.item, u.location), u))
        if not levels:
            return 0
        stamp = now_ms()
        # Shopify's clock, bounded by ours: the change happened before we got the webhook.
        # A drop our pushes do not explain is held as Shopify's sales in flight, in the
        # same transaction that records the value (flows/inventory/sales.py).
        decided = await publisher.sales.observe(
            (key, u.available, min(u.updated_ms or stamp, stamp), "webhook") for key, u in levels
        )
        await publisher.observed(decided, "webhook")
        news = [(key, u) for key, u in levels if decided[key][1].kind not in ("older", "echo")]
        if not news:
            return 0  # our own writes coming back, or older than what we know
        held = await publisher.sales.held([k for k, _ in news])  # before the stock: see Publisher._process
        stock = await publisher.ledger.stock_many(sorted({k.sku for k, _ in news}))
        book = publisher.rules.book
        flagged: list[str] = []
        for key, u in news:
            ats, _threshold = level_value(book, key.sku, mappings.rows_of.get(key.location, ()), stock[key.sku])
            if pushable(ats, held.get(key, 0)) != u.available:
                flagged.extend(mappings.pairs_of(key))
                self.webhook_drift += 1
                m.DRIFT_DETECTED.labels("webhook").inc()
        if flagged:
            await publisher.queue.flag_urgent(flagged)
        return len(flagged)

    # --- Shopify's sales in flight past the window -------------------------------------------

    async def _sales_loop(self) -> None:
        every = max(0.05, min(5.0, self.publisher.sales_config.window_s / 4))
        while not self._stopping:
            try:
                await asyncio.sleep(every)
                await self.sweep_sales()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Shopify sales sweep failed; retrying")

    async def sweep_sales(self, limit: int = 200) -> dict[str, int]:
        """Settle holds older than the window with a read of `available` and `committed`
        (flows/inventory/sales.py `judge`): what Shopify's committed cannot account for is an external
        decrease, released (revert: ATS is pushed again) or booked in the ledger (adopt)."""
        publisher = self.publisher
        out = {"skus": 0, "kept": 0, "external": 0}
        skus = await publisher.sales.due(limit)
        if not skus:
            return out
        await publisher.refresh_mappings()
        mappings = publisher.mappings
        assert mappings is not None
        skus = [s for s in skus if s in mappings.items]
        if not skus:
            return out
        as_of = now_ms()
        try:
            result = await retry_transient(
                lambda: publisher.client.read_levels_detailed([mappings.items[s] for s in skus]),
                backoff=Backoff(max_attempts=4),
                transient=(ShopifyTransientError,),
            )
        except GiveUp as exc:
            log.warning("sales sweep: reading %d SKU(s) failed, next sweep retries: %s", len(skus), exc)
            return out
        m.CALLS.labels("read", "ok").inc(result.calls)
        keys = [key for sku in skus for key in mappings.all_levels(sku)]
        read = {k: result.levels[(k.item, k.location)] for k in keys if (k.item, k.location) in result.levels}
        decided = await publisher.sales.observe((k, v, as_of, "read") for k, v in read.items())
        rises = await publisher.observed(decided, "sweep")
        # a rise seen on the way is an external edit like any other: reverted by a push
        flagged: list[str] = [p for key in rises for p in mappings.pairs_of(key)] if publisher.sales_config.policy == "revert" else []
        adopt: list[tuple[LevelKey, int, Any]] = []
        policy = publisher.sales_config.policy
        for sku in skus:
            levels = {k: result.committed.get((k.item, k.location)) for k in mappings.all_levels(sku)}
            verdicts = await publisher.sales.resolve(sku, levels)
            out["skus"] += 1
            for key, verdict in verdicts.items():
                out["kept"] += verdict.keep
                if not verdict.external:
                    continue
                out["external"] += verdict.external
                m.SALES_SETTLED.labels("external").inc(verdict.external)
                m.EXTERNAL_EDITS.labels("decrease", policy).inc()
                log.warning(
                    "Shopify level %s @ %s: %d held unit(s) are no sale (committed %s after %.0f s): %s",
                    key.sku, key.location, verdict.external, levels.get(key), publisher.sales_config.window_s,
                    "booked in the ledger (adopt)" if policy == "adopt" else "ATS pushed back (revert)",
                )
                if policy == "adopt":
                    adopt.append((key, verdict.external, decided.get(key, (None,))[0]))
                flagged.extend(mappings.pairs_of(key))
        if adopt:
            await publisher.adopt(adopt, direction="decrease")
        if flagged:
            await publisher.queue.mark(flagged)
            await publisher.queue.flag_urgent(flagged)
        return out

    # --- periodic pass and resync ------------------------------------------------------------

    async def _periodic_loop(self) -> None:
        while not self._stopping:
            try:
                last = await self.redis.get(self.keys.drift_last)
                due_in = self.interval_s - (now_ms() - int(last or 0)) / 1000.0
                if due_in > 0:
                    await asyncio.sleep(min(due_in, 60.0))
                    continue
                token = self.consumer
                if await self.redis.set(self.keys.drift_lock, token, nx=True, px=int(self.interval_s * 1000)):
                    try:
                        report = await self.run_pass(source="periodic")
                        log.info("periodic Shopify drift pass: %s", report.summary())
                    finally:
                        await self.redis.set(self.keys.drift_last, now_ms())
                        with contextlib.suppress(Exception):
                            if _s(await self.redis.get(self.keys.drift_lock) or b"") == token:
                                await self.redis.delete(self.keys.drift_lock)
                else:
                    await asyncio.sleep(min(self.interval_s, 60.0))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("periodic Shopify drift pass failed; retrying in 60 s")
                await asyncio.sleep(60.0)

    async def run_pass(
        self,
        *,
        source: str = "resync",
        skus: list[str] | None = None,
        dry_run: bool = False,
        paced: bool = True,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> DriftReport:
        """Read every mapped level of `skus` (default: every mapped SKU) back from Shopify and
        compare with ATS. Unless `dry_run`, differences become known values + urgent marks."""
        started = time.monotonic()
        publisher = self.publisher
        await publisher.refresh_mappings()
        mappings = publisher.mappings
        assert mappings is not None
        report = DriftReport(source)
        wanted = sorted(mappings.items) if skus is None else [s for s in skus if s in mappings.items]
        report.skus = len(wanted)
        step = max(1, min(self.chunk_skus, publisher.read_chunk_items()))
        for i in range(0, len(wanted), step):
            chunk = wanted[i : i + step]
            if paced:
                await self._wait_for_budget()
            as_of = now_ms()
            try:
                result = await retry_transient(
                    lambda chunk=chunk: publisher.client.read_levels_detailed([mappings.items[s] for s in chunk]),
                    backoff=Backoff(max_attempts=6),
                    transient=(ShopifyTransientError,),
                )
            except GiveUp as exc:
                log.warning("drift pass: reading %d SKU(s) failed, skipped: %s", len(chunk), exc)
                continue
            report.read_calls += result.calls
            report.points += result.points
            m.CALLS.labels("read", "ok").inc(result.calls)
            differences = await self._compare(chunk, result.levels, as_of, report, source=source, dry_run=dry_run)
            flagged = [p for d in differences for p in mappings.pairs_of(d[0])]
            if not dry_run and flagged:
                await publisher.queue.flag_urgent(flagged)
            if on_progress is not None:
                on_progress(min(i + step, len(wanted)), len(wanted))
        if not dry_run and report.different:
            m.DRIFT_DETECTED.labels(source).inc(len(report.different))
        report.seconds = time.monotonic() - started
        return report

    async def _compare(
        self,
        chunk: list[str],
        values: dict[tuple[str, str], int],
        as_of: int,
        report: DriftReport,
        *,
        source: str,
        dry_run: bool,
    ) -> list[tuple[LevelKey, int, int]]:
        """Compare what Shopify holds (`values`, read at `as_of`) with what may be pushed for
        these SKUs; fill `report`; return (level, Shopify's value, wanted) of the differences.
        Observations first (a drop we did not push is held as a sale in flight), then
        holds, then stock, as in a push round. SKUs a push holds right now are skipped."""
        publisher = self.publisher
        mappings = publisher.mappings
        assert mappings is not None
        in_flight = await publisher.leases.holders(chunk)
        keys = [key for sku in chunk for key in mappings.all_levels(sku)]
        if not dry_run:
            read = [(k, values[(k.item, k.location)]) for k in keys if (k.item, k.location) in values and k.sku not in in_flight]
            decided = await publisher.sales.observe((k, v, as_of, "drift") for k, v in read)
            await publisher.observed(decided, source)
        held = await publisher.sales.held(keys)
        stock = await publisher.ledger.stock_many(chunk)
        book = publisher.rules.book
        out: list[tuple[LevelKey, int, int]] = []
        for key in keys:
            report.levels += 1
            ats, _ = level_value(book, key.sku, mappings.rows_of[key.location], stock[key.sku])
            want = pushable(ats, held.get(key, 0))
            value = values.get((key.item, key.location))
            if value is None:
                report.missing.append(Difference(key.sku, key.item, key.location, None, want))
            elif key.sku in in_flight:
                report.skipped_in_flight += 1  # a push is settling it right now
            elif value == want:
                report.equal += 1
            else:
                report.different.append(Difference(key.sku, key.item, key.location, value, want))
                out.append((key, value, want))
        return out

    async def _wait_for_budget(self) -> None:
        """Let pushes keep priority: read only while the bucket is above the reserve share."""
        governor = self.publisher.client.governor
        if governor is None or governor.status is None:
            return
        floor = governor.status.maximum_available * self.push_reserve
        while True:
            available = governor.available_estimate()
            if available is None or available >= floor:
                return
            await asyncio.sleep(min(1.0, (floor - available) / max(1.0, governor.status.restore_rate)))

    async def resync(
        self,
        *,
        skus: list[str] | None = None,
        dry_run: bool = False,
        timeout: float = 600.0,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """The `availability shopify resync` command: a pass, then (unless dry) push the repairs."""
        report = await self.run_pass(source="resync", skus=skus, dry_run=dry_run, paced=False, on_progress=on_progress)
        out: dict[str, Any] = report.summary()
        out["differences"] = [d.as_dict() for d in report.different]
        out["not_stocked_in_shopify"] = [d.as_dict() for d in report.missing]
        if not dry_run and report.different:
            before = self.publisher.stats.quantities_pushed
            drained = await self.publisher.drain(timeout=timeout)
            out["pushed"] = self.publisher.stats.quantities_pushed - before
            out["drained"] = drained
        return out

    async def bulk_resync(
        self,
        *,
        dry_run: bool = False,
        on_progress: Callable[[str, int, int | None], None] | None = None,
        poll_s: float = 2.0,
    ) -> dict[str, Any]:
        """`availability shopify resync --bulk`: the whole catalogue with two bulk operations
        (adapters/shopify/bulk.py) instead of a read per page of items: one bulk query reads
        every level, the differences are computed as in a pass (Shopify's sales in flight
        held), and one bulk mutation writes them, compare-and-set against the values read.
        Lines Shopify refused (stale: the level moved meanwhile) are left to the publisher,
        which reads them back and pushes them the usual way. SKUs a push holds are skipped."""
        from adapters.shopify.bulk import BulkClient

        started = time.monotonic()
        publisher = self.publisher
        await publisher.refresh_mappings()
        mappings = publisher.mappings
        assert mappings is not None
        bulk = BulkClient(publisher.client, poll_s=poll_s)
        report = DriftReport("bulk")

        def progress(phase: str):
            return (lambda n: on_progress(phase, n, None)) if on_progress is not None else None

        as_of = now_ms()  # the values are as of some moment during the read: never newer than its start
        levels = await bulk.read_levels(on_progress=progress("read"))
        report.read_calls = 1
        wanted = sorted(mappings.items)
        report.skus = len(wanted)
        entries: list[SetQuantity] = []
        targets: dict[tuple[str, str], LevelKey] = {}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            for key, value, want in await self._compare(chunk, levels.levels, as_of, report, source="bulk", dry_run=dry_run):
                entries.append(SetQuantity(key.item, key.location, want, value))
                targets[(key.item, key.location)] = key
            if on_progress is not None:
                on_progress("compare", min(i + 500, len(wanted)), len(wanted))
        out: dict[str, Any] = report.summary()
        out["differences"] = [d.as_dict() for d in report.different]
        out["not_stocked_in_shopify"] = [d.as_dict() for d in report.missing]
        if not dry_run and entries:
            m.DRIFT_DETECTED.labels("bulk").inc(len(entries))
            sent_ms = now_ms()
            lines = await bulk.set_available(entries, on_progress=progress("write"))
            confirmed: list[tuple[LevelKey, int, int, str]] = []
            again: list[str] = []
            refused: dict[str, int] = {}
            for line in lines:
                for e in line.entries:
                    key = targets[(e.inventory_item_id, e.location_id)]
                    if line.ok:
                        confirmed.append((key, e.quantity, sent_ms, "push"))
                    else:
                        again.extend(mappings.pairs_of(key))
                for err in line.user_errors:
                    refused[err.code or "USER_ERROR"] = refused.get(err.code or "USER_ERROR", 0) + 1
            await publisher.state.record_known(confirmed)
            if again:
                # Shopify applies a line all or nothing: its levels go the usual way
                await publisher.queue.mark(again)
                await publisher.queue.flag_urgent(again)
            m.DRIFT_REPAIRED.labels("bulk").inc(len(confirmed))
            out["pushed"] = len(confirmed)
            out["left_to_the_publisher"] = len(set(again))
            out["refused"] = refused
        out["seconds"] = round(time.monotonic() - started, 3)
        return out

