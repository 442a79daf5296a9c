"""Background services that run beside the API in `availability serve` (and alone in
`availability consume` / `availability publish`).

A service is a class built from the `Runtime` with `start()` and `stop()`; `stop()` must
finish in-flight work (acknowledge a batch, confirm a push) before it returns. Areas
that are not installed are skipped, so the list names every service the product has.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from availability.bootstrap import Runtime

log = logging.getLogger(__name__)

#: name -> "module:Class"
SERVICES: dict[str, str] = {
    "expiry": "availability.ledger.sweeper:ExpirySweeper",
    "rules-dirty": "availability.rules.dirtying:RuleChangeMarker",
    "consumer": "availability.ingest.service:ConsumerService",
    "publisher": "availability.flows.inventory.service:PublisherService",
    "flows": "availability.flows.workers:ErpFlowsService",
}


class Service(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def build_services(runtime: "Runtime", names: list[str] | None = None) -> list[Service]:
    built = []
    for name, target in SERVICES.items():
        if names is not None and name not in names:
            continue
        module_name, class_name = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if module_name.startswith(exc.name or '\0'):
                log.debug("service %s not available (%s missing)", name, module_name)
                continue
            raise
        built.append(getattr(module, class_name)(runtime))
    return built
