"""The rules and keys CLI against a real SQLite store."""

from __future__ import annotations

import json

from availability.cli import main


def test_keys_and_rules_round_trip_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AVAILABILITY_DATA_DIR", str(tmp_path))
    master = tmp_path / "master.json"
    master.write_text(json.dumps({
        "locations": [{"code": "DC1", "priority": 1}],
        "rules": [{"kind": "safety_stock", "units": 2, "location": "DC1"}],
    }))
    assert main(["rules", "import", str(master), "--reason", "initial load"]) == 0
    capsys.readouterr()
    assert main(["rules", "export"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert [r["units"] for r in exported["rules"]] == [2]
    rule_id = exported["rules"][0]["id"]
    assert main(["rules", "history", str(rule_id)]) == 0
    history = json.loads(capsys.readouterr().out)
    assert history[0]["reason"] == "initial load" and history[0]["actor"].startswith("cli:")

    assert main(["keys", "add", "storefront", "--scopes", "read"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("av-") and len(key) > 30
    assert main(["keys", "list"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"name": "storefront", "scopes": ["read"]}]
    assert main(["keys", "add", "bad", "--scopes", "superuser"]) == 2
    assert main(["keys", "revoke", "storefront"]) == 0
    assert "revoked 1" in capsys.readouterr().out
