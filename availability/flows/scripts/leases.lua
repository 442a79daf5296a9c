-- Renew or release leases held by one owner (see claim.lua for the lease format).
--
-- KEYS[1] leases hash  group -> "owner|lease_until_ms"
-- ARGV[1] owner token
-- ARGV[2] "renew" or "release"
-- ARGV[3] new lease_until ms (renew only)
-- ARGV[4..] groups
-- Returns how many groups this owner still held (renewed or released).

local owner = ARGV[1]
local prefix = owner .. '|'
local held = 0
for i = 4, #ARGV do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur and string.sub(cur, 1, #prefix) == prefix then
    held = held + 1
    if ARGV[2] == 'renew' then
      redis.call('HSET', KEYS[1], ARGV[i], prefix .. ARGV[3])
    else
      redis.call('HDEL', KEYS[1], ARGV[i])
    end
  end
end
return held
