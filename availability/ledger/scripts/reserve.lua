-- reserve.lua: hold every line of one reservation for one SKU, or none of them.
-- Each line is checked against the *channel* ATS at its candidate locations, so
-- safety stock, ring-fences of other channels, buffers and thresholds all hold.
-- The arithmetic is availability/domain/ats.py's (integer basis points); a property
-- test (tests/ledger/test_ats_agreement.py) proves the two agree.
--
-- KEYS[1] stock hash  {sku}:stock
-- KEYS[2] holds hash  {sku}:holds
-- KEYS[3] dirty zset  dirty
-- KEYS[4] journal     journal
-- ARGV: 1 reservation_id, 2 now_ms, 3 expires_ms (0 = no TTL), 4 channel, 5 sku,
--       6 journal_cap, 7 number of lines, 8 attempt token, 9 lease deadline (Redis TIME ms),
--       then for each line:
--         quantity, number of candidate locations (in the order to try), then per candidate:
--           location, safety_units, buffer_units, buffer_bp, threshold_units,
--           own protection index (1-based in the list below, 0 = none), number of protections,
--           then per protection (fill order): units, bp
--         A candidate named '*' stands for every location in the stock hash that is not
--         another candidate of the line (locations master data does not list yet), tried
--         in name order with the '*' candidate's terms.
-- The hold is tagged with the attempt token (third field "channel#token"), so a rollback
-- of one attempt (settle.lua) can never undo a later attempt's hold under the same id.
-- The reservation's intent record (intent.lua) is written before this runs; a hold is only
-- placed while the attempt's lease is live by Redis's own clock, so once recovery sees the
-- lease past, no hold of that attempt can still land behind its back.
-- Returns one of
--   {'held', n_lines, [n_allocs, loc, qty, ...] per line}
--   {'exists', STATE, hold body}          (the id already has a hold here; nothing written)
--   {'short', [line_index, quantity, available] ...}
--   {'late'}                              (the lease ran out; nothing written)

local rid = ARGV[1]
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[9]) then
  return {'late'}
end
local existing = redis.call('HGET', KEYS[2], rid)
if existing then
  local state, body = string.match(existing, '^(%u)|%d+|[^|]*|(.*)$')
  return {'exists', state, body}
end

local now, expires, channel, sku = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local stock = {}
local function buckets(loc)
  local b = stock[loc]
  if not b then
    local raw = redis.call('HGET', KEYS[1], loc)
    b = {0, 0, 0, 0, 0, '-1', raw or ''}
    if raw then
      local a, r, al, u, i, c = string.match(raw, '^(-?%d+),(%d+),(%d+),(%d+),(%d+),(-?%d+)$')
      b = {tonumber(a), tonumber(r), tonumber(al), tonumber(u), tonumber(i), c, raw}
    end
    stock[loc] = b
  end
  return b
end

-- floor(bp * units / 10000) and its ceiling, exact for the integers we hold
local function pct_floor(bp, units) return math.floor(bp * units / 10000) end
local function pct_ceil(bp, units) return -math.floor(-bp * units / 10000) end

local function channel_ats(c)
  local b = buckets(c.loc)
  local loc_ats = math.max(0, b[1] - b[2] - b[3] - b[4] - c.safety)
  local remaining, own = loc_ats, 0
  for i, p in ipairs(c.prot) do
    local wanted = p[1]
    if wanted == 0 then wanted = pct_floor(p[2], loc_ats) end
    local got = math.min(wanted, remaining)
    remaining = remaining - got
    if i == c.own then own = got end
  end
  local buffer = c.buf_units + pct_ceil(c.buf_bp, loc_ats)
  local after = math.max(0, own + remaining - buffer)
  if after < c.threshold then return 0 end
  return after
end

-- parse the lines
local pos = 10
local lines = {}
for li = 1, tonumber(ARGV[7]) do
  local line = {qty = tonumber(ARGV[pos]), cands = {}}
  local n = tonumber(ARGV[pos + 1])
  pos = pos + 2
  for ci = 1, n do
    local c = {loc = ARGV[pos], safety = tonumber(ARGV[pos + 1]), buf_units = tonumber(ARGV[pos + 2]),
               buf_bp = tonumber(ARGV[pos + 3]), threshold = tonumber(ARGV[pos + 4]),
               own = tonumber(ARGV[pos + 5]), prot = {}}
    local np = tonumber(ARGV[pos + 6])
    pos = pos + 7
    for pi = 1, np do
      c.prot[pi] = {tonumber(ARGV[pos]), tonumber(ARGV[pos + 1])}
      pos = pos + 2
    end
    line.cands[ci] = c
  end
  if n > 0 and line.cands[n].loc == '*' then
    local template = table.remove(line.cands)
    local named = {}
    for _, c in ipairs(line.cands) do named[c.loc] = true end
    local others = redis.call('HKEYS', KEYS[1])
    table.sort(others)
    for _, loc in ipairs(others) do
      if not named[loc] then
        line.cands[#line.cands + 1] = {loc = loc, safety = template.safety, buf_units = template.buf_units,
          buf_bp = template.buf_bp, threshold = template.threshold, own = template.own, prot = template.prot}
      end
    end
  end
  lines[li] = line
end

-- Decide every line against tentative buckets; write nothing unless all fit.
local short = {}
local placed = {}
for li, line in ipairs(lines) do
  local allocs = {}
  -- One location that can ship the whole line beats a split shipment.
  for _, c in ipairs(line.cands) do
    if channel_ats(c) >= line.qty then
      allocs = {{c.loc, line.qty}}
      break
    end
  end
  if #allocs == 0 then
    local remaining, available = line.qty, 0
    for _, c in ipairs(line.cands) do
      local ats = channel_ats(c)
      available = available + ats
      if remaining > 0 and ats > 0 then
        local take = math.min(ats, remaining)
        allocs[#allocs + 1] = {c.loc, take}
        remaining = remaining - take
      end
    end
    if remaining > 0 then
      short[#short + 1] = li
      short[#short + 1] = line.qty
      short[#short + 1] = available
      allocs = {}
    end
  end
  for _, a in ipairs(allocs) do
    local b = buckets(a[1])
    b[2] = b[2] + a[2]
  end
  placed[li] = allocs
end

if #short > 0 then
  return {'short', unpack(short)}
end

local result = {'held', #lines}
local held_at, order = {}, {}
for li, allocs in ipairs(placed) do
  result[#result + 1] = #allocs
  for _, a in ipairs(allocs) do
    result[#result + 1] = a[1]
    result[#result + 1] = a[2]
    if not held_at[a[1]] then
      held_at[a[1]] = 0
      order[#order + 1] = a[1]
    end
    held_at[a[1]] = held_at[a[1]] + a[2]
  end
end
local body = {}
for _, loc in ipairs(order) do
  local b = stock[loc]
  local after = table.concat({b[1], b[2], b[3], b[4], b[5]}, ',')
  redis.call('HSET', KEYS[1], loc, after .. ',' .. b[6])
  redis.call('ZADD', KEYS[3], 'NX', now, sku .. '|' .. loc)
  body[#body + 1] = loc .. '=' .. held_at[loc] .. '/0'
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*',
    'e', 'reserve:' .. rid, 't', 'reserve', 's', sku, 'l', loc, 'q', held_at[loc], 'st', 'held',
    'b', string.match(b[7], '^(.*),') or '0,0,0,0,0', 'a', after)
end
redis.call('HSET', KEYS[2], rid, 'H|' .. expires .. '|' .. channel .. '#' .. ARGV[8] .. '|' .. table.concat(body, ';'))
return result
