"""Crash recovery for Redis Streams: nothing stays pending forever.

A consumer that dies between reading a batch and acknowledging it leaves the entries in
the group's pending list (PEL), and Redis never hands them to anyone else by itself;
FastStream's XREADGROUP `>` only reads new entries. So every consumer also runs this:

- at start, `recover_own()`: re-read this consumer name's own pending entries
  (XREADGROUP ... 0) and apply them; nothing of ours is in flight yet;
- every `reclaim_interval_seconds`, `reclaim_once()`: XAUTOCLAIM entries idle for more
  than `reclaim_idle_ms` (any consumer's, typically a dead one's) and apply them. An
  entry delivered more than `max_deliveries` times goes to the dead-letter stream
  instead (a poison message that kills its consumer must not kill every consumer);
- `trim_once()`: drop entries every group has acknowledged, older than the retention;
- `observe()`: lag and pending per partition, for the metrics.

Applying a reclaimed entry twice is harmless: the ledger is idempotent on event_id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from availability.ingest import metrics
from availability.ingest.deadletters import DeadLetter
from availability.ingest.pipeline import Entry
from availability.ingest.streams import StreamNames, entry_payload
from availability.ledger.keys import stream_id_order

if TYPE_CHECKING:
    from availability.ingest.pipeline import IngestPipeline

log = logging.getLogger(__name__)

#: on Redis < 7 (no `lag` in XINFO GROUPS) undelivered entries are counted up to this many
LAG_COUNT_CAP = 10_000


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Reclaimer:
    def __init__(
        self,
        redis: Redis,
        names: StreamNames,
        pipeline: IngestPipeline,
        consumer_name: str,
        *,
        partitions: list[int] | None = None,
        idle_ms: int = 30_000,
        batch_size: int = 500,
        max_deliveries: int = 10,
        retention_ms: int = 3_600_000,
    ) -> None:
        self.redis = redis
        self.names = names
        self.pipeline = pipeline
        self.consumer = consumer_name
        self.partitions = partitions if partitions is not None else list(range(names.partitions))
        self.idle_ms = idle_ms
        self.batch_size = batch_size
        self.max_deliveries = max_deliveries
        self.retention_ms = retention_ms

    async def run(self, interval: float, stop: asyncio.Event | None = None) -> None:
        """Reclaim (at once, then every `interval` s), trim and observe until `stop` is set.

        Stopping is cooperative (between passes), not by cancelling a pass in the middle of
        a Redis command: a cancelled command leaves its connection to be torn down."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.reclaim_once()
                await self.trim_once()
                await self.observe()
            except asyncio.CancelledError:
                raise
            except Exception:  # a Redis blip must not end recovery for good
                log.exception("reclaim pass failed; retrying in %.1fs", interval)
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass

    # --- recovery ---------------------------------------------------------------------------

    async def recover_own(self) -> int:
        """Apply what this consumer name left pending (a restart under a fixed name)."""
        total = 0
        for p in self.partitions:
            stream = self.names.partition(p)
            last = "0"
            while True:
                reply = await self.redis.xreadgroup(
                    self.names.group, self.consumer, {stream: last}, count=self.batch_size
                )
                entries = reply[0][1] if reply else []
                if not entries:
                    break
                total += await self._process(p, stream, entries)
                last = _s(entries[-1][0])
        if total:
            log.info("recovered %d entries %s had left pending", total, self.consumer)
        return total

    async def take_over(self, p: int) -> int:
        """Apply everything pending in partition p, whoever it was delivered to: for a
        consumer that has just been given p's lease (nobody else reads p now)."""
        return await self.reclaim_once(partitions=[p], idle_ms=0)

    async def reclaim_once(self, *, partitions: list[int] | None = None, idle_ms: int | None = None) -> int:
        """Take over entries idle for longer than `idle_ms` and apply them."""
        total = 0
        idle_ms = self.idle_ms if idle_ms is None else idle_ms
        for p in self.partitions if partitions is None else partitions:
            stream = self.names.partition(p)
            cursor = "0-0"
            while True:
                try:
                    reply = await self.redis.xautoclaim(
                        stream, self.names.group, self.consumer, idle_ms, start_id=cursor, count=self.batch_size
                    )
                except ResponseError as exc:
                    if "NOGROUP" in str(exc):
                        break
                    raise
                cursor = _s(reply[0])
                entries = reply[1]
                if entries:
                    total += await self._process(p, stream, entries, check_deliveries=True)
                if cursor == "0-0":
                    break
        if total:
            log.warning("reclaimed %d pending entries idle for more than %d ms", total, idle_ms)
        return total

    async def _process(self, p: int, stream: str, raw_entries: list, *, check_deliveries: bool = False) -> int:
        ids = [entry[0] for entry in raw_entries]
        live = [(mid, fields) for mid, fields in raw_entries if fields]  # deleted entries come back empty
        poisoned: set[bytes] = set()
        if check_deliveries and live:
            pending = await self.redis.xpending_range(
                stream, self.names.group, min=live[0][0], max=live[-1][0], count=len(ids) * 2, consumername=self.consumer
            )
            poisoned = {
                row["message_id"] if isinstance(row["message_id"], bytes) else row["message_id"].encode()
                for row in pending
                if row["times_delivered"] > self.max_deliveries
            }
        entries: list[Entry] = []
        dead: list[DeadLetter] = []
        for mid, fields in live:
            payload = entry_payload(fields)
            if mid in poisoned:
                dead.append(
                    DeadLetter(
                        reason="too_many_deliveries",
                        detail=f"delivered more than {self.max_deliveries} times without being acknowledged",
                        payload=payload,
                        stream=stream,
                        entry_id=_s(mid),
                    )
                )
            else:
                entries.append(Entry(_s(mid), payload, stream))
        await self.pipeline.process(entries, ack=(stream, ids), dead=dead)
        metrics.RECLAIMED.labels(str(p)).inc(len(ids))
        return len(ids)

    # --- housekeeping -----------------------------------------------------------------------

    async def trim_once(self) -> int:
        """XTRIM MINID: drop entries older than the retention that every group has acknowledged."""
        removed = 0
        horizon = (int(time.time() * 1000) - self.retention_ms, 0)
        for p in self.partitions:
            stream = self.names.partition(p)
            try:
                groups = await self.redis.xinfo_groups(stream)
            except ResponseError:
                continue
            if not groups:
                continue
            bound = horizon
            for group in groups:
                name = _s(group["name"])
                delivered = stream_id_order(_s(group["last-delivered-id"]))
                safe = (delivered[0], delivered[1] + 1)
                if group["pending"]:
                    summary = await self.redis.xpending(stream, name)
                    if summary.get("min"):  # None if it was acknowledged meanwhile
                        safe = min(safe, stream_id_order(_s(summary["min"])))
                bound = min(bound, safe)
            if bound[0] > 0:
                removed += await self.redis.xtrim(stream, minid=f"{bound[0]}-{bound[1]}", approximate=True)
        return removed

    async def observe(self) -> dict[int, tuple[int, int]]:
        """(lag, pending) per partition for our group; sets the gauges."""
        out: dict[int, tuple[int, int]] = {}
        # Every partition's XINFO GROUPS in one round trip (the console's operations page asks
        # on each visit); a partition whose stream does not exist yet answers an error.
        pipe = self.redis.pipeline(transaction=False)
        for p in self.partitions:
            pipe.xinfo_groups(self.names.partition(p))
        replies = await pipe.execute(raise_on_error=False)
        for p, groups in zip(self.partitions, replies):
            stream = self.names.partition(p)
            if isinstance(groups, ResponseError):
                continue
            if isinstance(groups, Exception):
                raise groups
            ours = next((g for g in groups if _s(g["name"]) == self.names.group), None)
            if ours is None:
                continue
            pending = int(ours["pending"])
            lag = ours.get("lag")
            if lag is None:
                lag = await self._count_undelivered(stream, _s(ours["last-delivered-id"]))
            lag = int(lag)
            metrics.LAG.labels(str(p)).set(lag)
            metrics.PENDING.labels(str(p)).set(pending)
            out[p] = (lag, pending)
        return out

    async def _count_undelivered(self, stream: str, last_delivered: str) -> int:
        # Redis 6.2 has no `lag`: count entries after the group's last delivered id, capped.
        info = await self.redis.xinfo_stream(stream)
        if _s(info["last-generated-id"]) == last_delivered:
            return 0
        page = await self.redis.xrange(stream, min=f"({last_delivered}", max="+", count=LAG_COUNT_CAP)
        return len(page)
