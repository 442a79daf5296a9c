"""Settings: one object, read once, from AVAILABILITY_* environment variables and/or a .env
file. Only the composition root (availability/bootstrap.py) and the CLI read it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AVAILABILITY_", env_file=".env", extra="ignore")

    #: Redis URL; empty = start an embedded redis-server under data_dir
    redis_url: str | None = None
    #: SQLAlchemy async URL of the rule and master-data store
    database_url: str | None = None
    #: where the embedded Redis and the default SQLite database keep their files
    data_dir: str = "var"
    key_prefix: str = "av"

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1

    #: JSON list of {"key": ..., "scopes": [...]}
    api_keys: str | None = None
    public_read: bool = False
    rate_limit_per_second: int = 1000

    #: ledger limits
    idempotency_window_seconds: int = 7 * 24 * 3600
    journal_cap: int = 1_000_000
    delta_log_cap: int = 10_000

    #: ingestion
    broker: Literal["redis", "nats", "kafka"] = "redis"
    broker_url: str | None = None
    partitions: int = 8
    batch_size: int = 500
    consumer_name: str | None = None

    #: rules cache refresh (how soon another process's rule change is seen)
    rules_refresh_seconds: float = 1.0

    #: reservation TTL sweeper period
    expiry_sweep_seconds: float = 1.0

    #: Shopify push
    shopify_url: str | None = None
    shopify_token: str | None = None
    shopify_api_version: str = "2026-04"
    shopify_webhook_secrets: list[str] = Field(default_factory=list)
    push_window_seconds: float = 1.0

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir}/availability.db"
