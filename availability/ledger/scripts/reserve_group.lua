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
-- KEYS[3 + 2i]         header hash {pM}:resv:ID of request i (M: the id's partition)
-- KEYS[4 + 2i]         expiry zset {pM}:resv:expiry of request i (see docs/architecture.md,
--                      "Group commit", on why these are named here and Redis Cluster)
-- ARGV: 1 now_ms, 2 sku, 3 journal_cap, 4 attempt token (shared by the batch; it fences
--       rollback per id, and ids are distinct), 5 number of candidate sets, then per set:
--         number of candidates, then per candidate (as reserve.lua):
--           location, safety_units, buffer_units, buffer_bp, threshold_units,
--           own protection index (0 = none), number of protections, then per protection: units, bp
--         ('*' as the last candidate: every stock location not named before it, by name)
--       then the requests as one JSON array (one argument, so the client encodes one string
--       rather than a dozen per request), each [reservation_id, channel, expires_ms as a
--       string ("0" = no TTL), header doc, [[quantity, candidate set index (1-based)], ...]]
-- Returns one reply per request, in order:
--   {'held', n_lines, [n_allocs, loc, qty, ...] per line}
--   {'short', [line_index, quantity, available] ...}
--   {'again'}

local now, sku, cap, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local function five(b) return table.concat({b[1], b[2], b[3], b[4], b[5]}, ',') end

-- candidate sets (buckets, channel_ats, read_candidates, place, held_reply: ats_lib.lua)
local pos = 6
local sets = {}
for si = 1, tonumber(ARGV[5]) do
  sets[si], pos = read_candidates(pos)
end

local touched, touched_order = {}, {}
local replies = {}
local requests = cjson.decode(ARGV[pos])
for ri, request in ipairs(requests) do
  local rid, channel, expires, doc, lines = request[1], request[2], request[3], request[4], request[5]
  local n_lines = #lines
  local header, expiry_key = KEYS[3 + 2 * ri], KEYS[4 + 2 * ri]
  if redis.call('EXISTS', header) == 1 or redis.call('HEXISTS', KEYS[2], rid) == 1 then
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
        local after = five(b)
        b[2] = b[2] - held_at[loc]
        local before = five(b)
        b[2] = b[2] + held_at[loc]
        body[#body + 1] = loc .. '=' .. held_at[loc] .. '/0'
        if not touched[loc] then
          touched[loc] = true
          touched_order[#touched_order + 1] = loc
        end
        redis.call('XADD', KEYS[4], 'MAXLEN', '~', cap, '*',
          'e', 'reserve:' .. rid, 't', 'reserve', 's', sku, 'l', loc, 'q', held_at[loc], 'st', 'held',
          'b', before, 'a', after, 'c', channel)
      end
      redis.call('HSET', KEYS[2], rid, 'H|' .. expires .. '|' .. channel .. '#' .. token .. '|' .. table.concat(body, ';'))
      redis.call('HSET', header, 'doc', doc, 'st', 'H', 'own', token)
      if tonumber(expires) > 0 then redis.call('ZADD', expiry_key, expires, rid) end
      replies[ri] = result
    end
  end
end

for _, loc in ipairs(touched_order) do
  local b = stock[loc]
  redis.call('HSET', KEYS[1], loc, five(b) .. ',' .. b[6])
  redis.call('ZADD', KEYS[3], 'NX', now, sku .. '|' .. loc)
end
return replies
