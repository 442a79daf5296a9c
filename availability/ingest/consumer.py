"""The stream consumer: FastStream subscribers that feed batches to `IngestPipeline`.

One subscriber per partition, batch reads, manual acknowledgement (the pipeline
acknowledges after the batch is applied, so a crash leaves the batch pending). The
broker is `Settings.broker`:

- redis (default): Redis Streams, consumer group `consumer_group`, XREADGROUP batches of
  `batch_size`; the Reclaimer (reclaim.py) takes over entries a dead consumer left pending,
  because neither Redis nor FastStream redelivers them by itself. With
  `consumer_lease_seconds` > 0 the partitions are spread over the group's consumer
  processes through leases in Redis (leases.py) and follow them as they join, leave or
  die: a subscriber per partition held, started and stopped as the assignment changes.
- nats: JetStream pull consumers (durable `{group}-{p}`), batches of `batch_size`;
  JetStream redelivers what is not acked within its ack wait. The pull loop is ours, not
  FastStream's (see `_read_nats`); the broker only holds the connection.
- kafka: one topic keyed by SKU, consumer group `consumer_group`, batches of `batch_size`,
  offsets committed after the batch is applied.

Each broker's handler only turns its raw batch into `Entry`s and calls the same pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import TYPE_CHECKING, Annotated, Any

from faststream import AckPolicy, Context

from availability.correlation import current_correlation_id, new_correlation_id
from availability.ingest.leases import PartitionLeases, assignment
from availability.ingest.pipeline import Entry, IngestPipeline, is_transient
from availability.ingest.publisher import ensure_redis_groups
from availability.ingest.reclaim import Reclaimer
from availability.ingest.streams import StreamNames, entry_payload

if TYPE_CHECKING:
    from availability.bootstrap import Runtime

log = logging.getLogger(__name__)

Message = Annotated[Any, Context("message")]


def default_consumer_name() -> str:
    # Unique per process: a restarted consumer is a new one, and the old one's pending
    # entries are reclaimed from it after the idle timeout.
    return f"{socket.gethostname()}-{os.getpid()}"


async def _raw_redis_batch(msg: Any) -> Any:
    """FastStream parser that leaves the entries raw: the pipeline decodes them with msgspec,
    so FastStream's per-entry JSON round trip is skipped on the hot path."""
    from faststream.message import StreamMessage

    return StreamMessage(raw_message=msg, body=b"")


async def _no_decode(msg: Any) -> None:
    return None


