"""A faithful local simulator of the Shopify GraphQL Admin API: inventory, Shopify's own
sales, webhooks and bulk operations.

It is a real HTTP server (a Litestar app served by uvicorn) so that the client, the
publisher, tests and demos talk to a genuine HTTP peer with Shopify's wire behaviour. The
facts it follows are in ``/work/shared/design/shopify.md``; where a detail is not
documented by Shopify, the module that makes the choice says so under "the simulator's
own choices".

Modules
-------
:mod:`.config`    plans, the cost model presets, fault and traffic knobs
:mod:`.versions`  what differs between API versions (``@idempotent``, compare styles, enums)
:mod:`.schema`    the SDL (from the Admin API reference) per version
:mod:`.gql`       parse / validate (graphql-core), pre-checks, execution, resolvers
:mod:`.cost`      leaky bucket and query cost calculation
:mod:`.state`     the shop: catalogue, levels, inventory mutations, idempotency, counters
:mod:`.sales`     checkouts, orders, cancellations (Shopify's own stock moves)
:mod:`.bulk`      bulk query / bulk mutation and staged uploads
:mod:`.webhooks`  signed deliveries with delay, duplication, reordering and retries
:mod:`.faults`    background external writer and shoppers
:mod:`.app`       the HTTP routes
:mod:`.server`    uvicorn serving, the test server, the command line

Endpoints
---------
``POST /admin/api/{version}/graphql.json``
    The GraphQL endpoint. ``X-Shopify-Access-Token`` must be the configured token (or one
    of ``extra_access_tokens``), else HTTP 401 with Shopify's error JSON. ``version`` is
    ``YYYY-MM`` or ``unstable`` (anything else: 404). Body ``{"query", "variables",
    "operationName"?}``. Documents are validated against the version's schema, so an
    unknown field, argument or directive is refused as Shopify refuses it
    (``undefinedField`` etc.; HTTP 200, ``errors``, no ``data``).

``/_sim/...`` (simulator control endpoints, never on real Shopify; no auth)
    ``POST /_sim/seed``  seed locations, items (with ``inventory_policy``) and levels
    ``GET  /_sim/levels`` every level with its quantities
    ``GET  /_sim/stats``  counters (calls, throttled, points spent, overdraw, units sold, ...)
    ``GET  /_sim/history`` every quantity change, in order (API, external, checkout, cancel)
    ``GET|POST /_sim/faults`` read / change the fault and traffic knobs (partial update)
    ``POST /_sim/webhook`` change the webhook target ``{"url", "secret"}``
    ``POST /_sim/external-change`` change one level behind the app's back and deliver the
    ``inventory_levels/update`` webhook; answers after the delivery attempt
    ``POST /_sim/checkout`` a shopper checks out (see :mod:`.sales`)
    ``POST /_sim/orders/{id}/cancel``, ``GET /_sim/orders``
    ``POST /_sim/staged-uploads``, ``GET /_sim/bulk/{id}.jsonl`` (see :mod:`.bulk`)
    ``POST /_sim/reset`` drop all catalogue, levels, orders, keys and counters

Root fields
-----------
Queries: ``node``, ``nodes``, ``inventoryItem``, ``inventoryItems`` (``sku:`` search
terms honoured), ``inventoryLevel``, ``location``, ``locations``, ``order``, ``orders``
(``status:`` and ``updated_at``/``created_at`` terms honoured), ``currentBulkOperation``,
``bulkOperation`` (2026-01+). Mutations: ``inventorySetQuantities``,
``inventoryAdjustQuantities``, ``bulkOperationRunQuery``, ``bulkOperationRunMutation``,
``bulkOperationCancel``, ``stagedUploadsCreate``.

inventorySetQuantities
----------------------
* Compare style per version (:mod:`.versions`): ``changeFromQuantity`` from 2026-01,
  present on every entry from 2026-04 (omitting it is the user error
  ``CHANGE_FROM_QUANTITY_REQUIRED``, *sim choice of code*); ``compareQuantity`` +
  ``ignoreCompareQuantity`` until 2026-04 (``COMPARE_QUANTITY_REQUIRED`` /
  ``COMPARE_QUANTITY_STALE``), gone from the schema in 2026-07.
* **All or nothing**: any user error and no entry is applied; every error found is listed.
* Only ``available`` and ``on_hand`` may be set (``INVALID_NAME``); setting one moves the
  other by the same delta, keeping ``on_hand = available + committed + reserved + damaged
  + safety_stock + quality_control``. Unchanged entries are not listed in ``changes``; if
  nothing changed the group is ``null`` with no user errors (as Shopify does).
* More than 250 entries in any array input -> top-level ``MAX_INPUT_SIZE_EXCEEDED``.

Idempotency (``@idempotent(key: "...")``, 2026-01 and later)
-------------------------------------------------------------
Mandatory for inventory mutations from 2026-04 (missing -> top-level error
``IDEMPOTENCY_KEY_REQUIRED``, *sim choice of code*); an unknown directive before 2026-01.
Same key with different input -> ``IDEMPOTENCY_KEY_PARAMETER_MISMATCH``; while the first is
in flight -> ``IDEMPOTENCY_CONCURRENT_REQUEST``; a completed key replays the original
payload; a key whose request hit an injected 5xx -> ``IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED``
on versions whose enum has it (2026-04+), else the key is claimed afresh.

Rate limiting and cost: see :mod:`.cost` and :class:`~.config.CostModel`
(``cost_model="documented"`` by default, ``"pessimistic"`` preset). Faults: see
:class:`~.config.FaultConfig`. Run it with ``python -m adapters.shopify.simulator`` or
``availability sim shopify``; :class:`SimulatorServer` starts it on a free port in a
background thread for tests (``with SimulatorServer(cfg) as sim: sim.base_url``).
"""

from __future__ import annotations

from .app import create_app
from .bulk import BulkOperations
from .config import (
    ALLOWED_REASONS,
    COST_MODELS,
    MAX_INPUT_ARRAY,
    MAX_QUANTITY,
    PLANS,
    CostModel,
    FaultConfig,
    PlanLimits,
    SimulatorConfig,
)
from .sales import CheckoutRefused
from .server import SimulatorServer, add_simulator_arguments, config_from_args, main, run_simulator
from .state import SetRecord, SimulatorState, SimulatorStats, WebhookDelivery
from .webhooks import WebhookSender, sign_webhook

__all__ = [
    "ALLOWED_REASONS",
    "COST_MODELS",
    "MAX_INPUT_ARRAY",
    "MAX_QUANTITY",
    "PLANS",
    "BulkOperations",
    "CheckoutRefused",
    "CostModel",
    "FaultConfig",
    "PlanLimits",
    "SetRecord",
    "SimulatorConfig",
    "SimulatorServer",
    "SimulatorState",
    "SimulatorStats",
    "WebhookDelivery",
    "WebhookSender",
    "add_simulator_arguments",
    "config_from_args",
    "create_app",
    "main",
    "run_simulator",
    "sign_webhook",
]
