"""Shopify's own sales in flight: units Shopify sold that the ledger has not seen yet.

When a shopper checks out, Shopify moves the units from `available` to `committed` at
once and tells us later, in no guaranteed order: `inventory_levels/update` (the drop) and
`orders/create` (the order, which ingestion turns into a ledger reservation). Until the
order is in the ledger, ATS still counts the sold units, so pushing ATS would offer them
again. So every drop of `available` that our own pushes do not explain is **held** against
that Shopify level, and what may be pushed there is `ATS − held`, until:

- the order's ledger event is applied (orders/create lines are noted by the webhook
  handler; the ledger's idempotency record says when their events are in): the order's
  units settle the holds of its SKU, oldest first. An order applied before its drop was
  seen leaves a **credit** that explains the drop when it is seen (then nothing is held);
- or the window (`shopify_sales_window_seconds`) passes: a read of the level's `committed`
  settles it. Shopify counts every unfulfilled order's units in `committed`, so a hold
  larger than `committed` cannot all be sales: the excess is an external decrease (an
  admin edit, another app), reported and, per `shopify_external_edits`, reverted (the hold
  is dropped, ATS pushed again) or adopted (booked in the ledger as an `adjustment` lost).
  A hold that `committed` covers is kept (the order is late, Shopify retries for 4 hours)
  up to `shopify_sales_max_hold_seconds`, then treated as an external decrease too.

A rise of `available` is never a sale: it is an external increase (or a cancellation that
restocked), reported and, per the same setting, reverted (ATS pushed) or adopted.

The decisions are pure functions (`observe`, `settle`, `judge`) over `SalesState`, the
table in docs/shopify-push.md; `SalesInFlight` keeps the state in Redis and applies them.

    {prefix}:{pN}:SKU:shopify:sales  hash (the SKU's partition, beside its ledger keys)
        h|ITEM_GID|LOCATION_GID  JSON [[units, since_ms], ...]   holds, oldest first
        o|EVENT_ID               "units|noted_ms"                Shopify order lines, not yet in the ledger
        c|EVENT_ID               "units|applied_ms"              applied order units no drop has used yet
    {prefix}:{pN}:shopify:held       zset SKU -> oldest hold ms, per partition (the sweep's index;
                                          written in the SKU's transaction, so in its slot)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgspec
from redis.asyncio import Redis
from redis.exceptions import WatchError

from availability.flows.inventory import metrics as m
from availability.flows.machinery import _s, now_ms
from availability.flows.inventory.mappings import LevelKey
from availability.flows.inventory.state import Known, parse_known, record_known

log = logging.getLogger(__name__)

Policy = Literal["revert", "adopt"]
POLICIES: tuple[str, ...] = ("revert", "adopt")


# --- the state of one SKU ------------------------------------------------------------------------


@dataclass
class SalesState:
    """Holds, expected order lines and credits of one SKU (one shop)."""

    #: level field ("ITEM|LOCATION") -> [(units, since_ms)], oldest first
    holds: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    #: Shopify order line event id -> (units, noted_ms): seen by the webhook, not yet applied
    orders: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: applied order line event id -> (units, applied_ms): not matched to a drop yet
    credits: dict[str, tuple[int, int]] = field(default_factory=dict)

    def held(self, level_field: str) -> int:
        return sum(u for u, _ in self.holds.get(level_field, ()))

    def oldest_hold_ms(self) -> int | None:
        times = [since for holds in self.holds.values() for _, since in holds]
        return min(times) if times else None

    def copy(self) -> SalesState:
        return SalesState(
            {k: list(v) for k, v in self.holds.items()}, dict(self.orders), dict(self.credits)
        )


# --- decisions (pure) ----------------------------------------------------------------------------


ObservationKind = Literal["no_baseline", "older", "echo", "sale_in_flight", "sale_in_ledger", "increase"]


class Observation(msgspec.Struct, frozen=True):
    """What one observed `available` means, and what it changed."""

    kind: ObservationKind
    #: units newly held (sale_in_flight)
    held: int = 0
    #: units of the drop already explained by orders the ledger has (credits used)
    explained: int = 0
    #: units Shopify rose by (increase)
    increase: int = 0


def observe(state: SalesState, level_field: str, known: Known | None, value: int, as_of_ms: int) -> Observation:
    """Classify an observation of `value` at a level whose last known value is `known`;
    mutates `state` (holds and credits). Row by row, the decision table:

    - nothing known: no baseline, a sale cannot be told from an edit (nothing held);
    - older than what we know (a late webhook, a read that raced a push): ignored;
    - equal to what we know: our own write coming back, or nothing moved;
    - lower: `known − value` units left `available` without our doing; credits (orders the
      ledger already has, whose drop had not been seen) explain what they can, the rest is
      held as sales in flight;
    - higher: not a sale (sales only lower `available`): an external increase.
    """
    if known is None:
        return Observation("no_baseline")
    if as_of_ms < known.as_of_ms:
        return Observation("older")
    if value == known.value:
        return Observation("echo")
    if value > known.value:
        return Observation("increase", increase=value - known.value)
    drop = known.value - value
    explained = 0
    for event_id, (units, applied) in sorted(state.credits.items(), key=lambda kv: kv[1][1]):
        if explained == drop:
            break
        use = min(units, drop - explained)
        explained += use
        if use == units:
            del state.credits[event_id]
        else:
            state.credits[event_id] = (units - use, applied)
    held = drop - explained
    if held:
        state.holds.setdefault(level_field, []).append((held, as_of_ms))
        return Observation("sale_in_flight", held=held, explained=explained)
    return Observation("sale_in_ledger", explained=explained)


class Settled(msgspec.Struct, frozen=True):
    #: hold units released because their orders are in the ledger now
    released: int = 0
    #: applied order units left as credits (their drop not seen yet)
    credited: int = 0
    #: credits and never-applied order notes dropped as too old
    expired: int = 0


def settle(state: SalesState, applied: Iterable[str], now: int, *, window_ms: int, max_hold_ms: int) -> Settled:
    """Orders whose ledger events are `applied` settle the SKU's holds, oldest first (any
    level: Shopify assigns the location, ingestion books the order where it books online
    orders); what they do not use becomes a credit. Credits older than the window (their
    drop was absorbed unseen, e.g. by a read with no baseline) and order notes older than
    the longest hold (their events never reached the ledger) are dropped. Mutates `state`."""
    released = credited = expired = 0
    applied = set(applied)
    for event_id in sorted(e for e in state.orders if e in applied):
        units, _noted = state.orders.pop(event_id)
        left = units
        queue = sorted(
            ((since, lf, i) for lf, holds in state.holds.items() for i, (_u, since) in enumerate(holds)),
        )
        for _since, lf, i in queue:
            if not left:
                break
            u, since = state.holds[lf][i]
            use = min(u, left)
            state.holds[lf][i] = (u - use, since)
            left -= use
            released += use
        for lf in list(state.holds):
            state.holds[lf] = [(u, s) for u, s in state.holds[lf] if u > 0]
            if not state.holds[lf]:
                del state.holds[lf]
        if left:
            state.credits[event_id] = (left, now)
            credited += left
    for event_id, (units, applied_ms) in list(state.credits.items()):
        if now - applied_ms > window_ms:
            del state.credits[event_id]
            expired += units
    for event_id, (units, noted) in list(state.orders.items()):
        if now - noted > max_hold_ms:
            del state.orders[event_id]
            expired += units
    return Settled(released, credited, expired)


JudgementKind = Literal["wait", "sales_confirmed", "external_decrease"]


class Judgement(msgspec.Struct, frozen=True):
    kind: JudgementKind
    #: units that stay held (sales Shopify's committed accounts for)
    keep: int = 0
    #: units found not to be sales: released (revert) or booked (adopt)
    external: int = 0


def judge(held: int, oldest_ms: int, committed: int | None, now: int, *, window_ms: int, max_hold_ms: int) -> Judgement:
    """A level's holds once the window has passed, given Shopify's `committed` there now.

    - inside the window: wait (the order webhook usually comes within seconds);
    - past the longest hold (Shopify stopped retrying its webhooks): every unit is external;
    - `committed` unknown (the level could not be read): wait for the next sweep;
    - `committed` ≥ held: every held unit may be an unfulfilled order not yet delivered to
      us; keep holding (never re-offer a unit that may be sold);
    - `committed` < held: at most `committed` of them are sales; the rest is external.
    """
    age = now - oldest_ms
    if age < window_ms:
        return Judgement("wait", keep=held)
    if age >= max_hold_ms:
        return Judgement("external_decrease", keep=0, external=held)
    if committed is None:
        return Judgement("wait", keep=held)
    if committed >= held:
        return Judgement("sales_confirmed", keep=held)
    return Judgement("external_decrease", keep=max(0, committed), external=held - max(0, committed))


def release_units(state: SalesState, level_field: str, units: int) -> int:
    """Drop `units` of a level's holds, newest first (the oldest are the likeliest sales)."""
    holds = state.holds.get(level_field, [])
    left = units
    while holds and left:
        u, since = holds[-1]
        use = min(u, left)
        left -= use
        if use == u:
            holds.pop()
        else:
            holds[-1] = (u - use, since)
    if not holds:
        state.holds.pop(level_field, None)
    return units - left


