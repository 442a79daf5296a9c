"""Which ERP party a customer, an order's buyer, a guest or a POS customer is.

`CustomerIdentity.resolve(source, person)` decides it, in this order:

1. the source (a Shopify customer, or a guest order) was matched before: its party; a
   customer Shopify merged away follows `merged_into` to the survivor's party;
2. the identity map (SQL, `customer_keys`) by the person's keys in rule order: e-mail,
   E.164 phone, name + postal address (matching.py): the first key with a party wins,
   and the person's other keys are recorded for that party (a customer's new phone);
3. nobody matched: the first key is *claimed* (its row inserted with no party yet: the
   primary key lets only one worker create the party for an e-mail, the others wait
   for it), the ERP is asked for a party with that e-mail or phone (made elsewhere, or by
   a worker that died after creating it), else a party is created; the key is filled.

Guests (orders that name no Shopify customer) go, by `guest_party` (setting
AVAILABILITY_GUEST_PARTY), either through the same rules ("create": a guest with an
e-mail seen before gets that party, a new one becomes a party of its own) or all to one
party of that name.

Every decision is stored with its rule, confidence and a sentence saying why, for the
match report (`report()`, `availability flows customers report`, GET /v1/flows/customers/matches).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from dataclasses import dataclass

from adapters.erp.port import Erp, ErpError, PartyRef
from availability.flows.customers import matching
from availability.flows.customers.matching import CONFIDENCE, Person
from availability.flows.customers.store import Customer, CustomerStore

log = logging.getLogger(__name__)

GUEST_CREATE = "create"


def customer_source(shop: str, customer_id: str) -> str:
    return f"shopify:{shop}:customer:{customer_id}"


def guest_source(order_reference: str) -> str:
    return f"order:{order_reference}"


@dataclass(frozen=True, slots=True)
class Match:
    party_id: int
    rule: str
    confidence: float
    key: str | None
    detail: str


class ClaimTimeout(ErpError):
    """Another worker holds the claim on a key and did not finish in time: retried later
    like an ERP that is down (that worker is most likely waiting on the ERP)."""

    reason = "identity_busy"
    transient = True


class CustomerIdentity:
    def __init__(self, store: CustomerStore, erp: Erp, *, guest_party: str = GUEST_CREATE,
                 default_region: str = "US", claim_lease_ms: int = 60_000, wait_s: float = 30.0,
                 owner: str | None = None) -> None:
        self.store = store
        self.erp = erp
        self.guest_party = (guest_party or GUEST_CREATE).strip()
        self.default_region = default_region
        self.claim_lease_ms = claim_lease_ms
        self.wait_s = wait_s
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    # --- entry points -----------------------------------------------------------------------

    async def party_for_order(self, shop: str, reference: str, order: dict) -> int:
        """The party an order's sale goes to (the order flow calls this before creating it)."""
        customer = order.get("customer") or {}
        cid = matching.customer_id(customer) if customer else None
        person = matching.person_from_order(order)
        if cid:
            return (await self.resolve(customer_source(shop, cid), person, shop=shop, payload=customer)).party_id
        if self.guest_party != GUEST_CREATE:
            return (await self._guest(guest_source(reference), shop)).party_id
        return (await self.resolve(guest_source(reference), person, shop=shop, payload=None)).party_id

    async def parties_for_orders(self, orders: list[tuple[str, str, dict]]) -> list[int | ErpError]:
        """`party_for_order` for a batch of (shop, reference, order): guests with nothing to
        match on (no customer, no e-mail, phone or name with address; a flash sale's usual
        buyer) become parties of their own in one ERP call; every other order goes through
        `party_for_order` (its claims and rules) one by one. One result per order: its party,
        or the ERP error of that order (a transient one for the batch's guests together)."""
        results: list[int | ErpError | None] = [None] * len(orders)
        guests: list[tuple[int, str, str, str]] = []  # (index, shop, source, name)
        for i, (shop, reference, order) in enumerate(orders):
            person = matching.person_from_order(order)
            own = (not order.get("customer") and self.guest_party == GUEST_CREATE
                   and (person.anonymous or not matching.keys(person, self.default_region)))
            if own:
                source = guest_source(reference)
                existing = await self.store.get(source)
                if existing is None or existing.party_id is None:
                    guests.append((i, shop, source, person.name or f"Guest {source.split(':', 1)[-1]}"))
                    continue
            try:
                results[i] = await self.party_for_order(shop, reference, order)
            except ErpError as exc:
                results[i] = exc
        if guests:
            try:
                created = await self.erp.create_parties([PartyRef(name=name) for _, _, _, name in guests])
            except ErpError as exc:
                created = [exc] * len(guests)
            for (i, shop, source, _), party_id in zip(guests, created):
                if not isinstance(party_id, ErpError):
                    await self._own_party(source, shop, party_id)
                results[i] = party_id
        return results  # type: ignore[return-value]

    async def resolve_customer(self, source: str) -> Match | None:
        """Match a received Shopify customer (the customer worker); None when not stored."""
        row = await self.store.get(source)
        if row is None:
            return None
        person = matching.person_from_customer(row.payload or {})
        return await self.resolve(source, person, shop=row.shop, payload=row.payload)

    async def resolve(self, source: str, person: Person, *, shop: str, payload: dict | None) -> Match:
        row = await self.store.get(source)
        if row is not None and row.state == "merged" and row.merged_into:
            return await self._follow(row, person, shop)
        if row is not None and row.party_id is not None:
            # known: an update keeps the party (Shopify's customer is still the same person)
            # and teaches the map its new e-mail, phone or address
            await self._learn(row.party_id, person, source)
            match = Match(row.party_id, row.rule or "", row.confidence or 0.0, row.matched_key, row.detail or "")
            if row.state == "received":  # received again: an update, or a merge into it (settled here)
                await self.settle_merges(source, match.party_id)
                await self.store.matched(source, party_id=match.party_id, rule=match.rule,
                                         confidence=match.confidence, matched_key=match.key, detail=match.detail)
            return match
        if person.anonymous or not matching.keys(person, self.default_region):
            # nothing to match on (a name alone is not enough): a party of its own
            return await self._guest(source, shop, person_name=person.name or f"Guest {source.split(':', 1)[-1]}")
        match = await self._match(source, person)
        await self.settle_merges(source, match.party_id)  # customers merged into this one
        await self.store.matched(source, party_id=match.party_id, rule=match.rule, confidence=match.confidence,
                                 matched_key=match.key, detail=match.detail, shop=shop, payload=payload)
        return match

    async def settle_merges(self, survivor: str, party_id: int) -> None:
        """Customers Shopify merged into `survivor` take its party. One that had a party of
        its own gets it replaced by the survivor's in the ERP (`Erp.replace_party`: Tryton's
        party replacement moves its sales and invoices and deactivates it), then every
        source and key of the replaced party follows in the identity map. Idempotent: the
        ERP call writes nothing when the party is already replaced, so a crash between it
        and the map's update, or a second delivery of the merge, replaces nothing twice.
        Runs before the survivor is recorded `matched`: until then it stays `received`."""
        waiting, replaced_now = [], set()
        for row in await self.store.followers(survivor):
            if row.party_id is None:
                waiting.append(row.source)
            elif row.party_id != party_id and row.party_id not in replaced_now:
                replaced_now.add(row.party_id)
                replaced = await self.erp.replace_party(row.party_id, party_id)
                note = (f"ERP party {row.party_id} replaced by {party_id}" if replaced
                        else f"ERP party {row.party_id} already replaced by {party_id}")
                await self.store.replace_party(row.party_id, party_id, note=note)
                log.info("customer %s merged into %s: %s", row.source, survivor, note)
        await self.store.repoint(waiting, party_id)

    # --- rules ------------------------------------------------------------------------------

    async def _match(self, source: str, person: Person) -> Match:
        keys = matching.keys(person, self.default_region)
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while True:
            waiting = False
            for key, rule in keys:
                row = await self.store.key(key)
                if row is None:
                    continue
                if row["party_id"] is not None:
                    party_id = int(row["party_id"])
                    await self._learn(party_id, person, source, keys)
                    return Match(party_id, rule, CONFIDENCE[rule], key,
                                 matching.explain(rule, key, party_id, first_source=row["source"]))
                waiting = waiting or row["claimed_by"] != self.owner
            first_key, first_rule = keys[0]
            if await self.store.claim(first_key, first_rule, by=self.owner, source=source,
                                      lease_ms=self.claim_lease_ms):
                return await self._create(source, person, keys)
            if asyncio.get_running_loop().time() > deadline:
                raise ClaimTimeout(f"{first_key} is being matched by another worker")
            await asyncio.sleep(0.05 if waiting else 0.01)

    async def _create(self, source: str, person: Person, keys: list[tuple[str, str]]) -> Match:
        first_key = keys[0][0]
        email = matching.normalize_email(person.email)
        phone = matching.normalize_phone(person.phone, person.address.country or None, self.default_region)
        party_id = await self.erp.find_party(email=email, phone=phone)
        if party_id is not None:
            rule = "erp_email" if email and await self.erp.find_party(email=email) == party_id else "erp_phone"
            confidence = CONFIDENCE["email" if rule == "erp_email" else "phone"]
        else:
            party_id = await self.erp.create_party(self._party_ref(person, email, phone))
            rule, confidence = "new", 1.0
        await self.store.fill(first_key, party_id)
        await self.store.add_keys(party_id, keys[1:], source)
        log.info("customer %s: party %s (%s)", source, party_id, rule)
        return Match(party_id, rule, confidence, first_key, matching.explain(rule, first_key, party_id))

    async def _learn(self, party_id: int, person: Person, source: str,
                     keys: list[tuple[str, str]] | None = None) -> None:
        """Record the person's keys no party holds yet for this party (and tell the ERP of a
        new e-mail or phone), so the next order with only that phone finds the party."""
        keys = keys if keys is not None else matching.keys(person, self.default_region)
        added = await self.store.add_keys(party_id, keys, source)
        contacts = {k.split(":", 1)[0]: k.split(":", 1)[1] for k in added if k.startswith(("email:", "phone:"))}
        if contacts:
            await self.erp.add_party_contacts(party_id, email=contacts.get("email"), phone=contacts.get("phone"))

    async def _follow(self, row: Customer, person: Person, shop: str) -> Match:
        """A merged-away customer: the survivor's party (resolved from the survivor's
        payload, or from this one's when the survivor was never seen)."""
        survivor = await self.store.get(row.merged_into or "")
        if survivor is not None and survivor.party_id is not None:
            party_id = survivor.party_id
        else:
            basis = matching.person_from_customer(survivor.payload) if survivor and survivor.payload else person
            party_id = (await self.resolve(row.merged_into or "", basis, shop=shop,
                                           payload=survivor.payload if survivor else None)).party_id
        await self.store.merge(loser=row.source, survivor=row.merged_into or "", shop=shop,
                               detail=matching.explain("merge", None, party_id, first_source=row.merged_into))
        return Match(party_id, "merge", 1.0, None, matching.explain("merge", None, party_id,
                                                                    first_source=row.merged_into))

    async def _guest(self, source: str, shop: str, *, person_name: str | None = None) -> Match:
        """The configured guest party (created once, by key), or a party of the guest's own."""
        name = person_name or self.guest_party
        if person_name is None:
            key = f"guest:{matching.fold(name)}"
            deadline = asyncio.get_running_loop().time() + self.wait_s
            while True:
                row = await self.store.key(key)
                if row is not None and row["party_id"] is not None:
                    party_id = int(row["party_id"])
                    break
                if await self.store.claim(key, "guest", by=self.owner, source=source, lease_ms=self.claim_lease_ms):
                    party_id = await self.erp.create_party(PartyRef(name=name))
                    await self.store.fill(key, party_id)
                    break
                if asyncio.get_running_loop().time() > deadline:
                    raise ClaimTimeout(f"{key} is being created by another worker")
                await asyncio.sleep(0.05)
            match = Match(party_id, "guest", 1.0, key, matching.explain("guest", key, party_id))
        else:
            existing = await self.store.get(source)
            if existing is not None and existing.party_id is not None:
                return Match(existing.party_id, existing.rule or "new", existing.confidence or 1.0,
                             existing.matched_key, existing.detail or "")
            return await self._own_party(source, shop, await self.erp.create_party(PartyRef(name=name)))
        await self.store.matched(source, party_id=match.party_id, rule=match.rule, confidence=match.confidence,
                                 matched_key=match.key, detail=match.detail, shop=shop)
        return match

    async def _own_party(self, source: str, shop: str, party_id: int) -> Match:
        """Record a party made for one guest with nothing to match on."""
        match = Match(party_id, "new", 1.0, None, "nothing to match on (no e-mail, phone, or name with address): "
                      + matching.explain("new", None, party_id))
        await self.store.matched(source, party_id=match.party_id, rule=match.rule, confidence=match.confidence,
                                 matched_key=match.key, detail=match.detail, shop=shop)
        return match

    @staticmethod
    def _party_ref(person: Person, email: str | None, phone: str | None) -> PartyRef:
        street = "\n".join(p for p in (person.address.line1, person.address.line2) if p) or None
        return PartyRef(name=person.name or email or phone or "Customer", email=email, phone=phone, street=street,
                        postal_code=person.address.postal_code or None, city=person.address.city or None)

    # --- report -----------------------------------------------------------------------------

    async def report(self, *, shop: str | None = None) -> dict:
        return await match_report(self.store, shop=shop)


