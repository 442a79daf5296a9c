"""Machinery every sync flow shares: outbox, idempotency keys, leases, work queues with
coalescing, retries with backoff and jitter, dead letters, correlation ids.

The Shopify inventory push (`availability.flows.inventory.publisher`) is the first flow built on it;
the sibling flows of the retail platform (order-to-ERP, fulfilment back to Shopify,
returns and refunds, finance posting, customer identity) plug into the same pieces
(docs/shopify-push.md, "Sibling flows"):

- `WorkQueue`: "something about X changed" marks in a Redis zset scored by first-dirty
  time, an urgent zset that skips the coalescing window, and per-group `Leases` taken in
  the same Lua call that claims the marks, so several worker processes never work on one
  group (a SKU, an order) at once and a change after the claim is simply marked again.
- `Outbox`: a message (idempotency key + the exact request) is written to Redis *before*
  it is sent and removed once the peer's answer is handled. A worker that crashes
  mid-call leaves it behind; after its lease lapses another worker resends it with the
  same key and payload, so the peer applies it at most once.
- `Backoff`: exponential backoff with jitter, honouring a peer's retry-after hint.
- `DeadLetterQueue`: what cannot succeed by retrying (the peer rejected it as invalid)
  goes to a Redis list with its reason, for `... dlq list|replay`.
- correlation ids: one per unit of work, carried in logs, outbox messages and dead letters.

A queue's keys (marks, urgent marks, leases; an outbox and its leases) are named in one
script or MULTI, so on Redis Cluster they must share a hash tag: the Shopify push names them
under one `KeyLayout.queue_head(name)` (availability/ledger/keys.py; its SKU keys live in
the ledger's partitions), the ERP flows under `FlowKeys`' `{prefix}:{FLOW}`.

Nothing here knows Shopify; flow-specific decisions (what is transient, what is
permanent, what a replay does) are made by the flow.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import msgspec
from redis.asyncio import Redis

# re-exported: many calls of one script in one pipeline, cluster-safe (the ledger's hand-over uses it too)
from availability.ledger.scriptcalls import run_script_calls  # noqa: F401
# re-exported: the correlation id lives in a neutral module (HTTP requests and consumers set it too)
from availability.correlation import current_correlation_id, new_correlation_id  # noqa: F401

T = TypeVar("T")


def now_ms() -> int:
    return int(time.time() * 1000)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- correlation ids ------------------------------------------------------------------------

def new_idempotency_key() -> str:
    """A fresh key for a request to a peer (UUID4: fits Shopify's key alphabet and length)."""
    return str(uuid.uuid4())


# --- Lua scripts ----------------------------------------------------------------------------


def _script_source(package: str, name: str) -> str:
    return resources.files(package).joinpath("scripts", f"{name}.lua").read_text()


class Scripts:
    """The machinery's Lua scripts (`availability/flows/scripts/`), registered once per Redis
    client (redis-py reloads a script that the server lost, e.g. after a restart). A flow
    with scripts of its own subclasses it and names them in `OWN` (package, names)."""

    NAMES = ("claim", "leases", "acquire", "outbox_claim")
    OWN: tuple[str, tuple[str, ...]] = ("", ())

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        for name in self.NAMES:
            setattr(self, name, redis.register_script(_script_source("availability.flows", name)))
        package, names = self.OWN
        for name in names:
            setattr(self, name, redis.register_script(_script_source(package, name)))


# --- retries --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with "equal jitter": attempt n waits between half and all of
    min(cap, base x factor^(n-1)), so retries of many workers spread out but none retries
    immediately. A peer's retry-after hint is a floor."""

    base: float = 0.25
    factor: float = 2.0
    cap: float = 10.0
    #: attempts (the first included) before a transient failure is given up
    max_attempts: int = 8

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap, self.base * self.factor ** max(0, attempt - 1))
        draw = (rng or random).uniform(ceiling / 2, ceiling)
        return max(draw, retry_after or 0.0)


