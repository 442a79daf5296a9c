"""`ExceptionDesk`: every flow's exception queue worked from one place (the HTTP API,
availability/api/flows.py, and the console's operations view).

The order, returns, finance and fulfilment flows keep their exceptions in the shared
`flow_exceptions` table (availability/flows/documents.py), so one list shows them all with
one id space; retry and resolve go to the exception's own flow (its store, whose queue is
scoped to the flow, and its work queue), replay to the order flow only. Stores are opened
on first use over the service's database and closed with `close()`.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

#: flow -> (store class, work queue factory, module with retry_exception / resolve_exception)
FLOW_PARTS = {
    "orders": ("availability.flows.orders.store:OrderStore", "availability.flows.orders.flow:OrderQueue",
               "availability.flows.orders.flow"),
    "returns": ("availability.flows.returns.store:ReturnStore", "availability.flows.returns.flow:ReturnsQueue",
                "availability.flows.returns.flow"),
    "finance": ("availability.flows.finance.store:FinanceStore", "availability.flows.finance.flow:finance_queue",
                "availability.flows.finance.flow"),
    "fulfilment": ("availability.flows.fulfilment.store:FulfilmentStore",
                   "availability.flows.fulfilment.flow:fulfilment_queue", "availability.flows.fulfilment.flow"),
}


class NotReplayable(Exception):
    """Only an order can be posted again from its stored document."""


def _load(target: str) -> Any:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


class ExceptionDesk:
    def __init__(self, database_url: str, redis: Any, key_prefix: str) -> None:
        self.database_url, self.redis, self.key_prefix = database_url, redis, key_prefix
        self._parts: dict[str, tuple[Any, Any]] = {}
        self._all: Any = None
        self._lock = asyncio.Lock()

    async def parts(self, flow: str = "orders") -> tuple[Any, Any]:
        """(store, work queue) of a flow."""
        if flow not in self._parts:
            async with self._lock:
                if flow not in self._parts:
                    store_class, queue_factory, _ = FLOW_PARTS[flow]
                    store = await _load(store_class)(self.database_url).open()
                    self._parts[flow] = (store, _load(queue_factory)(self.redis, self.key_prefix))
        return self._parts[flow]

    async def _queue(self) -> Any:
        if self._all is None:
            from availability.flows.documents import ExceptionQueue, flow_exceptions  # noqa: PLC0415

            store, _ = await self.parts("orders")  # the database is at head once a store opened it
            self._all = ExceptionQueue(store.engine, flow_exceptions, "reference", {})
        return self._all

    async def list(self, **filters: Any) -> list[dict]:
        """Every flow's exceptions, oldest first (filters: status, reason, flow, owner, limit, after_id)."""
        return await (await self._queue()).list(**filters)

    async def get(self, exception_id: int) -> dict | None:
        row = await (await self._queue()).get(exception_id)
        return row if row is not None and row["flow"] in FLOW_PARTS else None

    async def _act(self, exception_id: int, act) -> dict:
        row = await self.get(exception_id)
        if row is None:
            raise KeyError(exception_id)
        store, queue = await self.parts(row["flow"])
        await act(importlib.import_module(FLOW_PARTS[row["flow"]][2]), store, queue)
        return row

    async def retry(self, exception_id: int, *, by: str) -> dict:
        """Close it and settle its document again; KeyError for an unknown id."""
        return await self._act(exception_id, lambda m, store, queue: m.retry_exception(store, queue, exception_id,
                                                                                      by=by))

    async def resolve(self, exception_id: int, *, by: str, note: str) -> dict:
        """Close it, post nothing; KeyError for an unknown id."""
        return await self._act(exception_id, lambda m, store, _queue: m.resolve_exception(store, exception_id, by=by,
                                                                                         note=note))

    async def replay(self, exception_id: int, *, by: str) -> dict:
        """Post the order again from its stored document (orders/flow.py `replay_exception`,
        whose NotReplayable is raised as is); NotReplayable for another flow's exception."""
        row = await self.get(exception_id)
        if row is None:
            raise KeyError(exception_id)
        if row["flow"] != "orders":
            raise NotReplayable(f"exception {exception_id} is the {row['flow']} flow's: retry it instead")
        from availability.flows.orders.flow import replay_exception  # noqa: PLC0415

        store, queue = await self.parts("orders")
        await replay_exception(store, queue, exception_id, by=by)
        return row

    async def close(self) -> None:
        for store, _ in self._parts.values():
            await store.close()
        self._parts.clear()
        self._all = None
