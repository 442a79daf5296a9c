"""Party replacement in Tryton, for Shopify customer merges (availability/flows/customers/).

Tryton's own `party.replace` wizard (party module, extended by sale, account,
account_invoice, stock, company) is what a Tryton user runs to merge two parties: it
deactivates the replaced party (its addresses, contact mechanisms and identifiers too),
sets its `replaced_by`, and moves the documents that name it (sales, invoices, move
lines, shipments) to the kept party. Over JSON-RPC a wizard is three calls: `create` (a
session), `execute` (the `replace` state with the `ask` form filled in), `delete`.

Exactly once: `replaced_by` is the idempotency key. Both parties are followed along their
`replaced_by` chains first (a replacement done earlier, by this flow or by hand in
Tryton); when they end at the same party there is nothing to do and nothing is written.
The wizard warns when the names (or tax identifiers) differ, which a Shopify merge of
"Jane Doe" and "J. Doe" does: the flow acts on Shopify's decision, so those warnings are
skipped beforehand (`res.user.warning.skip`, what Tryton's client does when a user
confirms), else Tryton would answer 409 and the call would be retried forever.
"""

from __future__ import annotations

from typing import Any

from adapters.erp.port import ErpValidationError

#: how far a chain of replaced parties is followed (Tryton forbids none; loops are broken)
_MAX_CHAIN = 20


class TrytonParties:
    """Mixed into `TrytonErp` (it provides `call`)."""

    async def call(self, method: str, *params: Any) -> Any:  # pragma: no cover - TrytonErp's
        raise NotImplementedError

    async def party_replaced_by(self, party_id: int) -> int:
        """The party that stands for `party_id` now: itself, or the end of its `replaced_by` chain."""
        current, seen = party_id, {party_id}
        for _ in range(_MAX_CHAIN):
            rows = await self.call("model.party.party.read", [current], ["id", "replaced_by"])
            if not rows:
                raise ErpValidationError(f"party {current} does not exist in Tryton")
            after = rows[0].get("replaced_by")
            if not after or after in seen:
                return current
            seen.add(after)
            current = after
        return current

    async def replace_party(self, party_id: int, kept_party_id: int) -> bool:
        source = await self.party_replaced_by(party_id)
        target = await self.party_replaced_by(kept_party_id)
        if source == target:
            return False
        rows = {r["id"]: r for r in await self.call("model.party.party.read", [source, target],
                                                    ["id", "name", "tax_identifier.code"])}
        if len(rows) != 2:
            raise ErpValidationError(f"party {source} or {target} does not exist in Tryton")

        def tax_code(row: dict) -> str:
            return ((row.get("tax_identifier.") or {}).get("code")) or ""

        # the wizard's similarity warnings (party/party.py Replace.check_similarity), by its own keys
        warnings = []
        if rows[source]["name"] != rows[target]["name"]:
            warnings.append(f"party.replace name {source} {target}")
        if tax_code(rows[source]) != tax_code(rows[target]):
            warnings.append(f"party.replace tax_identifier {source} {target}")
        for key in warnings:
            await self.call("model.res.user.warning.skip", key, False)
        session, _start, _end = await self.call("wizard.party.replace.create")
        try:
            await self.call("wizard.party.replace.execute", session,
                            {"ask": {"source": source, "destination": target}}, "replace")
        finally:
            await self.call("wizard.party.replace.delete", session)
        return True
