-- Record what Shopify holds for some (item, location) levels of one SKU, newest wins.
--
-- A value is stored as "quantity|as_of_ms|source". A value is only replaced by one that is
-- as new or newer (as_of_ms), so a late answer (a webhook delivered late, a read that
-- raced a push) never replaces what a later observation established.
--
-- KEYS[1] the SKU's Shopify hash  "ITEM_GID|LOCATION_GID" -> "quantity|as_of_ms|source"
-- ARGV    field, quantity, as_of_ms, source, field, quantity, as_of_ms, source, ...
-- Returns how many fields were written.

local written = 0
for i = 1, #ARGV, 4 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  local newer = true
  if cur then
    local a = string.find(cur, '|', 1, true)
    local b = string.find(cur, '|', a + 1, true)
    local cur_at = tonumber(string.sub(cur, a + 1, (b or 0) - 1))
    if cur_at and cur_at > tonumber(ARGV[i + 2]) then
      newer = false
    end
  end
  if newer then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1] .. '|' .. ARGV[i + 2] .. '|' .. ARGV[i + 3])
    written = written + 1
  end
end
return written
