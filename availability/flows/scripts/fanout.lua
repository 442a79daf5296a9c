-- Hand the ledger's dirty marks to every shop's own dirty set (several Shopify shops).
--
-- The ledger marks each changed (SKU, location) once in one zset. With one shop its
-- publisher claims from that set directly; with several, each shop's publisher claims
-- from its own set, so one shop claiming a mark never takes it from another. This moves
-- up to ARGV[1] of the oldest marks into every shop's set (ZADD NX: a mark already waiting
-- there keeps its earlier first-dirty time) and removes them from the ledger's set, all at
-- once, so no mark is lost or handed to some shops only.
--
-- KEYS[1]    the ledger's dirty zset   "SKU|LOCATION" -> first-dirty ms
-- KEYS[2..n] each shop's dirty zset
-- ARGV[1]    most marks to move
-- Returns how many marks were moved.

local rows = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
if #rows == 0 then return 0 end
local args = {}
local members = {}
for i = 1, #rows, 2 do
  args[#args + 1] = rows[i + 1]
  args[#args + 1] = rows[i]
  members[#members + 1] = rows[i]
end
for k = 2, #KEYS do
  redis.call('ZADD', KEYS[k], 'NX', unpack(args))
end
redis.call('ZREM', KEYS[1], unpack(members))
return #members