class GiveUp(Exception):
    """Retries exhausted; `last` is the last transient error."""

    def __init__(self, attempts: int, last: BaseException) -> None:
        super().__init__(f"gave up after {attempts} attempt(s): {last}")
        self.attempts = attempts
        self.last = last


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff,
    transient: tuple[type[BaseException], ...],
    retry_after: Callable[[BaseException], float | None] = lambda exc: getattr(exc, "retry_after", None),
    on_retry: Callable[[int, BaseException, float], Awaitable[None] | None] | None = None,
    sleep: Callable[[float], Awaitable[Any]] | None = None,
) -> T:
    """Run `call` until it returns, retrying `transient` errors with backoff. Other errors
    propagate at once; `GiveUp` after `backoff.max_attempts`."""
    import asyncio

    do_sleep = sleep or asyncio.sleep
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except transient as exc:
            if attempt >= backoff.max_attempts:
                raise GiveUp(attempt, exc) from exc
            wait = backoff.delay(attempt, retry_after(exc))
            if on_retry is not None:
                result = on_retry(attempt, exc, wait)
                if result is not None:
                    await result
            await do_sleep(wait)


# --- leases and the work queue ----------------------------------------------------------------


class Leases:
    """Per-group leases in one Redis hash (`group -> "owner|lease_until_ms"`).

    A lease is what "in flight" means: while a worker holds a group nobody else claims
    marks of that group. It lapses by itself if the holder dies (no renewal), so a crash
    delays a group by one lease at most.
    """

    def __init__(self, redis: Redis, key: str, scripts: Scripts | None = None) -> None:
        self.redis = redis
        self.key = key
        self.scripts = scripts or Scripts(redis)

    async def acquire(self, groups: Iterable[str], owner: str, lease_ms: int) -> bool:
        groups = sorted(set(groups))
        if not groups:
            return True
        return bool(await self.scripts.acquire(keys=[self.key], args=[owner, now_ms(), lease_ms, *groups]))

    async def renew(self, groups: Iterable[str], owner: str, lease_ms: int) -> int:
        groups = sorted(set(groups))
        if not groups:
            return 0
        return int(await self.scripts.leases(keys=[self.key], args=[owner, "renew", now_ms() + lease_ms, *groups]))

    async def release(self, groups: Iterable[str], owner: str) -> int:
        groups = sorted(set(groups))
        if not groups:
            return 0
        return int(await self.scripts.leases(keys=[self.key], args=[owner, "release", 0, *groups]))

    async def holders(self, groups: Sequence[str]) -> dict[str, str]:
        """group -> owner, for groups leased now (expired leases left out)."""
        if not groups:
            return {}
        values = await self.redis.hmget(self.key, list(groups))
        out: dict[str, str] = {}
        stamp = now_ms()
        for group, raw in zip(groups, values):
            if raw is None:
                continue
            holder, _, until = _s(raw).rpartition("|")
            if int(until) > stamp:
                out[group] = holder
        return out


class Claimed(msgspec.Struct, frozen=True):
    """One claimed mark: `group|rest`, when it first became dirty, and whether it was urgent."""

    member: str
    dirty_since_ms: int
    urgent: bool

    @property
    def group(self) -> str:
        return self.member.split("|", 1)[0]

    @property
    def rest(self) -> str:
        return self.member.split("|", 1)[1]


