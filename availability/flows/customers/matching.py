"""Who a customer is, as keys an ERP party can be found by. Pure: no I/O.

Rules, tried in this order (the first that finds a party wins):

| rule           | key                                   | confidence |
|----------------|---------------------------------------|------------|
| `email`        | e-mail, trimmed and lower-cased        | 1.00       |
| `phone`        | the phone in E.164 (`phonenumbers`)    | 0.90       |
| `name_address` | name + street + postal code + country | 0.75       |

E-mail: only trimmed and lower-cased. Gmail ignores dots and `+tags` in the local part,
but Shopify does not (it keeps `jane.doe@gmail.com` and `janedoe@gmail.com` as two
customers), and folding them would join people Shopify keeps apart, while other
providers give dots meaning; so no provider-specific folding. Phones are parsed with
Google's libphonenumber rules (`phonenumbers`), in the customer's country when it is
known, else `default_region`; a number that does not parse or is not valid for its
region gives no key (a typo must not match a stranger). Names and addresses are
compared folded: accents dropped, case folded, punctuation removed, common street words
abbreviated ("Street" = "St"), postal codes without spaces.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

CONFIDENCE = {"email": 1.0, "phone": 0.9, "name_address": 0.75}
RULES = tuple(CONFIDENCE)

_STREET_WORDS = {
    "street": "st", "str": "st", "avenue": "ave", "av": "ave", "road": "rd", "boulevard": "blvd",
    "drive": "dr", "lane": "ln", "court": "ct", "place": "pl", "square": "sq", "highway": "hwy",
    "apartment": "apt", "suite": "ste", "north": "n", "south": "s", "east": "e", "west": "w",
}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, slots=True)
class Address:
    line1: str = ""
    line2: str = ""
    city: str = ""
    postal_code: str = ""
    country: str = ""  # ISO 3166 alpha-2 when Shopify sends it


@dataclass(frozen=True, slots=True)
class Person:
    """What a webhook says about someone (a Shopify customer, an order's buyer, a guest)."""

    name: str = ""
    email: str | None = None
    phone: str | None = None
    address: Address = field(default_factory=Address)

    @property
    def anonymous(self) -> bool:
        return not (self.email or self.phone or self.name.strip())


def fold(text: str | None) -> str:
    """Accents off, case folded, punctuation to spaces, whitespace collapsed."""
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", plain).split())


def normalize_email(raw: str | None) -> str | None:
    if not raw:
        return None
    email = str(raw).strip().lower()
    return email if _EMAIL.match(email) else None


def normalize_phone(raw: str | None, region: str | None = None, default_region: str = "US") -> str | None:
    """E.164 (`+15145550123`), or None when it does not parse to a valid number."""
    if not raw:
        return None
    try:
        number = phonenumbers.parse(str(raw), (region or default_region or "US").upper())
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_street(raw: str | None) -> str:
    return " ".join(_STREET_WORDS.get(word, word) for word in fold(raw).split())


def address_key(person: Person) -> str | None:
    """Name + street + postal code (or city) + country, folded; None when any is missing."""
    name = fold(person.name)
    street = normalize_street(" ".join(p for p in (person.address.line1, person.address.line2) if p))
    where = re.sub(r"\s+", "", person.address.postal_code or "").upper() or fold(person.address.city)
    if not (name and street and where):
        return None
    return f"{name}|{street}|{where}|{(person.address.country or '').upper()}"


def keys(person: Person, default_region: str = "US") -> list[tuple[str, str]]:
    """(key, rule) pairs in rule order: the identity map is looked up with them."""
    out: list[tuple[str, str]] = []
    email = normalize_email(person.email)
    if email:
        out.append((f"email:{email}", "email"))
    phone = normalize_phone(person.phone, person.address.country or None, default_region)
    if phone:
        out.append((f"phone:{phone}", "phone"))
    addr = address_key(person)
    if addr:
        out.append((f"address:{addr}", "name_address"))
    return out


def explain(rule: str, key: str | None, party_id: int, *, first_source: str | None = None) -> str:
    """Why a source maps to a party, for the match report."""
    what = (key or "").split(":", 1)[-1]
    seen = f" (first seen on {first_source})" if first_source else ""
    return {
        "email": f"same e-mail {what} as party {party_id}{seen}",
        "phone": f"no e-mail match; same phone {what} as party {party_id}{seen}",
        "name_address": f"no e-mail or phone match; same name and address ({what}) as party {party_id}{seen}",
        "erp_email": f"the ERP already had party {party_id} with e-mail {what}",
        "erp_phone": f"the ERP already had party {party_id} with phone {what}",
        "new": f"no party matched: party {party_id} created",
        "guest": f"guest order: the configured guest party {party_id}",
        "merge": f"merged in Shopify into {first_source}: its party {party_id}",
    }.get(rule, f"{rule} -> party {party_id}")


# --- Shopify payloads --------------------------------------------------------------------------


def _address(raw: dict | None) -> Address:
    raw = raw or {}
    return Address(line1=str(raw.get("address1") or ""), line2=str(raw.get("address2") or ""),
                   city=str(raw.get("city") or ""), postal_code=str(raw.get("zip") or ""),
                   country=str(raw.get("country_code") or ""))


def _name(first: Any, last: Any) -> str:
    return " ".join(str(p).strip() for p in (first, last) if p and str(p).strip())


def person_from_customer(customer: dict, *, fallback_address: dict | None = None) -> Person:
    """A Shopify customer object (webhook `customers/*` body, or an order's `customer`)."""
    address = customer.get("default_address") or fallback_address or {}
    name = _name(customer.get("first_name"), customer.get("last_name")) or _name(
        address.get("first_name"), address.get("last_name")) or str(address.get("name") or "").strip()
    return Person(name=name, email=customer.get("email"), phone=customer.get("phone") or address.get("phone"),
                  address=_address(address))


def person_from_order(order: dict) -> Person:
    """The buyer of an order: its customer when it names one, else what the checkout took."""
    billing = order.get("billing_address") or order.get("shipping_address") or {}
    customer = order.get("customer") or {}
    if customer:
        base = person_from_customer(customer, fallback_address=billing)
        return Person(name=base.name, email=base.email or order.get("email") or order.get("contact_email"),
                      phone=base.phone or order.get("phone") or billing.get("phone"), address=base.address)
    name = str(billing.get("name") or "").strip() or _name(billing.get("first_name"), billing.get("last_name"))
    return Person(name=name, email=order.get("email") or order.get("contact_email"),
                  phone=order.get("phone") or billing.get("phone"), address=_address(billing))


def customer_id(customer: dict) -> str | None:
    """The numeric id of a Shopify customer (from `id` or a `gid://shopify/Customer/N`)."""
    raw = customer.get("id") or customer.get("admin_graphql_api_id")
    if raw in (None, ""):
        return None
    return str(raw).rsplit("/", 1)[-1]
