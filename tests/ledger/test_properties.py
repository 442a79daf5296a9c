"""Property tests: random event sequences, with duplicates and reorderings, through the
real Lua ledger and through the plain-Python oracle (availability/domain/ledger_model.py)."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from availability.domain.ats import Buckets, channel_availability, fill_protections, location_ats
from availability.domain.events import ADJUSTMENT_REASONS, StockEvent
from availability.domain.ledger_model import LedgerModel
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger, LedgerLimits
from tests.factories import T0, Channel, book

SKUS = ("A", "B")
LOCATIONS = ("DC1", "S1", "S2")
DELTA_TYPES = ("pos_sale", "pos_return", "pos_void", "receipt", "transfer_out", "transfer_in", "return", "ship")
ALL_TYPES = DELTA_TYPES + ("adjustment", "cycle_count", "snapshot", "purchase_order", "pick",
                           "reserve", "release", "allocate", "fulfil")


@st.composite
def stock_event(draw, types=ALL_TYPES):
    etype = draw(st.sampled_from(types))
    reference = draw(st.sampled_from(["o1", "o2", "o3"])) if etype in ("reserve", "release", "allocate", "fulfil") else None
    if etype in ("receipt", "transfer_in", "ship") and draw(st.booleans()):
        reference = draw(st.sampled_from(["o1", "PO-1"]))
    return StockEvent(
        event_id=uuid.uuid4().hex,
        type=etype,
        source="sim",
        occurred_at=T0 + timedelta(seconds=draw(st.integers(0, 100))),
        sku=draw(st.sampled_from(SKUS)),
        location=draw(st.sampled_from(LOCATIONS)),
        quantity=draw(st.integers(0, 30)),
        reference=reference,
        reason=draw(st.sampled_from(ADJUSTMENT_REASONS)) if etype == "adjustment" else None,
    )


@st.composite
def delivery(draw, types=ALL_TYPES):
    """A list of events as delivered: shuffled, with some delivered twice."""
    events = draw(st.lists(stock_event(types), min_size=1, max_size=40))
    dupes = draw(st.lists(st.sampled_from(events), max_size=10))
    return draw(st.permutations(events + dupes))


def fresh_ledger(redis_client) -> Ledger:
    return Ledger(redis_client, keys=KeyLayout(f"p{uuid.uuid4().hex[:10]}"))


PROPERTY_SETTINGS = settings(max_examples=int(os.environ.get("AVAILABILITY_PROPERTY_EXAMPLES", "80")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY_SETTINGS
@given(events=delivery())
async def test_lua_ledger_equals_python_oracle(redis_client, events):
    ledger = fresh_ledger(redis_client)
    oracle = LedgerModel()
    results = await ledger.apply_batch(events)
    for ev, result in zip(events, results):
        shorts_before = len(oracle.oversells)
        assert result.status == oracle.apply(ev), ev
        short = oracle.oversells[-1][4] if len(oracle.oversells) > shorts_before else 0
        assert result.units_short == short, ev
    recorded = [(o.event_id, o.order, o.sku, o.location, o.units_short) for _, o in await ledger.oversells(limit=1000)]
    # one SKU's oversells in the order they happened (one partition's stream); across
    # partitions, records of the same millisecond are merged by partition
    assert sorted(recorded) == sorted(oracle.oversells)
    for sku in SKUS:
        assert [o for o in recorded[::-1] if o[2] == sku] == [o for o in oracle.oversells if o[2] == sku]
    stock = await ledger.stock_many(SKUS)
    for sku in SKUS:
        for loc in LOCATIONS:
            assert stock[sku].get(loc, Buckets()) == oracle.buckets(sku, loc), (sku, loc)
            b = oracle.buckets(sku, loc)
            assert min(b.reserved, b.allocated, b.unsellable, b.incoming) >= 0


@st.composite
def timeline(draw):
    """A true history at one (SKU, location): deltas, and counts that saw all deltas up to them."""
    steps = draw(st.lists(st.tuples(st.sampled_from(["receipt", "pos_sale", "pos_return", "count"]),
                                    st.integers(1, 20)), min_size=1, max_size=30))
    events, on_hand = [], 0
    for second, (kind, qty) in enumerate(steps):
        at = T0 + timedelta(seconds=second)
        if kind == "count":
            events.append(StockEvent(event_id=f"c{second}", type="cycle_count", source="wms", occurred_at=at,
                                     sku="A", location="DC1", quantity=max(on_hand, 0)))
            on_hand = max(on_hand, 0)  # a physical count never finds fewer than zero
        else:
            on_hand += qty if kind != "pos_sale" else -qty
            events.append(StockEvent(event_id=f"d{second}", type=kind, source="pos", occurred_at=at,
                                     sku="A", location="DC1", quantity=qty))
    order = draw(st.permutations(events))
    dupes = draw(st.lists(st.sampled_from(events), max_size=5))
    return order + dupes, on_hand


@PROPERTY_SETTINGS
@given(case=timeline())
async def test_any_delivery_order_converges_to_the_true_on_hand(redis_client, case):
    delivered, true_on_hand = case
    ledger = fresh_ledger(redis_client)
    await ledger.apply_batch(delivered)
    assert (await ledger.stock("A"))["DC1"].on_hand == true_on_hand


@st.composite
def lagging_timeline(draw):
    """A true history at one (SKU, location) from two sources, and ERP snapshots that saw
    WMS up to their time but POS only up to some seconds before it (the POS postings lag),
    saying so in `seen_through` (or, with `configured`, leaving it to the ledger's lag
    allowance). A snapshot's count is exactly what the ERP had seen; how far it saw POS
    never goes backwards from one snapshot to the next."""
    configured = draw(st.booleans())
    lag = draw(st.integers(0, 8))
    steps = draw(st.lists(st.tuples(st.sampled_from(["receipt", "pos_sale", "pos_return", "snapshot"]),
                                    st.integers(1, 20), st.integers(0, 8)), min_size=1, max_size=30))
    events = [StockEvent(event_id="seed", type="receipt", source="wms", occurred_at=T0, sku="A", location="DC1",
                         quantity=1000)]
    history = [(0, 1000, "wms")]
    pos_seen = 0
    for second, (kind, qty, miss) in enumerate(steps, 1):
        at = T0 + timedelta(seconds=second)
        if kind == "snapshot":
            pos_seen = max(pos_seen, second - (lag if configured else miss))
            seen = sum(d for t, d, src in history if t <= (pos_seen if src == "pos" else second))
            events.append(StockEvent(
                event_id=f"s{second}", type="snapshot", source="erp", occurred_at=at, sku="A", location="DC1",
                quantity=seen, seen_through=None if configured else {"pos": T0 + timedelta(seconds=pos_seen)}))
        else:
            source = "wms" if kind == "receipt" else "pos"
            history.append((second, -qty if kind == "pos_sale" else qty, source))
            events.append(StockEvent(event_id=f"d{second}", type=kind, source=source, occurred_at=at,
                                     sku="A", location="DC1", quantity=qty))
    order = draw(st.permutations(events))
    dupes = draw(st.lists(st.sampled_from(events), max_size=5))
    return order + dupes, sum(d for _, d, _ in history), (lag * 1000 if configured else None)


@PROPERTY_SETTINGS
@given(case=lagging_timeline())
async def test_counts_that_missed_deltas_before_their_time_keep_them(redis_client, case):
    delivered, true_on_hand, lag_ms = case
    limits = LedgerLimits(count_lag_ms={"pos": lag_ms}) if lag_ms is not None else LedgerLimits()
    ledger = Ledger(redis_client, keys=KeyLayout(f"p{uuid.uuid4().hex[:10]}"), limits=limits)
    oracle = LedgerModel(count_lag_ms=limits.count_lag_ms)
    results = await ledger.apply_batch(delivered)
    assert [r.status for r in results] == [oracle.apply(e) for e in delivered]
    assert (await ledger.stock("A"))["DC1"].on_hand == true_on_hand == oracle.buckets("A", "DC1").on_hand


@PROPERTY_SETTINGS
@given(first=delivery(), later=delivery())
async def test_retention_of_ended_holds_matches_the_oracle(redis_client, first, later):
    """Order-event holds that ended are forgotten once their time has passed (the grace, or
    the idempotency window for a release before its reserve); events after that behave as
    the oracle with those holds forgotten, and the holds left are the oracle's."""
    window = 60_000
    ledger = Ledger(redis_client, keys=KeyLayout(f"p{uuid.uuid4().hex[:10]}"),
                    limits=LedgerLimits(idempotency_window_ms=window, hold_retention_ms=1_000))
    oracle = LedgerModel()
    now = 1_800_000_000_000
    assert [r.status for r in await ledger.apply_batch(first, at_ms=now)] == [oracle.apply(e) for e in first]
    later_at = now + window + 1
    while await ledger.forget_ended_holds(at_ms=later_at):
        pass
    oracle.forget_ended_holds()
    assert [r.status for r in await ledger.apply_batch(later, at_ms=later_at)] == [oracle.apply(e) for e in later]
    for sku in SKUS:
        raw = await redis_client.hgetall(ledger.keys.holds(sku))
        assert {k.decode() for k in raw} == {ref for (s, ref) in oracle.holds if s == sku}
        for loc in LOCATIONS:
            assert (await ledger.stock(sku)).get(loc, Buckets()) == oracle.buckets(sku, loc)