class StreamConsumer:
    """Runs the consumer for `runtime.settings.broker` until `stop()`."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        consumer_name: str | None = None,
        partitions: list[int] | None = None,
    ) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.settings = settings
        self.names = StreamNames.from_settings(settings)
        self.consumer_name = consumer_name or settings.consumer_name or default_consumer_name()
        #: partitions come and go with leases (no fixed list given, leases on, Redis Streams)
        self.leased = partitions is None and settings.consumer_lease_seconds > 0 and settings.broker == "redis"
        #: the partitions read now: fixed, or (leased) those whose lease this consumer holds
        self.partitions = [] if self.leased else (partitions if partitions is not None else list(range(settings.partitions)))
        self.applier = None
        batched = getattr(settings, "apply_batched", True)
        if runtime.redis_url and settings.redis_cluster:
            if batched:
                # one apply_batch.lua call per partition group, each routed to its slot (the
                # fast applier speaks to one server)
                from availability.ledger.ledger import PartitionedApply

                self.applier = PartitionedApply(runtime.ledger)
        elif runtime.redis_url:
            from availability.ingest.fastapply import FastApplier

            most = settings.partitions if self.leased else len(self.partitions)
            self.applier = FastApplier(runtime.ledger, runtime.redis_url, connections=most + 1, batched=batched)
        self.pipeline = IngestPipeline(
            runtime.ledger, self.names, redis=runtime.redis, rules=runtime.rules, applier=self.applier,
            wait_replicas=settings.redis_wait_replicas, wait_timeout_ms=settings.redis_wait_timeout_ms,
        )
        self.reclaimer: Reclaimer | None = None
        self._broker: Any = None
        self._reclaim_task: asyncio.Task | None = None
        self._reclaim_stop = asyncio.Event()
        self._stopping = False
        #: partition -> its running subscriber (Redis Streams)
        self._subs: dict[int, Any] = {}
        self.leases: PartitionLeases | None = None
        self._lease_task: asyncio.Task | None = None
        self._lease_stop = asyncio.Event()
        #: NATS: one pull loop per partition, and the flag that ends them
        self._nats_readers: list[asyncio.Task] = []
        self._nats_stop = asyncio.Event()

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        kind = self.settings.broker
        if kind == "redis":
            await ensure_redis_groups(self.runtime.redis, self.names)
            self.reclaimer = Reclaimer(
                self.runtime.redis,
                self.names,
                self.pipeline,
                self.consumer_name,
                partitions=self.partitions,
                idle_ms=self.settings.reclaim_idle_ms,
                batch_size=self.settings.batch_size,
                max_deliveries=self.settings.max_deliveries,
                retention_ms=self.settings.stream_retention_seconds * 1000,
            )
            self._broker = self._redis_broker()
            if not self.leased:
                # What this consumer name left pending in a previous life is not in flight now.
                await self.reclaimer.recover_own()
                for p in self.partitions:
                    self._subscribe(p)
        elif kind == "nats":
            self._broker = self._nats_broker()
        elif kind == "kafka":
            self._broker = self._kafka_broker()
        else:  # pragma: no cover
            raise ValueError(f"unknown broker {kind!r}")
        await self._broker.start()
        if kind == "nats":
            await self._start_nats_readers()
        if self.leased:
            ttl_ms = int(self.settings.consumer_lease_seconds * 1000)
            self.leases = PartitionLeases(self.runtime.redis, self.names, self.consumer_name, ttl_ms=ttl_ms)
            await self.rebalance()
            self._lease_stop = asyncio.Event()
            self._lease_task = asyncio.create_task(self._lease_loop(ttl_ms / 3000), name="ingest-leases")
        if self.reclaimer is not None:
            self._reclaim_stop = asyncio.Event()
            self._reclaim_task = asyncio.create_task(
                self.reclaimer.run(self.settings.reclaim_interval_seconds, self._reclaim_stop), name="ingest-reclaimer"
            )
        log.info(
            "consumer %s started on %s, partitions %s, batch %d",
            self.consumer_name, kind, self.partitions, self.settings.batch_size,
        )

    async def stop(self) -> None:
        if self._lease_task is not None:
            self._lease_stop.set()
            await self._lease_task
            self._lease_task = None
        if self.leases is not None:
            # Stop reading, then hand the partitions back, then leave: the others take
            # over at their next heartbeat instead of after the lease runs out.
            held = sorted(self._subs)
            for p in held:
                await self._unsubscribe(p)
            for p in held:
                await self.leases.release(p)
            await self.leases.leave()
            self.leases = None
        if self._reclaim_task is not None:
            self._reclaim_stop.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._reclaim_task), 15)
            except TimeoutError:
                self._reclaim_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reclaim_task
            self._reclaim_task = None
        if self._nats_readers:
            # each loop ends after its fetch in flight (at most the poll timeout) and its batch
            # (no retrying a batch while Redis is away: it stays unacked, JetStream redelivers)
            self._stopping = True
            self._nats_stop.set()
            await asyncio.gather(*self._nats_readers, return_exceptions=True)
            self._nats_readers = []
        if self._broker is not None:
            # FastStream waits (graceful_timeout) for in-flight batches to finish and ack.
            self._stopping = True
            await self._broker.stop()
            self._broker = None
        if self.applier is not None:
            await self.applier.close()

    async def __aenter__(self) -> StreamConsumer:  # noqa: PYI034
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- brokers ----------------------------------------------------------------------------

    def _redis_broker(self) -> Any:
        from faststream.redis import RedisBroker, RedisClusterBroker

        kind = RedisClusterBroker if self.settings.redis_cluster else RedisBroker
        return kind(url=self.runtime.redis_url, graceful_timeout=30.0, logger=log, log_level=logging.DEBUG)

    async def _on_redis_batch(self, message: Message) -> None:
        raw = message.raw_message
        stream = raw["channel"]
        ids = raw["message_ids"]
        await self._wait_for_older(stream, ids[0])
        entries = [Entry(mid.decode(), entry_payload(fields), stream) for mid, fields in zip(ids, raw["data"])]
        await self._process_with_retry(entries, ack=(stream, ids))

    def _subscribe(self, p: int) -> Any:
        """Partition p's subscriber (started by the broker's start, or by the caller on a
        running broker: dynamic subscribers are not kept by the broker once dropped)."""
        from faststream.redis import StreamSub

        sub = self._broker.subscriber(
            stream=StreamSub(
                self.names.partition(p),
                group=self.names.group,
                consumer=self.consumer_name,
                batch=True,
                max_records=self.settings.batch_size,
                polling_interval=self.settings.consumer_poll_ms,
            ),
            parser=_raw_redis_batch,
            decoder=_no_decode,
            ack_policy=AckPolicy.MANUAL,
            persistent=not self.leased,
        )
        sub(self._on_redis_batch)
        self._subs[p] = sub
        return sub

    async def _unsubscribe(self, p: int) -> None:
        """Stop reading p; returns once its batch in flight is applied and acknowledged."""
        sub = self._subs.pop(p, None)
        if sub is not None:
            await sub.stop()
        self._held_changed()

    def _held_changed(self) -> None:
        self.partitions = sorted(self._subs)
        if self.reclaimer is not None:
            self.reclaimer.partitions = list(self.partitions)

    # --- leases -----------------------------------------------------------------------------

    async def rebalance(self) -> None:
        """One heartbeat: renew what is held, let go of what is now another's (after its
        batch in flight), take what is assigned here and free (after applying what its
        last owner left pending)."""
        assert self.leases is not None
        members = await self.leases.heartbeat()
        wanted = assignment(members, self.consumer_name, self.settings.partitions)
        held = set(self._subs)
        kept = {p for p in sorted(held) if await self.leases.claim(p)}
        lost, giving = held - kept, kept - wanted
        gaining = [p for p in sorted(wanted - held) if await self.leases.claim(p)]
        for p in sorted(lost | giving):
            await self._unsubscribe(p)
        for p in sorted(giving):
            await self.leases.release(p)
        for p in gaining:
            assert self.reclaimer is not None
            await self.reclaimer.take_over(p)
            await self._subscribe(p).start()
            self._held_changed()
        if lost or giving or gaining:
            log.info(
                "consumer %s (%d in the group) now reads partitions %s (took %s, gave %s, lost %s)",
                self.consumer_name, len(members), self.partitions, gaining, sorted(giving), sorted(lost),
            )

    async def _lease_loop(self, interval: float) -> None:
        while not self._lease_stop.is_set():
            try:
                await asyncio.wait_for(self._lease_stop.wait(), interval)
                return
            except TimeoutError:
                pass
            try:
                await self.rebalance()
            except Exception:  # a Redis blip: the leases have TTL/3 × 2 of slack left
                log.warning("consumer %s: lease heartbeat failed", self.consumer_name, exc_info=True)

    async def _process_with_retry(self, entries: list[Entry], **kwargs: Any) -> None:
        """Apply a batch; while Redis is unreachable, retry it in place (with backoff), so the
        partition keeps its order instead of waiting for the reclaim timeout."""
        delay = 0.1
        token = current_correlation_id.set(new_correlation_id())  # one per batch, for its log lines
        try:
            while True:
                try:
                    await self.pipeline.process(entries, **kwargs)
                    return
                except Exception as exc:
                    if not is_transient(exc) or self._stopping:
                        raise  # stays pending: reclaimed later
                    log.warning("batch of %d not applied (%s); retrying in %.1fs", len(entries), exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            current_correlation_id.reset(token)

    async def _wait_for_older(self, stream: str, first_id: bytes) -> None:
        """Keep a SKU's events in stream order across consumers: a batch is applied only
        when no older entry of its partition is still pending. Older pending entries belong
        to another consumer's batch in flight (wait for its ack) or to a dead consumer
        (the reclaimer takes them over after `reclaim_idle_ms` and applies them first)."""
        redis = self.runtime.redis
        group = self.names.group
        upper = b"(" + first_id
        waited = 0.0
        while await redis.xpending_range(stream, group, min="-", max=upper, count=1):
            if waited and waited % 10 < 0.05:
                log.warning("%s: batch from %s waits for older pending entries (%.0fs)", stream, first_id, waited)
            await asyncio.sleep(0.05)
            waited += 0.05

    def _nats_broker(self) -> Any:
        from faststream.nats import NatsBroker

        return NatsBroker(self.settings.broker_url or "nats://127.0.0.1:4222", graceful_timeout=30.0, logger=log, log_level=logging.DEBUG)

    async def _start_nats_readers(self) -> None:
        from availability.ingest.publisher import ensure_nats_stream

        connection = self._broker.connection
        await ensure_nats_stream(connection, self.names)
        js = connection.jetstream()
        self._nats_stop.clear()
        for p in self.partitions:
            sub = await js.pull_subscribe(
                self.names.nats_subject(p), durable=f"{self.names.group}-{p}", stream=self.names.nats_stream
            )
            self._nats_readers.append(asyncio.create_task(self._read_nats(sub), name=f"ingest-nats-{p}"))

    async def _read_nats(self, sub: Any) -> None:
        """Pull batches of a partition's durable consumer until `stop()`, acking each batch
        once applied (a batch that fails stays unacked: JetStream redelivers it).

        FastStream 0.7.8's pull loop catches only `nats.errors.TimeoutError`, but nats-py
        2.16's `fetch` of a batch also raises a bare `asyncio.TimeoutError` when the answer
        to its no-wait probe is handled after the fetch's deadline (a stalled event loop:
        a loaded machine). That escaped the loop and ended the partition's reader for good,
        so nothing more was read. Here both are an empty poll: `TimeoutError` is the
        builtin that both are (`asyncio.TimeoutError` is it since Python 3.11)."""
        timeout = max(self.settings.consumer_poll_ms / 1000, 0.5)
        while not self._nats_stop.is_set():
            try:
                msgs = await sub.fetch(self.settings.batch_size, timeout=timeout)
            except TimeoutError:
                continue  # nothing new within the poll
            except Exception as exc:  # noqa: BLE001 - connection closed, JetStream unavailable, ...
                # any other failure of a fetch is retried too: a reader that ends reads
                # nothing more for its partition, which is the lost-events bug above
                if self._nats_stop.is_set():
                    return
                log.warning("NATS fetch failed (%r); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            entries = [Entry(str(m.metadata.sequence.stream), m.data, m.subject) for m in msgs]
            try:
                await self._process_with_retry(entries)
            except Exception:
                log.exception("batch of %d from %s not applied; JetStream redelivers it", len(entries), msgs[0].subject)
                continue
            try:
                for m in msgs:
                    await m.ack()
            except Exception as exc:  # noqa: BLE001 - the unacked rest is redelivered and is a duplicate then
                log.warning("NATS ack failed (%r); JetStream redelivers the batch's rest", exc)

    def _kafka_broker(self) -> Any:
        from faststream.kafka import KafkaBroker

        broker = KafkaBroker(self.settings.broker_url or "127.0.0.1:9092", graceful_timeout=30.0, logger=log, log_level=logging.DEBUG)
        register_kafka_subscriber(broker, self.names, self.pipeline, self.settings.batch_size)
        return broker


def register_kafka_subscriber(broker: Any, names: StreamNames, pipeline: IngestPipeline, batch_size: int) -> Any:
    """The Kafka subscriber (also used with FastStream's TestKafkaBroker in tests)."""

    async def on_kafka_batch(message: Message) -> None:
        records = message.raw_message
        if not isinstance(records, (list, tuple)):
            records = [records]
        entries = [Entry(f"{r.partition}/{r.offset}", r.value or b"", r.topic) for r in records]
        await pipeline.process(entries)
        await message.ack()

    sub = broker.subscriber(
        names.kafka_topic,
        group_id=names.group,
        batch=True,
        max_records=batch_size,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.MANUAL,
    )
    sub(on_kafka_batch)
    return sub
