"""Releases reservations whose TTL has passed (abandoned carts), every few hundred ms."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from availability.bootstrap import Runtime

log = logging.getLogger(__name__)


class ExpirySweeper:
    name = "expiry"

    def __init__(self, runtime: "Runtime") -> None:
        self.ledger = runtime.ledger
        self.period = runtime.settings.expiry_sweep_seconds
        self._task: asyncio.Task | None = None
        self.expired_total = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="expiry-sweeper")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                expired = await self.ledger.expire_due()
                self.expired_total += expired
                if expired:
                    log.info("released %d expired reservations", expired)
                    continue  # there may be more due right away
            except Exception:  # a Redis blip must not kill the sweeper
                log.exception("expiry sweep failed; retrying")
            await asyncio.sleep(self.period)
