"""Journal entries in Tryton (`account.move`), for the finance posting of payouts.

An entry is an `account.move` in the journal whose code is `FINANCE_JOURNAL`
(`SHOPIFY-PAY`, made by `adapters.erp.tryton.setup`), in the open standard period of its
date, with `description` = the flow's reference (`account.move` has no reference field;
the description is searchable and the flow never writes anything else there). Lines name
their account by code (`SP-CLEARING`, `SP-BANK`, ... in the embedded chart; a production
Tryton needs accounts with those codes). An entry is created then posted in two calls; a
worker that stops between them leaves a draft that the next attempt finds by reference
and posts (`confirm_journal_entry`).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from adapters.erp.port import ErpJournalEntry, ErpValidationError, JournalEntryDraft, JournalLine
from adapters.erp.tryton.setup import FINANCE_JOURNAL

_MOVE_FIELDS = ["id", "description", "date", "state", "lines"]
_LINE_FIELDS = ["id", "move", "account", "debit", "credit", "description"]


class JournalEntries:
    """Mixed into `TrytonErp` (it provides `call`)."""

    _accounts: dict[str, int]
    _account_codes: dict[int, str]
    _journal_id: int | None = None

    async def call(self, method: str, *params: Any) -> Any:  # pragma: no cover - TrytonErp's
        raise NotImplementedError

    async def _account_ids(self, codes: set[str]) -> dict[str, int]:
        if not hasattr(self, "_accounts"):
            self._accounts, self._account_codes = {}, {}
        missing = sorted(c for c in codes if c not in self._accounts)
        if missing:
            rows = await self.call("model.account.account.search_read", [["code", "in", missing]], 0, None, None,
                                   ["id", "code"])
            for row in rows:
                self._accounts[row["code"]] = row["id"]
                self._account_codes[row["id"]] = row["code"]
        unknown = sorted(c for c in codes if c not in self._accounts)
        if unknown:
            raise ErpValidationError(f"the ERP has no account with code {', '.join(unknown)}")
        return {c: self._accounts[c] for c in codes}

    async def _code_of(self, account_id: int) -> str:
        if not hasattr(self, "_accounts"):
            self._accounts, self._account_codes = {}, {}
        if account_id not in self._account_codes:
            rows = await self.call("model.account.account.read", [account_id], ["id", "code"])
            code = (rows[0].get("code") if rows else None) or f"#{account_id}"
            self._account_codes[account_id] = code
        return self._account_codes[account_id]

    async def _journal(self) -> int:
        if self._journal_id is None:
            rows = await self.call("model.account.journal.search", [["code", "=", FINANCE_JOURNAL]], 0, 1, None)
            if not rows:
                raise ErpValidationError(f"the ERP has no journal with code {FINANCE_JOURNAL}")
            self._journal_id = rows[0]
        return self._journal_id

    async def _period(self, day: dt.date) -> int:
        rows = await self.call("model.account.period.search", [
            ["start_date", "<=", day], ["end_date", ">=", day], ["type", "=", "standard"], ["state", "=", "open"]],
            0, 1, None)
        if not rows:
            raise ErpValidationError(f"the ERP has no open accounting period for {day.isoformat()}")
        return rows[0]

    async def _entries(self, domain: list) -> list[ErpJournalEntry]:
        moves = await self.call("model.account.move.search_read", domain, 0, None, [["id", "ASC"]], _MOVE_FIELDS)
        if not moves:
            return []
        line_ids = [lid for m in moves for lid in m.get("lines") or []]
        lines = await self.call("model.account.move.line.read", line_ids, _LINE_FIELDS) if line_ids else []
        by_move: dict[int, list[JournalLine]] = {}
        for row in sorted(lines, key=lambda r: r["id"]):
            by_move.setdefault(row["move"], []).append(JournalLine(
                account=await self._code_of(row["account"]), debit=row.get("debit") or Decimal("0"),
                credit=row.get("credit") or Decimal("0"), description=row.get("description") or ""))
        return [ErpJournalEntry(id=m["id"], reference=m.get("description") or "", date=m["date"], state=m["state"],
                                lines=tuple(by_move.get(m["id"], ()))) for m in moves]

    async def find_journal_entries(self, reference: str) -> list[ErpJournalEntry]:
        return await self._entries([["description", "=", reference], ["journal", "=", await self._journal()]])

    async def list_journal_entries(self, reference_prefix: str, day: dt.date | None = None) -> list[ErpJournalEntry]:
        domain: list = [["description", "like", reference_prefix.replace("%", "\\%") + "%"],
                        ["journal", "=", await self._journal()]]
        if day is not None:
            domain.append(["date", "=", day])
        return await self._entries(domain)

    async def post_journal_entry(self, draft: JournalEntryDraft) -> ErpJournalEntry:
        if not draft.balanced:
            raise ErpValidationError(f"journal entry {draft.reference} does not balance")
        accounts = await self._account_ids({ln.account for ln in draft.lines})
        values = {
            "journal": await self._journal(), "period": await self._period(draft.date), "date": draft.date,
            "description": draft.reference,
            "lines": [["create", [{"account": accounts[ln.account], "debit": ln.debit, "credit": ln.credit,
                                   "description": ln.description[:250]} for ln in draft.lines]]],
        }
        move_id = (await self.call("model.account.move.create", [values]))[0]
        return await self.confirm_journal_entry(move_id)

    async def confirm_journal_entry(self, entry_id: int) -> ErpJournalEntry:
        await self.call("model.account.move.post", [entry_id])
        found = await self._entries([["id", "=", entry_id]])
        if not found:
            raise ErpValidationError(f"journal entry {entry_id} does not exist in Tryton")
        return found[0]
