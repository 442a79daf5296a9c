"""Large uploads are loaded in a worker process, so the API's event loop keeps serving lookups.

Parsing a 10 MB upload is seconds of pure-Python work. On the event loop that stalls every
request for those seconds (issue 10: 5.6 s); in a worker *thread* the loop still waits for
the GIL every time it wakes (tens of ms per lookup on a busy machine). A worker process
shares nothing with the loop: the loop hands it the spooled file's path and awaits one
future.

The worker runs the very same `sources.load()` the other intakes use (parse, publish to the
partition streams, dead-letter with the caps, refuse what is not the format) over its own
Redis connection, and sends back the `LoadReport`, the refusal if any (as status, slug,
detail, extra: domain errors do not all pickle), and what it added to the ingest metrics,
which the parent adds to its own so `/metrics` counts the upload as if it ran there.

Only for the Redis Streams broker (the default); NATS and Kafka uploads load in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NamedTuple

from redis.exceptions import RedisError

from availability.config import Settings
from availability.domain.errors import AvailabilityError, InvalidEvent
from availability.ingest import metrics

if TYPE_CHECKING:
    from availability.bootstrap import Runtime

log = logging.getLogger(__name__)

#: the ingest counters a worker may move; their increments are replayed in the parent
_COUNTERS = (
    metrics.PUBLISHED,
    metrics.DEAD_LETTERS,
    metrics.DEAD_LETTERS_NOT_KEPT,
    metrics.DEAD_LETTERS_TRUNCATED,
    metrics.DEAD_LETTER_CAP_HITS,
)


class WorkerRefusal(InvalidEvent):
    """The worker refused the upload as a whole; status, slug, detail and extra as it said."""

    def __init__(self, status: int, slug: str, detail: str, extra: dict[str, Any]) -> None:
        super().__init__(detail, **extra)
        self.status = status
        self.slug = slug


class _Outcome(NamedTuple):
    report: Any
    refusal: tuple[int, str, str, dict[str, Any]] | None
    redis_error: str | None
    counted: list[tuple[int, dict[str, str], float]]


# --- in the worker process -------------------------------------------------------------------

_settings: Settings | None = None
_redis_url: str = ""


def _init(settings: dict[str, Any], redis_url: str) -> None:
    global _settings, _redis_url
    _settings = Settings(_env_file=None, **settings)
    _redis_url = redis_url


def _samples() -> dict[tuple[int, tuple[tuple[str, str], ...]], float]:
    out = {}
    for index, counter in enumerate(_COUNTERS):
        for family in counter.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[(index, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _load_file(fmt: str, path: str, kwargs: dict[str, Any]) -> _Outcome:
    before = _samples()
    report = refusal = redis_error = None
    try:
        report = asyncio.run(_load(fmt, path, kwargs))
    except AvailabilityError as exc:
        refusal = (exc.status, exc.slug, exc.detail, _plain(exc.extra))
    except RedisError as exc:
        redis_error = f"{type(exc).__name__}: {exc}"
    after = _samples()
    counted = [(i, dict(labels), value - before.get((i, labels), 0.0)) for (i, labels), value in after.items()]
    return _Outcome(report, refusal, redis_error, [c for c in counted if c[2] > 0])


async def _load(fmt: str, path: str, kwargs: dict[str, Any]):
    from availability.bootstrap import make_redis  # noqa: PLC0415
    from availability.ingest.deadletters import DeadLetters  # noqa: PLC0415
    from availability.ingest.publisher import EventPublisher  # noqa: PLC0415
    from availability.ingest.sources import load  # noqa: PLC0415

    assert _settings is not None, "worker not initialised"
    redis = make_redis(_redis_url, cluster=_settings.redis_cluster, max_connections=4)
    try:
        publisher = EventPublisher(SimpleNamespace(settings=_settings, redis=redis))  # type: ignore[arg-type]
        dead_letters = DeadLetters.from_settings(redis, _settings)
        with open(path, "rb") as source:
            return await load(fmt, source, publisher, dead_letters, offload=False, **kwargs)
    finally:
        await redis.aclose()


def _plain(extra: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in extra.items() if isinstance(v, (str, int, float, bool, list, dict))}


# --- in the API process ----------------------------------------------------------------------


class UploadWorkers:
    """A pool of worker processes for one runtime: spawned on first use, shut down when the
    runtime closes."""

    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime
        self.workers = max(1, runtime.settings.ingest_workers)
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the API process has an event loop, threads and open sockets
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init,
                initargs=(self.runtime.settings.model_dump(), self.runtime.redis_url),
            )
            if self.close not in self.runtime.closers:
                self.runtime.closers.append(self.close)
        return self._pool

    async def load(self, fmt: str, path: str, **kwargs: Any):
        """`sources.load` over the file at `path`, in a worker process. Raises what load
        raises (`InvalidEvent` as `WorkerRefusal`, `RedisError`)."""
        loop = asyncio.get_running_loop()
        pool = self._executor()
        try:
            outcome: _Outcome = await loop.run_in_executor(pool, _load_file, fmt, path, kwargs)
        except BrokenProcessPool:
            # The worker died (killed, out of memory). What it published before is on the
            # stream (a retry is deduplicated by event id); the next upload gets a new pool.
            log.error("upload worker process died while loading a %s upload", fmt)
            if self._pool is pool:
                self._pool = None
            raise WorkerRefusal(503, "unavailable", "the upload worker process died; retry the upload", {}) from None
        for index, labels, delta in outcome.counted:
            counter = _COUNTERS[index]
            (counter.labels(**labels) if labels else counter).inc(delta)
        if outcome.refusal is not None:
            raise WorkerRefusal(*outcome.refusal)
        if outcome.redis_error is not None:
            raise RedisError(outcome.redis_error)
        return outcome.report

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
