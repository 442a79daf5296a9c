"""Audit a client's pacing from its own side of the wire, without trusting the simulator's refusal.

The simulator refuses (THROTTLED) any request that costs more than its bucket holds, so
"the bucket never went below zero" holds whatever a client does. What a client can get
wrong is *asking*: sending a request the bucket could not have paid for. `CallLog` records,
through httpx event hooks on the client's own HTTP connection, when each GraphQL request
went out, when its answer came back and the cost it asked for (`requestedQueryCost`, the
documented cost of what was sent) and was charged (`actualQueryCost`).
`refused_by_documented_bucket` replays those calls through a leaky bucket of the documented
size and restore rate (charged the requested cost when sent, refunded the unused part when
answered) and returns the calls that bucket would have had to refuse. The server may have
admitted a call at any moment of its round trip, so each call is credited the refill of its
own round trip (the most generous reading); a paced client needs no more than that. The
credit grows with the round trip, so on a loaded machine a fast-refilling bucket forgives
more: the test that shows the audit failing an unpaced client uses a slow refill.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class Call:
    sent: float
    answered: float
    requested: float
    actual: float | None  # None: throttled or refused, nothing charged


@dataclass
class CallLog:
    calls: list[Call] = field(default_factory=list)

    def attach(self, http: httpx.AsyncClient) -> None:
        """Record every request `http` sends from now on (keeps hooks already there)."""
        hooks = http.event_hooks
        hooks["request"] = [*hooks.get("request", []), self._on_request]
        hooks["response"] = [*hooks.get("response", []), self._on_response]
        http.event_hooks = hooks

    async def _on_request(self, request: httpx.Request) -> None:
        request.extensions["bucket_audit_sent"] = time.monotonic()

    async def _on_response(self, response: httpx.Response) -> None:
        answered = time.monotonic()
        await response.aread()
        try:
            cost = json.loads(response.content)["extensions"]["cost"]
        except (ValueError, KeyError, TypeError):
            return  # no cost reported (e.g. HTTP 401): nothing was asked of the bucket
        sent = response.request.extensions.get("bucket_audit_sent", answered)
        self.calls.append(Call(sent, answered, float(cost["requestedQueryCost"] or 0), cost.get("actualQueryCost")))


def refused_by_documented_bucket(calls: list[Call], *, capacity: float, restore_rate: float) -> list[Call]:
    """The calls a full bucket of `capacity` points refilling at `restore_rate`/s could not pay for."""
    moments: list[tuple[float, int, Call]] = []
    for call in calls:
        moments.append((call.sent, 1, call))
        moments.append((call.answered, 0, call))  # refunds first when two moments coincide
    moments.sort(key=lambda m: (m[0], m[1]))
    level, clock = capacity, moments[0][0] if moments else 0.0
    refused: list[Call] = []
    charged: set[int] = set()
    for at, is_send, call in moments:
        level = min(capacity, level + (at - clock) * restore_rate)
        clock = at
        if is_send:
            if call.requested > level + (call.answered - call.sent) * restore_rate + 1e-9:
                refused.append(call)
                continue
            level -= call.requested
            charged.add(id(call))
        elif id(call) in charged:
            # a throttled call (actual None) spent nothing: its whole reservation comes back
            level = min(capacity, level + call.requested - (call.actual or 0))
    return refused
