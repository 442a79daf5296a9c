"""Moving a ledger from the per-SKU layout (version 1: `{prefix}:{SKU}:stock`, one global
dirty set, journal, oversells and reservation indexes) to the partitioned layout of
keys.py, on the same Redis or onto another server or a Redis Cluster.

    availability ledger migrate-layout [--to URL] [--partitions N] [--batch N] [--keep-old]

Steps, each resumable (the position is kept in `{prefix}:migrate:layout` on the target):

1. `keys`: SCAN the source for `{prefix}:*`; a per-SKU ledger key is copied to its
   partition's name (DUMP / RESTORE REPLACE with its TTL), a reservation header to its
   id's partition; the old global zsets are split member by member into their partitions
   (ZADD: idempotent); with another target, every other key under the prefix (streams and
   their groups, dead letters, the publisher's state, ...) is copied under its own name.
   A copy is idempotent, so the batch a kill interrupted is copied again on resume.
2. `streams`: the journal and the oversells, entry by entry in id order, into each entry's
   SKU's partition with the same id (an id already there is skipped on resume).
3. `verify`: counts (stock hashes, locations, holds, headers, index members, journal
   entries) and a checksum of every (SKU, location)'s buckets, old against new; a
   mismatch stops the migration with both figures, nothing deleted.
4. `cleanup` (same server only, unless --keep-old): the old keys are deleted.
5. `done`: `{prefix}:layout` records the partition count; `Ledger.check_layout` now
   accepts the ledger.
6. `events` (also on a ledger already partitioned, and after an earlier run that was
   `done`): each ingest stream still under its untagged name `{prefix}:events:N` is moved
   to `{prefix}:events:{pN}` (keys.py). What the consumer group has not finished (entries
   never delivered, and entries delivered but not acknowledged) is added to the new stream
   with the same ids, in order; what it acknowledged is applied already and stays behind.
   The new stream's group starts at 0, so the consumers apply the moved entries (a pending
   one that was half-applied answers `duplicate` for what went in: event ids make that
   harmless). Counted (entries moved = the new stream's length), then the old stream is
   deleted. A killed run resumes after the new stream's last id (nothing else writes to it:
   the service refuses to start while an untagged stream exists).

Writers must be stopped while it runs (the service refuses to start on the old layout).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Callable

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from availability.ledger.ledger import scan_batches
from availability.ledger.keys import LAYOUT_VERSION, KeyLayout, LegacyKeyLayout, event_stream, legacy_event_stream, stream_id_order

#: per-SKU families of the ledger (everything else under {SKU} belongs to other areas)
LEDGER_SKU_FAMILIES = ("stock", "idm", "idb", "dlog", "cuts", "holds", "ended", "seen")
PHASES = ("keys", "streams", "verify", "cleanup", "done")


class MigrationFailed(RuntimeError):
    pass


def _id_after(entry_id: str, other: str) -> bool:
    return stream_id_order(entry_id) > stream_id_order(other)


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def bucket_checksum(sku: str, location: str, raw: str) -> int:
    return zlib.crc32(f"{sku}|{location}={raw}".encode())


@dataclass
class Figures:
    """What verification compares: counts, and the sum of per-(SKU, location) checksums."""

    stock_keys: int = 0
    locations: int = 0
    buckets_checksum: int = 0
    hold_fields: int = 0
    headers: int = 0
    index_members: dict[str, int] = field(default_factory=dict)
    journal_entries: int = 0
    oversells: int = 0

    def as_dict(self) -> dict:
        return {
            "stock_keys": self.stock_keys, "locations": self.locations, "buckets_checksum": self.buckets_checksum,
            "hold_fields": self.hold_fields, "headers": self.headers, "index_members": dict(sorted(self.index_members.items())),
            "journal_entries": self.journal_entries, "oversells": self.oversells,
        }


class LayoutMigration:
    def __init__(self, source: Redis, target: Redis, keys: KeyLayout, *, same_server: bool, batch: int = 500,
                 keep_old: bool = False, on_progress: Callable[[str, int], None] | None = None,
                 stream_partitions: int = 0, group: str = "ledger") -> None:
        self.source = source
        #: the ingest streams to move to their tagged names (0: none) and their consumer group
        self.stream_partitions = stream_partitions
        self.group = group
        self.target = target
        self.keys = keys
        self.old = LegacyKeyLayout(keys.prefix)
        self.same_server = same_server
        self.batch = batch
        self.keep_old = keep_old
        self.on_progress = on_progress or (lambda phase, done: None)
        self.state_key = f"{keys.prefix}:migrate:layout"

    # --- state ------------------------------------------------------------------------------

    async def state(self) -> dict[str, str]:
        return {_s(k): _s(v) for k, v in (await self.target.hgetall(self.state_key)).items()}

    async def _save(self, **fields) -> None:
        await self.target.hset(self.state_key, mapping={k: str(v) for k, v in fields.items()})

    # --- classification ---------------------------------------------------------------------

    def new_name(self, key: str) -> str | None:
        """The partitioned name of an old ledger key; None for a key that is not one."""
        split = self.old.split_sku_key(key)
        if split is not None:
            sku, rest = split
            if rest.split(":", 1)[0] in LEDGER_SKU_FAMILIES:
                return f"{self.keys.tag(self.keys.partition(sku))}{sku}:{rest}"
            return None
        head = f"{self.keys.prefix}:resv:{{"
        if key.startswith(head) and key.endswith("}"):
            return self.keys.reservation(key[len(head) : -1])
        return None

    def _is_new_layout(self, key: str) -> bool:
        return bool(self.keys.kind(key)) or key == self.state_key

    # --- running ----------------------------------------------------------------------------

    async def run(self) -> dict:
        state = await self.state()
        if not state and self.same_server:
            recorded = {_s(k): _s(v) for k, v in (await self.target.hgetall(self.keys.layout)).items()}
            if recorded:  # partitioned from the start (never migrated): only its ingest streams may be old
                if int(recorded.get("partitions", 0)) != self.keys.partitions:
                    raise MigrationFailed(f"the ledger is partitioned already, in {recorded.get('partitions')} partitions")
                return {"phase": "done", "resumed": False, "ledger": "partitioned already",
                        "event_streams": await self.move_event_streams()}
        phase = state.get("phase", "keys")
        if phase == "done":
            moved = await self.move_event_streams()
            return {"phase": "done", "resumed": True, **(await self.verify()), "event_streams": moved}
        if state.get("partitions") and int(state["partitions"]) != self.keys.partitions:
            raise MigrationFailed(f"a migration to {state['partitions']} partitions is under way; finish it with that count")
        await self._save(partitions=self.keys.partitions, phase=phase)
        if phase == "keys":
            await self._copy_keys(int(state.get("cursor", 0)), int(state.get("copied", 0)))
            phase = "streams"
            await self._save(phase=phase)
        if phase == "streams":
            for stream in self.old.streams:
                await self._copy_stream(stream)
            phase = "verify"
            await self._save(phase=phase)
        figures = await self.verify()
        if figures["old"] != figures["new"]:
            raise MigrationFailed(f"verification failed: old {figures['old']} new {figures['new']}")
        if not self.same_server or self.keep_old:
            phase = "done"
        else:
            await self._save(phase="cleanup")
            await self._cleanup()
            phase = "done"
        await self.target.hset(self.keys.layout, mapping={"partitions": self.keys.partitions, "version": LAYOUT_VERSION})
        await self._save(phase=phase)
        moved = await self.move_event_streams()
        return {"phase": phase, "resumed": bool(state), **figures, "event_streams": moved}

    # --- ingest streams -------------------------------------------------------------------

    async def move_event_streams(self) -> dict[str, int]:
        """Step 6: the untagged ingest streams' unfinished entries onto the tagged names;
        returns {new stream name: entries moved} for the streams moved now."""
        moved: dict[str, int] = {}
        done = 0
        for p in range(self.stream_partitions):
            old, new = legacy_event_stream(self.keys.prefix, p), event_stream(self.keys.prefix, p)
            if not await self.target.exists(old):
                continue
            moved[new] = await self._move_event_stream(old, new)
            done += moved[new]
            self.on_progress("events", done)
        return moved

    async def _move_event_stream(self, old: str, new: str) -> int:
        redis = self.target
        delivered, pending = "0-0", set()
        for group in await redis.xinfo_groups(old):
            if _s(group["name"]) == self.group:
                delivered = _s(group["last-delivered-id"])
                start = "-"
                while True:  # the group's pending entries: delivered, not acknowledged
                    rows = await redis.xpending_range(old, self.group, min=start, max="+", count=self.batch * 10)
                    pending.update(_s(r["message_id"]) for r in rows)
                    if len(rows) < self.batch * 10:
                        break
                    start = "(" + _s(rows[-1]["message_id"])
        # a resumed run: what is on the new stream was moved before the kill
        top = _s((await redis.xinfo_stream(new))["last-generated-id"]) if await redis.exists(new) else "0-0"
        wanted = 0
        start = "-"
        while True:
            entries = await redis.xrange(old, min=start, max="+", count=self.batch)
            if not entries:
                break
            pipe = redis.pipeline(transaction=False)
            for raw_id, fields in entries:
                entry_id = _s(raw_id)
                if not (_id_after(entry_id, delivered) or entry_id in pending):
                    continue  # acknowledged: applied already
                wanted += 1
                if _id_after(entry_id, top):
                    pipe.xadd(new, fields, id=entry_id)
            await pipe.execute()
            start = "(" + _s(entries[-1][0])
        try:
            await redis.xgroup_create(new, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        length = await redis.xlen(new)
        if length != wanted:
            raise MigrationFailed(f"{old} -> {new}: {wanted} unfinished entries to move, {length} on {new}; {old} kept")
        await redis.delete(old)
        return wanted

    async def _copy_keys(self, cursor: int, copied: int) -> None:
        first = True
        while first or cursor:
            first = False
            cursor, found = await self.source.scan(cursor, match=f"{self.keys.prefix}:*", count=self.batch)
            names = [_s(k) for k in found]
            names = [k for k in names if not (self.same_server and self._is_new_layout(k))]
            copied += await self._copy_batch(names)
            # the position is saved after the batch: a kill here copies the batch again
            await self._save(cursor=cursor, copied=copied)
            self.on_progress("keys", copied)

    async def _copy_batch(self, names: list[str]) -> int:
        moves: list[tuple[str, str]] = []
        zsets: list[tuple[str, str]] = []
        for key in names:
            new = self.new_name(key)
            if new is not None:
                moves.append((key, new))
            elif key in self.old.global_zsets:
                zsets.append((key, self.old.global_zsets[key]))
            elif key in self.old.streams or key == self.keys.layout:
                continue  # streams: their own step
            elif not self.same_server:
                moves.append((key, key))  # not a ledger key: copied as it is to another server
        if moves:
            pipe = self.source.pipeline(transaction=False)
            for old, _new in moves:
                pipe.dump(old)
                pipe.pttl(old)
            dumped = await pipe.execute()
            pipe = self.target.pipeline(transaction=False)
            for (old, new), payload, ttl in zip(moves, dumped[0::2], dumped[1::2]):
                if payload is None:
                    continue  # gone meanwhile (expired)
                pipe.restore(new, max(0, ttl) if ttl and ttl > 0 else 0, payload, replace=True)
            await pipe.execute()
        for key, kind in zsets:
            await self._split_zset(key, kind)
        return len(moves) + len(zsets)

    def _partition_of_member(self, kind: str, member: str) -> int:
        if kind == "pair":
            return self.keys.partition(member.rsplit("|", 1)[0])
        if kind == "sku":
            return self.keys.partition(member)
        return self.keys.reservation_partition(member)

    def _new_index(self, old_key: str, partition: int) -> str:
        rest = old_key[len(self.keys.prefix) + 1 :]
        return self.keys.tag(partition) + rest

    async def _split_zset(self, key: str, kind: str) -> None:
        cursor = 0
        while True:
            cursor, rows = await self.source.zscan(key, cursor, count=self.batch)
            by_partition: dict[int, dict[str, float]] = {}
            for member, score in rows:
                m = _s(member)
                by_partition.setdefault(self._partition_of_member(kind, m), {})[m] = score
            if by_partition:
                pipe = self.target.pipeline(transaction=False)
                for p, members in by_partition.items():
                    pipe.zadd(self._new_index(key, p), members)
                await pipe.execute()
            if not cursor:
                return

    async def _copy_stream(self, stream: str) -> None:
        kind = self.old.streams[stream]
        done_field = f"stream:{kind}"
        last = (await self.state()).get(done_field, "")
        copied = int((await self.state()).get(f"{done_field}:count", 0))
        while True:
            entries = await self.source.xrange(stream, min=f"({last}" if last else "-", max="+", count=self.batch)
            if not entries:
                return
            for entry_id, fields in entries:
                sku = _s(fields.get(b"s", b""))
                target = self.keys.journal_of(sku) if kind == "journal" else self.keys.oversells_of(sku)
                try:
                    await self.target.xadd(target, fields, id=entry_id)
                except ResponseError as exc:
                    if "equal or smaller" not in str(exc):
                        raise  # (equal or smaller: copied before a kill, and kept)
            last = _s(entries[-1][0])
            copied += len(entries)
            await self._save(**{done_field: last, f"{done_field}:count": copied})
            self.on_progress(kind, copied)

    # --- verification -----------------------------------------------------------------------

    async def _figures(self, redis: Redis, *, old: bool) -> Figures:
        f = Figures()
        pattern = self.old.sku_pattern() if old else f"{self.keys.prefix}:{{p*}}:*"
        async for batch in scan_batches(redis, pattern):
            stock, holds = [], []
            for key in batch:
                if old:
                    split = self.old.split_sku_key(key)
                    if split is None:
                        continue
                    sku, rest = split
                    kind = rest if rest in ("stock", "holds") else ""
                else:
                    kind = self.keys.kind(key)
                    sku = self.keys.sku_of_stock_key(key) if kind == "stock" else ""
                if kind == "stock":
                    stock.append((key, sku))
                elif kind == "holds":
                    holds.append(key)
            pipe = redis.pipeline(transaction=False)
            for key, _sku in stock:
                pipe.hgetall(key)
            for key in holds:
                pipe.hlen(key)
            replies = await pipe.execute() if stock or holds else []
            for (key, sku), fields in zip(stock, replies[: len(stock)]):
                f.stock_keys += 1
                f.locations += len(fields)
                f.buckets_checksum += sum(bucket_checksum(sku, _s(loc), _s(v)) for loc, v in fields.items())
            f.hold_fields += sum(replies[len(stock) :])
        header_pattern = self.old.reservation_pattern() if old else f"{self.keys.prefix}:{{p*}}:resv:*"
        async for batch in scan_batches(redis, header_pattern):
            f.headers += sum(1 for k in batch if old or self.keys.kind(k) == "resv_header")
        pipe = redis.pipeline(transaction=False)
        names = list(self.old.global_zsets)
        for key in names:
            if old:
                pipe.zcard(key)
            else:
                for p in self.keys.range():
                    pipe.zcard(self._new_index(key, p))
        sizes = await pipe.execute()
        step = 1 if old else self.keys.partitions
        for i, key in enumerate(names):
            f.index_members[key[len(self.keys.prefix) + 1 :]] = sum(sizes[i * step : (i + 1) * step])
        pipe = redis.pipeline(transaction=False)
        if old:
            for stream in self.old.streams:
                pipe.xlen(stream)
            f.journal_entries, f.oversells = await pipe.execute()
        else:
            for key in (*self.keys.all_journals(), *self.keys.all_oversells()):
                pipe.xlen(key)
            sizes = await pipe.execute()
            f.journal_entries, f.oversells = sum(sizes[: self.keys.partitions]), sum(sizes[self.keys.partitions :])
        return f

    async def verify(self) -> dict:
        """Old and new figures (after cleanup the old ones are those recorded before it)."""
        state = await self.state()
        new = (await self._figures(self.target, old=False)).as_dict()
        if state.get("phase") in ("cleanup", "done") and "verified" in state:
            old = json.loads(state["verified"])
        else:
            old = (await self._figures(self.source, old=True)).as_dict()
            if old == new:
                await self._save(verified=json.dumps(old))
        return {"old": old, "new": new}

    async def _cleanup(self) -> None:
        cursor = 0
        while True:
            cursor, found = await self.source.scan(cursor, match=f"{self.keys.prefix}:*", count=self.batch)
            doomed = [k for k in (_s(r) for r in found)
                      if self.new_name(k) is not None or k in self.old.global_zsets or k in self.old.streams]
            if doomed:
                await self.source.unlink(*doomed)
            self.on_progress("cleanup", len(doomed))
            if not cursor:
                return
