"""Sync flows: the Shopify inventory push (the first flow) on shared flow machinery
(`machinery.py`: work queue with leases, outbox, retries, dead letters, correlation ids).
See docs/shopify-push.md."""
