"""Which consumer process reads which stream partition: members and leases in Redis.

Every consumer of a group heartbeats into one sorted set (`{prefix}:consumers:{group}`:
name → deadline on Redis's clock) and reads the live members back. The assignment is a
pure function of that list (sorted names; partition p goes to member p mod n), so every
member computes the same one without talking to the others. A member reads a partition
only while it holds the partition's lease (`{prefix}:lease:{group}:{p}`: its name, with a
TTL), renewed on every heartbeat:

- **join**: the newcomer appears in the list; the members that are assigned fewer
  partitions now stop reading those, then release their leases; the newcomer takes each
  lease once it is free.
- **leave** (`stop()`): a member stops reading, releases its leases and leaves the list, so
  the others take over at their next heartbeat.
- **death** (SIGKILL): its heartbeat and leases run out after the TTL; then the others see
  it gone and take its partitions.

A new owner first takes over every entry still pending in the partition (XAUTOCLAIM with
no idle time: nobody else reads it now) and applies them before reading new ones, so a
dead owner's half-applied batch is applied, in order, before anything after it. Applying
an entry twice is harmless (the ledger is idempotent on event_id), so the gap between a
stalled owner's lease running out and its noticing cannot double-count either. Each
script names one key, so all of this works on Redis Cluster too.
"""

from __future__ import annotations

from redis.asyncio import Redis

from availability.ingest.streams import StreamNames

#: KEYS[1] members zset; ARGV name, ttl ms ('0' = leave). Live members, sorted by name.
HEARTBEAT = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[2] == '0' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

#: KEYS[1] a partition's lease; ARGV name, ttl ms. 1 = held by `name` for ttl from now.
CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if owner then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

#: KEYS[1] a partition's lease; ARGV name. Deleted only if still ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def assignment(members: list[str], me: str, partitions: int) -> set[int]:
    """The partitions `me` should read among `members` (every member computes the same)."""
    ordered = sorted(members)
    if me not in ordered:
        return set()
    n, i = len(ordered), ordered.index(me)
    return {p for p in range(partitions) if p % n == i}


class PartitionLeases:
    def __init__(self, redis: Redis, names: StreamNames, me: str, *, ttl_ms: int) -> None:
        self.redis = redis
        self.names = names
        self.me = me
        self.ttl_ms = ttl_ms
        self._heartbeat = redis.register_script(HEARTBEAT)
        self._claim = redis.register_script(CLAIM)
        self._release = redis.register_script(RELEASE)

    @property
    def members_key(self) -> str:
        return f"{self.names.prefix}:consumers:{self.names.group}"

    def lease_key(self, p: int) -> str:
        return f"{self.names.prefix}:lease:{self.names.group}:{p}"

    async def heartbeat(self) -> list[str]:
        members = await self._heartbeat(keys=[self.members_key], args=[self.me, self.ttl_ms])
        return [m.decode() if isinstance(m, bytes) else m for m in members]

    async def leave(self) -> None:
        await self._heartbeat(keys=[self.members_key], args=[self.me, 0])

    async def claim(self, p: int) -> bool:
        """Take partition p's lease if free, or renew it if ours; False if another holds it."""
        return bool(await self._claim(keys=[self.lease_key(p)], args=[self.me, self.ttl_ms]))

    async def release(self, p: int) -> None:
        await self._release(keys=[self.lease_key(p)], args=[self.me])

    async def owner(self, p: int) -> str | None:
        owner = await self.redis.get(self.lease_key(p))
        return owner.decode() if isinstance(owner, bytes) else owner
