-- apply_event.lua: apply one canonical stock event to one (SKU, location), atomically
-- with its idempotency record, its audit-journal entry and the publisher's dirty mark.
-- The plain-Python twin of this script is availability/domain/ledger_model.py; the
-- property tests in tests/ledger/ drive both with the same events and compare.
--
-- KEYS[1] stock hash   {sku}:stock   field = location, value "on_hand,reserved,allocated,unsellable,incoming,count_ms"
-- KEYS[2] seen zset    {sku}:seen    member = event_id, score = applied-at ms (idempotency window)
-- KEYS[3] delta log    {sku}:dl:LOC  member = "event_id|on_hand delta", score = occurred ms
-- KEYS[4] holds hash   {sku}:holds   field = reference, value "STATE|expires_ms|channel|loc=res/alc;..."
-- KEYS[5] dirty zset   dirty         member = "sku|location", score = first-dirty ms (NX)
-- KEYS[6] journal      journal       stream of applied events (capped)
-- ARGV: 1 event_id, 2 type, 3 reason, 4 sku, 5 location, 6 quantity, 7 occurred_ms,
--       8 reference ('' if none), 9 now_ms, 10 seen_window_ms, 11 journal_cap,
--       12 delta_log_cap, 13 channel ('' if none)
-- Returns {status, on_hand, reserved, allocated, unsellable, incoming} where status is
--   applied | duplicate | stale_count | inside_count | released_before | recorded

local event_id = ARGV[1]
local now = tonumber(ARGV[9])
if redis.call('ZSCORE', KEYS[2], event_id) then
  return {'duplicate'}
end
redis.call('ZADD', KEYS[2], now, event_id)
-- Forget idempotency records older than the window; nothing is due most of the time.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[10]))

local etype, reason, sku, loc = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local q = tonumber(ARGV[6])
local at = tonumber(ARGV[7])
local ref = ARGV[8]

local oh, rs, al, un, inc, ct = 0, 0, 0, 0, 0, -1
local raw = redis.call('HGET', KEYS[1], loc)
if raw then
  local a, b, c, d, e, f = string.match(raw, '^(-?%d+),(%d+),(%d+),(%d+),(%d+),(-?%d+)$')
  oh, rs, al, un, inc, ct = tonumber(a), tonumber(b), tonumber(c), tonumber(d), tonumber(e), tonumber(f)
end
local before = table.concat({oh, rs, al, un, inc}, ',')

local status = 'applied'
local d_oh = 0

if etype == 'cycle_count' or etype == 'snapshot' then
  if ct >= 0 and at <= ct then
    status = 'stale_count'
  else
    -- The count is as of `at`: deltas that happened after it are not inside it.
    local later = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. at, '+inf')
    local after = 0
    for _, m in ipairs(later) do
      after = after + tonumber(string.match(m, '|(-?%d+)$'))
    end
    oh = q + after
    ct = at
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', at)
  end
elseif etype == 'pos_sale' or etype == 'transfer_out' then
  d_oh = -q
elseif etype == 'pos_return' or etype == 'pos_void' or etype == 'return' then
  d_oh = q
elseif etype == 'receipt' or etype == 'transfer_in' then
  d_oh = q
  if ref ~= '' then inc = inc - math.min(q, inc) end
elseif etype == 'purchase_order' then
  inc = inc + q
elseif etype == 'adjustment' then
  if reason == 'found' then d_oh = q
  elseif reason == 'lost' then d_oh = -q
  elseif reason == 'damaged' or reason == 'quality_hold' then un = un + q
  elseif reason == 'quality_release' then un = un - math.min(q, un)
  elseif reason == 'write_off' then d_oh = -q; un = un - math.min(q, un)
  end
elseif etype == 'pick' then
  status = 'recorded'  -- picked units are still on hand and already allocated
