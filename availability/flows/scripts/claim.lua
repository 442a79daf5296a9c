-- Claim work marks for one worker, atomically, and lease their groups.
--
-- A mark is a member "GROUP|REST" (for the Shopify push: "SKU|LOCATION") of the work zset,
-- scored by the time it first became dirty. Marks in the urgent zset are claimed first,
-- whatever their age; then marks of the work zset scored at or below the due cutoff (older
-- than the coalescing window). A mark is only claimed if its GROUP is not leased by
-- another owner; claiming leases the group to this owner, so two workers (or two rounds
-- of one worker) never hold marks of one group at once. A claimed mark leaves both zsets:
-- a change after the claim marks the pair again and is taken by a later round.
--
-- KEYS[1] work zset    member -> first-dirty ms
-- KEYS[2] urgent zset  member -> flagged ms
-- KEYS[3] leases hash  group -> "owner|lease_until_ms"
-- ARGV[1] now ms
-- ARGV[2] due cutoff score (now - window)
-- ARGV[3] most marks to claim
-- ARGV[4] owner token
-- ARGV[5] lease ms
-- ARGV[6] most marks to look at per zset (skips marks of groups leased elsewhere)
-- Returns a flat list: member, first-dirty score, urgent (1/0), ...

local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[3])
local owner = ARGV[4]
local lease = owner .. '|' .. (now + tonumber(ARGV[5]))
local scan = tonumber(ARGV[6])
local out = {}
local mine = {}
local taken = 0

local function leasable(group)
  if mine[group] ~= nil then
    return mine[group]
  end
  local cur = redis.call('HGET', KEYS[3], group)
  if cur then
    local sep = string.find(cur, '|', 1, true)
    local holder = string.sub(cur, 1, sep - 1)
    local lease_until = tonumber(string.sub(cur, sep + 1))
    if holder ~= owner and lease_until > now then
      mine[group] = false
      return false
    end
  end
  redis.call('HSET', KEYS[3], group, lease)
  mine[group] = true
  return true
end

local function take(member, score, urgent)
  local sep = string.find(member, '|', 1, true)
  if not sep then
    -- not ours to understand: drop it rather than loop on it forever
    redis.call('ZREM', KEYS[1], member)
    redis.call('ZREM', KEYS[2], member)
    return
  end
  if not leasable(string.sub(member, 1, sep - 1)) then
    return
  end
  local dirty_since = redis.call('ZSCORE', KEYS[1], member)
  if dirty_since then
    redis.call('ZREM', KEYS[1], member)
  else
    dirty_since = score
  end
  redis.call('ZREM', KEYS[2], member)
  out[#out + 1] = member
  out[#out + 1] = dirty_since
  out[#out + 1] = urgent
  taken = taken + 1
end

local urgent = redis.call('ZRANGE', KEYS[2], 0, scan - 1, 'WITHSCORES')
for i = 1, #urgent, 2 do
  if taken >= limit then break end
  take(urgent[i], urgent[i + 1], 1)
end
if taken < limit then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'WITHSCORES', 'LIMIT', 0, scan)
  for i = 1, #due, 2 do
    if taken >= limit then break end
    take(due[i], due[i + 1], 0)
  end
end
return out
