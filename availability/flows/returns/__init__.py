"""Return to refund: Shopify refunds become one ERP credit note each, exactly once, and
returns put back only the stock that physically came back (docs/flows.md).

- `mapping`: refund / return payloads -> `adapters.erp.port.CreditNoteDraft` and ledger
  events (pure).
- `store`: the durable per-refund and per-return documents, history and exception queue (SQL).
- `flow`: intake (`ReturnsIntake.enqueue_webhook`) and the worker, on `availability.flows.machinery`.
"""
