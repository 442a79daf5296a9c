"""Background processes that act on the shop behind the app's back: the external writer
(a merchant or another app editing ``available``) and the shoppers (checkouts at a
configured rate). Both are driven by :class:`~.config.FaultConfig` knobs, changeable at
runtime, and draw from the simulator's seeded RNG."""

from __future__ import annotations

import asyncio
import logging

from .state import SimulatorState
from .webhooks import WebhookSender

log = logging.getLogger("adapters.shopify.simulator")


async def external_writer_loop(state: SimulatorState, sender: WebhookSender) -> None:
    """Every ``external_writer_interval_s``, change a random level and announce it."""
    while True:
        interval = state.faults.external_writer_interval_s
        if interval <= 0:
            await asyncio.sleep(0.2)  # knob off: poll for it to be switched on
            continue
        await asyncio.sleep(interval)
        if state.faults.external_writer_interval_s <= 0:
            continue  # switched off while we slept: no last change after "off"
        try:
            changed = state.external_change()
            if changed is not None:
                await sender.level_update(*changed)
        except Exception:  # keep the writer alive whatever one change does
            log.exception("external writer change failed")


async def buyer_loop(state: SimulatorState, sender: WebhookSender) -> None:
    """Shoppers checking out at ``buyer_rate_per_s`` (exponential gaps, seeded)."""
    while True:
        rate = state.faults.buyer_rate_per_s
        if rate <= 0:
            await asyncio.sleep(0.2)
            continue
        with state.lock:
            gap = state._rng.expovariate(rate)
        await asyncio.sleep(gap)
        if state.faults.buyer_rate_per_s <= 0:
            continue
        try:
            sold = state.random_checkout(state.faults.buyer_max_quantity)
            if sold is not None:
                sender.emit(sold[1])
        except Exception:
            log.exception("background checkout failed")
