-- settle.lua: release, commit, expire, roll back or forget one reservation's hold on one SKU.
--
-- KEYS[1] stock hash  {pN}:SKU:stock (N: the SKU's partition, as every key here)
-- KEYS[2] holds hash  {sku}:holds
-- KEYS[3] dirty zset  {pN}:dirty
-- KEYS[4] journal     {pN}:journal
-- ARGV: 1 reservation_id, 2 now_ms, 3 action (release | commit | expire | rollback | forget), 4 sku,
--       5 journal_cap, 6 attempt token (rollback only: the hold must carry it; '' = any)
--   release:  held or committed units go back; an unknown id is remembered as released so a
--             reservation arriving after its release stays released
--   commit:   held units move from reserved to allocated (the order is placed)
--   expire:   like release, but only for a held reservation whose TTL has passed
--   rollback: undo a hold of an attempt that did not finish (short on another SKU, lease run
--             out, owner died); only the attempt whose token the hold carries; the id is
--             forgotten, so retrying the reservation can succeed
--   forget:   drop the record of a hold that has ended (retention): released, expired or
--             fulfilled; a hold still held or committed (allocated, not shipped) is kept
-- Returns {outcome, state_after, hold body} with outcome one of
--   released | committed | expired | rolled_back | forgotten | kept | unknown | already_released
--   | already_committed | not_due | not_ours

local rid, now, action, sku = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local raw = redis.call('HGET', KEYS[2], rid)
if action == 'forget' then
  if not raw then return {'unknown', '', ''} end
  -- only a hold with nothing left on it goes: held units are still reserved, and a committed
  -- hold's allocated units still wait for their ship or cancel, which must find the hold
  local st = string.sub(raw, 1, 1)
  if st == 'H' or st == 'C' then return {'kept', st, ''} end
  redis.call('HDEL', KEYS[2], rid)
  return {'forgotten', string.sub(raw, 1, 1), ''}
end
if not raw then
  if action == 'release' then
    redis.call('HSET', KEYS[2], rid, 'R|0||')
  end
  return {'unknown', '', ''}
end
local state, exp, chan, body = string.match(raw, '^(%u)|(%d+)|([^|]*)|(.*)$')
if state == 'R' or state == 'X' or state == 'F' then
  return {'already_released', state, body}
end
if state == 'C' and action == 'commit' then return {'already_committed', state, body} end
if action == 'expire' and (state ~= 'H' or tonumber(exp) == 0 or tonumber(exp) > tonumber(now)) then
  return {'not_due', state, body}
end
if action == 'rollback' then
  if state ~= 'H' then return {'not_due', state, body} end
  local token = ARGV[6] or ''
  if token ~= '' and string.match(chan, '#([^#]*)$') ~= token then return {'not_ours', state, body} end
end

local new_state, outcome = 'R', 'released'
if action == 'commit' then new_state, outcome = 'C', 'committed'
elseif action == 'expire' then new_state, outcome = 'X', 'expired'
elseif action == 'rollback' then outcome = 'rolled_back' end

local new_body = {}
for loc, r, a in string.gmatch(body, '([^;=]+)=(%d+)/(%d+)') do
  r, a = tonumber(r), tonumber(a)
  local cur = redis.call('HGET', KEYS[1], loc) or '0,0,0,0,0,-1'
  local oh, rs, al, un, inc, ct = string.match(cur, '^(-?%d+),(%d+),(%d+),(%d+),(%d+),(-?%d+)$')
  rs, al = tonumber(rs), tonumber(al)
  local r_back = math.min(r, rs)
  rs = rs - r_back
  if action == 'commit' then
    al = al + r
    new_body[#new_body + 1] = loc .. '=0/' .. (a + r)
  else
    al = al - math.min(a, al)
    new_body[#new_body + 1] = loc .. '=' .. r .. '/' .. a
  end
  local after = table.concat({oh, rs, al, un, inc}, ',')
  redis.call('HSET', KEYS[1], loc, after .. ',' .. ct)
  redis.call('ZADD', KEYS[3], 'NX', now, sku .. '|' .. loc)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*',
    'e', action .. ':' .. rid, 't', action, 's', sku, 'l', loc, 'q', r + a, 'st', outcome,
    'b', string.match(cur, '^(.*),'), 'a', after)
end
if action == 'rollback' then
  redis.call('HDEL', KEYS[2], rid)
else
  redis.call('HSET', KEYS[2], rid, new_state .. '|' .. exp .. '|' .. chan .. '|' .. table.concat(new_body, ';'))
end
return {outcome, new_state, table.concat(new_body, ';')}