async def match_report(store: CustomerStore, *, shop: str | None = None) -> dict:
    """Every source with its party, the rule and confidence, why, and which other sources
    share the party (the pairs that matched)."""
    rows = await store.all(shop=shop)
    by_party: dict[int, list[str]] = {}
    for row in rows:
        if row.party_id is not None:
            by_party.setdefault(row.party_id, []).append(row.source)
    matches = []
    for row in rows:
        matches.append({
            "source": row.source, "party_id": row.party_id, "state": row.state, "rule": row.rule,
            "confidence": row.confidence, "key": row.matched_key, "why": row.detail,
            "merged_into": row.merged_into,
            "same_party_as": [s for s in by_party.get(row.party_id, []) if s != row.source] if row.party_id else [],
        })
    rules: dict[str, int] = {}
    for m in matches:
        rules[m["rule"] or "unmatched"] = rules.get(m["rule"] or "unmatched", 0) + 1
    return {"sources": len(matches), "parties": len(by_party), "by_rule": rules, "matches": matches}


def render_report(report: dict) -> str:
    lines = [f"{report['sources']} sources -> {report['parties']} parties; by rule: "
             + ", ".join(f"{k} {v}" for k, v in sorted(report["by_rule"].items())), ""]
    header = ("source", "party", "rule", "conf", "why")
    rows = [(m["source"], str(m["party_id"] if m["party_id"] is not None else "-"), m["rule"] or "-",
             f"{m['confidence']:.2f}" if m["confidence"] is not None else "-", m["why"] or "") for m in report["matches"]]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    lines.append(fmt.format(*header))
    lines.extend(fmt.format(*r) for r in rows)
    return "\n".join(lines)
