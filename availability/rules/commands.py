"""Rule, master-data and API-key tools for planners and operators.

    availability rules list [--kind buffer]
    availability rules history RULE_ID
    availability rules changes [--limit 50]
    availability rules rollback RULE_ID VERSION --reason "..."
    availability rules import master.json --reason "..."     # locations, channels, rules, categories
    availability rules export > master.json
    availability rules backtest --days 7 --changes draft.json [--json]   # planning/commands.py
    availability keys add NAME --scopes read,reserve          # prints the new key once
    availability keys list
    availability keys revoke NAME

They talk to the rule store only (AVAILABILITY_DATABASE_URL); processes that serve pick a
change up within a second (their rule cache polls the store version).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import secrets
import sys

import msgspec

from availability.config import Settings
from availability.rules.store import RuleStore, load_master_file

SCOPES = ("read", "reserve", "events", "rules", "admin")


def register(sub) -> None:
    rules = sub.add_parser("rules", help="rules and master data: list, history, rollback, import, export")
    rsub = rules.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    p = rsub.add_parser("list", help="current rules")
    p.add_argument("--kind")
    p.set_defaults(handler=_run(list_rules))
    p = rsub.add_parser("history", help="every version of one rule: who, when, why, before and after")
    p.add_argument("rule_id", type=int)
    p.set_defaults(handler=_run(history))
    p = rsub.add_parser("changes", help="the most recent rule changes")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(handler=_run(changes))
    p = rsub.add_parser("rollback", help="restore a rule as it was at VERSION (as a new version)")
    p.add_argument("rule_id", type=int)
    p.add_argument("version", type=int)
    p.add_argument("--reason", required=True)
    p.set_defaults(handler=_run(rollback))
    p = rsub.add_parser("import", help="import locations, channels, rules and SKU categories from a JSON file")
    p.add_argument("path")
    p.add_argument("--reason", required=True)
    p.set_defaults(handler=_run(import_file))
    p = rsub.add_parser("export", help="print master data and rules as JSON (the import format)")
    p.set_defaults(handler=_run(export))
    from availability.planning.commands import register_backtest  # noqa: PLC0415 - an action that needs the ledger too

    register_backtest(rsub)

    keys = sub.add_parser("keys", help="API keys: add, list, revoke")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = ksub.add_parser("add", help="create a key (printed once; only its hash is stored)")
    p.add_argument("name")
    p.add_argument("--scopes", required=True, help=f"comma-separated: {', '.join(SCOPES)}")
    p.set_defaults(handler=_run(add_key))
    p = ksub.add_parser("list", help="active keys (names and scopes)")
    p.set_defaults(handler=_run(list_keys))
    p = ksub.add_parser("revoke", help="deactivate every key with this name")
    p.add_argument("name")
    p.set_defaults(handler=_run(revoke_key))


def _run(action):
    def handler(args, settings: Settings) -> int:
        async def go() -> int:
            store = RuleStore(settings.resolved_database_url())
            await store.start()
            try:
                return await action(store, args)
            finally:
                await store.close()

        return asyncio.run(go())

    return handler


def _print(value) -> None:
    print(json.dumps(msgspec.to_builtins(value), indent=2, default=str))


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


async def list_rules(store: RuleStore, args) -> int:
    _print(await store.list_rules(args.kind))
    return 0


async def history(store: RuleStore, args) -> int:
    _print(await store.rule_history(args.rule_id))
    return 0


async def changes(store: RuleStore, args) -> int:
    _print(await store.recent_changes(args.limit))
    return 0


async def rollback(store: RuleStore, args) -> int:
    _print(await store.rollback_rule(args.rule_id, args.version, actor=_actor(), reason=args.reason))
    return 0


async def import_file(store: RuleStore, args) -> int:
    counts = await store.import_master_data(load_master_file(args.path), actor=_actor(), reason=args.reason)
    _print(counts)
    return 0


async def export(store: RuleStore, args) -> int:
    _print(await store.export_master_data())
    return 0


async def add_key(store: RuleStore, args) -> int:
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        print(f"unknown scopes {unknown}; choose from {', '.join(SCOPES)}", file=sys.stderr)
        return 2
    key = "av-" + secrets.token_urlsafe(32)
    await store.keys.add_api_key(args.name, key, scopes)
    print(key)
    return 0


async def list_keys(store: RuleStore, args) -> int:
    _print([{"name": name, "scopes": scopes} for _, name, scopes in await store.keys.api_keys()])
    return 0


async def revoke_key(store: RuleStore, args) -> int:
    print(f"revoked {await store.keys.revoke_api_key(args.name)} key(s)")
    return 0
