-- apply_lib.lua: `apply_one(C, KEYS, ks, kd, ARGV, o)`, one canonical stock event applied to
-- one SKU (prepended to apply_event.lua, one event a call, and apply_batch.lua, a
-- partition's batch a call). It returns the reply apply_event.lua returns, or
-- redis.error_reply(...) with nothing written.
--
-- The event's 13 arguments are ARGV[o + 1 .. o + 13] (apply_event.lua's ARGV 1..13); its
-- SKU's keys sit at KEYS[ks + offset] with the offsets of `C.at` (the two scripts lay them
-- out differently) and its delta log at KEYS[kd]; C is `apply_context`: what every event of
-- the call shares (clock, caps, bucket ids, partition keys), read and converted once a call.
-- Nothing is copied into per-event tables: the server's time per event is mostly Lua work
-- (allocations, number <-> string conversions, redis.call's argument and reply handling),
-- so the apply avoids what it can of each (docs/performance.md).

local ZERO = string.rep('\0', 8)
local CHUNK = 8  -- slots read per GETRANGE: a probe run rarely needs a second read
local RECORD = 11

local function fail(kind, detail)
  return redis.error_reply(kind .. ': ' .. detail)
end

-- What every event of a call shares, read once: now_ms, the newest bucket's expire-at ms,
-- the journal / delta log / oversell caps, hold grace and tombstone keep ms (as
-- apply_event.lua's ARGV 14..20 give them), the bucket ids (newest first), where a SKU's
-- keys sit relative to its first (`at`), and the partition keys (dirty, journal,
-- oversells, ended-holds index). `valid` false: every event answers invalid_argument.
local function apply_context(now, expires, journal_cap, dlog_cap, oversell_cap, grace, keep, ids, at,
                             dirty, journal, oversells, ended_index, valid)
  local C = {now = tonumber(now), expires = tonumber(expires), journal_cap = journal_cap,
             dlog_cap = tonumber(dlog_cap), oversell_cap = oversell_cap, grace = tonumber(grace),
             keep = tonumber(keep), ids = ids, nb = #ids, at = at, dirty = dirty, journal = journal,
             oversells = oversells, ended_index = ended_index}
  C.valid = valid and C.now ~= nil and C.grace ~= nil and C.keep ~= nil and C.nb >= 1
  C.oldest = tonumber(ids[#ids])
  return C
end

-- Linear probe for `digest` (first 4 bytes h0) in one table of `slots` 8-byte slots.
-- Returns 'dup', the index of the empty slot where the run ends, 'gone' (no such table:
-- it expired), or nil and a reason (the table is not what its meta says).
local function probe(key, slots, digest, h0)
  local s, seen = h0 % slots, 0
  while seen < slots do
    local n = math.min(CHUNK, slots - s, slots - seen)
    local block = redis.call('GETRANGE', key, s * 8, (s + n) * 8 - 1)
    if #block ~= n * 8 then
      if #block == 0 and redis.call('STRLEN', key) == 0 then return 'gone' end
      return nil, key .. ' is shorter than its meta says (' .. slots .. ' slots)'
    end
    for j = 0, n - 1 do
      local slot = string.sub(block, j * 8 + 1, j * 8 + 8)
      if slot == digest then return 'dup' end
      if slot == ZERO then return s + j end
    end
    seen = seen + n
    s = (s + n) % slots
  end
  return nil, key .. ' has no empty slot'
end

-- One location's stock value: on_hand, reserved, allocated, unsellable, incoming,
-- count_ms and whether it was stored (a missing one is zero, never counted); nil and the
-- raw value when it does not parse.
local function read_stock(key, l)
  local raw = redis.call('HGET', key, l)
  if not raw then return 0, 0, 0, 0, 0, -1, false end
  local a, b, c, d, e, f = string.match(raw, '^(-?%d+),(%d+),(%d+),(%d+),(%d+),(-?%d+)$')
  if not a then return nil, raw end
  return tonumber(a), tonumber(b), tonumber(c), tonumber(d), tonumber(e), tonumber(f), true
end

-- The five buckets as stored and journaled ("on_hand,reserved,allocated,unsellable,incoming").
-- string.format's %d, not table.concat or `..`: Lua formats a number for those with
-- sprintf's %.14g, several times the cost, and the values are whole numbers.
local function buckets_text(oh, rs, al, un, inc)
  return string.format('%d,%d,%d,%d,%d', oh, rs, al, un, inc)
end

-- Cutoffs of the last count (a count that saw some sources only up to an earlier time)
-- and the delta log's floor (deltas at or before it were trimmed by the cap).
local function parse_cuts(raw)
  local floor, body = string.match(raw, '^(%d+)|(.*)$')
  if not floor then return nil end
  local cuts = {}
  local used = #floor + 1
  for c, ms, sep in string.gmatch(body, '(%d+):(%d+)(,?)') do
    cuts[tonumber(c)] = tonumber(ms)
    used = used + #c + 1 + #ms + #sep
  end
  if used ~= #raw then return nil end
  return {floor = tonumber(floor), cuts = cuts}
end

-- The location's cutoffs field as stored (nil: none) and parsed ({floor 0, no cuts} when
-- none; false when it does not parse).
local function read_cuts(key, l)
  local raw = redis.call('HGET', key, l)
  if not raw then return nil, {floor = 0, cuts = {}} end
  return raw, parse_cuts(raw) or false
end

-- Holds: per reference, what is reserved (res) and allocated (alc) at each location.
local function parse_hold(value)
  local state, exp, hchan, body = string.match(value, '^(%u)|(%d+)|([^|]*)|(.*)$')
  if not state then return nil end
  local lines, order, used = {}, {}, 0
  for l, r, a, sep in string.gmatch(body, '([^;=|]+)=(%d+)/(%d+)(;?)') do
    lines[l] = {tonumber(r), tonumber(a)}
    order[#order + 1] = l
    used = used + #l + #r + #a + 2 + #sep
  end
  if used ~= #body then return nil end
  return {state = state, exp = exp, chan = hchan, lines = lines, order = order}
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

local function encode_hold(h)
  local parts = {}
  for _, l in ipairs(h.order) do
    local x = h.lines[l]
    if x[1] > 0 or x[2] > 0 then parts[#parts + 1] = string.format('%s=%d/%d', l, x[1], x[2]) end
  end
  return h.state .. '|' .. h.exp .. '|' .. h.chan .. '|' .. table.concat(parts, ';')
end

-- One journal entry (the order's channel c and reference r when the event names them, so
-- a backtest, availability/planning/, can tell whose order took the units and follow that
-- order's life). Spelled out per case rather than unpack()ing a table built per entry.
local function journal(key, cap, event_id, etype, sku, l, q, st, b, a, chan, ref)
  if chan ~= '' then
    if ref ~= '' then
      return redis.call('XADD', key, 'MAXLEN', '~', cap, '*',
        'e', event_id, 't', etype, 's', sku, 'l', l, 'q', q, 'st', st, 'b', b, 'a', a, 'c', chan, 'r', ref)
    end
    return redis.call('XADD', key, 'MAXLEN', '~', cap, '*',
      'e', event_id, 't', etype, 's', sku, 'l', l, 'q', q, 'st', st, 'b', b, 'a', a, 'c', chan)
  elseif ref ~= '' then
    return redis.call('XADD', key, 'MAXLEN', '~', cap, '*',
      'e', event_id, 't', etype, 's', sku, 'l', l, 'q', q, 'st', st, 'b', b, 'a', a, 'r', ref)
  end
  return redis.call('XADD', key, 'MAXLEN', '~', cap, '*',
    'e', event_id, 't', etype, 's', sku, 'l', l, 'q', q, 'st', st, 'b', b, 'a', a)
end

local function apply_one(C, KEYS, ks, kd, ARGV, o)
  local event_id, digest, etype, reason, sku, loc, q, at, ref, chan, source, code, cutoffs =
    unpack(ARGV, o + 1, o + 13)
  q, at, code = tonumber(q), tonumber(at), tonumber(code)
  local now, grace, keep, nb, K = C.now, C.grace, C.keep, C.nb, C.at
  local stock_key, idm_key, dlog_key, holds_key = KEYS[ks], KEYS[ks + K.idm], KEYS[kd], KEYS[ks + K.holds]
  local cuts_key, ended_key, idb = KEYS[ks + K.cuts], KEYS[ks + K.ended], ks + K.idb

  if not q or q < 0 or not at or not code or not C.valid or #digest ~= 8 then
    return fail('invalid_argument', 'quantity, occurred_ms, now_ms, source code, digest, grace or bucket list')
  end

  -- ---------------------------------------------------------------------------------------
  -- Phase 1: idempotency lookup (reads only)
  -- ---------------------------------------------------------------------------------------
  local h0 = struct.unpack('>I4', digest)
  local ids = C.ids
  local metas = redis.call('HMGET', idm_key, unpack(ids))
  -- The newest bucket's table as found (slots 0: none yet) and the empty slot the lookup
  -- ended on there, which is where the record goes unless the table has to grow.
  local new_slots, new_count, new_slot = 0, 0, 0
  for i = 1, nb do
    local meta = metas[i]
    if meta then
      local slots, count = string.match(meta, '^(%d+),(%d+)$')
      slots, count = tonumber(slots), tonumber(count)
      local key = KEYS[idb + i]
      if not slots or slots < 1 then return fail('corrupt_idempotency', key .. ' meta ' .. meta) end
      local found, why = probe(key, slots, digest, h0)
      if found == 'dup' then return {'duplicate'} end
      if found == nil then return fail('corrupt_idempotency', why) end
      -- 'gone': the table expired (its meta field outlives it until the SKU's next new bucket)
      if i == 1 and found ~= 'gone' then new_slots, new_count, new_slot = slots, count, found end
    end
  end

  -- ---------------------------------------------------------------------------------------
  -- Phase 1: read and check the state the event touches, compute the new state (no writes)
  -- ---------------------------------------------------------------------------------------
  local oh, rs, al, un, inc, ct = read_stock(stock_key, loc)
  if not oh then return fail('corrupt_stock', sku .. '|' .. loc .. ' = ' .. tostring(rs)) end
  local was = oh - rs - al - un
  local before = buckets_text(oh, rs, al, un, inc)

  -- The count cutoffs are read only when needed (counts, and deltas at or before the last
  -- count): most events happen after the last count and need neither.
  -- last: nil not read yet, false does not parse, else parse_cuts' table.
  local cuts_raw, last = nil, nil
  local function corrupt_cuts()
    return fail('corrupt_delta_log', cuts_key .. ' ' .. loc .. ' = ' .. tostring(cuts_raw))
  end

  local status = 'applied'
  local d_oh = 0
  local log_write = nil       -- nil: untouched; 'append': add this event's record; else the new log
  local cuts_write = nil      -- nil: untouched; '0|': delete the field; else the new value
  local others = nil          -- other locations whose buckets a cross-location ship settles
  local hold_write = nil      -- new hold value to store under `ref`
  local hold_due = nil        -- the hold has ended: it may be removed after this ms

  if etype == 'cycle_count' or etype == 'snapshot' then
    local cut, cut_field, lowest = {}, {}, at
    for c, ms in string.gmatch(cutoffs, '(%d+):(%d+)') do
      c, ms = tonumber(c), math.min(tonumber(ms), at)
      cut[c] = ms
      if ms < at then cut_field[#cut_field + 1] = c .. ':' .. ms end
      lowest = math.min(lowest, ms)
    end
    cuts_raw, last = read_cuts(cuts_key, loc)
    if not last then return corrupt_cuts() end
    if ct >= 0 and at <= ct then
      status = 'stale_count'
    elseif lowest < last.floor then
      -- Deltas after the count's cutoff were trimmed from the log (cap): it cannot be
      -- brought forward exactly, so it is refused rather than guessed.
      status = 'count_too_old'
    else
      local raw = redis.call('GET', dlog_key)
      if raw and #raw % RECORD ~= 0 then
        return fail('corrupt_delta_log', dlog_key .. ' is ' .. #raw .. ' bytes')
      end
      -- The count is as of `at` (for a lagging source, as of its cutoff): deltas after that
      -- are not inside it, so they stay on top of it and stay in the log.
      local after, kept = 0, {}
      if raw then
        for p = 1, #raw, RECORD do
          local t, d, c = struct.unpack('>i6i4B', raw, p)
          if t > (cut[c] or at) then
            after = after + d
            kept[#kept + 1] = string.sub(raw, p, p + RECORD - 1)
          end
        end
      end
      oh = q + after
      ct = at
      log_write = table.concat(kept)
      -- Everything at or before the floor is gone from the log and inside this count now.
      cuts_write = '0|' .. table.concat(cut_field, ',')
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
    else return fail('invalid_argument', 'adjustment reason ' .. reason)
    end
  elseif etype == 'pick' then
    status = 'recorded'  -- picked units are still on hand and already allocated
  elseif etype == 'reserve' or etype == 'release' or etype == 'allocate' or etype == 'fulfil' or etype == 'ship' then
    local hraw = nil
    if ref ~= '' then hraw = redis.call('HGET', holds_key, ref) end
    local h = nil
    if hraw then
      h = parse_hold(hraw)
      if not h then return fail('corrupt_hold', sku .. ' ' .. ref .. ' = ' .. hraw) end
    end
    if etype == 'fulfil' or etype == 'ship' then d_oh = -q end
    if h and h.state == 'R' then
      -- Released (cancelled) before this arrived: it stays released.
      if d_oh == 0 then status = 'released_before' end
    elseif etype == 'reserve' then
      if not h then h = {state = 'H', exp = '0', chan = chan, lines = {}, order = {}} end
      local x = hold_line(h, loc)
      x[1] = x[1] + q
      rs = rs + q
      hold_write = encode_hold(h)
    elseif etype == 'release' then
      if not h then
        hold_write = 'R|0||'
        status = 'released_before'
        hold_due = now + keep
      else
        local x = hold_line(h, loc)
        local r = math.min(q, x[1])
        x[1] = x[1] - r
        rs = rs - r
        if hold_empty(h) then h.state = 'R'; hold_due = now + grace end
        hold_write = encode_hold(h)
      end
    elseif etype == 'allocate' then
      if not h then h = {state = 'C', exp = '0', chan = chan, lines = {}, order = {}} end
      local x = hold_line(h, loc)
      local r = math.min(q, x[1])
      x[1] = x[1] - r
      rs = rs - r
      x[2] = x[2] + q
      al = al + q
      h.state = 'C'
      hold_write = encode_hold(h)
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
      -- so it does not stay reserved there forever. Those buckets change, so each gets its
      -- own journal entry and dirty mark below.
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
          local p1, p2, p3, p4, p5, p6 = read_stock(stock_key, other)
          if not p1 then return fail('corrupt_stock', sku .. '|' .. other .. ' = ' .. tostring(p2)) end
          local ob = buckets_text(p1, p2, p3, p4, p5)
          p2 = p2 - math.min(orr, p2)
          p3 = p3 - math.min(oa, p3)
          others = others or {}
          others[#others + 1] = {other, ob, buckets_text(p1, p2, p3, p4, p5), p6, oa + orr}
        end
      end
      if hold_empty(h) then h.state = 'F'; hold_due = now + grace end
      hold_write = encode_hold(h)
    end
  else
    return fail('invalid_argument', 'event type ' .. etype)
  end

  if d_oh ~= 0 then
    if ct >= 0 and at <= ct then
      if last == nil then cuts_raw, last = read_cuts(cuts_key, loc) end
      if not last then return corrupt_cuts() end
    end
    -- Already inside the last count (cuts read above): a delta of this source at or
    -- before the count's time and this source's cutoff.
    local cut = ct >= 0 and at <= ct and last.cuts[code]
    if ct >= 0 and at <= ct and (cut == nil or at <= cut) then
      -- Already inside the last count: only the non-on_hand effects above stand.
      status = 'inside_count'
    else
      oh = oh + d_oh
      log_write = 'append'
    end
  end

  -- Oversell: a channel sold (or an order took) more than the location had to sell.
  -- Units short = how much deeper below zero this event pushed what was available.
  local short = 0
  if etype == 'reserve' or etype == 'allocate' or etype == 'pos_sale' or etype == 'fulfil' or etype == 'ship' then
    local now_avail = oh - rs - al - un
    short = math.max(0, -now_avail) - math.max(0, -was)
    if short < 0 then short = 0 end
  end

  -- ---------------------------------------------------------------------------------------
  -- Phase 2: writes (nothing below can fail on a value read above)
  -- ---------------------------------------------------------------------------------------

  -- Idempotency record in the newest bucket's table (grown by doubling at 3/4 full).
  local idkey, idfield = KEYS[idb + 1], ids[1]
  local meta_new = false
  local slots, count, slot_at = new_slots, new_count, new_slot
  if slots == 0 then
    slots, count = 8, 0
    -- A new table is written with its first record in place (the empty slot a probe of
    -- an empty table finds: h0's own), one SET rather than SET, GETRANGE and SETRANGE.
    -- Its expiry is relative to the caller's clock (now_ms), so a caller's stamp decides,
    -- not Redis's.
    local s0 = h0 % slots
    redis.call('SET', idkey, string.rep(ZERO, s0) .. digest .. string.rep(ZERO, slots - 1 - s0),
               'PX', math.max(1, C.expires - now))
    -- The meta lives as long as the newest table, which only changes with a new bucket.
    -- PEXPIRE answers 0 when there is no meta yet (a SKU's first bucket): then there are
    -- no expired buckets' fields to forget either, and no HKEYS to read them; the meta's
    -- expiry is set once the HSET below has made it (else a SKU never seen again would
    -- keep its meta for ever).
    meta_new = redis.call('PEXPIRE', idm_key, math.max(1, C.expires - now)) == 0
    if not meta_new then
      -- a new bucket: forget the meta of buckets that have expired
      local fields = redis.call('HKEYS', idm_key)
      local oldest = C.oldest
      for _, f in ipairs(fields) do
        if tonumber(f) and tonumber(f) < oldest then redis.call('HDEL', idm_key, f) end
      end
    end
  else
    if (count + 1) * 4 > slots * 3 then
      local raw = redis.call('GET', idkey)
      local grown = slots * 2
      local table_ = {}
      for s = 0, grown - 1 do table_[s] = ZERO end
      for p = 1, #raw, 8 do
        local d = string.sub(raw, p, p + 7)
        if d ~= ZERO then
          local s = struct.unpack('>I4', d) % grown
          while table_[s] ~= ZERO do s = (s + 1) % grown end
          table_[s] = d
        end
      end
      local parts = {}
      for s = 0, grown - 1 do parts[s + 1] = table_[s] end
      redis.call('SET', idkey, table.concat(parts), 'KEEPTTL')
      slots = grown
      slot_at = probe(idkey, slots, digest, h0)  -- a rebuilt table: at most 3/4 full, well formed
    end
    redis.call('SETRANGE', idkey, slot_at * 8, digest)
  end
  redis.call('HSET', idm_key, idfield, string.format('%d,%d', slots, count + 1))
  if meta_new then redis.call('PEXPIRE', idm_key, math.max(1, C.expires - now)) end

  if hold_write then redis.call('HSET', holds_key, ref, hold_write) end
  if hold_due then
    -- Retention: an ended hold is listed with the time it may go; the sweep removes it then
    -- (forget_holds.lua), unless it holds units again by that time.
    redis.call('ZADD', ended_key, hold_due, ref)
    redis.call('ZADD', C.ended_index, 'LT', hold_due, sku)
  end

  if log_write == 'append' then
    local len = redis.call('APPEND', dlog_key, struct.pack('>i6i4B', at, d_oh, code))
    -- Cap: when full, the oldest half is trimmed and the floor moves up to the newest
    -- trimmed time (a count older than the floor can no longer be brought forward, and is
    -- refused as count_too_old). A log or cutoff that does not parse is left for the next
    -- count to report (it validates both before using them).
    if len % RECORD == 0 and len / RECORD > C.dlog_cap then
      if last == nil then cuts_raw, last = read_cuts(cuts_key, loc) end
    end
    if len % RECORD == 0 and len / RECORD > C.dlog_cap and last then
      local raw = redis.call('GET', dlog_key)
      local times = {}
      for p = 1, #raw, RECORD do times[#times + 1] = (struct.unpack('>i6', raw, p)) end
      table.sort(times)
      local floor = times[math.max(1, math.floor(#times / 2))]
      local kept = {}
      for p = 1, #raw, RECORD do
        if (struct.unpack('>i6', raw, p)) > floor then kept[#kept + 1] = string.sub(raw, p, p + RECORD - 1) end
      end
      if #kept > 0 then redis.call('SET', dlog_key, table.concat(kept)) else redis.call('DEL', dlog_key) end
      local body = cuts_raw and string.match(cuts_raw, '^%d+|(.*)$') or ''
      cuts_write = math.max(floor, last.floor) .. '|' .. body
    end
  elseif log_write then
    if #log_write > 0 then redis.call('SET', dlog_key, log_write) else redis.call('DEL', dlog_key) end
  end
  if cuts_write then
    if cuts_write ~= '0|' then
      redis.call('HSET', cuts_key, loc, cuts_write)
    elseif cuts_raw then
      redis.call('HDEL', cuts_key, loc)
    end
  end

  local cap = C.journal_cap
  local after_state = buckets_text(oh, rs, al, un, inc)
  redis.call('HSET', stock_key, loc, string.format('%s,%d', after_state, ct))
  if after_state ~= before then
    redis.call('ZADD', C.dirty, 'NX', now, sku .. '|' .. loc)
  end
  journal(C.journal, cap, event_id, etype, sku, loc, q, status, before, after_state, chan, ref)
  if others then
    for _, x in ipairs(others) do
      redis.call('HSET', stock_key, x[1], string.format('%s,%d', x[3], x[4]))
      if x[3] ~= x[2] then redis.call('ZADD', C.dirty, 'NX', now, sku .. '|' .. x[1]) end
      journal(C.journal, cap, event_id, etype, sku, x[1], x[5], 'settled_elsewhere', x[2], x[3], chan, ref)
    end
  end
  if short > 0 then
    redis.call('XADD', C.oversells, 'MAXLEN', '~', C.oversell_cap, '*',
      'e', event_id, 'o', ref, 's', sku, 'l', loc, 'u', short, 't', etype, 'src', source, 'c', chan,
      'at', now, 'a', after_state)
  end
  return {status, oh, rs, al, un, inc, short}
end
