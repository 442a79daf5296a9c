"""The reservation sweeps `serve` runs every few hundred ms (the `expiry` service):

- expiry: releases reservations whose TTL has passed (abandoned carts);
- recovery: rolls back attempts whose owner died (or stalled past its lease) between
  writing the intent and finishing, so a crash never strands a hold for longer than the
  lease plus one period;
- retention: removes the holds and headers of reservations that ended more than the
  retention grace period ago, and the holds order events ended (released, all shipped)
  the same grace after they ended, so memory stays flat however many reservations settle.
"""

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
        self._stopping = asyncio.Event()
        self.expired_total = 0
        self.recovered_total = 0
        self.forgotten_total = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="expiry-sweeper")

    async def stop(self) -> None:
        # A flag as well as a cancel: a cancellation that lands inside a Redis call can be
        # absorbed by the client, and the loop must still end after its current pass.
        self._stopping.set()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def sweep_once(self) -> int:
        """One pass of all three sweeps; how many reservations it settled or removed."""
        recovered = await self.ledger.recover_abandoned()
        expired = await self.ledger.expire_due()
        forgotten = await self.ledger.forget_settled()
        forgotten += await self.ledger.forget_ended_holds()
        self.recovered_total += recovered
        self.expired_total += expired
        self.forgotten_total += forgotten
        if expired:
            log.info("released %d expired reservations", expired)
        return recovered + expired + forgotten

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if await self.sweep_once():
                    continue  # there may be more due right away
            except Exception:  # a Redis blip must not kill the sweeper
                log.exception("reservation sweep failed; retrying")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.period)
