"""Master data, precedence through load_book, import/export, API keys, Shopify mappings."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import event, select

from availability.domain.errors import InvalidRule, UnknownChannel, UnknownLocation
from availability.domain.rules import DEFAULT_CHANNEL, Channel, Location
from availability.rules import InvalidMasterData, MasterDataInUse
from availability.rules.models import api_keys_t
from availability.rules.store import RuleStore, hash_api_key, load_master_file

LOCATIONS = [
    Location(code="DC1", type="warehouse", priority=10, groups=("east",)),
    Location(code="STORE-12", type="store", priority=50, pickup=True, sells_in_store=True, groups=("east", "stores")),
    Location(code="STORE-99", type="store", priority=60, groups=("stores",), active=False),
]


async def _locations(store: RuleStore) -> None:
    for loc in LOCATIONS:
        await store.upsert_location(loc, actor="ops", reason="setup")


# --- precedence -------------------------------------------------------------------------------


async def test_most_specific_rule_wins(store: RuleStore):
    await _locations(store)
    await store.set_sku_categories({"TEE-M": "tees", "CAP": "hats"}, actor="ops")
    ids = {}
    for name, fields in {
        "global": {"units": 1},
        "group": {"units": 3, "location_group": "east"},
        "location": {"units": 2, "location": "STORE-12"},
        "category": {"units": 5, "category": "tees"},
        "sku": {"units": 4, "sku": "TEE-M"},
        "sku_at_location": {"units": 6, "sku": "TEE-M", "location": "STORE-12"},
    }.items():
        ids[name] = (await store.create_rule({"kind": "safety_stock", **fields}, actor="planner")).id
    book = await store.load_book()

    def best(sku, loc):
        rule = book.best_rule("safety_stock", sku, loc, None)
        return next(k for k, v in ids.items() if v == rule.id)

    # sku 32 > category 16 > location 8 > location_group 4 > global
    assert best("TEE-M", "STORE-12") == "sku_at_location"
    assert best("TEE-M", "DC1") == "sku"
    assert best("TEE-L", "DC1") == "group"  # no category for TEE-L
    assert best("CAP", "STORE-12") == "location"
    assert best("CAP", "DC1") == "group"
    assert best("CAP", "STORE-99") == "global"
    await store.set_sku_categories({"TEE-L": "tees"}, actor="ops")
    book = await store.load_book()
    assert best("TEE-L", "STORE-12") == "category"  # category 16 beats location 8
    assert book.terms("TEE-L", "STORE-12", DEFAULT_CHANNEL).safety_units == 5
    terms = book.terms("TEE-M", "STORE-12", DEFAULT_CHANNEL)
    assert terms.safety_units == 6
    assert (terms.safety_rule.id, terms.safety_rule.version) == (ids["sku_at_location"], 1)
    assert terms.safety_rule.scope == "sku=TEE-M, location=STORE-12"


async def test_tie_break_priority_then_version_then_id(store: RuleStore):
    await _locations(store)
    # STORE-12 is in both groups: two group rules have the same weight.
    east = await store.create_rule({"kind": "safety_stock", "units": 1, "location_group": "east"}, actor="p")
    stores = await store.create_rule({"kind": "safety_stock", "units": 2, "location_group": "stores"}, actor="p")
    book = await store.load_book()
    assert book.best_rule("safety_stock", "X", "STORE-12", None).id == stores.id  # same version: higher id

    east = await store.update_rule(east.id, {"note": "reviewed"}, expected_version=1, actor="p")
    book = await store.load_book()
    assert book.best_rule("safety_stock", "X", "STORE-12", None).id == east.id  # higher version

    await store.update_rule(stores.id, {"priority": 10}, expected_version=1, actor="p")
    book = await store.load_book()
    assert book.best_rule("safety_stock", "X", "STORE-12", None).id == stores.id  # higher priority first
    assert book.terms("X", "STORE-12", DEFAULT_CHANNEL).safety_units == 2
    # a location rule (8) still beats either group rule (4), whatever their priority
    loc = await store.create_rule({"kind": "safety_stock", "units": 9, "location": "STORE-12"}, actor="p")
    book = await store.load_book()
    assert book.best_rule("safety_stock", "X", "STORE-12", None).id == loc.id


async def test_channel_rules_resolve_per_channel(store: RuleStore):
    await _locations(store)
    await store.upsert_channel(Channel(name="online", priority=10), actor="ops")
    await store.upsert_channel(Channel(name="pos", priority=5, locations=("STORE-12",)), actor="ops")
    await store.create_rule({"kind": "buffer", "units": 1, "channel": "online"}, actor="p")
    at_dc = await store.create_rule({"kind": "buffer", "percent": 10, "channel": "online", "location": "DC1"}, actor="p")
    await store.create_rule({"kind": "threshold", "units": 3, "channel": "pos"}, actor="p")
    await store.create_rule({"kind": "protection", "units": 4, "channel": "pos", "location": "STORE-12"}, actor="p")
    book = await store.load_book()
    t = book.terms("A", "DC1", "online")
    assert (t.buffer_units, t.buffer_percent, t.buffer_rule.id) == (0, 10.0, at_dc.id)
    assert book.terms("A", "STORE-12", "online").buffer_units == 1
    assert book.terms("A", "STORE-12", "pos").threshold_units == 3
    assert book.terms("A", "STORE-12", "online").threshold_units == 0
    assert [p.channel for p in book.protections("A", "STORE-12")] == ["pos"]


# --- default channel and master data ---------------------------------------------------------


async def test_fresh_store_has_default_online_channel(store: RuleStore):
    await _locations(store)
    book = await store.load_book()
    assert list(book.channels) == [DEFAULT_CHANNEL]
    # every *active* location, in location priority order
    assert book.channel_locations(DEFAULT_CHANNEL) == ("DC1", "STORE-12")
    assert [c.name for c in await store.list_channels()] == [DEFAULT_CHANNEL]
    assert (await store.get_channel(DEFAULT_CHANNEL)).name == DEFAULT_CHANNEL
    with pytest.raises(UnknownChannel, match="default channel is not stored"):
        await store.delete_channel(DEFAULT_CHANNEL, actor="ops")
    # nothing was written for the default
    assert await store.master_history(entity="channel") == []

    # configuring channels replaces the default rather than adding to it
    await store.upsert_channel(Channel(name="pos", locations=("STORE-12",)), actor="ops", reason="stores live")
    book = await store.load_book()
    assert list(book.channels) == ["pos"]
    assert book.channel_locations("pos") == ("STORE-12",)
    with pytest.raises(UnknownChannel):
        await store.get_channel(DEFAULT_CHANNEL)


async def test_locations_and_channels(store: RuleStore):
    await _locations(store)
    assert [loc.code for loc in await store.list_locations()] == ["DC1", "STORE-12", "STORE-99"]
    assert await store.get_location("STORE-12") == LOCATIONS[1]
    with pytest.raises(UnknownLocation):
        await store.get_location("NOPE")

    v = await store.version()
    await store.upsert_location(LOCATIONS[0], actor="ops", reason="no change")
    assert await store.version() == v  # unchanged upsert is not a change

    moved = Location(code="DC1", type="warehouse", priority=5, groups=("east",))
    await store.upsert_location(moved, actor="ops", reason="DC1 first")
    assert await store.version() == v + 1
    (change,) = await store.master_history(entity="location", key="DC1", limit=1)
    assert (change.action, change.actor, change.reason) == ("update", "ops", "DC1 first")
    assert change.before["priority"] == 10 and change.after["priority"] == 5

    with pytest.raises(UnknownLocation, match="NOPE"):
        await store.upsert_channel(Channel(name="web", locations=("DC1", "NOPE")), actor="ops")
    with pytest.raises(InvalidMasterData, match="type"):
        await store.upsert_location(Location(code="X", type="castle"), actor="ops")  # type: ignore[arg-type]
    with pytest.raises(InvalidMasterData, match="code"):
        await store.upsert_location(Location(code=""), actor="ops")

    web = await store.upsert_channel(
        {"name": "web", "priority": 1, "locations": ["DC1"], "location_groups": ["stores"]}, actor="ops"
    )
    assert await store.get_channel("web") == web
    book = await store.load_book()
    assert book.channel_locations("web") == ("DC1", "STORE-12", "STORE-99")

    rule = await store.create_rule({"kind": "buffer", "units": 2, "channel": "web", "location": "STORE-12"}, actor="p")
    with pytest.raises(MasterDataInUse, match="rule"):
        await store.delete_channel("web", actor="ops")
    with pytest.raises(MasterDataInUse, match=f"rule {rule.id}"):
        await store.delete_location("STORE-12", actor="ops")
    with pytest.raises(MasterDataInUse, match="channel web"):
        await store.delete_location("DC1", actor="ops")
    await store.delete_rule(rule.id, actor="p")
    await store.delete_channel("web", actor="ops", reason="retired")
    await store.delete_location("STORE-12", actor="ops", reason="closed")
    assert [loc.code for loc in await store.list_locations()] == ["DC1", "STORE-99"]
    kinds = [(c.entity, c.key, c.action) for c in await store.master_history(limit=2)]
    assert kinds == [("location", "STORE-12", "delete"), ("channel", "web", "delete")]


async def test_sku_categories(store: RuleStore):
    assert await store.set_sku_categories({"A": "tees", "B": "tees", "C": "hats"}, actor="ops") == 3
    v = await store.version()
    assert await store.set_sku_categories({"A": "tees"}, actor="ops") == 0
    assert await store.version() == v
    assert await store.set_sku_categories({"A": "polos", "B": None}, actor="ops", reason="recat") == 2
    assert await store.sku_categories() == {"A": "polos", "C": "hats"}
    (change,) = await store.master_history(entity="sku_categories", limit=1)
    assert change.before == {"A": "tees", "B": "tees"} and change.after == {"A": "polos", "B": None}
    await store.set_sku_categories({"Z": "socks"}, actor="ops", replace=True)
    assert (await store.load_book()).sku_categories == {"Z": "socks"}
    with pytest.raises(InvalidMasterData):
        await store.set_sku_categories({"A": 3}, actor="ops")  # type: ignore[dict-item]


# --- import / export --------------------------------------------------------------------------


DOCUMENT = {
    "locations": [
        {"code": "DC1", "type": "warehouse", "priority": 10, "groups": ["east"]},
        {"code": "STORE-12", "type": "store", "priority": 50, "pickup": True, "groups": ["east", "stores"]},
    ],
    "channels": [
        {"name": "online", "priority": 10},
        {"name": "pos", "priority": 5, "locations": ["STORE-12"]},
    ],
    "rules": [
        {"kind": "safety_stock", "units": 2},
        {"kind": "safety_stock", "units": 5, "category": "tees", "note": "high return rate"},
        {"kind": "buffer", "percent": 10, "channel": "online", "location": "STORE-12"},
        {"kind": "protection", "units": 3, "channel": "pos", "location_group": "stores"},
    ],
    "sku_categories": {"TEE-M": "tees", "TEE-L": "tees"},
}


async def test_import_master_data(store: RuleStore, tmp_path):
    path = tmp_path / "master.json"
    path.write_text(json.dumps(DOCUMENT))
    document = load_master_file(path)
    counts = await store.import_master_data(document, actor="ops", reason="initial load")
    assert counts == {"locations": 2, "channels": 2, "rules_created": 4, "rules_updated": 0, "sku_categories": 2}
    assert await store.version() == 1  # one transaction, one version

    book = await store.load_book()
    assert set(book.channels) == {"online", "pos"}
    assert book.terms("TEE-M", "DC1", "online").safety_units == 5
    assert book.terms("CAP", "DC1", "online").safety_units == 2
    assert book.terms("CAP", "STORE-12", "online").buffer_percent == 10
    assert [p.units for p in book.protections("CAP", "STORE-12")] == [3]
    changes = await store.recent_changes()
    assert {(c.action, c.actor, c.reason) for c in changes} == {("create", "ops", "initial load")}

    # importing the same document again changes nothing (and does not move the version)
    again = await store.import_master_data(document, actor="ops", reason="re-run")
    assert again == {"locations": 0, "channels": 0, "rules_created": 0, "rules_updated": 0, "sku_categories": 0}
    assert await store.version() == 1

    # export -> import into a fresh store reproduces the same data, ids included
    exported = await store.export_master_data()
    json.dumps(exported)  # JSON-compatible
    fresh = RuleStore(f"sqlite+aiosqlite:///{tmp_path}/other.db")
    await fresh.start()
    try:
        await fresh.import_master_data(exported, actor="ops", reason="copy")
        assert await fresh.export_master_data() == exported
        # an explicit id updates that rule
        edited = dict(exported["rules"][0], units=9)
        counts = await fresh.import_master_data({"rules": [edited]}, actor="ops", reason="edit")
        assert counts["rules_updated"] == 1
        assert (await fresh.get_rule(edited["id"])).version == 2
    finally:
        await fresh.close()


@pytest.mark.parametrize(
    ("document", "error", "message"),
    [
        ({"rules": [{"kind": "safety_stock"}] * 3 + [{"kind": "buffer", "units": 1}]}, InvalidRule, "rules[3]: a buffer"),
        ({"rules": [{"kind": "safety_stock", "location": "NOPE"}]}, UnknownLocation, "rules[0]: unknown location"),
        ({"channels": [{"name": "pos", "locations": ["NOPE"]}]}, UnknownLocation, "channels[0]: unknown location"),
        ({"locations": [{"code": "A", "prority": 1}]}, InvalidMasterData, "locations[0]: unknown location field(s) prority"),
        ({"locations": [{"code": "A"}, {"code": "A"}]}, InvalidMasterData, "appears twice"),
        ({"rulez": []}, InvalidMasterData, "unknown key(s) rulez"),
        ({"rules": {"kind": "safety_stock"}}, InvalidMasterData, "`rules` must be a list"),
    ],
)
async def test_import_is_all_or_nothing(store: RuleStore, document, error, message):
    full = {**{k: v for k, v in DOCUMENT.items() if k not in document}, **document}
    with pytest.raises(error) as err:
        await store.import_master_data(full, actor="ops", reason="bad file")
    assert message in err.value.detail
    assert await store.version() == 0
    assert await store.list_locations() == []
    assert await store.list_rules(include_deleted=True) == []


async def test_import_1000_rules_is_batched(store: RuleStore):
    document = {
        "locations": [{"code": f"L{i}", "groups": ["g1" if i % 2 else "g2"]} for i in range(20)],
        "channels": [{"name": "online"}, {"name": "pos", "location_groups": ["g1"]}],
        "rules": [
            {"kind": "safety_stock", "units": i % 7, "sku": f"SKU-{i:04d}", "location": f"L{i % 20}"}
            for i in range(600)
        ]
        + [{"kind": "buffer", "units": 1, "channel": "online", "sku": f"SKU-{i:04d}"} for i in range(400)],
        "sku_categories": {f"SKU-{i:04d}": f"cat{i % 10}" for i in range(1000)},
    }
    statements: list[tuple[str, bool]] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement.split(None, 1)[0].upper(), executemany))

    engine = store.db._engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        counts = await store.import_master_data(document, actor="ops", reason="bulk")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert counts["rules_created"] == 1000
    # Batched, not a round trip per row (its speed is measured in loadtests/, not here):
    # 1000 rules, 1000 history rows and 1000 categories in 16 statements today (a loop
    # over the rows would be thousands), the inserts as executemany.
    assert len(statements) < 30, statements
    assert sum(1 for verb, many in statements if verb == "INSERT" and many) >= 1, statements
    book = await store.load_book()
    assert len(book.rules) == 1000
    assert book.terms("SKU-0007", "L7", "online").safety_units == 0
    assert book.terms("SKU-0008", "L8", "online").safety_units == 1
    assert len(await store.recent_changes(limit=2000)) == 1000


async def test_load_master_file_rejects_unknown_formats(tmp_path):
    bad = tmp_path / "master.yaml"
    bad.write_text("locations: []")
    with pytest.raises(InvalidMasterData, match=".json or .toml"):
        load_master_file(bad)
    broken = tmp_path / "master.json"
    broken.write_text("{nope")
    with pytest.raises(InvalidMasterData, match="not valid JSON"):
        load_master_file(broken)
    toml = tmp_path / "master.toml"
    toml.write_text('[[locations]]\ncode = "DC1"\n\n[sku_categories]\nA = "tees"\n')
    assert load_master_file(toml) == {"locations": [{"code": "DC1"}], "sku_categories": {"A": "tees"}}


# --- API keys ---------------------------------------------------------------------------------


async def test_api_keys_store_only_the_hash(store: RuleStore):
    v = await store.version()
    key_hash = await store.keys.add_api_key("planner-ui", "s3cret-key-value", ["rules:write", "read"])
    assert key_hash == hash_api_key("s3cret-key-value") and len(key_hash) == 64
    await store.keys.add_api_key("ops", "other-key", ["admin"])
    assert await store.keys.api_keys() == [
        (hash_api_key("other-key"), "ops", ["admin"]),
        (key_hash, "planner-ui", ["rules:write", "read"]),
    ]
    async with store.db._engine.connect() as conn:  # nothing in the table is the plaintext
        rows = (await conn.execute(select(api_keys_t))).all()
    assert all("s3cret" not in str(tuple(r)) for r in rows)
    assert await store.keys.find_api_key("s3cret-key-value") == ("planner-ui", ["rules:write", "read"])
    assert await store.keys.find_api_key("wrong") is None
    assert await store.keys.revoke_api_key("planner-ui") == 1
    assert await store.keys.find_api_key("s3cret-key-value") is None
    assert [name for _, name, _ in await store.keys.api_keys()] == ["ops"]
    assert await store.version() == v  # keys are not part of the rule book


# --- Shopify mappings -------------------------------------------------------------------------


async def test_shopify_mappings(store: RuleStore, tmp_path):
    await _locations(store)
    v = await store.version()
    assert await store.mappings.set_item_mappings({"TEE-M": "gid://shopify/InventoryItem/1001", "CAP": 1002}) == 2
    assert await store.version() == v + 1
    assert await store.mappings.item_mappings() == {
        "TEE-M": "gid://shopify/InventoryItem/1001",
        "CAP": "gid://shopify/InventoryItem/1002",
    }
    with pytest.raises(InvalidMasterData, match="InventoryItem"):
        await store.mappings.set_item_mappings({"X": "gid://shopify/Location/5"})

    await store.mappings.set_location_mappings([("online", "DC1", "gid://shopify/Location/11"), ("online", "STORE-12", "12")])
    assert await store.mappings.location_mappings() == [
        ("online", "DC1", "gid://shopify/Location/11"),
        ("online", "STORE-12", "gid://shopify/Location/12"),
    ]
    with pytest.raises(UnknownLocation):
        await store.mappings.set_location_mappings([("online", "NOPE", "13")])
    with pytest.raises(UnknownChannel):
        await store.mappings.set_location_mappings([("b2b", "DC1", "13")])
    assert await store.version() == v + 2

    items_csv = tmp_path / "items.csv"
    items_csv.write_text("sku,inventory_item_gid\nTEE-M,gid://shopify/InventoryItem/2001\nSOCK,2002\n")
    assert await store.mappings.import_mappings_file(items_csv, actor="ops") == {"items": 2, "locations": 0}
    locs_csv = tmp_path / "locations.csv"
    locs_csv.write_text("channel,location,shopify_location_gid\nonline,DC1,gid://shopify/Location/21\n")
    assert await store.mappings.import_mappings_file(locs_csv) == {"items": 0, "locations": 1}
    mapping_json = tmp_path / "mappings.json"
    mapping_json.write_text(
        json.dumps(
            {
                "items": [{"sku": "HAT", "inventory_item_gid": "3001"}],
                "locations": [{"channel": "online", "location": "STORE-12", "shopify_location_gid": None}],
            }
        )
    )
    assert await store.mappings.import_mappings_file(mapping_json) == {"items": 1, "locations": 1}
    assert await store.mappings.item_mappings() == {
        "TEE-M": "gid://shopify/InventoryItem/2001",
        "CAP": "gid://shopify/InventoryItem/1002",
        "SOCK": "gid://shopify/InventoryItem/2002",
        "HAT": "gid://shopify/InventoryItem/3001",
    }
    assert await store.mappings.location_mappings() == [("online", "DC1", "gid://shopify/Location/21")]
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("sku,gid\nA,1\n")
    with pytest.raises(InvalidMasterData, match="CSV header"):
        await store.mappings.import_mappings_file(bad_csv)
    (change,) = await store.master_history(entity="location_mappings", limit=1)
    assert change.before == [["online", "STORE-12", "gid://shopify/Location/12"]]
    assert change.after == [["online", "STORE-12", None]]
