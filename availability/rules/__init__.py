"""Rule and master-data store (SQLAlchemy, SQLite or PostgreSQL) and its in-process cache.

`RuleStore` holds rules and master data, `ApiKeyStore` (`store.keys`) the API keys and
`ShopifyMappingStore` (`store.mappings`) the Shopify mappings, all over one
`StoreDatabase` (`database.py`: engine, transactions, audit); `RuleCache` keeps
the compiled `availability.domain.rules.RuleBook` in memory and swaps in a new one
when the store's version moves (in this process or another).
"""

from availability.rules.cache import ChangeListener, RuleCache
from availability.rules.errors import InvalidMasterData, MasterDataInUse
from availability.rules.database import MasterChange, StoreDatabase
from availability.rules.keys_store import ApiKeyStore, hash_api_key
from availability.rules.mappings_store import ShopifyMappingStore
from availability.rules.store import RuleChange, RuleStore, load_master_file

__all__ = [
    "RuleStore",
    "StoreDatabase",
    "ApiKeyStore",
    "ShopifyMappingStore",
    "RuleCache",
    "RuleChange",
    "MasterChange",
    "ChangeListener",
    "InvalidMasterData",
    "MasterDataInUse",
    "hash_api_key",
    "load_master_file",
]
