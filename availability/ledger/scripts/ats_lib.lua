-- ats_lib.lua: the channel ATS arithmetic and candidate parsing shared by reserve.lua and
-- reserve_group.lua (Ledger prepends it to both when loading them; not a script itself).
-- The arithmetic is availability/domain/ats.py's, in integer basis points.
--
-- STOCK_KEY must be set (the SKU's stock hash) before buckets() is called.

local STOCK_KEY = KEYS[1]
local stock = {}
-- a location's buckets {on_hand, reserved, allocated, unsellable, incoming, count_ms, raw},
-- read once per script call and then changed in place (tentatively, until written)
local function buckets(loc)
  local b = stock[loc]
  if not b then
    local raw = redis.call('HGET', STOCK_KEY, loc)
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

-- ARGV from pos: number of candidates, then per candidate: location, safety_units,
-- buffer_units, buffer_bp, threshold_units, own protection index (0 = none), number of
-- protections, then per protection (fill order): units, bp. A last candidate '*' stands
-- for every stock location not named before it, in name order, with its terms.
-- Returns the candidate list and the position after it.
local function read_candidates(pos)
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
    local others = redis.call('HKEYS', STOCK_KEY)
    table.sort(others)
    for _, loc in ipairs(others) do
      if not named[loc] then
        cands[#cands + 1] = {loc = loc, safety = template.safety, buf_units = template.buf_units,
          buf_bp = template.buf_bp, threshold = template.threshold, own = template.own, prot = template.prot}
      end
    end
  end
  return cands, pos
end

-- One line against the buckets as they stand: one location that can ship the whole line
-- beats a split shipment. Returns its allocations {{loc, qty}, ...}, or nil and what is
-- available. Changes nothing.
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

-- {'held', n_lines, [n_allocs, loc, qty, ...] per line} and the units per location, in
-- first-placed order, of a reservation's placed lines
local function held_reply(placed)
  local result = {'held', #placed}
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
  return result, held_at, order
end

-- ---- end of ats_lib.lua ----
