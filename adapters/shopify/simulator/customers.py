"""Customers in the simulator: create, update, merge, and their webhooks.

What Shopify does, as far as the flows care: a customer has one e-mail unique in the
shop (creating a second customer with it is refused), a phone in E.164, a name and a
default address; every change is a `customers/create` or `customers/update` webhook
(REST-shaped body, `admin_graphql_api_id` = `gid://shopify/Customer/N`). `customerMerge
(customerOneId, customerTwoId)` joins two customers into one and answers
`resultingCustomerId`; the other customer is gone afterwards.

The simulator's own choices: the merge keeps `customerTwoId` (Shopify lets the merchant
choose which fields win; the id that survives is what the flows follow), fills the
survivor's missing e-mail / phone / address from the other one, and announces it as a
`customers/merge` webhook `{"resultingCustomerId", "customerOneId", "customerTwoId"}`
followed by `customers/update` of the survivor. Control endpoints (not Shopify's API):
`POST /_sim/customers`, `PUT /_sim/customers/{id}`, `POST /_sim/customers/merge`,
`GET /_sim/customers`; `POST /_sim/checkout` takes a `customer_id`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from litestar import Request, Response, get, post, put
from litestar.params import FromPath

from ._util import gid, now_iso

_FIELDS = ("email", "phone", "first_name", "last_name")
_ADDRESS_FIELDS = ("address1", "address2", "city", "zip", "province", "country_code")


class CustomerRefused(Exception):
    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass
class _Customer:
    id: int
    email: str | None
    phone: str | None
    first_name: str
    last_name: str
    address: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    updated_at: str = ""


class CustomersMixin:
    """Mixed into SimulatorState (uses its lock); the customer book is made on first use."""

    def _customer_book(self) -> dict[int, _Customer]:
        book = self.__dict__.get("_customers")
        if book is None:
            book = self.__dict__["_customers"] = {}
            self.__dict__["_next_customer"] = 650001
        return book

    def customer_body(self, customer_id: int) -> dict[str, Any] | None:
        c = self._customer_book().get(customer_id)
        if c is None:
            return None
        address = {k: c.address.get(k) for k in _ADDRESS_FIELDS} | {
            "first_name": c.first_name, "last_name": c.last_name,
            "name": f"{c.first_name} {c.last_name}".strip(), "phone": c.phone, "default": True}
        return {"id": c.id, "admin_graphql_api_id": gid("Customer", c.id), "email": c.email, "phone": c.phone,
                "first_name": c.first_name, "last_name": c.last_name, "created_at": c.created_at,
                "updated_at": c.updated_at, "state": "enabled", "default_address": address if c.address else None,
                "addresses": [address] if c.address else []}

    def _clean(self, body: Any, *, partial: bool) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise CustomerRefused("INVALID", "a customer is a JSON object", 400)
        out: dict[str, Any] = {}
        for key in _FIELDS:
            if key in body:
                value = body[key]
                if value is not None and not isinstance(value, str):
                    raise CustomerRefused("INVALID", f"{key} must be a string", 400)
                out[key] = value.strip() if isinstance(value, str) else None
        if "email" in out and out["email"]:
            out["email"] = out["email"].lower()
        address = body.get("address", body.get("default_address"))
        if address is not None:
            if not isinstance(address, dict):
                raise CustomerRefused("INVALID", "address must be an object", 400)
            out["address"] = {k: str(address[k]) for k in _ADDRESS_FIELDS if address.get(k) not in (None, "")}
        if not partial and not (out.get("email") or out.get("phone") or out.get("last_name")):
            raise CustomerRefused("BLANK", "a customer needs an email, a phone or a last name")
        return out

    def _email_taken(self, email: str | None, but: int | None = None) -> bool:
        return bool(email) and any(c.email == email and c.id != but for c in self._customer_book().values())

    def create_customer(self, body: Any) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        with self._lock:  # type: ignore[attr-defined]
            fields = self._clean(body, partial=False)
            if self._email_taken(fields.get("email")):
                raise CustomerRefused("TAKEN", "Email has already been taken")
            book = self._customer_book()
            cid = self.__dict__["_next_customer"]
            self.__dict__["_next_customer"] = cid + 1
            at = now_iso()
            book[cid] = _Customer(cid, fields.get("email"), fields.get("phone"), fields.get("first_name") or "",
                                  fields.get("last_name") or "", fields.get("address") or {}, at, at)
            out = self.customer_body(cid)
            assert out is not None
            return out, [("customers/create", out)]

    def update_customer(self, customer_id: int, body: Any) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        with self._lock:  # type: ignore[attr-defined]
            c = self._customer_book().get(customer_id)
            if c is None:
                raise CustomerRefused("NOT_FOUND", f"no customer {customer_id}", 404)
            fields = self._clean(body, partial=True)
            if self._email_taken(fields.get("email"), but=customer_id):
                raise CustomerRefused("TAKEN", "Email has already been taken")
            for key, value in fields.items():  # a null name is an empty name; a null e-mail removes it
                setattr(c, key, "" if value is None and key in ("first_name", "last_name") else value)
            c.updated_at = now_iso()
            out = self.customer_body(customer_id)
            assert out is not None
            return out, [("customers/update", out)]

    def merge_customers(self, one: Any, two: Any) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        with self._lock:  # type: ignore[attr-defined]
            try:
                ids = [int(str(x).rsplit("/", 1)[-1]) for x in (one, two)]
            except (TypeError, ValueError):
                raise CustomerRefused("INVALID", "customerOneId and customerTwoId are customer ids", 400) from None
            book = self._customer_book()
            if ids[0] == ids[1] or any(i not in book for i in ids):
                raise CustomerRefused("INVALID_CUSTOMER_ID", "two different existing customers are needed")
            gone, kept = book.pop(ids[0]), book[ids[1]]
            kept.email = kept.email or gone.email
            kept.phone = kept.phone or gone.phone
            kept.address = kept.address or gone.address
            kept.updated_at = now_iso()
            merge = {"resultingCustomerId": gid("Customer", kept.id), "customerOneId": gid("Customer", gone.id),
                     "customerTwoId": gid("Customer", kept.id)}
            body = self.customer_body(kept.id)
            assert body is not None
            return merge, [("customers/merge", merge), ("customers/update", body)]

    def customers(self) -> list[dict[str, Any]]:
        with self._lock:  # type: ignore[attr-defined]
            return [b for i in sorted(self._customer_book()) if (b := self.customer_body(i))]


def _reply(body: Any, status: int = 200) -> Response[bytes]:
    return Response(content=msgspec.json.encode(body), status_code=status, media_type="application/json")


async def _body(request: Request[Any, Any, Any]) -> Any:
    raw = await request.body()
    return msgspec.json.decode(raw) if raw else {}


async def _act(request: Request[Any, Any, Any], action, *args) -> Response[bytes]:
    state, sender = request.app.state.sim, request.app.state.webhooks
    try:
        out, events = action(state, *args, await _body(request))
    except msgspec.DecodeError as exc:
        return _reply({"error": f"bad customer: {exc}", "code": "INVALID"}, 400)
    except CustomerRefused as exc:
        return _reply({"error": exc.message, "code": exc.code}, exc.status)
    sender.emit(events)
    return _reply({"customer" if "id" in out else "merge": out}, 201 if action is CustomersMixin.create_customer else 200)


@post("/_sim/customers", status_code=201)
async def sim_customer_create(request: Request[Any, Any, Any]) -> Response[bytes]:
    return await _act(request, CustomersMixin.create_customer)


@put("/_sim/customers/{customer_id:int}", status_code=200)
async def sim_customer_update(request: Request[Any, Any, Any], customer_id: FromPath[int]) -> Response[bytes]:
    return await _act(request, CustomersMixin.update_customer, customer_id)


@post("/_sim/customers/merge", status_code=200)
async def sim_customer_merge(request: Request[Any, Any, Any]) -> Response[bytes]:
    def merge(state, body):
        if not isinstance(body, dict):
            raise CustomerRefused("INVALID", "a merge is a JSON object", 400)
        return state.merge_customers(body.get("customerOneId"), body.get("customerTwoId"))

    return await _act(request, merge)


@get("/_sim/customers")
async def sim_customers(request: Request[Any, Any, Any]) -> Response[bytes]:
    return _reply({"customers": request.app.state.sim.customers()})


customer_routes = [sim_customer_create, sim_customer_update, sim_customer_merge, sim_customers]
