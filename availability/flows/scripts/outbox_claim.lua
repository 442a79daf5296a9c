-- Take over outbox messages whose owner stopped renewing them (crashed or stuck).
--
-- KEYS[1] outbox hash   id -> message JSON
-- KEYS[2] lease zset    id -> lease_until ms
-- ARGV[1] now ms
-- ARGV[2] new lease_until ms
-- ARGV[3] most messages to take
-- Returns a flat list: id, message JSON, ...

local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local doc = redis.call('HGET', KEYS[1], id)
  if doc then
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    out[#out + 1] = id
    out[#out + 1] = doc
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
return out
