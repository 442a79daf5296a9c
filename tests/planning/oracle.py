"""A plain-Python backtest, written from docs/backtest.md without the engine's shortcuts
(no compiled plans, no offsets): full replay buckets per (SKU, location), every ATS from
`location_availability`. The engine must agree with it."""

from __future__ import annotations

from collections import defaultdict

from availability.domain.ats import Buckets, location_availability

SELLING = {"reserve", "allocate", "pos_sale", "fulfil", "ship"}


def _replay(book, entries):
    state: dict = {}
    refused: set = set()
    orders = defaultdict(set)
    units = defaultdict(int)
    stockouts = defaultdict(int)
    oversells = defaultdict(int)
    seen_locations = defaultdict(list)
    after_ats = []  # per entry (None for refusals): {channel: ats}

    def buckets(entry):
        return state.get((entry.sku, entry.location), list(entry.before[:4]))

    def ats(sku, location, values, channel):
        oh, rs, al, un = values
        return location_availability(book, sku, location, channel, Buckets(oh, max(0, rs), max(0, al), max(0, un))).ats

    i = 0
    while i < len(entries):
        entry = entries[i]
        if entry.type == "refuse":
            if entry.channel in book.channels:
                where = [entry.location] if entry.location else seen_locations[entry.sku]
                available = sum(
                    ats(entry.sku, loc, state[(entry.sku, loc)], entry.channel)
                    for loc in where
                    if (entry.sku, loc) in state and entry.channel in book.channels_at(loc)
                )
                if available < entry.quantity:
                    orders[entry.channel].add(entry.order)
                    units[entry.channel] += entry.quantity
            after_ats.append(None)
            i += 1
            continue
        group = [entry]
        if entry.type == "reserve" and entry.status == "held":
            while (
                i + len(group) < len(entries)
                and entries[i + len(group)].type == "reserve"
                and entries[i + len(group)].status == "held"
                and entries[i + len(group)].event_id == entry.event_id
                and entries[i + len(group)].sku == entry.sku
            ):
                group.append(entries[i + len(group)])
            key = (entry.order, entry.sku)
            if key not in refused and entry.channel in book.channels:
                for e in group:
                    if e.channel in book.channels_at(e.location) and ats(e.sku, e.location, buckets(e), e.channel) < e.quantity:
                        refused.add(key)
                        orders[entry.channel].add(entry.order)
                        units[entry.channel] += sum(g.quantity for g in group)
                        break
        for e in group:
            pair = (e.sku, e.location)
            if pair not in state:
                seen_locations[e.sku].append(e.location)
            before = buckets(e)
            channels = book.channels_at(e.location)
            was = {ch: ats(e.sku, e.location, before, ch) for ch in channels}
            if e.order and (e.order, e.sku) in refused:
                after = list(before)
            else:
                after = [before[k] + e.after[k] - e.before[k] for k in range(4)]
                if e.type in SELLING:
                    was_available = before[0] - sum(before[1:])
                    now_available = after[0] - sum(after[1:])
                    if max(0, -now_available) > max(0, -was_available):
                        oversells[e.channel or "(no channel)"] += 1
            state[pair] = after
            now = {ch: ats(e.sku, e.location, after, ch) for ch in channels}
            for ch in channels:
                if was[ch] > 0 and now[ch] == 0:
                    stockouts[ch] += 1
            after_ats.append(now)
        i += len(group)
    return orders, units, stockouts, oversells, after_ats


def oracle_report(current, draft, entries) -> dict[str, dict[str, int]]:
    c = _replay(current, entries)
    d = _replay(draft, entries)
    unexposed = defaultdict(int)
    for cur, dra in zip(c[4], d[4]):
        if cur is None:
            continue
        for ch, shown in cur.items():
            unexposed[ch] += max(0, shown - dra[ch])
    names = set(current.channels) | set(c[0]) | set(d[0]) | set(c[2]) | set(d[2]) | set(c[3]) | set(d[3])
    return {
        name: {
            "orders_refused": len(d[0][name]) - len(c[0][name]),
            "units_refused": d[1][name] - c[1][name],
            "stockouts_avoided": c[2][name] - d[2][name],
            "oversells_avoided": c[3][name] - d[3][name],
            "units_unexposed": unexposed[name],
        }
        for name in sorted(names)
    }
