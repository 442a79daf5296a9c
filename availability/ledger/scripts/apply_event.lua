-- apply_event.lua: apply one canonical stock event to one SKU (the body is apply_lib.lua's
-- apply_one, prepended when loaded), atomically with its
-- idempotency record, its audit-journal entries, the publisher's dirty marks and, when a
-- channel sold more than there was, its oversell record.
-- The plain-Python twin of this script is availability/domain/ledger_model.py; the
-- property tests in tests/ledger/ drive both with the same events and compare.
--
-- The script reads and checks everything first (phase 1: stock values, the order's hold,
-- the delta log, the idempotency tables) and only then writes (phase 2). Redis does not
-- roll a script back, so an error raised after a write would leave half an event behind
-- (an idempotency record without its effect: the event would replay as `duplicate` and be
-- lost). A corrupt value therefore answers an error reply with nothing written, and the
-- consumer dead-letters the event with that reason; after a repair a replay applies it.
--
-- Every key is of the SKU's partition N ({pN} hash tag, one Redis Cluster slot; keys.py):
-- {sku} below stands for {pN}:SKU.
-- KEYS[1] stock hash   {sku}:stock     field = location, value "on_hand,reserved,allocated,unsellable,incoming,count_ms"
-- KEYS[2] idem meta    {sku}:idm       field = bucket id, value "slots,records" of that bucket's table
-- KEYS[3] delta log    {sku}:dlog:LOC  string of 11-byte records (occurred ms i6, on_hand delta i4, source code u1)
-- KEYS[4] holds hash   {sku}:holds     field = reference, value "STATE|expires_ms|channel|loc=res/alc;..."
-- KEYS[5] dirty zset   {pN}:dirty      member = "sku|location", score = first-dirty ms (NX)
-- KEYS[6] journal      {pN}:journal    stream, one entry per location an event changed (capped)
-- KEYS[7] oversells    {pN}:oversells  stream of oversell exceptions (capped)
-- KEYS[8] count cuts   {sku}:cuts      field = location, value "floor_ms|code:ms,..." (only when not trivial)
-- KEYS[9] ended holds  {sku}:ended   zset, member = reference, score = ms after which its
--         ended hold may be removed (retention: forget_holds.lua trims it)
-- KEYS[10] ended index {pN}:holds:ended   zset, member = SKU, score = its earliest such ms (LT)
-- KEYS[11..] idempotency tables {sku}:idb:BUCKET, newest bucket first (open-addressing tables
--         of 8-byte event-id digests; each bucket expires when the window has passed it)
-- ARGV: 1 event_id, 2 digest (8 bytes, not all zero), 3 type, 4 reason, 5 sku, 6 location,
--       7 quantity, 8 occurred_ms, 9 reference ('' if none), 10 channel ('' if none),
--       11 source, 12 source code (0..255), 13 count cutoffs ('' or "code:ms,code:ms": a
--       count saw that source's deltas only up to ms), 14 now_ms, 15 newest bucket
--       expire-at ms, 16 journal_cap, 17 delta_log_cap (records), 18 oversell_cap,
--       19 hold grace ms (an order's hold that ended, released or all shipped, is kept
--       this long), 20 tombstone keep ms (a release that came before its reserve is kept
--       this long, at least the idempotency window, so the late reserve stays released),
--       21.. bucket ids (one per KEYS[11..])
-- Returns {status, on_hand, reserved, allocated, unsellable, incoming, units_short} where
--   status is applied | duplicate | stale_count | count_too_old | inside_count |
--   released_before | recorded, and units_short > 0 when the event sold beyond what the
--   location had (an oversell, recorded in KEYS[7]).
-- Errors (nothing written): ERR corrupt_stock / corrupt_hold / corrupt_delta_log /
--   corrupt_idempotency / invalid_argument.


-- Where this script's KEYS put a SKU's keys, from KEYS[1] (the stock hash): idm +1, holds
-- +3, count cuts +7, ended holds +8, idempotency tables +9+i; the delta log is KEYS[3].
local AT = {idm = 1, holds = 3, cuts = 7, ended = 8, idb = 9}
local ids = {}
for i = 21, #ARGV do ids[#ids + 1] = ARGV[i] end
local C = apply_context(ARGV[14], ARGV[15], ARGV[16], ARGV[17], ARGV[18], ARGV[19], ARGV[20], ids, AT,
                        KEYS[5], KEYS[6], KEYS[7], KEYS[10], #KEYS - 10 == #ids)
return apply_one(C, KEYS, 1, 3, ARGV, 0)
