"""Fulfilment back to Shopify: WMS 945 shipments and ERP shipments become Shopify
fulfillments on the order's fulfillment orders, exactly once (docs/flows.md).

- `mapping`: a 945 or an ERP shipment -> `Shipment`; a shipment -> the fulfillment order
  lines it fulfils (pure).
- `store`: durable per-shipment state, its history and the exception queue (SQL).
- `flow`: intake, the worker (per order, on `availability.flows.machinery`) and the
  watcher that reads the ERP's done shipments.
- `commands`: `availability flows fulfilment feed-945|run|status|show|exceptions`.
"""