#: order events at several locations: holds shipped from elsewhere than they were held
ORDER_TYPES = ("receipt", "reserve", "allocate", "fulfil", "ship", "release")


@PROPERTY_SETTINGS
@given(events=st.one_of(delivery(), delivery(ORDER_TYPES)))
async def test_replaying_the_journal_reproduces_the_buckets(redis_client, events):
    """Every bucket change of every location is in the journal: per (SKU, location) the
    entries chain (each one's before is the previous one's after, from empty), and the
    last after is the buckets now. A change without its entry (the cross-location ship
    settling another location's hold, say) breaks the chain."""
    ledger = fresh_ledger(redis_client)
    await ledger.apply_batch(events)
    replayed: dict[tuple[str, str], str] = {}
    for _, entry in await ledger.journal_entries():
        pair = (entry["s"], entry["l"])
        assert entry["b"] == replayed.get(pair, "0,0,0,0,0"), (pair, entry)
        replayed[pair] = entry["a"]
    stock = await ledger.stock_many(SKUS)
    for sku in SKUS:
        for loc in LOCATIONS:
            b = stock[sku].get(loc, Buckets())
            assert replayed.get((sku, loc), "0,0,0,0,0") == f"{b.on_hand},{b.reserved},{b.allocated},{b.unsellable},{b.incoming}"


