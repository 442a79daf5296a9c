"""The per-caller rate limit shared by every API worker and replica, through Redis.

One token bucket per caller in Redis (`{prefix}:ratelimit:{caller}`, a hash of tokens and
the time they were counted, on Redis's own clock so workers on different machines agree),
refilled at `rate` per second up to `burst`. A request must not pay a Redis round trip
for it (that is the whole lookup's budget), so a worker takes tokens in *chunks*
(`rate / 50`, at least 1) and spends them locally; it goes back to Redis only when its
chunk is spent. Every admitted request was paid for by a token taken from the shared
bucket, so across all workers a caller is admitted at most `burst + rate × t` in any `t`
seconds, plus what other workers had prefetched and not yet spent (a chunk each, dropped
if unspent for `hold_seconds`). A refusal is remembered locally until the bucket will
have a token again, so a caller over its limit costs no Redis call per refused request,
and Litestar's own gate refuses what the fast path refused.

If Redis cannot be reached the worker falls back to its own in-process bucket (the
caller then gets up to workers × rate): lookups need Redis anyway, and a limiter must not
be what turns a blip into refusals.
"""

from __future__ import annotations

import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from availability.api.security import RateLimiter

log = logging.getLogger("availability.api")

#: KEYS[1] the caller's bucket; ARGV rate/s, burst, tokens wanted, key TTL ms.
#: Answers {granted, wait µs}: granted ≥ 1, or 0 and how long until one token is there.
TAKE_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local held = redis.call('HMGET', KEYS[1], 'tk', 'at')
local tokens, at = tonumber(held[1]), tonumber(held[2])
if tokens == nil or at == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000000)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tk', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if granted > 0 then return {granted, 0} end
return {0, math.ceil((1 - tokens) * 1000000 / rate)}
"""


class SharedRateLimiter:
    """Same face as `RateLimiter` (`enabled`, `rate`, `await admit(who)`), bucket in Redis."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        rate: float,
        burst: float | None = None,
        *,
        chunk: int | None = None,
        hold_seconds: float = 1.0,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate))
        self.chunk = max(1, int(chunk if chunk is not None else min(self.burst, self.rate / 50)))
        self.hold_seconds = hold_seconds
        #: caller -> [tokens prefetched and not spent, when they were taken]
        self._held: dict[str, list[float]] = {}
        #: caller -> monotonic time before which the shared bucket has no token
        self._refused_until: dict[str, float] = {}
        self._fallback = RateLimiter(rate, burst)
        self._script = redis.register_script(TAKE_SCRIPT)
        self._ttl_ms = int(max(1.0, self.burst / max(self.rate, 1e-9)) * 1000) + 1000

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def key(self, who: str) -> str:
        return f"{self.prefix}:ratelimit:{who}"

    async def admit(self, who: str) -> float:
        """0.0 if allowed, else the seconds until one request would be."""
        now = time.monotonic()
        held = self._held.get(who)
        if held is not None:
            if held[0] >= 1 and now - held[1] <= self.hold_seconds:
                held[0] -= 1
                return 0.0
            del self._held[who]
        until = self._refused_until.get(who)
        if until is not None:
            if now < until:
                return until - now
            del self._refused_until[who]
        try:
            granted, wait_us = await self._script(keys=[self.key(who)], args=[self.rate, self.burst, self.chunk, self._ttl_ms])
        except RedisError as exc:
            log.warning("shared rate limit unavailable (%s): this worker's own bucket decides", exc)
            return self._fallback.take(who, now)
        granted, wait_us = int(granted), int(wait_us)
        if granted >= 1:
            if granted > 1:
                if len(self._held) > 100_000:
                    self._held.clear()  # a flood of callers: drop prefetched crumbs, never admit more
                self._held[who] = [granted - 1, now]
            return 0.0
        wait = wait_us / 1_000_000
        if len(self._refused_until) > 100_000:
            self._refused_until.clear()
        self._refused_until[who] = now + wait
        return wait
