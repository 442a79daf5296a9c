"""Rule and master-data store (SQLAlchemy, SQLite or PostgreSQL) and its in-process cache.

`RuleStore` owns the tables and every audited, versioned write; `RuleCache` keeps
the compiled `availability.domain.rules.RuleBook` in memory and swaps in a new one
when the store's version moves (in this process or another).
"""

from availability.rules.cache import ChangeListener, RuleCache
from availability.rules.errors import InvalidMasterData, MasterDataInUse
from availability.rules.store import MasterChange, RuleChange, RuleStore, hash_api_key, load_master_file

__all__ = [
    "RuleStore",
    "RuleCache",
    "RuleChange",
    "MasterChange",
    "ChangeListener",
    "InvalidMasterData",
    "MasterDataInUse",
    "hash_api_key",
    "load_master_file",
]
