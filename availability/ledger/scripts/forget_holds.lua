-- forget_holds.lua: retention of one SKU's holds that order events ended (apply_event.lua
-- lists each with the time it may go): remove those whose time has passed.
--
-- KEYS[1] holds hash   {sku}:holds    field = reference, value "STATE|expires_ms|channel|body"
-- KEYS[2] ended holds  {sku}:ended    zset, member = reference, score = ms it may be removed after
-- KEYS[3] ended index  {pN}:holds:ended   zset, member = SKU, score = earliest ms in KEYS[2]
-- ARGV: 1 sku, 2 now_ms, 3 limit (references looked at in one call)
-- Returns {removed, still_due}: holds removed, and due entries left for another call.
--
-- Only an ended hold goes: released (R), expired (X) or fulfilled (F) with nothing left on
-- it. A hold that holds units again (a new reserve under the same reference) is kept and
-- leaves the list; apply_event.lua lists it again when it ends again.

local sku, now, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
local removed = 0
if #due > 0 then
  local raws = redis.call('HMGET', KEYS[1], unpack(due))
  local gone = {}
  for i, ref in ipairs(due) do
    local raw = raws[i]
    if raw then
      local state, body = string.match(raw, '^(%u)|%d*|[^|]*|(.*)$')
      if (state == 'R' or state == 'X' or state == 'F') and body == '' then gone[#gone + 1] = ref end
    end
  end
  if #gone > 0 then removed = redis.call('HDEL', KEYS[1], unpack(gone)) end
  redis.call('ZREM', KEYS[2], unpack(due))
end
-- the index follows the SKU's earliest entry left (or forgets the SKU)
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #nxt == 0 then
  redis.call('ZREM', KEYS[3], sku)
  return {removed, 0}
end
redis.call('ZADD', KEYS[3], nxt[2], sku)
local left = redis.call('ZCOUNT', KEYS[2], '-inf', now)
return {removed, left}
