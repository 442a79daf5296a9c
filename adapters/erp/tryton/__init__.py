"""Tryton, the ERP of the tests, the demo and the embedded default.

- `setup`: creates a Tryton database (company, chart of accounts, fiscal year with invoice
  sequences, a product per SKU) in a child process, cached as a template file.
- `server`: runs `trytond` on a free loopback port over that database (JSON-RPC), the way
  availability/embedded_redis.py runs redis-server.
- `client`: `TrytonErp`, the `adapters.erp.port.Erp` implementation over JSON-RPC.

trytond and its modules are the optional `erp` extra; nothing here imports them at module
level, so the rest of the service runs without them.
"""
