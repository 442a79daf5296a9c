"""`TrytonErp`: the ERP port over Tryton's JSON-RPC (httpx, async).

The URL is a database's root (`http://host:port/DBNAME/`); calls go to `<url>rpc/` with
the session Tryton's `common.db.login` hands out (`Authorization: Session base64(login:
user_id:session)`), logging in again when the session lapses. Values on the wire use
Tryton's JSON encoding for Decimal and date (`{"__class__": "Decimal", "decimal": "..."}`).

Sales are Tryton `sale.sale` records with `reference` = the shop's reference; lines use the
product whose `code` is the SKU, and the service products `SHIPPING`, `DISCOUNT`, `TAX`,
`MISC` that `adapters.erp.tryton.setup` creates (a production Tryton needs the same four).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import time
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import httpx

from adapters.erp.port import (
    CreditNoteDraft,
    ErpCreditNote,
    ErpError,
    ErpSale,
    ErpUnavailable,
    ErpValidationError,
    PartyRef,
    SaleDraft,
    UnknownLocation,
    UnknownSku,
)
from adapters.erp.tryton.journal import JournalEntries
from adapters.erp.tryton.parties import TrytonParties
from adapters.erp.tryton.shipments import TrytonShipments

SERVICE_CODE = {"shipping": "SHIPPING", "discount": "DISCOUNT", "tax": "TAX", "misc": "MISC"}
_SALE_FIELDS = ["id", "reference", "state", "total_amount", "shipment_state", "sale_date", "shipments"]
#: Tryton errors that say "try again" rather than "this document is wrong"
_TRANSIENT = {"ConcurrencyException", "RateLimitException", "TimeOutException"}


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, dt.date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        kind = value.get("__class__")
        if kind == "Decimal":
            return Decimal(value["decimal"])
        if kind == "date":
            return dt.date(value["year"], value["month"], value["day"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class TrytonErp(TrytonShipments, JournalEntries, TrytonParties):  # adapters/erp/tryton/{shipments,journal,parties}.py
    def __init__(self, url: str, login: str, password: str, *, timeout: float = 30.0) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self.login = login
        self.password = password
        self._http = httpx.AsyncClient(timeout=timeout)
        self._auth: str | None = None
        self._context: dict = {}
        self._login_lock = asyncio.Lock()
        self._products: dict[str, int] = {}
        #: Tryton method -> calls made and seconds spent waiting for them (where the ERP's
        #: time goes: the benchmark reports it, the batching tests count calls with it)
        self.calls: dict[str, int] = defaultdict(int)
        self.call_seconds: dict[str, float] = defaultdict(float)

    # --- transport --------------------------------------------------------------------------

    async def _post(self, method: str, params: list, *, auth: bool = True) -> Any:
        headers = {"Authorization": self._auth} if auth and self._auth else {}
        try:
            reply = await self._http.post(
                f"{self.url}rpc/", json={"id": 1, "method": method, "params": _encode(params)}, headers=headers
            )
        except httpx.TransportError as exc:
            raise ErpUnavailable(f"Tryton unreachable at {self.url}: {exc!r}") from exc
        if reply.status_code in (401, 403):
            raise _SessionLapsed()
        if reply.status_code in (409, 423, 429) or reply.status_code >= 500:
            raise ErpUnavailable(f"Tryton answered {reply.status_code} to {method}")
        if reply.status_code != 200:
            raise ErpValidationError(f"Tryton answered {reply.status_code} to {method}: {reply.text[:300]}")
        body = reply.json()
        if "error" in body:
            kind, detail = (list(body["error"]) + ["", ""])[:2]
            if kind in _TRANSIENT or "database is locked" in str(kind):
                raise ErpUnavailable(f"{method}: {kind}: {detail}")
            if kind in ("UserError", "UserWarning"):
                message = detail[0] if isinstance(detail, (list, tuple)) and detail else detail
                if method.endswith(".create") and "must be unique" in str(message):
                    # two creates racing for the next number of a Tryton sequence (party
                    # codes, on SQLite): nothing was written, the retry gets the next one
                    raise ErpUnavailable(f"{method}: {message} (concurrent create; retried)")
                raise ErpValidationError(f"{method}: {message}")
            raise ErpError(f"{method}: Tryton failed: {str(kind)[:500]}")
        return _decode(body.get("result"))

    async def _ensure_login(self) -> None:
        async with self._login_lock:
            if self._auth:
                return
            result = await self._post("common.db.login", [self.login, {"password": self.password}, "en"], auth=False)
            if not result:
                raise ErpValidationError("Tryton refused the login")
            user_id, session = result[0], result[1]
            token = base64.b64encode(f"{self.login}:{user_id}:{session}".encode()).decode()
            self._auth = f"Session {token}"
            self._context = await self._post("model.res.user.get_preferences", [True, {}])

    async def call(self, method: str, *params: Any) -> Any:
        """`model.X.method` with the user's context appended (Tryton's calling convention)."""
        started = time.perf_counter()
        try:
            for attempt in range(2):
                await self._ensure_login()
                try:
                    return await self._post(method, [*params, self._context])
                except _SessionLapsed:
                    self._auth = None
                    if attempt:
                        raise ErpValidationError("Tryton refused the session twice (login or rights)") from None
            raise AssertionError("unreachable")
        finally:
            self.calls[method] += 1
            self.call_seconds[method] += time.perf_counter() - started

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- reads ------------------------------------------------------------------------------

    def _sale(self, row: dict) -> ErpSale:
        return ErpSale(
            id=row["id"], reference=row.get("reference") or "", state=row["state"],
            total=row.get("total_amount") or Decimal("0"),
            shipped=row.get("shipment_state") in ("partially shipped", "sent"),
            sale_date=row.get("sale_date"),
        )

    async def _read_sale(self, sale_id: int) -> ErpSale:
        rows = await self.call("model.sale.sale.read", [sale_id], _SALE_FIELDS)
        if not rows:
            raise ErpValidationError(f"sale {sale_id} does not exist in Tryton")
        return self._sale(rows[0])

    async def find_sale_by_reference(self, reference: str) -> ErpSale | None:
        return (await self.find_sales_by_reference([reference])).get(reference)

    async def find_sales_by_reference(self, references: Sequence[str]) -> dict[str, ErpSale]:
        """The sales of a batch of references in one search (the oldest one per reference)."""
        if not references:
            return {}
        rows = await self.call("model.sale.sale.search_read", [["reference", "in", list(references)]], 0, None,
                               [["id", "ASC"]], _SALE_FIELDS)
        out: dict[str, ErpSale] = {}
        for row in rows:
            out.setdefault(row["reference"], self._sale(row))
        return out

    async def list_sales(self, reference_prefix: str, day: dt.date | None = None) -> list[ErpSale]:
        domain: list = [["reference", "like", reference_prefix.replace("%", "\\%") + "%"]]
        if day is not None:
            domain.append(["sale_date", "=", day])
        rows = await self.call("model.sale.sale.search_read", domain, 0, None, [["id", "ASC"]], _SALE_FIELDS)
        return [self._sale(r) for r in rows]

    # --- parties ----------------------------------------------------------------------------

    async def find_or_create_party(self, party: PartyRef) -> int:
        if party.email:
            email = party.email.strip().lower()
            found = await self.call(
                "model.party.contact_mechanism.search_read",
                [["type", "=", "email"], ["value", "=", email]], 0, 1, [["id", "ASC"]], ["party"],
            )
            if found:
                return found[0]["party"]
        mechanisms = []
        if party.email:
            mechanisms.append({"type": "email", "value": party.email.strip().lower()})
        if party.phone:
            mechanisms.append({"type": "phone", "value": party.phone})
        values: dict = {"name": party.name, "addresses": [["create", [{}]]]}
        if mechanisms:
            values["contact_mechanisms"] = [["create", mechanisms]]
        ids = await self.call("model.party.party.create", [values])
        return ids[0]

    async def find_party(self, *, email: str | None = None, phone: str | None = None) -> int | None:
        # Tryton keeps a phone's E.164 form in `value_compact` (it formats phones with
        # phonenumbers), so an E.164 key finds "+1 514-555-0123" as entered in Tryton too.
        for kind, field, value in (("email", "value", email), ("phone", "value_compact", phone)):
            if not value:
                continue
            found = await self.call(
                "model.party.contact_mechanism.search_read",
                [["type", "in", ["email"] if kind == "email" else ["phone", "mobile"]], [field, "=", value],
                 ["active", "=", True]], 0, 1, [["id", "ASC"]], ["party"],
            )
            if found:
                return found[0]["party"]
        return None

    async def create_party(self, party: PartyRef) -> int:
        result = (await self.create_parties([party]))[0]
        if isinstance(result, ErpError):
            raise result
        return result

    async def create_parties(self, parties: Sequence[PartyRef]) -> list[int | ErpError]:
        """One `party.party.create` for the batch (one transaction), each party with its
        address and contact mechanisms; a refused batch is created party by party."""
        values = [self._party_values(p) for p in parties]
        if not values:
            return []
        try:
            return list(await self.call("model.party.party.create", values))
        except ErpValidationError as exc:
            if len(values) == 1:
                return [exc]
        out: list[int | ErpError] = []
        for one in values:
            try:
                out.append((await self.call("model.party.party.create", [one]))[0])
            except ErpValidationError as exc:
                out.append(exc)
        return out

    @staticmethod
    def _party_values(party: PartyRef) -> dict:
        mechanisms = []
        if party.email:
            mechanisms.append({"type": "email", "value": party.email})
        if party.phone:
            mechanisms.append({"type": "phone", "value": party.phone})
        address = {k: v for k, v in (("street", party.street), ("postal_code", party.postal_code),
                                     ("city", party.city)) if v}
        values: dict = {"name": party.name or "Customer", "addresses": [["create", [address]]]}
        if mechanisms:
            values["contact_mechanisms"] = [["create", mechanisms]]
        return values

    async def add_party_contacts(self, party_id: int, *, email: str | None = None, phone: str | None = None) -> None:
        rows = await self.call("model.party.contact_mechanism.search_read", [["party", "=", party_id]], 0, None,
                               None, ["type", "value", "value_compact"])
        have = {(r["type"], r.get("value_compact") or r["value"]) for r in rows} | {(r["type"], r["value"]) for r in rows}
        new = [{"party": party_id, "type": t, "value": v} for t, v in (("email", email), ("phone", phone))
               if v and (t, v) not in have]
        if new:
            await self.call("model.party.contact_mechanism.create", new)

    # --- sales ------------------------------------------------------------------------------

    async def _product_ids(self, codes: set[str]) -> dict[str, int]:
        missing = [c for c in codes if c not in self._products]
        if missing:
            rows = await self.call("model.product.product.search_read", [["code", "in", missing]], 0, None, None,
                                   ["id", "code"])
            for row in rows:
                self._products[row["code"]] = row["id"]
        return {c: self._products[c] for c in codes if c in self._products}

    async def _line_values(self, draft: SaleDraft) -> list[dict]:
        codes = {line.sku if line.kind == "goods" else SERVICE_CODE[line.kind] for line in draft.lines}
        codes.discard(None)
        products = await self._product_ids(codes)
        unknown = sorted({line.sku or "" for line in draft.lines if line.kind == "goods" and line.sku not in products})
        if unknown:
            raise UnknownSku(unknown)
        missing_service = sorted(c for c in SERVICE_CODE.values() if c in codes and c not in products)
        if missing_service:
            raise ErpValidationError(f"the ERP has no service product {', '.join(missing_service)}")
        units = await self._units()
        out = []
        for seq, line in enumerate(draft.lines, start=1):
            code = line.sku if line.kind == "goods" else SERVICE_CODE[line.kind]
            out.append({
                "type": "line", "sequence": seq, "product": products[code], "unit": units,
                "description": line.description, "quantity": float(line.quantity), "unit_price": line.unit_price,
            })
        return out

    async def _units(self) -> int:
        if "__unit__" not in self._products:
            rows = await self.call("model.product.uom.search", [["name", "=", "Unit"]], 0, 1, None)
            if not rows:
                raise ErpValidationError("the ERP has no 'Unit' unit of measure")
            self._products["__unit__"] = rows[0]
        return self._products["__unit__"]

    async def _party_addresses(self, party_ids: set[int]) -> dict[int, int]:
        """Each party's first address (one search for the batch), creating the missing ones
        in one call (a party made outside the flows may have none)."""
        rows = await self.call("model.party.address.search_read", [["party", "in", sorted(party_ids)]], 0, None,
                               [["id", "ASC"]], ["id", "party"])
        out: dict[int, int] = {}
        for row in rows:
            out.setdefault(row["party"], row["id"])
        missing = sorted(party_ids - out.keys())
        if missing:
            created = await self.call("model.party.address.create", [{"party": p} for p in missing])
            out.update(zip(missing, created))
        return out

    async def _currency(self, code: str) -> int:
        key = f"__currency__{code}"
        if key not in self._products:
            rows = await self.call("model.currency.currency.search", [["code", "=", code]], 0, 1, None)
            if not rows:
                raise ErpValidationError(f"the ERP has no currency {code}")
            self._products[key] = rows[0]
        return self._products[key]

    async def _sale_values(self, draft: SaleDraft, party_id: int, address: int) -> dict:
        """The `sale.sale` create values of one draft; raises UnknownSku / UnknownLocation /
        ErpValidationError for what the ERP lacks, before anything is created."""
        lines = await self._line_values(draft)
        values = {
            "party": party_id, "invoice_address": address, "shipment_address": address,
            "reference": draft.reference, "description": draft.description[:200], "sale_date": draft.sale_date,
            "currency": await self._currency(draft.currency), "invoice_method": "order", "shipment_method": "order",
            "lines": [["create", lines]],
        }
        if draft.warehouse:
            values["warehouse"] = await self._warehouse(draft.warehouse)
        return values

    async def create_sale(self, draft: SaleDraft, party_id: int) -> ErpSale:
        result = (await self.create_sales([(draft, party_id)]))[0]
        if isinstance(result, ErpError):
            raise result
        return result

    async def create_sales(self, orders: Sequence[tuple[SaleDraft, int]]) -> list[ErpSale | ErpError]:
        """Create and quote a batch of sales: one `create` (Tryton takes a list of values and
        writes them in one transaction), one `quote`, one read, whatever the batch size, where
        one sale at a time costs each of those per sale. A draft the ERP lacks something for
        gets its error without a call; when Tryton refuses the batch's create (nothing was
        written: one transaction) its drafts are created one by one, so a bad order fails
        alone. A transient error (ERP down, locked) is raised for the whole batch: nothing or
        everything of that step was written, and the caller's resend looks the references up
        first."""
        results: list[ErpSale | ErpError | None] = [None] * len(orders)
        addresses = await self._party_addresses({party for _, party in orders}) if orders else {}
        values: list[tuple[int, dict]] = []
        for i, (draft, party_id) in enumerate(orders):
            try:
                values.append((i, await self._sale_values(draft, party_id, addresses[party_id])))
            except ErpError as exc:
                if exc.transient:
                    raise
                results[i] = exc
        created: dict[int, int] = {}
        if values:
            try:
                created.update(zip((i for i, _ in values),
                                   await self.call("model.sale.sale.create", [v for _, v in values])))
            except ErpValidationError as exc:
                if len(values) == 1:
                    results[values[0][0]] = exc
                else:
                    for i, one in values:
                        try:
                            created[i] = (await self.call("model.sale.sale.create", [one]))[0]
                        except ErpValidationError as alone:
                            results[i] = alone
        if created:
            # a sale that fails to quote stays a draft in the ERP: found by reference on its retry
            failed = await self._each("model.sale.sale.quote", list(created.values()))
            sales = await self._read_sales(list(created.values()))
            for i, sale_id in created.items():
                results[i] = failed.get(sale_id) or sales.get(sale_id) or ErpValidationError(
                    f"sale {sale_id} does not exist in Tryton after its create")
        return results  # type: ignore[return-value]

    async def _each(self, method: str, ids: list[int]) -> dict[int, ErpError]:
        """Call a button (`quote`, `confirm`) on all ids at once; when Tryton refuses the batch
        (one transaction: nothing changed), on each id alone. Returns the ids that failed."""
        if not ids:
            return {}
        try:
            await self.call(method, ids)
            return {}
        except ErpValidationError as exc:
            if len(ids) == 1:
                return {ids[0]: exc}
        failed: dict[int, ErpError] = {}
        for one in ids:
            try:
                await self.call(method, [one])
            except ErpValidationError as exc:
                failed[one] = exc
        return failed

    async def _read_sales(self, sale_ids: list[int]) -> dict[int, ErpSale]:
        rows = await self.call("model.sale.sale.search_read", [["id", "in", sale_ids]], 0, None, None, _SALE_FIELDS)
        return {row["id"]: self._sale(row) for row in rows}

    async def _warehouse(self, code: str) -> int:
        key = f"__warehouse__{code}"
        if key not in self._products:
            rows = await self.call("model.stock.location.search", [["type", "=", "warehouse"], ["code", "=", code]],
                                   0, 1, None)
            if not rows:
                raise UnknownLocation(f"the ERP has no warehouse with code {code!r}")
            self._products[key] = rows[0]
        return self._products[key]

    async def update_quotation(self, sale_id: int, draft: SaleDraft) -> ErpSale:
        sale = await self._read_sale(sale_id)
        if sale.state not in ("draft", "quotation"):
            raise ErpValidationError(f"sale {sale_id} is {sale.state}: only a quotation can be edited")
        lines = await self._line_values(draft)
        if sale.state == "quotation":
            await self.call("model.sale.sale.draft", [sale_id])
        old = await self.call("model.sale.line.search", [["sale", "=", sale_id]], 0, None, None)
        values: dict = {"lines": [["delete", old], ["create", lines]], "description": draft.description[:200]}
        if draft.warehouse:
            values["warehouse"] = await self._warehouse(draft.warehouse)
        await self.call("model.sale.sale.write", [sale_id], values)
        await self.call("model.sale.sale.quote", [sale_id])
        return await self._read_sale(sale_id)

    async def confirm_sale(self, sale_id: int) -> ErpSale:
        result = (await self.confirm_sales([sale_id]))[0]
        if isinstance(result, ErpError):
            raise result
        return result

    async def confirm_sales(self, sale_ids: Sequence[int]) -> list[ErpSale | ErpError]:
        """Confirm a batch (drafts are quoted first): one read, one `quote` for the drafts, one
        `confirm`, one read back. Tryton processes each confirmed sale (shipment, invoice)
        in the same request, after the confirm's commit. A sale Tryton refuses fails alone
        (the batch is retried id by id); sales already past quotation are returned as they
        are (confirming twice changes nothing)."""
        ids = list(sale_ids)
        before = await self._read_sales(ids)
        failed: dict[int, ErpError] = {
            i: ErpValidationError(f"sale {i} does not exist in Tryton") for i in ids if i not in before}
        failed.update(await self._each("model.sale.sale.quote",
                                       [i for i in ids if i in before and before[i].state == "draft"]))
        failed.update(await self._each("model.sale.sale.confirm",
                                       [i for i in ids if i in before and i not in failed
                                        and before[i].state in ("draft", "quotation")]))
        after = await self._read_sales([i for i in ids if i not in failed])
        return [failed.get(i) or after.get(i) or ErpValidationError(f"sale {i} does not exist in Tryton")
                for i in ids]

    async def cancel_sale(self, sale_id: int) -> ErpSale:
        sale = await self._read_sale(sale_id)
        if sale.state == "cancelled":
            return sale
        if sale.shipped:
            raise ErpValidationError(f"sale {sale_id} has shipped: a cancellation is a return (not built)")
        if sale.state in ("draft", "quotation"):
            await self.call("model.sale.sale.cancel", [sale_id])
            return await self._read_sale(sale_id)
        # Confirmed, nothing shipped: stop the goods and the bill. Tryton has no
        # processing -> cancelled transition; the sale shows a shipment/invoice exception
        # that a Tryton user closes with its "handle exception" wizards.
        rows = await self.call("model.sale.sale.read", [sale_id], ["shipments", "invoices"])
        shipments = rows[0].get("shipments") or []
        invoices = rows[0].get("invoices") or []
        if shipments:
            await self.call("model.stock.shipment.out.cancel", shipments)
        if invoices:
            await self.call("model.account.invoice.cancel", invoices)
        sale = await self._read_sale(sale_id)
        return ErpSale(id=sale.id, reference=sale.reference, state="cancelled", total=sale.total,
                       shipped=sale.shipped, sale_date=sale.sale_date, extra={"tryton_state": sale.state})

    async def delete_sale(self, sale_id: int) -> None:
        sale = await self._read_sale(sale_id)
        if sale.state == "quotation":
            await self.call("model.sale.sale.draft", [sale_id])
        elif sale.state not in ("draft", "cancelled"):
            raise ErpValidationError(f"sale {sale_id} is {sale.state}: Tryton deletes only draft or cancelled sales")
        await self.call("model.sale.sale.delete", [sale_id])


    # --- credit notes -------------------------------------------------------------------------
    # A refund is an `account.invoice` of type out with negative quantities (Tryton's own
    # credit note: it takes the credit-note sequence when posted), `reference` = the
    # refund's key. Each goods line's `origin` is the sale invoice line it credits, the
    # link Tryton's own "Credit" action makes, so the note is tied to the original sale
    # without touching the sale's invoiced quantities (a line with a sale-line origin would
    # make Tryton invoice the credited units again on its next `process`).

    _NOTE_FIELDS = ["id", "reference", "state", "total_amount", "number", "invoice_date"]

    async def _note(self, row: dict) -> ErpCreditNote:
        lines = await self.call("model.account.invoice.line.search_read", [["invoice", "=", row["id"]]], 0, None,
                                [["id", "ASC"]], ["origin"])
        credited = tuple(int(str(ln["origin"]).split(",")[1]) for ln in lines
                         if str(ln.get("origin") or "").startswith("account.invoice.line,"))
        return ErpCreditNote(id=row["id"], reference=row.get("reference") or "", state=row["state"],
                             total=row.get("total_amount") or Decimal("0"), number=row.get("number"),
                             credit_date=row.get("invoice_date"), credits_lines=credited)

    async def find_credit_note_by_reference(self, reference: str) -> ErpCreditNote | None:
        rows = await self.call("model.account.invoice.search_read",
                               [["reference", "=", reference], ["type", "=", "out"]], 0, None, [["id", "ASC"]],
                               self._NOTE_FIELDS)
        return await self._note(rows[0]) if rows else None

    async def list_credit_notes(self, reference_prefix: str, day: dt.date | None = None) -> list[ErpCreditNote]:
        domain: list = [["reference", "like", reference_prefix.replace("%", "\\%") + "%"], ["type", "=", "out"],
                        ["total_amount", "<=", Decimal("0")]]
        if day is not None:
            domain.append(["invoice_date", "=", day])
        rows = await self.call("model.account.invoice.search_read", domain, 0, None, [["id", "ASC"]],
                               self._NOTE_FIELDS)
        return [await self._note(r) for r in rows]

    async def create_credit_note(self, draft: CreditNoteDraft, sale: ErpSale) -> ErpCreditNote:
        invoice_ids = (await self.call("model.sale.sale.read", [sale.id], ["invoices"]))[0].get("invoices") or []
        invoices = await self.call("model.account.invoice.read", invoice_ids,
                                   ["id", "state", "company", "party", "invoice_address", "currency", "journal",
                                    "account", "payment_term", "currency.code"]) if invoice_ids else []
        invoices = [i for i in invoices if i["state"] != "cancelled"]
        if not invoices:
            raise ErpValidationError(f"sale {sale.reference} has no invoice to credit (state {sale.state})")
        head = invoices[0]
        invoiced_in = (head.get("currency.") or {}).get("code")
        if draft.currency and invoiced_in and draft.currency != invoiced_in:
            # the note takes the invoice's currency: shop money in another one would be booked wrong
            raise ErpValidationError(f"refund {draft.reference} is in {draft.currency}, its sale {sale.reference} "
                                     f"was invoiced in {invoiced_in}")
        sale_lines = await self.call("model.account.invoice.line.search_read",
                                     [["invoice", "in", [i["id"] for i in invoices]]], 0, None, [["id", "ASC"]],
                                     ["id", "product", "product.code", "account", "unit"])
        by_code: dict[str, dict] = {}
        for line in sale_lines:
            code = (line.get("product.") or {}).get("code")
            if code:
                by_code.setdefault(code, line)
        codes = {line.sku if line.kind == "goods" else SERVICE_CODE[line.kind] for line in draft.lines}
        products = await self._product_ids({c for c in codes if c})
        unknown = sorted({ln.sku or "" for ln in draft.lines if ln.kind == "goods" and ln.sku not in products})
        if unknown:
            raise UnknownSku(unknown)
        missing = sorted(c for c in codes if c not in products)
        if missing:
            raise ErpValidationError(f"the ERP has no service product {', '.join(missing)}")
        accounts = await self._revenue_accounts({products[c] for c in codes if c not in by_code})
        unit = await self._units()
        values = []
        for seq, line in enumerate(draft.lines, start=1):
            code = line.sku if line.kind == "goods" else SERVICE_CODE[line.kind]
            credited = by_code.get(code)
            row = {
                "type": "line", "sequence": seq, "invoice_type": "out", "party": head["party"],
                "company": head["company"], "currency": head["currency"], "product": products[code],
                "unit": credited["unit"] if credited else unit,
                "account": credited["account"] if credited else accounts[products[code]],
                "description": line.description, "quantity": -float(line.quantity), "unit_price": line.unit_price,
            }
            if credited:
                row["origin"] = f"account.invoice.line,{credited['id']}"
            values.append(row)
        invoice = {
            "type": "out", "company": head["company"], "party": head["party"],
            "invoice_address": head["invoice_address"], "currency": head["currency"], "journal": head["journal"],
            "account": head["account"], "payment_term": head.get("payment_term"), "reference": draft.reference,
            "description": (draft.description or f"Credit note for {draft.sale_reference}")[:200],
            "invoice_date": draft.credit_date, "lines": [["create", values]],
        }
        note_id = (await self.call("model.account.invoice.create", [invoice]))[0]
        rows = await self.call("model.account.invoice.read", [note_id], self._NOTE_FIELDS)
        return await self._note(rows[0])

    async def _revenue_accounts(self, product_ids: set[int]) -> dict[int, int]:
        """The revenue account of each product's accounting category (what a sale line of
        it would be invoiced to), for credit lines that match no sale invoice line."""
        if not product_ids:
            return {}
        rows = await self.call("model.product.product.read", sorted(product_ids),
                               ["id", "template.account_category"])
        categories = {r["id"]: (r.get("template.") or {}).get("account_category") for r in rows}
        wanted = sorted({c for c in categories.values() if c})
        accounts = {c["id"]: c.get("account_revenue") for c in
                    (await self.call("model.product.category.read", wanted, ["id", "account_revenue"]) if wanted
                     else [])}
        out = {}
        for product_id, category in categories.items():
            if not accounts.get(category):
                raise ErpValidationError(f"product {product_id} has no revenue account to credit")
            out[product_id] = accounts[category]
        return out

    async def post_credit_note(self, credit_note_id: int) -> ErpCreditNote:
        rows = await self.call("model.account.invoice.read", [credit_note_id], self._NOTE_FIELDS)
        if not rows:
            raise ErpValidationError(f"credit note {credit_note_id} does not exist in Tryton")
        if rows[0]["state"] in ("draft", "validated"):
            await self.call("model.account.invoice.post", [credit_note_id])
            rows = await self.call("model.account.invoice.read", [credit_note_id], self._NOTE_FIELDS)
        return await self._note(rows[0])


class _SessionLapsed(Exception):
    pass
