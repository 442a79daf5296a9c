-- reserve_group.lua: group commit for one hot SKU. Many one-SKU reservations, each placed
-- or refused all-or-nothing in arrival order, with each one's intent record (header),
-- hold and finish written in this one atomic call. Nothing is ever half done, so these
-- reservations need no lease: there is no moment where a crash leaves a pending intent.
-- A request this script cannot decide on its own (its id already has a header or a hold
-- here: a replay, a pending attempt, a conflict) is answered {'again'} with nothing
-- written, and the caller runs it through the per-SKU protocol (reserve.lua, intent.lua).
--
-- The ATS arithmetic is reserve.lua's (ats_lib.lua, prepended when loaded); each
-- request sees the buckets left by the requests before it in the batch.
--
-- KEYS[1] stock hash   {pN}:SKU:stock
-- KEYS[2] holds hash   {pN}:SKU:holds
-- KEYS[3] dirty zset   {pN}:dirty
-- KEYS[4] journal      {pN}:journal (a hold per location, with its channel; a refused line as t=refuse)
-- KEYS[4 + e]          the e-th distinct expiry zset {pM}:resv:expiry of the batch (M: a
--                      request id's partition; named once however many requests share it)
-- KEYS[4 + E + i]      header hash {pM}:resv:ID of request i (see docs/architecture.md,
--                      "Group commit", on why these are named here and Redis Cluster)
-- ARGV: 1 now_ms, 2 sku, 3 journal_cap, 4 attempt token (shared by the batch; it fences
--       rollback per id, and ids are distinct), 5 E (number of expiry zsets), 6 number of
--       candidate sets, then per set:
--         number of candidates, then per candidate (as reserve.lua):
--           location, safety_units, buffer_units, buffer_bp, threshold_units,
--           own protection index (0 = none), number of protections, then per protection: units, bp
--         ('*' as the last candidate: every stock location not named before it, by name)
--       then the requests as one MessagePack array (one argument, so the client encodes one
--       string rather than a dozen per request, and cmsgpack reads it faster than cjson
--       would JSON, the header doc unescaped), each [reservation_id, channel, expires_ms as
--       a string ("0" = no TTL), header doc, [[quantity, candidate set index (1-based)], ...],
--       expiry zset index e (1-based)]
-- Returns one reply per request, in order:
--   {'held', n_lines, [n_allocs, loc, qty, ...] per line}
--   {'short', [line_index, quantity, available] ...}
--   {'again'}

local now, sku, cap, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local function five(b) return table.concat({b[1], b[2], b[3], b[4], b[5]}, ',') end

-- This script changes only a location's reserved count (b[2]), so the journal's before and
-- after strings share the rest: built once per location, not twice per reservation.
local around = {}
local function framed(loc, b)
  local f = around[loc]
  if not f then
    f = {b[1] .. ',', ',' .. b[3] .. ',' .. b[4] .. ',' .. b[5]}
    around[loc] = f
  end
  return f
end

-- HSET / ZADD of many fields in calls of at most this many arguments (unpack's stack limit;
-- a batch is at most AVAILABILITY_RESERVATION_GROUP_MAX requests, normally far below)
local CHUNK = 1000
local function call_chunked(command, key, args)
  for i = 1, #args, CHUNK do
    redis.call(command, key, unpack(args, i, math.min(i + CHUNK - 1, #args)))
  end
end

-- candidate sets (buckets, channel_ats, read_candidates, place, held_reply: ats_lib.lua)
local n_expiry = tonumber(ARGV[5])
local pos = 7
local sets = {}
for si = 1, tonumber(ARGV[6]) do
  sets[si], pos = read_candidates(pos)
end

local touched, touched_order = {}, {}
local replies = {}
-- the batch's holds (one HSET at the end) and TTL entries (one ZADD per expiry zset): a
-- later request of the batch with the same id still answers 'again', from its header,
-- which is written as each request is decided
local hold_fields, expiry_members = {}, {}
for e = 1, n_expiry do expiry_members[e] = {} end
local requests = cmsgpack.unpack(ARGV[pos])
-- which ids already have a hold on this SKU: one HMGET for the batch, not an HEXISTS each
-- (a hold this batch places is written at the end; a repeated id in the batch is caught
-- by its header, written as soon as the first is held)
local rids = {}
for ri, request in ipairs(requests) do rids[ri] = request[1] end
local had_hold = {}
for i = 1, #rids, CHUNK do
  local found = redis.call('HMGET', KEYS[2], unpack(rids, i, math.min(i + CHUNK - 1, #rids)))
  for k = 1, #found do had_hold[i + k - 1] = found[k] end
end
for ri, request in ipairs(requests) do
  local rid, channel, expires, doc, lines = request[1], request[2], request[3], request[4], request[5]
  local n_lines = #lines
  local header = KEYS[4 + n_expiry + ri]
  if had_hold[ri] or redis.call('EXISTS', header) == 1 then
    replies[ri] = {'again'}
  else
    -- decide every line against tentative buckets; undo them if one is short
    local short, placed = {}, {}
    for li = 1, n_lines do
      local qty, cands = lines[li][1], sets[lines[li][2]]
      local allocs, available = place(qty, cands)
      if allocs then
        for _, a in ipairs(allocs) do
          local b = buckets(a[1])
          b[2] = b[2] + a[2]
        end
        placed[li] = allocs
      else
        short[#short + 1] = li
        short[#short + 1] = qty
        short[#short + 1] = available
        placed[li] = {}
      end
    end
    if #short > 0 then
      for _, allocs in ipairs(placed) do
        for _, a in ipairs(allocs) do
          local b = buckets(a[1])
          b[2] = b[2] - a[2]
        end
      end
      -- journaled as reserve.lua journals a refusal (for backtests)
      for k = 1, #short, 3 do
        local cands = sets[lines[short[k]][2]]
        redis.call('XADD', KEYS[4], 'MAXLEN', '~', cap, '*',
          'e', 'refuse:' .. rid, 't', 'refuse', 's', sku, 'l', #cands == 1 and cands[1].loc or '',
          'q', short[k + 1], 'st', 'short', 'c', channel)
      end
      replies[ri] = {'short', unpack(short)}
    else
      local result, held_at, order = held_reply(placed)
      local body = {}
      for _, loc in ipairs(order) do
        local b = stock[loc]
        local f = framed(loc, b)
        local after = f[1] .. b[2] .. f[2]
        local before = f[1] .. (b[2] - held_at[loc]) .. f[2]
        body[#body + 1] = loc .. '=' .. held_at[loc] .. '/0'
        if not touched[loc] then
          touched[loc] = true
          touched_order[#touched_order + 1] = loc
        end
        redis.call('XADD', KEYS[4], 'MAXLEN', '~', cap, '*',
          'e', 'reserve:' .. rid, 't', 'reserve', 's', sku, 'l', loc, 'q', held_at[loc], 'st', 'held',
          'b', before, 'a', after, 'c', channel)
      end
      hold_fields[#hold_fields + 1] = rid
      hold_fields[#hold_fields + 1] = 'H|' .. expires .. '|' .. channel .. '#' .. token .. '|' .. table.concat(body, ';')
      redis.call('HSET', header, 'doc', doc, 'st', 'H', 'own', token)
      if tonumber(expires) > 0 then
        local members = expiry_members[request[6]]
        members[#members + 1] = expires
        members[#members + 1] = rid
      end
      replies[ri] = result
    end
  end
end

if #hold_fields > 0 then call_chunked('HSET', KEYS[2], hold_fields) end
for e = 1, n_expiry do
  if #expiry_members[e] > 0 then call_chunked('ZADD', KEYS[4 + e], expiry_members[e]) end
end
for _, loc in ipairs(touched_order) do
  local b = stock[loc]
  redis.call('HSET', KEYS[1], loc, five(b) .. ',' .. b[6])
  redis.call('ZADD', KEYS[3], 'NX', now, sku .. '|' .. loc)
end
return replies
