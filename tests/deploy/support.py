"""Shared checks of deploy/ against the code: CLI commands, settings and service names."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from availability.cli import build_parser
from availability.config import Settings
from availability.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def assert_cli_command(args: list[str]) -> None:
    """`availability ARGS` parses with the real CLI parser (unknown commands and options exit)."""
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit as exc:  # argparse's way of refusing
        raise AssertionError(f"`availability {shlex.join(args)}` is not a valid command line") from exc
    assert getattr(parsed, "handler", None), f"`availability {shlex.join(args)}` runs nothing"


def assert_settings(env: dict[str, str]) -> Settings:
    """Every AVAILABILITY_* variable names a real setting, and the values parse."""
    unknown = [
        name for name in env
        if name.startswith("AVAILABILITY_") and name.removeprefix("AVAILABILITY_").lower() not in Settings.model_fields
    ]
    assert not unknown, f"not settings in availability/config.py: {unknown}"
    values = {
        name.removeprefix("AVAILABILITY_").lower(): _decode(name, value)
        for name, value in env.items()
        if name.startswith("AVAILABILITY_")
    }
    settings = Settings(_env_file=None, **values)
    if settings.services is not None:
        assert set(settings.services) <= set(SERVICES), f"unknown services {settings.services}; known: {sorted(SERVICES)}"
    return settings


def _decode(name: str, value: str):
    field = Settings.model_fields[name.removeprefix("AVAILABILITY_").lower()]
    if "list" in str(field.annotation):
        try:
            return json.loads(value)
        except ValueError:
            return value  # a list the setting parses itself (AVAILABILITY_FLOWS=orders,fulfilment)
    return value


_INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?])?([^}]*)\}")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message}: the default, or a stand-in
    value for a required variable (as if the operator had set it)."""
    env = env or {}

    def one(match: re.Match) -> str:
        name, rest = match.group(1), match.group(2)
        if name in env:
            return env[name]
        text = match.group(0)
        if ":?" in text or text.endswith(name + "}"):
            return STAND_INS.get(name, "x")
        return rest

    return _INTERPOLATION.sub(one, value)


STAND_INS = {
    "AVAILABILITY_API_KEYS": '[{"key": "k", "scopes": ["admin"], "name": "ops"}]',
    "AVAILABILITY_SHOPIFY_WEBHOOK_SECRETS": '["s"]',
}
