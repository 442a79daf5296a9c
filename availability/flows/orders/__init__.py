"""Order to ERP: Shopify orders become one ERP sale each, exactly once (docs/flows.md).

- `mapping`: a Shopify order payload -> `adapters.erp.port.SaleDraft` (pure).
- `store`: the durable per-order document state, its history and the exception queue (SQL).
- `flow`: intake (`enqueue_order_webhook`) and the worker, on `availability.flows.machinery`.
- `commands`: `availability erp init|serve`, `availability flows orders|exceptions|reconcile`.
"""