def pushable(ats: int, held: int) -> int:
    """What may be pushed to a level: never above ATS minus Shopify's sales not in the ledger."""
    return max(0, ats - held)


# --- Redis ---------------------------------------------------------------------------------------


def _encode(state: SalesState) -> dict[str, str]:
    out: dict[str, str] = {}
    for lf, holds in state.holds.items():
        if holds:
            out[f"h|{lf}"] = msgspec.json.encode([[u, s] for u, s in holds]).decode()
    for e, (u, ms) in state.orders.items():
        out[f"o|{e}"] = f"{u}|{ms}"
    for e, (u, ms) in state.credits.items():
        out[f"c|{e}"] = f"{u}|{ms}"
    return out


def _decode(raw: Mapping[bytes | str, bytes | str]) -> SalesState:
    state = SalesState()
    for k, v in raw.items():
        name, value = _s(k), _s(v)
        kind, _, rest = name.partition("|")
        if kind == "h":
            state.holds[rest] = [(int(u), int(s)) for u, s in msgspec.json.decode(value)]
        elif kind in ("o", "c"):
            u, _, ms = value.partition("|")
            (state.orders if kind == "o" else state.credits)[rest] = (int(u), int(ms))
    return state


@dataclass(frozen=True)
class SalesConfig:
    enabled: bool = True
    window_s: float = 120.0
    #: Shopify retries a webhook 8 times over 4 hours; a little more than that
    max_hold_s: float = 4.5 * 3600
    policy: Policy = "revert"

    @property
    def window_ms(self) -> int:
        return int(self.window_s * 1000)

    @property
    def max_hold_ms(self) -> int:
        return int(self.max_hold_s * 1000)

    @classmethod
    def from_settings(cls, settings: object) -> SalesConfig:
        def get(name: str, default: object) -> object:
            value = getattr(settings, name, None)
            return default if value is None else value

        policy = str(get("shopify_external_edits", "revert"))
        if policy not in POLICIES:
            raise ValueError(f"shopify_external_edits must be one of {', '.join(POLICIES)}, got {policy!r}")
        return cls(
            enabled=bool(get("shopify_sales_in_flight", True)),
            window_s=float(get("shopify_sales_window_seconds", 120.0)),
            max_hold_s=float(get("shopify_sales_max_hold_seconds", 4.5 * 3600)),
            policy=policy,  # type: ignore[arg-type]
        )


