-- reserve.lua: hold every line of one reservation for one SKU, or none of them.
-- Each line is checked against the *channel* ATS at its candidate locations, so
-- safety stock, ring-fences of other channels, buffers and thresholds all hold.
-- The arithmetic is availability/domain/ats.py's (integer basis points, ats_lib.lua,
-- prepended when loaded); a property test (tests/ledger/test_properties.py) proves the two agree.
--
-- KEYS[1] stock hash  {pN}:SKU:stock (N: the SKU's partition, as every key here)
-- KEYS[2] holds hash  {sku}:holds
-- KEYS[3] dirty zset  {pN}:dirty
-- KEYS[4] journal     {pN}:journal (a hold per location, with its channel; a refused line as t=refuse)
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

-- parse the lines
local pos = 10
local lines = {}
for li = 1, tonumber(ARGV[7]) do
  local qty = tonumber(ARGV[pos])
  local cands
  cands, pos = read_candidates(pos + 1)
  lines[li] = {qty = qty, cands = cands}
end

-- Decide every line against tentative buckets; write nothing unless all fit.
local short = {}
local placed = {}
for li, line in ipairs(lines) do
  local allocs, available = place(line.qty, line.cands)
  if not allocs then
    short[#short + 1] = li
    short[#short + 1] = line.qty
    short[#short + 1] = available
    allocs = {}
  end
  for _, a in ipairs(allocs) do
    local b = buckets(a[1])
    b[2] = b[2] + a[2]
  end
  placed[li] = allocs
end

if #short > 0 then
  -- A refusal changes no bucket, but it is journaled (t=refuse, the line's quantity, its
  -- location when it names one or the channel has one, else '') so a backtest can ask
  -- whether other rules would have taken the order.
  for k = 1, #short, 3 do
    local cands = lines[short[k]].cands
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*',
      'e', 'refuse:' .. rid, 't', 'refuse', 's', sku, 'l', #cands == 1 and cands[1].loc or '', 'q', short[k + 1],
      'st', 'short', 'c', channel)
  end
  return {'short', unpack(short)}
end

local result, held_at, order = held_reply(placed)
local body = {}
for _, loc in ipairs(order) do
  local b = stock[loc]
  local after = table.concat({b[1], b[2], b[3], b[4], b[5]}, ',')
  redis.call('HSET', KEYS[1], loc, after .. ',' .. b[6])
  redis.call('ZADD', KEYS[3], 'NX', now, sku .. '|' .. loc)
  body[#body + 1] = loc .. '=' .. held_at[loc] .. '/0'
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*',
    'e', 'reserve:' .. rid, 't', 'reserve', 's', sku, 'l', loc, 'q', held_at[loc], 'st', 'held',
    'b', string.match(b[7], '^(.*),') or '0,0,0,0,0', 'a', after, 'c', channel)
end
redis.call('HSET', KEYS[2], rid, 'H|' .. expires .. '|' .. channel .. '#' .. ARGV[8] .. '|' .. table.concat(body, ';'))
return result
