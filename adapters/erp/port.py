"""The ERP port: the narrow set of calls the order flows make on an ERP.

Tryton (adapters/erp/tryton/) is the first implementation and the one the tests and the
demo use; a retailer on NetSuite, Business Central or SAP implements `Erp` and nothing
else. Amounts are `Decimal` as the shop computed them: the flow never recomputes a price,
a discount or a tax, it posts what Shopify charged.

Errors are named by what the flow does with them: `ErpUnavailable` is retried (the ERP is
down, slow, locked); `ErpValidationError` and `UnknownSku` are permanent for the document
as it is and become exceptions people work (docs/flows.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Protocol, runtime_checkable

LineKind = Literal["goods", "shipping", "discount", "tax", "misc"]
#: the ERP-neutral life of a sale
SaleState = Literal["draft", "quotation", "confirmed", "processing", "done", "cancelled"]


class ErpError(Exception):
    """Base of what the port raises; `reason` is the exception-queue reason."""

    reason = "erp_error"
    transient = False


class ErpUnavailable(ErpError):
    """The ERP did not answer, answered 5xx, or asked to retry (lock, rate limit)."""

    reason = "erp_down"
    transient = True


class ErpValidationError(ErpError):
    """The ERP refused the document (a required field, a domain rule, a state transition)."""

    reason = "erp_validation"


class UnknownSku(ErpError):
    """Lines whose SKU the ERP has no product for."""

    reason = "unknown_sku"

    def __init__(self, skus: list[str]) -> None:
        super().__init__(f"no ERP product for SKU(s): {', '.join(skus)}")
        self.skus = skus


class UnknownLocation(ErpError):
    """The order's Shopify location has no ERP warehouse (not mapped, or the mapped
    warehouse code is not in the ERP)."""

    reason = "unknown_location"


@dataclass(frozen=True, slots=True)
class PartyRef:
    """Who bought. Which party that is, is decided by the customer identity flow
    (availability/flows/customers/); the ERP only finds parties by contact and creates
    them. `email` is normalized (lower case), `phone` is E.164 when known."""

    name: str
    email: str | None = None
    phone: str | None = None
    street: str | None = None
    postal_code: str | None = None
    city: str | None = None


@dataclass(frozen=True, slots=True)
class SaleLine:
    kind: LineKind
    description: str
    quantity: Decimal
    unit_price: Decimal
    sku: str | None = None


@dataclass(frozen=True, slots=True)
class SaleDraft:
    """A sale as the shop computed it; `reference` (shop + order number) is its identity in
    the ERP and what makes posting idempotent."""

    reference: str
    party: PartyRef
    currency: str
    sale_date: dt.date
    lines: tuple[SaleLine, ...]
    description: str = ""
    #: the ERP warehouse code the goods leave from; None = the ERP's default warehouse
    warehouse: str | None = None

    @property
    def total(self) -> Decimal:
        return sum((line.quantity * line.unit_price for line in self.lines), Decimal("0"))


@dataclass(frozen=True, slots=True)
class ErpSale:
    id: int
    reference: str
    state: SaleState
    total: Decimal
    #: True once any of its goods left the warehouse (a cancel is then a return, not built)
    shipped: bool = False
    sale_date: dt.date | None = None
    extra: dict = field(default_factory=dict)


#: a credit note's line is a sale line, positive as refunded (the ERP books it negative);
#: `sku` names the sale line it credits, other kinds go on service products
CreditLine = SaleLine


@dataclass(frozen=True, slots=True)
class CreditNoteDraft:
    """A refund as the shop computed it, in **shop currency** (presentment amounts stay in
    the flow's document, for the customer, never in the books). `reference` (shop +
    refund id) is its identity in the ERP and what makes posting idempotent;
    `sale_reference` is the sale it credits."""

    reference: str
    sale_reference: str
    currency: str
    credit_date: dt.date
    lines: tuple[CreditLine, ...]
    description: str = ""

    @property
    def total(self) -> Decimal:
        """What the customer got back (positive)."""
        return sum((line.quantity * line.unit_price for line in self.lines), Decimal("0"))


#: the ERP-neutral life of a credit note
CreditNoteState = Literal["draft", "validated", "posted", "paid", "cancelled"]


@dataclass(frozen=True, slots=True)
class ErpCreditNote:
    id: int
    reference: str
    state: CreditNoteState
    #: as the ERP books it: negative for a credit note
    total: Decimal
    number: str | None = None
    credit_date: dt.date | None = None
    #: ERP ids of the sale invoice lines this note credits (the link to the original sale)
    credits_lines: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class JournalLine:
    """One line of a journal entry: an account of the ERP's chart (by code), debit or credit."""

    account: str
    debit: Decimal = Decimal("0")
    credit: Decimal = Decimal("0")
    description: str = ""


@dataclass(frozen=True, slots=True)
class JournalEntryDraft:
    """A balanced journal entry; `reference` (e.g. the payout) is its identity in the ERP and
    what makes posting idempotent."""

    reference: str
    date: dt.date
    lines: tuple[JournalLine, ...]
    description: str = ""
    #: the currency of the amounts (a payout's settlement currency); None: the ERP company's.
    #: The ERP books them in its company currency at its own rate and keeps these beside
    currency: str | None = None

    @property
    def balanced(self) -> bool:
        return sum((ln.debit for ln in self.lines), Decimal("0")) == sum((ln.credit for ln in self.lines), Decimal("0"))


