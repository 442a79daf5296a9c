-- apply_lib.lua: `apply_one(KEYS, ARGV)`, one canonical stock event applied to one SKU
-- (prepended to apply_event.lua, one event a call, and apply_batch.lua, a partition's batch
-- a call). It takes the KEYS and ARGV apply_event.lua documents, as tables, and returns the
-- reply apply_event.lua returns, or redis.error_reply(...) with nothing written.

local function apply_one(KEYS, ARGV)
  local event_id, digest, etype, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
  local sku, loc, ref, chan, source = ARGV[5], ARGV[6], ARGV[9], ARGV[10], ARGV[11]
  local q, at, code, now = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[12]), tonumber(ARGV[14])
  local grace, keep = tonumber(ARGV[19]), tonumber(ARGV[20])
  local nb = #KEYS - 10

  local function fail(kind, detail)
    return redis.error_reply(kind .. ': ' .. detail)
  end

  if not q or q < 0 or not at or not now or not code or not grace or not keep or #digest ~= 8 or nb < 1
      or #ARGV ~= 20 + nb then
    return fail('invalid_argument', 'quantity, occurred_ms, now_ms, source code, digest, grace or bucket list')
  end

  -- ---------------------------------------------------------------------------------------
  -- Phase 1: idempotency lookup (reads only)
  -- ---------------------------------------------------------------------------------------
  local ZERO = string.rep('\0', 8)
  local h0 = struct.unpack('>I4', digest)
  local CHUNK = 8  -- slots read per GETRANGE: a probe run rarely needs a second read

  -- Linear probe for the digest in one table of `slots` 8-byte slots. Returns 'dup', the
  -- index of the empty slot where the run ends, 'gone' (no such table: it expired), or
  -- nil and a reason (the table is not what its meta says).
  local function probe(key, slots)
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

  local metas = redis.call('HMGET', KEYS[2], unpack(ARGV, 21, 20 + nb))
  -- The newest bucket's table as found (slots 0: none yet) and the empty slot the lookup
  -- ended on there, which is where the record goes unless the table has to grow.
  local new_slots, new_count, new_slot = 0, 0, 0
  for i = 1, nb do
    local meta = metas[i]
    if meta then
      local slots, count = string.match(meta, '^(%d+),(%d+)$')
      slots, count = tonumber(slots), tonumber(count)
      local key = KEYS[10 + i]
      if not slots or slots < 1 then return fail('corrupt_idempotency', key .. ' meta ' .. meta) end
      local found, why = probe(key, slots)
      if found == 'dup' then return {'duplicate'} end
      if found == nil then return fail('corrupt_idempotency', why) end
      -- 'gone': the table expired (its meta field outlives it until the SKU's next new bucket)
      if i == 1 and found ~= 'gone' then new_slots, new_count, new_slot = slots, count, found end
    end
  end

  -- ---------------------------------------------------------------------------------------
  -- Phase 1: read and check the state the event touches, compute the new state (no writes)
  -- ---------------------------------------------------------------------------------------
  local function parse_stock(l)
    local raw = redis.call('HGET', KEYS[1], l)
    if not raw then return {0, 0, 0, 0, 0, -1}, false end
    local a, b, c, d, e, f = string.match(raw, '^(-?%d+),(%d+),(%d+),(%d+),(%d+),(-?%d+)$')
    if not a then return nil, raw end
    return {tonumber(a), tonumber(b), tonumber(c), tonumber(d), tonumber(e), tonumber(f)}, true
  end

  local cur, found = parse_stock(loc)
  if not cur then return fail('corrupt_stock', sku .. '|' .. loc .. ' = ' .. tostring(found)) end
  local oh, rs, al, un, inc, ct = cur[1], cur[2], cur[3], cur[4], cur[5], cur[6]
  local before = table.concat({oh, rs, al, un, inc}, ',')

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
  -- Read only when needed (counts, and deltas at or before the last count): most events
  -- happen after the last count and need neither.
  local cuts_raw, last = nil, nil
  local function load_cuts()
    if last then return true end
    cuts_raw = redis.call('HGET', KEYS[8], loc)
    last = {floor = 0, cuts = {}}
    if cuts_raw then
      last = parse_cuts(cuts_raw)
      if not last then return false end
    end
    return true
  end
  local function corrupt_cuts()
    return fail('corrupt_delta_log', KEYS[8] .. ' ' .. loc .. ' = ' .. tostring(cuts_raw))
  end
  -- Is a delta of source `c` at `t` already inside the last count? (cuts loaded)
  local function inside_last_count(t, c)
    if ct < 0 or t > ct then return false end
    local cut = last.cuts[c]
    return cut == nil or t <= cut
  end

  local RECORD = 11
  local status = 'applied'
  local d_oh = 0
  local log_write = nil       -- nil: untouched; 'append': add this event's record; else the new log
  local cuts_write = nil      -- nil: untouched; '0|': delete the field; else the new value
  local others = {}           -- other locations whose buckets a cross-location ship settles
  local hold_write = nil      -- new hold value to store under `ref`
  local hold_due = nil        -- the hold has ended: it may be removed after this ms

  if etype == 'cycle_count' or etype == 'snapshot' then
    local cut, cut_field, lowest = {}, {}, at
    for c, ms in string.gmatch(ARGV[13], '(%d+):(%d+)') do
      c, ms = tonumber(c), math.min(tonumber(ms), at)
      cut[c] = ms
      if ms < at then cut_field[#cut_field + 1] = c .. ':' .. ms end
      lowest = math.min(lowest, ms)
    end
    if not load_cuts() then return corrupt_cuts() end
    if ct >= 0 and at <= ct then
      status = 'stale_count'
    elseif lowest < last.floor then
      -- Deltas after the count's cutoff were trimmed from the log (cap): it cannot be
      -- brought forward exactly, so it is refused rather than guessed.
      status = 'count_too_old'
    else
      local raw = redis.call('GET', KEYS[3])
      if raw and #raw % RECORD ~= 0 then
        return fail('corrupt_delta_log', KEYS[3] .. ' is ' .. #raw .. ' bytes')
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
    -- Holds: per reference, what is reserved (res) and allocated (alc) at each location.
    -- (Defined here, not at the top: Lua builds these closures on every call.)
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
        if x[1] > 0 or x[2] > 0 then parts[#parts + 1] = l .. '=' .. x[1] .. '/' .. x[2] end
      end
      return h.state .. '|' .. h.exp .. '|' .. h.chan .. '|' .. table.concat(parts, ';')
    end
    local hraw = nil
    if ref ~= '' then hraw = redis.call('HGET', KEYS[4], ref) end
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
          local p, praw = parse_stock(other)
          if not p then return fail('corrupt_stock', sku .. '|' .. other .. ' = ' .. tostring(praw)) end
          local ob = table.concat({p[1], p[2], p[3], p[4], p[5]}, ',')
          p[2] = p[2] - math.min(orr, p[2])
          p[3] = p[3] - math.min(oa, p[3])
          others[#others + 1] = {other, ob, p, oa + orr}
        end
      end
      if hold_empty(h) then h.state = 'F'; hold_due = now + grace end
      hold_write = encode_hold(h)
    end
  else
    return fail('invalid_argument', 'event type ' .. etype)
  end

  if d_oh ~= 0 then
    if ct >= 0 and at <= ct and not load_cuts() then return corrupt_cuts() end
    if inside_last_count(at, code) then
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
    local was = cur[1] - cur[2] - cur[3] - cur[4]
    local now_avail = oh - rs - al - un
    short = math.max(0, -now_avail) - math.max(0, -was)
    if short < 0 then short = 0 end
  end

  -- ---------------------------------------------------------------------------------------
  -- Phase 2: writes (nothing below can fail on a value read above)
  -- ---------------------------------------------------------------------------------------

  -- Idempotency record in the newest bucket's table (grown by doubling at 3/4 full).
  local idkey, idfield = KEYS[11], ARGV[21]
  local slots, count, slot_at = new_slots, new_count, new_slot
  if slots == 0 then
    slots, count = 8, 0
    -- relative to the caller's clock (now_ms), so a caller's stamp decides, not Redis's
    redis.call('SET', idkey, string.rep('\0', slots * 8), 'PX', math.max(1, tonumber(ARGV[15]) - now))
    -- a new bucket: forget the meta of buckets that have expired
    local fields = redis.call('HKEYS', KEYS[2])
    local oldest = tonumber(ARGV[20 + nb])
    for _, f in ipairs(fields) do
      if tonumber(f) and tonumber(f) < oldest then redis.call('HDEL', KEYS[2], f) end
    end
    -- the meta lives as long as the newest table, which only changes with a new bucket
    redis.call('PEXPIRE', KEYS[2], math.max(1, tonumber(ARGV[15]) - now))
    slot_at = -1
  elseif (count + 1) * 4 > slots * 3 then
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
    slot_at = -1
  end
  if slot_at < 0 then
    slot_at = probe(idkey, slots)  -- a fresh or rebuilt table: at most 3/4 full, well formed
  end
  redis.call('SETRANGE', idkey, slot_at * 8, digest)
  redis.call('HSET', KEYS[2], idfield, slots .. ',' .. (count + 1))

  if hold_write then redis.call('HSET', KEYS[4], ref, hold_write) end
  if hold_due then
    -- Retention: an ended hold is listed with the time it may go; the sweep removes it then
    -- (forget_holds.lua), unless it holds units again by that time.
    redis.call('ZADD', KEYS[9], hold_due, ref)
    redis.call('ZADD', KEYS[10], 'LT', hold_due, sku)
  end

  if log_write == 'append' then
    local len = redis.call('APPEND', KEYS[3], struct.pack('>i6i4B', at, d_oh, code))
    -- Cap: when full, the oldest half is trimmed and the floor moves up to the newest
    -- trimmed time (a count older than the floor can no longer be brought forward, and is
    -- refused as count_too_old). A log or cutoff that does not parse is left for the next
    -- count to report (it validates both before using them).
    if len % RECORD == 0 and len / RECORD > tonumber(ARGV[17]) and load_cuts() then
      local raw = redis.call('GET', KEYS[3])
      local times = {}
      for p = 1, #raw, RECORD do times[#times + 1] = (struct.unpack('>i6', raw, p)) end
      table.sort(times)
      local floor = times[math.max(1, math.floor(#times / 2))]
      local kept = {}
      for p = 1, #raw, RECORD do
        if (struct.unpack('>i6', raw, p)) > floor then kept[#kept + 1] = string.sub(raw, p, p + RECORD - 1) end
      end
      if #kept > 0 then redis.call('SET', KEYS[3], table.concat(kept)) else redis.call('DEL', KEYS[3]) end
      local body = cuts_raw and string.match(cuts_raw, '^%d+|(.*)$') or ''
      cuts_write = math.max(floor, last.floor) .. '|' .. body
    end
  elseif log_write then
    if #log_write > 0 then redis.call('SET', KEYS[3], log_write) else redis.call('DEL', KEYS[3]) end
  end
  if cuts_write then
    if cuts_write ~= '0|' then
      redis.call('HSET', KEYS[8], loc, cuts_write)
    elseif cuts_raw then
      redis.call('HDEL', KEYS[8], loc)
    end
  end

  local cap = ARGV[16]
  local after_state = table.concat({oh, rs, al, un, inc}, ',')
  redis.call('HSET', KEYS[1], loc, after_state .. ',' .. ct)
  if after_state ~= before then
    redis.call('ZADD', KEYS[5], 'NX', now, sku .. '|' .. loc)
  end
  -- The order's channel (c) and reference (r), when the event names them, let a backtest
  -- (availability/planning/) tell whose order took the units and follow that order's life.
  local tail = {}
  if chan ~= '' then tail[#tail + 1] = 'c'; tail[#tail + 1] = chan end
  if ref ~= '' then tail[#tail + 1] = 'r'; tail[#tail + 1] = ref end
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', cap, '*',
    'e', event_id, 't', etype, 's', sku, 'l', loc, 'q', q, 'st', status, 'b', before, 'a', after_state, unpack(tail))
  for _, o in ipairs(others) do
    local p = o[3]
    local oa = table.concat({p[1], p[2], p[3], p[4], p[5]}, ',')
    redis.call('HSET', KEYS[1], o[1], oa .. ',' .. p[6])
    if oa ~= o[2] then redis.call('ZADD', KEYS[5], 'NX', now, sku .. '|' .. o[1]) end
    redis.call('XADD', KEYS[6], 'MAXLEN', '~', cap, '*',
      'e', event_id, 't', etype, 's', sku, 'l', o[1], 'q', o[4], 'st', 'settled_elsewhere', 'b', o[2], 'a', oa,
      unpack(tail))
  end
  if short > 0 then
    redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[18], '*',
      'e', event_id, 'o', ref, 's', sku, 'l', loc, 'u', short, 't', etype, 'src', source, 'c', chan,
      'at', now, 'a', after_state)
  end
  return {status, oh, rs, al, un, inc, short}
end