#: a SKU's sales hash outlives its last write by this much: nothing in it matters after
#: the longest hold (an order line of a SKU never pushed would otherwise stay forever)
STATE_TTL_S = int(4.5 * 3600 + 3600)


async def note_orders(redis: Redis, sales_key, lines: Iterable[tuple[str, str, int]], ttl_s: int = STATE_TTL_S) -> int:
    """Note Shopify order lines (sku, ledger event id, units) in the SKUs' sales hashes
    (`sales_key(sku)`), as the webhook handler sees orders/create. Returns lines noted."""
    stamp = now_ms()
    pipe = redis.pipeline(transaction=False)
    n = 0
    for sku, event_id, units in lines:
        if units > 0:
            pipe.hsetnx(sales_key(sku), f"o|{event_id}", f"{int(units)}|{stamp}")
            pipe.expire(sales_key(sku), ttl_s)
            n += 1
    if n:
        await pipe.execute()
    return n


class SalesInFlight:
    """`SalesState` per SKU in Redis, read and written under WATCH (the publisher rounds,
    the webhook reader and the sweep may all touch one SKU)."""

    def __init__(
        self,
        redis: Redis,
        *,
        known_key,
        sales_key,
        applied,
        holds_index,
        holds_indexes: Sequence[str],
        config: SalesConfig,
        record_known=None,
    ) -> None:
        self.redis = redis
        #: the newest-wins Lua script of the known values (flows/inventory/scripts/record_known.lua)
        self.record_known = record_known
        self.known_key = known_key  # sku -> the SKU's known-values hash
        self.sales_key = sales_key  # sku -> the SKU's sales hash
        self.applied = applied  # (sku, event ids) -> those the ledger has applied (Ledger.applied)
        #: sku -> the index of SKUs with holds that the SKU's transaction writes (its partition's)
        self.holds_index = holds_index
        #: every partition's index (the sweep reads them all)
        self.holds_indexes = list(holds_indexes)
        self.config = config

    async def _transact(self, sku: str, change, *, watch_known: bool = False):
        """Run `change(state, pipe_reader_results)` on the SKU's state under WATCH; retry on races."""
        keys = [self.sales_key(sku)] + ([self.known_key(sku)] if watch_known else [])
        for _ in range(50):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(*keys)
                    state = _decode(await pipe.hgetall(self.sales_key(sku)))
                    before = _encode(state)
                    applied: set[str] = set()
                    if state.orders:
                        ids = sorted(state.orders)
                        applied = await self.applied(sku, ids)
                    known_raw = await pipe.hgetall(self.known_key(sku)) if watch_known else {}
                    settled = settle(
                        state, applied, now_ms(), window_ms=self.config.window_ms, max_hold_ms=self.config.max_hold_ms
                    )
                    result, extra = await change(state, {_s(k): parse_known(v) for k, v in known_raw.items()})
                    after = _encode(state)
                    pipe.multi()
                    if after != before:
                        gone = [k for k in before if k not in after]
                        if gone:
                            pipe.hdel(self.sales_key(sku), *gone)
                        if after:
                            pipe.hset(self.sales_key(sku), mapping=after)
                            pipe.expire(self.sales_key(sku), max(STATE_TTL_S, int(self.config.max_hold_s) + 3600))
                        oldest = state.oldest_hold_ms()
                        if oldest is None:
                            pipe.zrem(self.holds_index(sku), sku)
                        else:
                            pipe.zadd(self.holds_index(sku), {sku: oldest})
                    for cmd in extra:
                        cmd(pipe)
                    await pipe.execute()
                    if settled.released:
                        m.SALES_SETTLED.labels("order").inc(settled.released)
                        log.debug("%s: %d held unit(s) settled by orders in the ledger", sku, settled.released)
                    return result, state
                except WatchError:
                    continue
        raise RuntimeError(f"Shopify sales state of {sku} kept changing under us")

    async def held(self, levels: Sequence[LevelKey]) -> dict[LevelKey, int]:
        """Units held per level, after settling against the ledger. Call it BEFORE reading
        the stock the target is computed from: an order found applied here is then in that
        stock too, so its units are never uncounted in between."""
        out: dict[LevelKey, int] = {}
        if not self.config.enabled:
            return {k: 0 for k in levels}
        by_sku: dict[str, list[LevelKey]] = {}
        for key in levels:
            by_sku.setdefault(key.sku, []).append(key)
        raws = await self._sales_raw(list(by_sku))
        for sku, keys in by_sku.items():
            if not raws[sku]:
                out.update({k: 0 for k in keys})
                continue

            async def nothing(state, _known):
                return None, []

            _r, state = await self._transact(sku, nothing)
            out.update({k: state.held(k.field) for k in keys})
        return out

    async def observe(
        self, entries: Iterable[tuple[LevelKey, int, int, str]]
    ) -> dict[LevelKey, tuple[Known | None, Observation]]:
        """Record observations (level, value, as_of_ms, source) of what Shopify holds: the
        holds first, the known value in the same transaction (a reader that sees the new
        known value sees its hold). Returns each level's previous known value and decision."""
        by_sku: dict[str, list[tuple[LevelKey, int, int, str]]] = {}
        for entry in entries:
            by_sku.setdefault(entry[0].sku, []).append(entry)
        out: dict[LevelKey, tuple[Known | None, Observation]] = {}
        # Fast path (most SKUs, and every one of a large resync): no sales state and
        # nothing to hold. The known values go through the newest-wins script, so a
        # concurrent observation is never overwritten by an older one.
        raws = await self._sales_raw(list(by_sku))
        knowns = await self._known_raw(by_sku)
        fast: list[tuple[LevelKey, int, int, str]] = []
        slow: dict[str, list[tuple[LevelKey, int, int, str]]] = {}
        for sku, rows in by_sku.items():
            if raws[sku] or self.record_known is None:
                slow[sku] = rows
                continue
            scratch = SalesState()
            decided = {}
            for key, value, as_of, _source in rows:
                before = knowns.get(key)
                decided[key] = (before, observe(scratch, key.field, before, value, as_of) if self.config.enabled
                                else Observation("older" if before and as_of < before.as_of_ms else "no_baseline"))
            if scratch.holds or scratch.credits:
                slow[sku] = rows
                continue
            out.update(decided)
            fast.extend(r for r in rows if decided[r[0]][1].kind != "older")
        if fast:
            await self._record_fast(fast)
        for sku, rows in slow.items():

            async def change(state: SalesState, known: dict[str, Known | None], rows=rows):
                decided: dict[LevelKey, tuple[Known | None, Observation]] = {}
                writes: dict[str, str] = {}
                for key, value, as_of, source in rows:
                    before = known.get(key.field)
                    if self.config.enabled:
                        obs = observe(state, key.field, before, value, as_of)
                    else:
                        obs = Observation("older" if before and as_of < before.as_of_ms else "no_baseline")
                    decided[key] = (before, obs)
                    if obs.kind != "older":
                        writes[key.field] = f"{int(value)}|{int(as_of)}|{source}"
                        known[key.field] = Known(int(value), int(as_of), source)
                extra = [lambda p, w=writes: p.hset(self.known_key(sku), mapping=w)] if writes else []
                return decided, extra

            decided, _state = await self._transact(sku, change, watch_known=True)
            out.update(decided)
        return out

    async def _sales_raw(self, skus: Sequence[str], chunk: int = 1000) -> dict[str, bool]:
        """Which SKUs have any sales state (one pipelined EXISTS per SKU)."""
        out: dict[str, bool] = {}
        for i in range(0, len(skus), chunk):
            part = skus[i : i + chunk]
            pipe = self.redis.pipeline(transaction=False)
            for sku in part:
                pipe.exists(self.sales_key(sku))
            out.update({sku: bool(n) for sku, n in zip(part, await pipe.execute())})
        return out

    async def _known_raw(self, by_sku: Mapping[str, Sequence[tuple[LevelKey, int, int, str]]]) -> dict[LevelKey, Known | None]:
        keys = [row[0] for rows in by_sku.values() for row in rows]
        out: dict[LevelKey, Known | None] = {}
        for i in range(0, len(keys), 1000):
            part = keys[i : i + 1000]
            pipe = self.redis.pipeline(transaction=False)
            for key in part:
                pipe.hget(self.known_key(key.sku), key.field)
            out.update({k: parse_known(v) for k, v in zip(part, await pipe.execute())})
        return out

    async def _record_fast(self, rows: Sequence[tuple[LevelKey, int, int, str]]) -> None:
        await record_known(self.redis, self.record_known, self.known_key, rows)

    async def note_orders(self, lines: Iterable[tuple[str, str, int]]) -> int:
        """Shopify order lines (sku, ledger event id, units) from orders/create: they will
        settle holds once their events are applied. Returns lines noted."""
        return await note_orders(self.redis, self.sales_key, lines)

    async def due(self, limit: int = 500) -> list[str]:
        """SKUs with a hold older than the window, oldest first (every partition's index:
        one pipeline, each command to its own slot)."""
        cutoff = now_ms() - self.config.window_ms
        pipe = self.redis.pipeline(transaction=False)
        for index in self.holds_indexes:
            pipe.zrangebyscore(index, "-inf", cutoff, start=0, num=limit, withscores=True)
        rows = [(score, _s(sku)) for found in await pipe.execute() for sku, score in found]
        return [sku for _score, sku in sorted(rows)[:limit]]

    async def holding(self) -> int:
        """How many SKUs have units held (every partition's index)."""
        pipe = self.redis.pipeline(transaction=False)
        for index in self.holds_indexes:
            pipe.zcard(index)
        return sum(int(n) for n in await pipe.execute())

    async def resolve(
        self, sku: str, levels: Mapping[LevelKey, int | None]
    ) -> dict[LevelKey, Judgement]:
        """Judge the SKU's due holds given `committed` per level (None = not read); release
        what is external. Returns the judgement per level that had holds."""

        async def change(state: SalesState, _known):
            stamp = now_ms()
            out: dict[LevelKey, Judgement] = {}
            for key, committed in levels.items():
                holds = state.holds.get(key.field)
                if not holds:
                    continue
                verdict = judge(
                    state.held(key.field),
                    min(s for _, s in holds),
                    committed,
                    stamp,
                    window_ms=self.config.window_ms,
                    max_hold_ms=self.config.max_hold_ms,
                )
                if verdict.external:
                    release_units(state, key.field, verdict.external)
                out[key] = verdict
            return out, []

        result, _state = await self._transact(sku, change)
        return result