@dataclass(frozen=True, slots=True)
class ErpJournalEntry:
    id: int
    reference: str
    date: dt.date
    #: draft | posted
    state: str
    #: in the entry's currency (what the draft said), not the company's conversion
    lines: tuple[JournalLine, ...] = ()
    currency: str | None = None

    def balance_by_account(self) -> dict[str, Decimal]:
        """debit - credit per account code."""
        out: dict[str, Decimal] = {}
        for ln in self.lines:
            out[ln.account] = out.get(ln.account, Decimal("0")) + ln.debit - ln.credit
        return out


@runtime_checkable
class Erp(Protocol):
    async def find_sale_by_reference(self, reference: str) -> ErpSale | None:
        """The sale with this reference, or None (cancelled ones count: never recreate)."""

    async def find_or_create_party(self, party: PartyRef) -> int:
        """Kept for callers without the identity map: match on e-mail only, else create."""

    async def find_party(self, *, email: str | None = None, phone: str | None = None) -> int | None:
        """A party with this e-mail (first), else this E.164 phone, or None."""

    async def create_party(self, party: PartyRef) -> int:
        """A new party with its e-mail / phone contact mechanisms and its address."""

    async def create_parties(self, parties: Sequence[PartyRef]) -> list[int | ErpError]:
        """`create_party` for a batch in as few calls as it takes; one result per party (its
        id, or its own permanent error). A transient error is raised for the batch."""

    async def add_party_contacts(self, party_id: int, *, email: str | None = None, phone: str | None = None) -> None:
        """Add contact mechanisms the party does not have yet (a customer's new e-mail)."""

    async def replace_party(self, party_id: int, kept_party_id: int) -> bool:
        """A customer merge: `party_id` is replaced by `kept_party_id` the ERP's own way (its
        documents move to the kept party, it is deactivated and remembers who replaced it).
        False, writing nothing, when it already is (a second delivery, a merge done by hand);
        a party replaced earlier is followed to the party that replaced it."""

    async def party_replaced_by(self, party_id: int) -> int:
        """The party standing for `party_id` now: itself, or the end of its replacements."""

    async def find_sales_by_reference(self, references: Sequence[str]) -> dict[str, ErpSale]:
        """reference -> sale for those of the batch the ERP has (one lookup for a batch)."""

    async def create_sale(self, draft: SaleDraft, party_id: int) -> ErpSale:
        """Create the sale as a quotation. Raises UnknownSku before creating anything."""

    async def create_sales(self, orders: Sequence[tuple[SaleDraft, int]]) -> list[ErpSale | ErpError]:
        """Create a batch of (draft, party id) as quotations, in as few ERP calls as it takes.
        One result per order, in order: its sale, or the permanent error of that order alone
        (the others are created). A transient error is raised for the batch."""

    async def update_quotation(self, sale_id: int, draft: SaleDraft) -> ErpSale:
        """Replace the lines of a sale still in draft or quotation."""

    async def confirm_sale(self, sale_id: int) -> ErpSale: ...

    async def confirm_sales(self, sale_ids: Sequence[int]) -> list[ErpSale | ErpError]:
        """Confirm a batch; one result per id as `create_sales`."""

    async def cancel_sale(self, sale_id: int) -> ErpSale:
        """Cancel a sale not shipped yet (ErpValidationError when it has shipped)."""

    async def list_sales(self, reference_prefix: str, day: dt.date | None = None) -> list[ErpSale]:
        """Sales whose reference starts with the prefix (one shop), optionally of one day."""

    async def delete_sale(self, sale_id: int) -> None:
        """Remove a draft/cancelled sale (reconciliation tests delete one behind the flow's back)."""

    # --- credit notes (returns and refunds, availability/flows/returns) ---------------------

    async def find_credit_note_by_reference(self, reference: str) -> ErpCreditNote | None:
        """The credit note with this reference (the refund's key), or None."""

    async def create_credit_note(self, draft: CreditNoteDraft, sale: ErpSale) -> ErpCreditNote:
        """Create (not post) a credit note against `sale`, lines linked to the sale's
        invoice lines where the ERP has them. Raises UnknownSku before creating anything."""

    async def post_credit_note(self, credit_note_id: int) -> ErpCreditNote:
        """Post it (numbered, in the books); posting a posted note changes nothing."""

    async def list_credit_notes(self, reference_prefix: str, day: dt.date | None = None) -> list[ErpCreditNote]:
        """Credit notes whose reference starts with the prefix (one shop), optionally dated
        that day (the finance reconciliation's refunds = sum of credit notes)."""


    # --- finance posting (availability/flows/finance/) -----------------------------------

    async def find_journal_entries(self, reference: str) -> list[ErpJournalEntry]:
        """Entries with this reference, oldest first (more than one is a duplicate to report)."""

    async def post_journal_entry(self, draft: JournalEntryDraft) -> ErpJournalEntry:
        """Create the entry and post it. ErpValidationError when an account is unknown or the
        period is closed."""

    async def confirm_journal_entry(self, entry_id: int) -> ErpJournalEntry:
        """Post an entry left in draft (a worker stopped between create and post)."""

    async def list_journal_entries(self, reference_prefix: str, day: dt.date | None = None) -> list[ErpJournalEntry]: ...

    async def aclose(self) -> None: ...
