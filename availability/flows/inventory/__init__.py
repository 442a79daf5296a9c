"""The Shopify inventory push: dirty (SKU, location) marks in, `inventorySetQuantities` out,
on the shared flow machinery (`availability.flows.machinery`). See docs/shopify-push.md.

- `publisher`: claim, compute, compare, push (compare-and-set, outbox, retries, dead letters).
- `mappings`: SKU and (channel, location) -> Shopify InventoryItem and Location GIDs; level arithmetic.
- `state`: what the push keeps in Redis (keys named by `availability.ledger.keys`).
- `sales`: Shopify's own sales in flight, held against the levels they lowered.
- `drift`: webhook, periodic and bulk repair of levels changed outside the push.
- `shops`: several shops, each with its own keys, points bucket and webhook stream.
- `service`: the `publisher` background service; `commands`: `availability publish|shopify ...`.
- `metrics`: the push's Prometheus metrics (and the flows' shared counters).
"""