class WorkQueue:
    """Coalescing work marks: a zset of "GROUP|REST" members scored by first-dirty time
    (written with ZADD NX by producers, so the first time is kept while the mark waits),
    an urgent zset that bypasses the window, and the `Leases` of the groups."""

    def __init__(self, redis: Redis, *, marks_key: str, urgent_key: str, leases: Leases, scripts: Scripts) -> None:
        self.redis = redis
        self.marks_key = marks_key
        self.urgent_key = urgent_key
        self.leases = leases
        self.scripts = scripts

    async def claim(
        self,
        owner: str,
        *,
        window_ms: int | None,
        limit: int,
        lease_ms: int,
        at_ms: int | None = None,
        scan: int | None = None,
    ) -> list[Claimed]:
        """Atomically take urgent marks and marks older than the window (none when
        `window_ms` is None: urgent only) whose group no other owner leases, and lease their
        groups to `owner`."""
        stamp = at_ms if at_ms is not None else now_ms()
        cutoff = "-inf" if window_ms is None else stamp - window_ms
        reply = await self.scripts.claim(
            keys=[self.marks_key, self.urgent_key, self.leases.key],
            args=[stamp, cutoff, limit, owner, lease_ms, scan or max(limit * 4, 100)],
        )
        return [
            Claimed(_s(reply[i]), int(float(_s(reply[i + 1]))), _s(reply[i + 2]) == "1") for i in range(0, len(reply), 3)
        ]

    async def mark(self, members: Iterable[str], *, at_ms: int | None = None) -> int:
        """Mark again (ZADD NX: an earlier first-dirty time already there is kept)."""
        stamp = at_ms if at_ms is not None else now_ms()
        mapping = {m: stamp for m in members}
        return await self.redis.zadd(self.marks_key, mapping, nx=True) if mapping else 0

    async def mark_many(self, scored: dict[str, int]) -> int:
        """Mark with each member's own first-dirty time (re-marking work not done in a round)."""
        return await self.redis.zadd(self.marks_key, scored, nx=True) if scored else 0

    async def flag_urgent(self, members: Iterable[str], *, at_ms: int | None = None) -> int:
        stamp = at_ms if at_ms is not None else now_ms()
        mapping = {m: stamp for m in members}
        return await self.redis.zadd(self.urgent_key, mapping, nx=True) if mapping else 0

    async def pending(self) -> tuple[int, int]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.marks_key)
        pipe.zcard(self.urgent_key)
        marks, urgent = await pipe.execute()
        return int(marks), int(urgent)

    async def oldest_ms(self) -> int | None:
        first = await self.redis.zrange(self.marks_key, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def not_due(self, *, window_ms: int, limit: int, at_ms: int | None = None) -> list[tuple[str, int]]:
        """Marks still inside the window (candidates for the urgent path), oldest first."""
        stamp = at_ms if at_ms is not None else now_ms()
        rows = await self.redis.zrangebyscore(
            self.marks_key, f"({stamp - window_ms}", "+inf", start=0, num=limit, withscores=True
        )
        return [(_s(m), int(score)) for m, score in rows]


# --- outbox ---------------------------------------------------------------------------------


class OutboxMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One request to a peer, persisted before it is sent.

    `payload` holds what is needed to send it again byte for byte (for Shopify: the exact
    GraphQL variables and the entries they were built from); `idempotency_key` is reused
    for every resend and replaced only when the peer says the key itself is spent.
    """

    id: str
    flow: str
    idempotency_key: str
    payload: dict[str, Any]
    correlation_id: str
    created_ms: int
    #: when the first attempt under the current key was sent
    sent_ms: int = 0
    attempts: int = 0
    owner: str = ""
    last_error: str | None = None


_outbox_decoder = msgspec.json.Decoder(OutboxMessage)


class Outbox:
    """`{name}:outbox` (hash id -> message JSON) and `{name}:outbox:lease` (zset id ->
    lease_until ms). A live worker keeps its messages' leases fresh; `take_over` hands
    messages whose lease lapsed to another worker."""

    def __init__(self, redis: Redis, name: str, scripts: Scripts | None = None) -> None:
        self.redis = redis
        self.key = f"{name}:outbox"
        self.lease_key = f"{name}:outbox:lease"
        self.scripts = scripts or Scripts(redis)

    async def put(self, message: OutboxMessage, lease_ms: int) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.key, message.id, msgspec.json.encode(message))
        pipe.zadd(self.lease_key, {message.id: now_ms() + lease_ms})
        await pipe.execute()

    async def save(self, message: OutboxMessage) -> None:
        """Persist a change (new key, attempt count) of a message this worker holds."""
        await self.redis.hset(self.key, message.id, msgspec.json.encode(message))

    async def renew(self, message_id: str, lease_ms: int) -> None:
        await self.redis.zadd(self.lease_key, {message_id: now_ms() + lease_ms}, xx=True)

    async def done(self, message_id: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self.key, message_id)
        pipe.zrem(self.lease_key, message_id)
        await pipe.execute()

    async def take_over(self, lease_ms: int, limit: int = 50) -> list[OutboxMessage]:
        """Messages whose owner stopped renewing, now leased to the caller."""
        stamp = now_ms()
        reply = await self.scripts.outbox_claim(keys=[self.key, self.lease_key], args=[stamp, stamp + lease_ms, limit])
        out = []
        for i in range(0, len(reply), 2):
            try:
                out.append(_outbox_decoder.decode(reply[i + 1]))
            except msgspec.DecodeError:
                await self.done(_s(reply[i]))
        return out

    async def pending(self) -> int:
        return int(await self.redis.hlen(self.key))

    async def messages(self) -> list[OutboxMessage]:
        raw = await self.redis.hvals(self.key)
        return [_outbox_decoder.decode(r) for r in raw]


# --- dead letters ---------------------------------------------------------------------------


class DeadLetter(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    flow: str
    #: a short machine-readable reason (e.g. Shopify's user error code)
    reason: str
    detail: str = ""
    payload: dict[str, Any] = {}
    correlation_id: str = ""
    at_ms: int = 0
    attempts: int = 0


_dead_letter_decoder = msgspec.json.Decoder(DeadLetter)


class DeadLetterQueue:
    """A Redis list of `DeadLetter` JSON documents, oldest first."""

    def __init__(self, redis: Redis, key: str) -> None:
        self.redis = redis
        self.key = key

    async def put(self, letter: DeadLetter) -> None:
        await self.redis.rpush(self.key, msgspec.json.encode(letter))

    async def size(self) -> int:
        return int(await self.redis.llen(self.key))

    async def list(self, start: int = 0, count: int = 100) -> list[DeadLetter]:
        raw = await self.redis.lrange(self.key, start, start + count - 1 if count > 0 else -1)
        return [_dead_letter_decoder.decode(r) for r in raw]

    async def take(self, ids: Iterable[str] | None = None) -> list[DeadLetter]:
        """Remove and return the letters with these ids (all letters when None)."""
        wanted = None if ids is None else set(ids)
        raw = await self.redis.lrange(self.key, 0, -1)
        out = []
        for item in raw:
            letter = _dead_letter_decoder.decode(item)
            if wanted is None or letter.id in wanted:
                if await self.redis.lrem(self.key, 1, item):
                    out.append(letter)
        return out

    async def replay(
        self, handler: Callable[[DeadLetter], Awaitable[None]], ids: Iterable[str] | None = None
    ) -> list[DeadLetter]:
        """Hand letters back to their flow; a letter whose handler fails is put back."""
        replayed = []
        for letter in await self.take(ids):
            try:
                await handler(letter)
            except Exception:
                await self.put(letter)
                raise
            replayed.append(letter)
        return replayed


async def run_rounds(one_round: Callable[[], Awaitable[int]], stop: Any, *, idle_sleep_s: float = 0.2,
                     logger: Any = None, what: str = "worker") -> None:
    """Call `one_round` until `stop` (an asyncio.Event) is set, sleeping while a round
    found nothing to do; a failed round (a store or Redis hiccup) is logged, not fatal."""
    import asyncio  # noqa: PLC0415
    import logging  # noqa: PLC0415

    logger = logger or logging.getLogger(__name__)
    while not stop.is_set():
        try:
            worked = await one_round()
        except Exception:
            logger.exception("%s round failed", what)
            worked = 0
        if not worked:
            try:
                await asyncio.wait_for(stop.wait(), idle_sleep_s)
            except TimeoutError:
                pass


# --- one flow's Redis side --------------------------------------------------------------------


class FlowKeys:
    """An ERP flow's Redis keys, all under `{prefix}:{FLOW}` with the flow's name as the hash
    tag: `claim.lua` names the marks, urgent marks and leases, `outbox_claim.lua` and
    `Outbox.put`/`done` the outbox and its leases, so on Redis Cluster they must be in one
    slot. One slot per flow (not one per document) is enough: a flow's throughput is bound
    by its ERP (the flash sale posts 4.4 sales a second into Tryton, docs/performance.md;
    a claim or outbox write is a few commands per document), far below what one node
    serves. The ledger's `{pN}` tags stay out of it: a flow's queue belongs to no SKU, and a
    name that does not depend on AVAILABILITY_LEDGER_PARTITIONS is one every process (API
    node, CLI, console) derives from the prefix alone."""

    #: every key under the base, by its name after it (what moves from the untagged names)
    SUFFIXES = ("marks", "urgent", "inflight", "retry", "outbox", "outbox:lease")

    def __init__(self, prefix: str, flow: str) -> None:
        self.prefix = prefix
        self.flow = flow
        base = f"{prefix}:{{{flow}}}"
        self.base = base
        self.marks = f"{base}:marks"
        self.urgent = f"{base}:urgent"
        self.leases = f"{base}:inflight"
        #: document -> when its retry is due (ms)
        self.retry = f"{base}:retry"

    def legacy_names(self) -> dict[str, str]:
        """Old name -> new name: the keys as they were before the hash tag (`{prefix}:{FLOW}:marks`,
        ...), moved at start-up by flows/keymoves.py `move_legacy_flow_keys`."""
        return {f"{self.prefix}:{self.flow}:{suffix}": f"{self.base}:{suffix}" for suffix in self.SUFFIXES}


class FlowQueue:
    """A document flow's Redis side under `{prefix}:{FLOW}` (`FlowKeys`): work marks (one group per
    document), leases, outbox, retry schedule. The order, fulfilment, returns and finance
    flows each have one; `member` is the work-mark suffix of a document (`ref|order`)."""

    def __init__(self, redis: Redis, prefix: str, flow: str, *, member: str = "order") -> None:
        self.redis = redis
        self.flow = flow
        self.member = member
        self.keys = FlowKeys(prefix, flow)
        scripts = Scripts(redis)
        self.leases = Leases(redis, self.keys.leases, scripts)
        self.work = WorkQueue(redis, marks_key=self.keys.marks, urgent_key=self.keys.urgent, leases=self.leases,
                              scripts=scripts)
        self.outbox = Outbox(redis, self.keys.base, scripts)

    async def wake(self, *references: str) -> None:
        if references:
            await self.work.flag_urgent([f"{r}|{self.member}" for r in references])

    async def schedule_retry(self, reference: str, delay_s: float) -> None:
        await self.redis.zadd(self.keys.retry, {reference: now_ms() + int(delay_s * 1000)})

    async def promote_due_retries(self, limit: int = 500) -> int:
        due = await self.redis.zrangebyscore(self.keys.retry, "-inf", now_ms(), start=0, num=limit)
        refs = [_s(d) for d in due]
        if refs:
            await self.wake(*refs)
            await self.redis.zrem(self.keys.retry, *refs)
        return len(refs)

    async def idle(self) -> bool:
        """Nothing marked, in the outbox or due for a retry (drains in tests and `--once`)."""
        marks, urgent = await self.work.pending()
        return not (marks or urgent or await self.outbox.pending() or await self.redis.zcard(self.keys.retry))
