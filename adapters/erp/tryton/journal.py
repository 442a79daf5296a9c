"""Journal entries in Tryton (`account.move`), for the finance posting of payouts.

An entry is an `account.move` in the journal whose code is `FINANCE_JOURNAL`
(`SHOPIFY-PAY`, made by `adapters.erp.tryton.setup`), in the open standard period of its
date, with `description` = the flow's reference (`account.move` has no reference field;
the description is searchable and the flow never writes anything else there). Lines name
their account by code (`SP-CLEARING`, `SP-BANK`, ... in the embedded chart; a production
Tryton needs accounts with those codes). An entry is created then posted in two calls; a
worker that stops between them leaves a draft that the next attempt finds by reference
and posts (`confirm_journal_entry`).

An entry in another currency than the company's (a EUR payout in a USD company) is booked
the way Tryton books foreign money: each line's debit / credit in the company currency at
the rate Tryton has for that day (`currency.currency.rate`), its `second_currency` and
`amount_second_currency` the entry's own amounts; a cent lost to rounding goes on the
largest line so the move balances. Reading an entry back gives the second-currency
amounts, so the flow compares what Shopify said with what the ERP kept of it.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from adapters.erp.port import ErpJournalEntry, ErpValidationError, JournalEntryDraft, JournalLine
from adapters.erp.tryton.setup import FINANCE_JOURNAL

_MOVE_FIELDS = ["id", "description", "date", "state", "lines"]
_LINE_FIELDS = ["id", "move", "account", "debit", "credit", "description", "second_currency",
                "amount_second_currency"]


class JournalEntries:
    """Mixed into `TrytonErp` (it provides `call`)."""

    _accounts: dict[str, int]
    _account_codes: dict[int, str]
    _journal_id: int | None = None
    _company_currency_of: tuple[str | None] | None = None

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
        currency_of: dict[int, str] = {}
        for row in sorted(lines, key=lambda r: r["id"]):
            debit, credit = row.get("debit") or Decimal("0"), row.get("credit") or Decimal("0")
            if row.get("second_currency"):  # booked from another currency: the entry's own amounts
                amount = row.get("amount_second_currency") or Decimal("0")
                debit, credit = max(amount, Decimal("0")), max(-amount, Decimal("0"))
                currency_of[row["move"]] = await self._currency_code(row["second_currency"])
            by_move.setdefault(row["move"], []).append(JournalLine(
                account=await self._code_of(row["account"]), debit=debit, credit=credit,
                description=row.get("description") or ""))
        company = await self._company_currency()
        return [ErpJournalEntry(id=m["id"], reference=m.get("description") or "", date=m["date"], state=m["state"],
                                lines=tuple(by_move.get(m["id"], ())), currency=currency_of.get(m["id"], company))
                for m in moves]

    # --- currencies ---------------------------------------------------------------------------

    async def _currency_code(self, currency_id: int) -> str:
        if not hasattr(self, "_currency_codes"):
            self._currency_codes: dict[int, str] = {}
        codes = self._currency_codes
        if currency_id not in codes:
            rows = await self.call("model.currency.currency.read", [currency_id], ["id", "code"])
            codes[currency_id] = rows[0]["code"] if rows else f"#{currency_id}"
        return codes[currency_id]

    async def _company_currency(self) -> str | None:
        """The code of the user's company's currency (None: the user has no company)."""
        if self._company_currency_of is None:
            company = (getattr(self, "_context", None) or {}).get("company")
            rows = await self.call("model.company.company.read", [company], ["currency"]) if company else []
            code = await self._currency_code(rows[0]["currency"]) if rows else None
            self._company_currency_of = (code,)
        return self._company_currency_of[0]

    async def _rate(self, code: str, day: dt.date) -> tuple[int, Decimal]:
        """(currency id, its rate on `day`): Tryton's rates say how many units of a currency
        one unit of the base buys, so company = amount * company rate / currency rate."""
        rows = await self.call("model.currency.currency.search_read", [["code", "=", code]], 0, 1, None, ["id"])
        if not rows:
            raise ErpValidationError(f"the ERP has no currency {code}")
        rates = await self.call("model.currency.currency.rate.search_read",
                                [["currency", "=", rows[0]["id"]], ["date", "<=", day]], 0, 1, [["date", "DESC"]],
                                ["rate"])
        if not rates or not rates[0].get("rate"):
            raise ErpValidationError(f"the ERP has no {code} rate on {day.isoformat()}")
        return rows[0]["id"], rates[0]["rate"]

    async def _move_lines(self, draft: JournalEntryDraft, accounts: dict[str, int]) -> list[dict]:
        lines = [{"account": accounts[ln.account], "debit": ln.debit, "credit": ln.credit,
                  "description": ln.description[:250]} for ln in draft.lines]
        company_code = await self._company_currency()
        if not draft.currency or draft.currency == company_code:
            return lines
        if company_code is None:
            raise ErpValidationError(f"entry {draft.reference} is in {draft.currency}, and the ERP user has no "
                                     "company whose currency would book it")
        currency_id, rate = await self._rate(draft.currency, draft.date)
        _, company_rate = await self._rate(company_code, draft.date)
        cent = Decimal("0.01")
        signed = [ln.debit - ln.credit for ln in draft.lines]
        booked = [(amount * company_rate / rate).quantize(cent, rounding=ROUND_HALF_EVEN) for amount in signed]
        off = sum(booked, Decimal("0"))
        if off:  # rounding: the largest line absorbs it, so the move balances in the company currency
            biggest = max(range(len(booked)), key=lambda i: abs(booked[i]))
            booked[biggest] -= off
        for line, amount, company_amount in zip(lines, signed, booked):
            line.update(debit=max(company_amount, Decimal("0")), credit=max(-company_amount, Decimal("0")),
                        second_currency=currency_id, amount_second_currency=amount)
        return lines

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
            "lines": [["create", await self._move_lines(draft, accounts)]],
        }
        move_id = (await self.call("model.account.move.create", [values]))[0]
        return await self.confirm_journal_entry(move_id)

    async def confirm_journal_entry(self, entry_id: int) -> ErpJournalEntry:
        await self.call("model.account.move.post", [entry_id])
        found = await self._entries([["id", "=", entry_id]])
        if not found:
            raise ErpValidationError(f"journal entry {entry_id} does not exist in Tryton")
        return found[0]
