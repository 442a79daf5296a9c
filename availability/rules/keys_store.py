"""API keys with scopes, stored by their SHA-256 (the API's `KeyRing` reads them from here).

Keys live in the same database as the rules (one thing to back up and to point replicas
at), but they are not part of a `RuleBook`: adding or revoking a key does not move the
store version, so no rule cache rebuilds for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import insert, select, update

from availability.rules.database import StoreDatabase, check_key
from availability.rules.errors import InvalidMasterData
from availability.rules.models import api_keys_t

__all__ = ["ApiKeyStore", "hash_api_key"]


def hash_api_key(key_plaintext: str) -> str:
    """The stored form of an API key: hex SHA-256. The API hashes a presented key the same way."""
    return hashlib.sha256(key_plaintext.encode("utf-8")).hexdigest()



class ApiKeyStore:
    """Named API keys with scopes; a key's plaintext is never stored."""

    def __init__(self, db: StoreDatabase) -> None:
        self.db = db

    async def add_api_key(self, name: str, key_plaintext: str, scopes: Iterable[str]) -> str:
        """Store (or re-activate with new name/scopes) a key by its SHA-256; returns the hash.

        Keys do not move the store version: they are not part of a RuleBook.
        """
        check_key(name, "API key name")
        if not isinstance(key_plaintext, str) or not key_plaintext:
            raise InvalidMasterData("an API key must be a non-empty string")
        scope_list = [scopes] if isinstance(scopes, str) else list(scopes)
        for scope in scope_list:
            check_key(scope, "API key scope")
        key_hash = hash_api_key(key_plaintext)
        values = {"name": name, "scopes": scope_list, "active": True}
        async with self.db.write(bump=False) as tx:
            found = await tx.conn.scalar(select(api_keys_t.c.key_hash).where(api_keys_t.c.key_hash == key_hash))
            if found is None:
                await tx.conn.execute(insert(api_keys_t).values(key_hash=key_hash, created_at=tx.at, **values))
            else:
                await tx.conn.execute(update(api_keys_t).where(api_keys_t.c.key_hash == key_hash).values(**values))
            tx.changed = True
        return key_hash

    async def api_keys(self) -> list[tuple[str, str, list[str]]]:
        """Active keys as (key_hash, name, scopes)."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(api_keys_t.c.key_hash, api_keys_t.c.name, api_keys_t.c.scopes)
                .where(api_keys_t.c.active.is_(True))
                .order_by(api_keys_t.c.name, api_keys_t.c.created_at)
            )
            return [(r.key_hash, r.name, list(r.scopes)) for r in rows]

    async def find_api_key(self, key_plaintext: str) -> tuple[str, list[str]] | None:
        """(name, scopes) of an active key, or None."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(api_keys_t.c.name, api_keys_t.c.scopes).where(
                        api_keys_t.c.key_hash == hash_api_key(key_plaintext), api_keys_t.c.active.is_(True)
                    )
                )
            ).first()
        return (row.name, list(row.scopes)) if row else None

    async def revoke_api_key(self, name: str) -> int:
        """Deactivate every key with this name (kept, not deleted, for the record)."""
        async with self.db.write(bump=False) as tx:
            result = await tx.conn.execute(
                update(api_keys_t).where(api_keys_t.c.name == name, api_keys_t.c.active.is_(True)).values(active=False)
            )
            tx.changed = result.rowcount > 0
            return result.rowcount
