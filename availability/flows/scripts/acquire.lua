-- Lease groups to one owner, all or nothing (outbox recovery, replays).
--
-- KEYS[1] leases hash  group -> "owner|lease_until_ms"
-- ARGV[1] owner token
-- ARGV[2] now ms
-- ARGV[3] lease ms
-- ARGV[4..] groups
-- Returns 1 if every group is now leased to the owner, 0 (and nothing changed) otherwise.

local owner = ARGV[1]
local now = tonumber(ARGV[2])
for i = 4, #ARGV do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur then
    local sep = string.find(cur, '|', 1, true)
    if string.sub(cur, 1, sep - 1) ~= owner and tonumber(string.sub(cur, sep + 1)) > now then
      return 0
    end
  end
end
local lease = owner .. '|' .. (now + tonumber(ARGV[3]))
for i = 4, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i], lease)
end
return 1