buckets_strategy = st.builds(Buckets, st.integers(-5, 60), st.integers(0, 20), st.integers(0, 20), st.integers(0, 10))
rule_strategy = st.lists(
    st.one_of(
        st.fixed_dictionaries({"kind": st.just("safety_stock"), "units": st.integers(0, 10)}),
        st.fixed_dictionaries({"kind": st.just("protection"), "channel": st.sampled_from(["pos", "online", "b2b"]),
                               "units": st.integers(0, 15)}),
        st.fixed_dictionaries({"kind": st.just("protection"), "channel": st.sampled_from(["pos", "online", "b2b"]),
                               "percent": st.floats(0, 100).map(lambda p: round(p, 2))}),
        st.fixed_dictionaries({"kind": st.just("buffer"), "channel": st.sampled_from(["pos", "online", "b2b"]),
                               "units": st.integers(0, 5), "percent": st.floats(0, 50).map(lambda p: round(p, 2))}),
        st.fixed_dictionaries({"kind": st.just("threshold"), "channel": st.sampled_from(["pos", "online", "b2b"]),
                               "units": st.integers(0, 8)}),
    ),
    max_size=6,
)
CHANNELS = [Channel(name="pos", priority=1), Channel(name="online", priority=2), Channel(name="b2b", priority=3)]


@settings(max_examples=300, deadline=None)
@given(stock=buckets_strategy, rules=rule_strategy)
def test_ats_never_negative_and_protections_never_promise_more_than_is_there(stock, rules):
    rb = book(locations=("DC1",), channels=CHANNELS, rules=rules)
    loc_ats = location_ats(stock, rb.terms("A", "DC1", "online").safety_units)
    filled, pool = fill_protections(loc_ats, rb.protections("A", "DC1"))
    assert pool >= 0 and sum(filled.values()) + pool == loc_ats
    for ch in CHANNELS:
        ats = channel_availability(rb, "A", ch.name, {"DC1": stock}).ats
        assert 0 <= ats <= loc_ats


@PROPERTY_SETTINGS
@given(stock=buckets_strategy, rules=rule_strategy, channel=st.sampled_from(["pos", "online", "b2b"]))
async def test_python_and_lua_ats_agree(redis_client, stock, rules, channel):
    """The reserve script's channel ATS (Lua) is the domain's (Python): exactly that many
    units can be reserved, and one more is refused with that many reported available."""
    from availability.domain.errors import InsufficientStock
    from availability.domain.reservations import ReservationLine, ReservationRequest

    rb = book(locations=("DC1",), channels=CHANNELS, rules=rules)
    ledger = fresh_ledger(redis_client)
    await ledger.load_scripts()
    await ledger.redis.hset(ledger.keys.stock("A"), "DC1",
                            f"{stock.on_hand},{stock.reserved},{stock.allocated},{stock.unsellable},0,-1")
    expected = channel_availability(rb, "A", channel, {"DC1": stock}).ats
    try:
        await ledger.reserve(ReservationRequest("too-many", channel, [ReservationLine("A", expected + 1)]), rb)
        raise AssertionError("reserved more than the channel ATS")
    except InsufficientStock as exc:
        assert exc.short_lines[0]["available"] == expected
    if expected:
        await ledger.reserve(ReservationRequest("exact", channel, [ReservationLine("A", expected)]), rb)
