"""The HTTP API (Litestar + msgspec). docs/api.md is the guide.

app.py          create_app(runtime), the ASGI factory `serve` runs, lifespan
lookups.py      GET /v1/availability/{sku}, batch, explain   (hot path)
reservations.py POST /v1/reservations, release, commit, GET
rules.py        /v1/rules CRUD, history, rollback, preview
master.py       /v1/locations, /v1/channels
events.py       POST /v1/events (stream or direct)
ops.py          /health/live, /health/ready, /metrics
queries.py      the read use cases below the routes; preview.py the what-if
security.py     API keys, scopes, rate limit (one ASGI gate per route)
problems.py     every error as application/problem+json, in one place
metrics.py      Prometheus: latency per route template, ledger and rule gauges
stockreader.py  auto-pipelined, hiredis-parsed stock reads for the hot path
schemas.py      request/response structs that are not domain types
openapi.py      exact request schemas and open routes in the OpenAPI document
commands.py     `availability serve`
"""
