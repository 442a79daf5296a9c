"""Finance posting: Shopify Payments payouts become ERP journal entries, reconciled daily
(docs/flows.md, "Finance posting").

- `mapping`: a payout and its balance transactions -> journal entries (pure).
- `store`: the durable per-payout state, its history, the posted transactions and the
  exception queue (SQL).
- `flow`: the poller (there is no payout webhook) and the worker, on
  `availability.flows.machinery`.
- `reconcile`: the day's sign-off: payouts, captured payments, refunds.
- `commands`: `availability flows finance ...` and `availability flows reconcile finance`.
"""
