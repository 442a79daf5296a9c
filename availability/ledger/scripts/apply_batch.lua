-- apply_batch.lua: a batch of one partition's events in one call, each applied exactly as
-- apply_event.lua applies it (apply_lib.lua's apply_one, prepended when loaded), in order,
-- each atomic by itself and seeing the ones before it: same idempotency (a duplicate inside
-- the batch answers `duplicate`), count/delta reconciliation, journal, dirty marks and
-- oversells. Each event reads and checks before it writes, so an event the script refuses
-- (corrupt stored value, bad argument) writes nothing and answers its own error; the
-- events after it still apply. Every key is of one partition ({pN}): one slot.
--
-- KEYS[1] dirty zset   {pN}:dirty        KEYS[2] journal   {pN}:journal
-- KEYS[3] oversells    {pN}:oversells    KEYS[4] ended idx {pN}:holds:ended
-- KEYS[5..] per SKU of the batch, 5 + nb keys from its base index:
--           stock, idm, holds, cuts, ended, idb of each bucket (newest first);
--           then the delta-log keys {pN}:SKU:dlog:LOC (one per (SKU, location) of the batch)
-- ARGV: 1 now_ms, 2 newest bucket expire-at ms, 3 journal_cap, 4 delta_log_cap,
--       5 oversell_cap, 6 hold grace ms, 7 tombstone keep ms, 8 nb (buckets),
--       9 .. 8+nb bucket ids, then per event 15 arguments: its SKU's base index in KEYS,
--       its delta log's index in KEYS, then apply_event.lua's ARGV 1..13
-- Returns one reply per event, in order: apply_event.lua's reply, or {'error', reason}
-- (what apply_event.lua would have answered as an error reply).

local nb = tonumber(ARGV[8])
local ids = {}
for b = 1, nb do ids[b] = ARGV[8 + b] end
-- Where a SKU's key block puts its keys, from its base index (the stock hash): idm +1,
-- holds +2, count cuts +3, ended holds +4, idempotency tables +4+i.
local AT = {idm = 1, holds = 2, cuts = 3, ended = 4, idb = 4}
local C = apply_context(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ids, AT,
                        KEYS[1], KEYS[2], KEYS[3], KEYS[4], true)
local PER = 15
local first = 9 + nb
local n = (#ARGV - first + 1) / PER
local TRANSIENT = {'OOM', 'READONLY', 'MASTERDOWN', 'CLUSTERDOWN', 'TRYAGAIN', 'LOADING', 'BUSY'}
local replies = {}
local halted = nil
for i = 0, n - 1 do
  local at = first + i * PER
  if halted then
    replies[i + 1] = {'error', halted}
  else
    -- the event's 13 arguments follow its SKU's base index and its delta log's index
    local ok, r = pcall(apply_one, C, KEYS, tonumber(ARGV[at]), tonumber(ARGV[at + 1]), ARGV, at + 1)
    if ok and type(r) == 'table' and r.err == nil then
      replies[i + 1] = r
    else
      local reason
      if ok then reason = r.err elseif type(r) == 'table' and r.err then reason = r.err else reason = tostring(r) end
      replies[i + 1] = {'error', reason}
      -- Redis is refusing writes (full, read-only, ...): the rest is not attempted; the
      -- client raises and resends the batch (the idempotency records make that safe).
      for _, prefix in ipairs(TRANSIENT) do
        if string.sub(reason, 1, #prefix) == prefix then halted = reason end
      end
    end
  end
end
return replies
