-- intent.lua: a reservation's intent record, the header written before any SKU is held.
-- Recovery is driven from it: an attempt that dies between holding and finishing leaves
-- its intent pending, and once the attempt's lease has passed the sweep rolls its holds
-- back (settle.lua rollback, fenced by the attempt token) and drops the intent.
--
-- The header hash carries: doc (what was asked: channel, lines, SKUs, created, expires),
-- st (P pending | H finished | K being rolled back; no st = H, headers from before this),
-- own (the attempt token, also tagged on every hold of that attempt), dl (lease deadline,
-- Redis TIME ms: holds of the attempt are only placed before it, see reserve.lua).
--
-- KEYS[1] header hash   {pN}:resv:ID (N: the id's partition; the indexes below are that partition's)
-- KEYS[2] pending zset  resv:pending  id -> lease deadline ms (the recovery sweep's list)
-- KEYS[3] expiry zset   resv:expiry   id -> expires ms (the TTL sweep's list)
-- KEYS[4] ended zset    resv:ended    id -> ended ms (the retention sweep's list)
-- ARGV[1] action, ARGV[2] reservation id, then per action:
--   begin  3 token, 4 lease_ms, 5 doc, 6 expires_ms (0 = never)
--          -> {'new', deadline} | {'busy', ms until the lease ends} | {'stale'} | {'exists', doc, token}
--   finish 3 token  -> {'ok'} | {'lost', st}        (P of this token -> H)
--   claim           -> {'claimed', doc, token} | {'busy'} | {'done'} | {'gone'}
--                      (P whose lease has passed, or K -> K: recovery may roll its holds back)
--   drop   3 token  -> {'dropped'} | {'not_ours'}    (delete the header of this token's attempt;
--                      H too: a one-SKU attempt finishes in the same round trip as its hold)
--   forget 3 now_ms -> {'forgotten'} | {'kept'}      (retention: delete a finished header)

local action, rid = ARGV[1], ARGV[2]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

if action == 'begin' then
  local h = redis.call('HMGET', KEYS[1], 'doc', 'st', 'dl', 'own')
  if not h[1] then
    local deadline = now_ms() + tonumber(ARGV[4])
    redis.call('HSET', KEYS[1], 'doc', ARGV[5], 'st', 'P', 'own', ARGV[3], 'dl', deadline)
    redis.call('ZADD', KEYS[2], deadline, rid)
    if tonumber(ARGV[6]) > 0 then redis.call('ZADD', KEYS[3], ARGV[6], rid) end
    return {'new', deadline}
  end
  local st = h[2] or 'H'
  if st == 'P' then
    local left = tonumber(h[3]) - now_ms()
    if left >= 0 then return {'busy', left} end
    return {'stale'}
  end
  if st == 'K' then return {'stale'} end
  return {'exists', h[1], h[4] or ''}
end

if action == 'finish' then
  local h = redis.call('HMGET', KEYS[1], 'st', 'own')
  if h[1] ~= 'P' or h[2] ~= ARGV[3] then return {'lost', h[1] or ''} end
  redis.call('HSET', KEYS[1], 'st', 'H')
  redis.call('HDEL', KEYS[1], 'dl')
  redis.call('ZREM', KEYS[2], rid)
  return {'ok'}
end

if action == 'claim' then
  local h = redis.call('HMGET', KEYS[1], 'doc', 'st', 'own', 'dl')
  if not h[1] then
    redis.call('ZREM', KEYS[2], rid)
    return {'gone'}
  end
  local st = h[2] or 'H'
  if st == 'P' and tonumber(h[4]) >= now_ms() then return {'busy'} end
  if st ~= 'P' and st ~= 'K' then
    redis.call('ZREM', KEYS[2], rid)
    return {'done'}
  end
  redis.call('HSET', KEYS[1], 'st', 'K')
  return {'claimed', h[1], h[3]}
end

if action == 'drop' then
  local h = redis.call('HMGET', KEYS[1], 'st', 'own')
  if not h[1] or h[2] ~= ARGV[3] then return {'not_ours'} end
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], rid)
  redis.call('ZREM', KEYS[3], rid)
  redis.call('ZREM', KEYS[4], rid)
  return {'dropped'}
end

if action == 'forget' then
  local st = redis.call('HGET', KEYS[1], 'st')
  if st == 'P' or st == 'K' then
    -- reused by a new attempt since it ended: that attempt's own end will list it again
    redis.call('ZREM', KEYS[4], rid)
    return {'kept'}
  end
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[3], rid)
  redis.call('ZREM', KEYS[4], rid)
  return {'forgotten'}
end

return redis.error_reply('intent.lua: unknown action ' .. tostring(action))
