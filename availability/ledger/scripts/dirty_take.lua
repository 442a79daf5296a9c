-- dirty_take.lua: the first step of handing one partition's dirty marks to the publisher
-- (availability/ledger/dirty.py). Moves up to ARGV[1] of the oldest marks from the
-- partition's dirty set into its `taking` set (same partition, one slot) and returns them;
-- the caller adds them to the publisher's set(s), then removes them from `taking`. If
-- `taking` still holds marks (a hand-over that died after this step), those are returned
-- again first, so a crash hands a mark over twice (harmless: ZADD NX), never loses it.
--
-- KEYS[1] dirty zset   {pN}:dirty         "SKU|LOCATION" -> first-dirty ms
-- KEYS[2] taking zset  {pN}:dirty:taking  marks on their way to the publisher
-- ARGV[1] most marks to move
-- Returns {member, score, member, score, ...}

local left = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
if #left > 0 then return left end
local rows = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
if #rows == 0 then return rows end
local args, members = {}, {}
for i = 1, #rows, 2 do
  args[#args + 1] = rows[i + 1]
  args[#args + 1] = rows[i]
  members[#members + 1] = rows[i]
end
redis.call('ZADD', KEYS[2], unpack(args))
redis.call('ZREM', KEYS[1], unpack(members))
return rows