elseif etype == 'reserve' or etype == 'release' or etype == 'allocate' or etype == 'fulfil' or etype == 'ship' then
  -- Holds: per reference, what is reserved (res) and allocated (alc) at each location.
  -- (Defined here, not at the top: Lua builds these closures on every call.)
  local function parse_hold(value)
    local state, exp, chan, body = string.match(value, '^(%u)|(%d+)|([^|]*)|(.*)$')
    local lines, order = {}, {}
    for l, r, a in string.gmatch(body, '([^;=]+)=(%d+)/(%d+)') do
      lines[l] = {tonumber(r), tonumber(a)}
      order[#order + 1] = l
    end
    return {state = state, exp = exp, chan = chan, lines = lines, order = order}
  end
  local function hold_line(h, l)
    if not h.lines[l] then
      h.lines[l] = {0, 0}
      h.order[#h.order + 1] = l
    end
    return h.lines[l]
  end
  local function hold_empty(h)
    for _, l in ipairs(h.order) do
      local x = h.lines[l]
      if x[1] > 0 or x[2] > 0 then return false end
    end
    return true
  end
  local function save_hold(h)
    local parts = {}
    for _, l in ipairs(h.order) do
      local x = h.lines[l]
      if x[1] > 0 or x[2] > 0 then parts[#parts + 1] = l .. '=' .. x[1] .. '/' .. x[2] end
    end
    redis.call('HSET', KEYS[4], ref, h.state .. '|' .. h.exp .. '|' .. h.chan .. '|' .. table.concat(parts, ';'))
  end
  local hraw = nil
  if ref ~= '' then hraw = redis.call('HGET', KEYS[4], ref) end
  local h = nil
  if hraw then h = parse_hold(hraw) end
  if etype == 'fulfil' or etype == 'ship' then d_oh = -q end
  if h and h.state == 'R' then
    -- Released (cancelled) before this arrived: it stays released.
    if d_oh == 0 then status = 'released_before' end
  elseif etype == 'reserve' then
    if not h then h = {state = 'H', exp = '0', chan = ARGV[13], lines = {}, order = {}} end
    local x = hold_line(h, loc)
    x[1] = x[1] + q
    rs = rs + q
    save_hold(h)
  elseif etype == 'release' then
    if not h then
      redis.call('HSET', KEYS[4], ref, 'R|0||')
      status = 'released_before'
    else
      local x = hold_line(h, loc)
      local r = math.min(q, x[1])
      x[1] = x[1] - r
      rs = rs - r
      if hold_empty(h) then h.state = 'R' end
      save_hold(h)
    end
  elseif etype == 'allocate' then
    if not h then h = {state = 'C', exp = '0', chan = ARGV[13], lines = {}, order = {}} end
    local x = hold_line(h, loc)
    local r = math.min(q, x[1])
    x[1] = x[1] - r
    rs = rs - r
    x[2] = x[2] + q
    al = al + q
    h.state = 'C'
    save_hold(h)
  elseif h then -- fulfil / ship of a known order: allocated first, then what is still reserved
    local x = hold_line(h, loc)
    local a = math.min(q, x[2])
    x[2] = x[2] - a
    al = al - a
    local r = math.min(q - a, x[1])
    x[1] = x[1] - r
    rs = rs - r
    -- Shipped from elsewhere than it was held (a web order held at the default location,
    -- fulfilled from a store): the rest of the hold at other locations is settled too,
    -- so it does not stay reserved there forever.
    local rest = q - a - r
    for _, other in ipairs(h.order) do
      if rest <= 0 then break end
      local y = h.lines[other]
      if other ~= loc and (y[1] > 0 or y[2] > 0) then
        local oa = math.min(rest, y[2])
        local orr = math.min(rest - oa, y[1])
        y[2] = y[2] - oa
        y[1] = y[1] - orr
        rest = rest - oa - orr
        local praw = redis.call('HGET', KEYS[1], other) or '0,0,0,0,0,-1'
        local p1, p2, p3, p4, p5, p6 = string.match(praw, '^(-?%d+),(%d+),(%d+),(%d+),(%d+),(-?%d+)$')
        local prs = tonumber(p2) - math.min(orr, tonumber(p2))
        local pal = tonumber(p3) - math.min(oa, tonumber(p3))
        redis.call('HSET', KEYS[1], other, table.concat({p1, prs, pal, p4, p5, p6}, ','))
        redis.call('ZADD', KEYS[5], 'NX', now, sku .. '|' .. other)
      end
    end
    if hold_empty(h) then h.state = 'F' end
    save_hold(h)
  end
end

if d_oh ~= 0 then
  if ct >= 0 and at <= ct then
    -- Already inside the last count: only the non-on_hand effects above stand.
    status = 'inside_count'
  else
    oh = oh + d_oh
    redis.call('ZADD', KEYS[3], at, event_id .. '|' .. d_oh)
    redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[12]) + 1))
  end
end

local after_state = table.concat({oh, rs, al, un, inc}, ',')
redis.call('HSET', KEYS[1], loc, after_state .. ',' .. ct)
if after_state ~= before then
  redis.call('ZADD', KEYS[5], 'NX', now, sku .. '|' .. loc)
end
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[11], '*',
  'e', event_id, 't', etype, 's', sku, 'l', loc, 'q', q, 'st', status, 'b', before, 'a', after_state)
return {status, oh, rs, al, un, inc}
