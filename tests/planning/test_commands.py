"""`availability rules backtest` against the embedded Redis and a SQLite rule store."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as aioredis

from availability.cli import main
from availability.domain.reservations import ReservationLine, ReservationRequest
from availability.ledger.keys import KeyLayout
from availability.ledger.ledger import Ledger
from tests.factories import book, event


def seed(redis_url: str, prefix: str) -> None:
    async def go() -> None:
        client = aioredis.Redis.from_url(redis_url)
        ledger = Ledger(client, keys=KeyLayout(prefix))
        await ledger.load_scripts()
        await ledger.apply(event("receipt", quantity=5))
        for rid in ("c1", "c2"):
            await ledger.reserve(ReservationRequest(rid, "online", [ReservationLine("TEE-BLK-M", 2)]), book())
        await client.aclose()

    asyncio.run(go())


def test_the_cli_prints_a_table_or_json_and_refuses_a_bad_draft(redis_url, key_prefix, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AVAILABILITY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AVAILABILITY_REDIS_URL", redis_url)
    monkeypatch.setenv("AVAILABILITY_KEY_PREFIX", key_prefix)
    seed(redis_url, key_prefix)
    draft = tmp_path / "draft.json"
    draft.write_text(json.dumps([{"op": "create", "rule": {"kind": "safety_stock", "units": 2}}]))

    assert main(["rules", "backtest", "--days", "2", "--changes", str(draft), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["days"], report["entries"]) == (2, 3)
    online = next(row for row in report["channels"] if row["channel"] == "online")
    # safety 2 shows 3 of 5: c1 (2) fits, then 1 shown and c2 (2) is refused
    assert (online["orders_refused"], online["units_refused"]) == (1, 2)

    assert main(["rules", "backtest", "--days", "2", "--changes", str(draft)]) == 0
    text = capsys.readouterr().out
    assert "3 journal entries" in text and "orders refused" in text
    assert any(line.split()[:3] == ["online", "1", "2"] for line in text.splitlines())

    draft.write_text(json.dumps({"changes": [{"op": "delete", "id": 41}]}))
    assert main(["rules", "backtest", "--days", "2", "--changes", str(draft)]) == 2
    assert "no live rule 41" in capsys.readouterr().err
    draft.write_text("[{")
    assert main(["rules", "backtest", "--days", "2", "--changes", str(draft)]) == 2
    assert main(["rules", "backtest", "--days", "40", "--changes", str(draft)]) == 2
