-- reserve_group.lua: group commit for one hot SKU. Many one-SKU reservations, each placed
-- or refused all-or-nothing in arrival order, with each one's intent record (header),
-- hold and finish written in this one atomic call. Nothing is ever half done, so these
-- reservations need no lease: there is no moment where a crash leaves a pending intent.
-- A request this script cannot decide on its own (its id already has a header or a hold
-- here: a replay, a pending attempt, a conflict) is answered {'again'} with nothing
-- written, and the caller runs it through the per-SKU protocol (reserve.lua, intent.lua).
--
-- The ATS arithmetic is reserve.lua's (availability/domain/ats.py in Lua); each
-- request sees the buckets left by the requests before it in the batch.
--
-- KEYS[1] stock hash   {sku}:stock
-- KEYS[2] holds hash   {sku}:holds
-- KEYS[3] dirty zset   dirty
-- KEYS[4] journal      journal
-- KEYS[5] expiry zset  resv:expiry
-- KEYS[5 + i]          header hash resv:{ID} of request i (see docs/architecture.md,
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

local stock = {}
local function buckets(loc)
  local b = stock[loc]
  if not b then
    local raw = redis.call('HGET', KEYS[1], loc)
    b = {0, 0, 0, 0, 0, '-1'}
    if raw then
      local a, r, al, u, i, c = string.match(raw, '^(-?%d+),(%d+),(%d+),(%d+),(%d+),(-?%d+)$')
      b = {tonumber(a), tonumber(r), tonumber(al), tonumber(u), tonumber(i), c}
    end
    stock[loc] = b
  end
  return b
end
local function five(b) return table.concat({b[1], b[2], b[3], b[4], b[5]}, ',') end

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

-- candidate sets
local pos = 6
local sets = {}
for si = 1, tonumber(ARGV[5]) do
  local cands = {}
  local n = tonumber(ARGV[pos])
  pos = pos + 1
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
    cands[ci] = c
  end
  if n > 0 and cands[n].loc == '*' then
    local template = table.remove(cands)
    local named = {}
    for _, c in ipairs(cands) do named[c.loc] = true end
    local others = redis.call('HKEYS', KEYS[1])
    table.sort(others)
    for _, loc in ipairs(others) do
      if not named[loc] then
        cands[#cands + 1] = {loc = loc, safety = template.safety, buf_units = template.buf_units,
          buf_bp = template.buf_bp, threshold = template.threshold, own = template.own, prot = template.prot}
      end
    end
  end
  sets[si] = cands
end

-- one line against the buckets as they stand: its allocations, or nil and what is available
local function place(qty, cands)
  for _, c in ipairs(cands) do
    if channel_ats(c) >= qty then return {{c.loc, qty}} end
  end
  local allocs, remaining, available = {}, qty, 0
  for _, c in ipairs(cands) do
    local ats = channel_ats(c)
    available = available + ats
    if remaining > 0 and ats > 0 then
      local take = math.min(ats, remaining)
      allocs[#allocs + 1] = {c.loc, take}
      remaining = remaining - take
    end
  end
  if remaining > 0 then return nil, available end
  return allocs
end

local touched, touched_order = {}, {}
local replies = {}
local requests = cjson.decode(ARGV[pos])
for ri, request in ipairs(requests) do
  local rid, channel, expires, doc, lines = request[1], request[2], request[3], request[4], request[5]
  local n_lines = #lines
  local header = KEYS[5 + ri]
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
      replies[ri] = {'short', unpack(short)}
    else
      local result = {'held', n_lines}
      local held_at, order = {}, {}
      for _, allocs in ipairs(placed) do
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
          'b', before, 'a', after)
      end
      redis.call('HSET', KEYS[2], rid, 'H|' .. expires .. '|' .. channel .. '#' .. token .. '|' .. table.concat(body, ';'))
      redis.call('HSET', header, 'doc', doc, 'st', 'H', 'own', token)
      if tonumber(expires) > 0 then redis.call('ZADD', KEYS[5], expires, rid) end
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
