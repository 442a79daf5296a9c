"""`availability shopify ...` and `availability sim shopify` through the real CLI entry point."""

from __future__ import annotations

import asyncio
import json

import pytest

from adapters.shopify.simulator import SimulatorConfig, SimulatorServer
from availability.cli import build_parser, main
from availability.rules.store import RuleStore


@pytest.fixture
def cli_env(monkeypatch, tmp_path, redis_url, key_prefix):
    db = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("AVAILABILITY_REDIS_URL", redis_url)
    monkeypatch.setenv("AVAILABILITY_DATABASE_URL", db)
    monkeypatch.setenv("AVAILABILITY_KEY_PREFIX", key_prefix)
    monkeypatch.setenv("AVAILABILITY_DATA_DIR", str(tmp_path))

    async def master_data():
        async with RuleStore(db) as store:
            await store.import_master_data(
                {"locations": [{"code": "DC1"}], "channels": [{"name": "online", "locations": ["DC1"]}]}, actor="test"
            )

    asyncio.run(master_data())
    return tmp_path


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(["--log-level", "WARNING", *argv])
    return code, capsys.readouterr().out


def test_import_mappings_unmapped_status_dlq_and_resync(cli_env, capsys, monkeypatch):
    with SimulatorServer(SimulatorConfig()) as sim:
        loc = sim.state.add_location("Warehouse")
        item = sim.state.add_item("TEE")
        sim.state.stock(item, loc, 9)
        mappings = cli_env / "mappings.json"
        mappings.write_text(
            json.dumps({"items": {"TEE": item}, "locations": [{"channel": "online", "location": "DC1", "shopify_location_gid": loc}]})
        )
        code, out = run(capsys, "shopify", "import-mappings", str(mappings))
        assert code == 0 and json.loads(out)["changed"] == {"items": 1, "locations": 1}

        events = cli_env / "events.jsonl"
        events.write_text(
            "\n".join(
                json.dumps({"event_id": f"e{i}", "type": "receipt", "source": "wms", "occurred_at": "2026-11-20T10:00:00Z",
                            "sku": sku, "location": "DC1", "quantity": q})
                for i, (sku, q) in enumerate([("TEE", 4), ("GHOST", 2)])
            )
        )
        assert main(["--log-level", "WARNING", "apply", str(events)]) == 0
        capsys.readouterr()
        code, out = run(capsys, "shopify", "unmapped", "--scan")
        assert code == 0 and json.loads(out) == {"unmapped": 1, "skus": ["GHOST"]}

        code, out = run(capsys, "shopify", "status")
        status = json.loads(out)
        assert code == 0 and status["pending_marks"] == 2 and status["dead_letters"] == 0

        monkeypatch.setenv("AVAILABILITY_SHOPIFY_URL", sim.base_url)
        monkeypatch.setenv("AVAILABILITY_SHOPIFY_TOKEN", sim.config.access_token)
        code, out = run(capsys, "shopify", "resync", "--dry-run")
        report = json.loads(out)
        assert code == 0 and report["dry_run"] and report["differences"] == [
            {"sku": "TEE", "item": item, "location": loc, "shopify": 9, "ats": 4}
        ]
        assert sim.state.available(item, loc) == 9
        code, out = run(capsys, "shopify", "resync")
        assert code == 0 and json.loads(out)["pushed"] == 1
        assert sim.state.available(item, loc) == 4

        code, out = run(capsys, "shopify", "dlq", "list")
        assert code == 0 and out == ""
        code, out = run(capsys, "shopify", "dlq", "replay", "--all")
        assert code == 0 and json.loads(out) == {"replayed": [], "left": 0}


def test_sim_shopify_command_parses_plan_and_faults():
    args = build_parser().parse_args(["sim", "shopify", "--port", "9999", "--plan", "plus", "--error-rate", "0.1"])
    from adapters.shopify.simulator import config_from_args

    config = config_from_args(args)
    assert (args.port, config.plan, config.faults.error_rate) == (9999, "plus", 0.1)
    assert config.limits().restore_rate == 1000.0


def test_sim_shopify_command_offers_the_simulators_own_options():
    """Sales, webhook faults and the cost model reach the config (the simulator's option list)."""
    from adapters.shopify.simulator import config_from_args

    args = build_parser().parse_args([
        "sim", "shopify", "--buyer-rate", "2.5", "--buyer-max-quantity", "3", "--webhook-delay-ms", "40",
        "--webhook-delay-jitter-ms", "10", "--webhook-duplicate-rate", "0.2", "--webhook-reorder-rate", "0.3",
        "--cost-model", "pessimistic",
    ])
    f = config_from_args(args).faults
    assert (f.buyer_rate_per_s, f.buyer_max_quantity, f.webhook_delay_ms, f.webhook_delay_jitter_ms) == (2.5, 3, 40, 10)
    assert (f.webhook_duplicate_rate, f.webhook_reorder_rate) == (0.2, 0.3)
    assert config_from_args(args).cost_model == "pessimistic"


async def test_publisher_service_wires_the_push_from_settings(redis_url, key_prefix, tmp_path):
    from availability.bootstrap import open_runtime
    from availability.config import Settings
    from availability.flows.inventory.service import PublisherService
    from tests.flows.conftest import stock_event, wait_for

    with SimulatorServer(SimulatorConfig()) as sim:
        loc = sim.state.add_location("Warehouse")
        item = sim.state.add_item("TEE")
        sim.state.stock(item, loc, 0)
        settings = Settings(
            redis_url=redis_url, database_url=f"sqlite+aiosqlite:///{tmp_path}/svc.db", key_prefix=key_prefix,
            data_dir=str(tmp_path), shopify_url=sim.base_url, shopify_token=sim.config.access_token,
            push_window_seconds=0.05, rules_refresh_seconds=0.1,
        )
        async with open_runtime(settings) as runtime:
            await runtime.store.import_master_data(
                {"locations": [{"code": "DC1"}], "channels": [{"name": "online", "locations": ["DC1"]}]}, actor="test"
            )
            await runtime.store.mappings.set_item_mappings({"TEE": item}, actor="test")
            await runtime.store.mappings.set_location_mappings([("online", "DC1", loc)], actor="test")
            service = PublisherService(runtime)
            await service.start()
            try:
                await runtime.ledger.apply(stock_event("receipt", "TEE", "DC1", 12))
                assert await wait_for(lambda: sim.state.available(item, loc) == 12, 5)
            finally:
                await service.stop()
        off = PublisherService(type("R", (), {"settings": Settings(shopify_url=None, shopify_token=None)})())
        await off.start()  # without Shopify settings it stays off, quietly
        assert off.publisher is None
