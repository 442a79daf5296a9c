"""The customer matcher's normalizations and rules (pure; properties with hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from availability.flows.customers import matching
from availability.flows.customers.matching import Address, Person

local = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,15}", fullmatch=True)
domain = st.from_regex(r"[a-z0-9]{1,10}\.(com|org|fr|co\.uk)", fullmatch=True)


@given(local, domain, st.sampled_from(["", " ", "\t", "  "]), st.booleans())
def test_email_keys_ignore_case_and_surrounding_space(user, host, pad, upper):
    raw = f"{pad}{user}@{host}{pad}"
    if upper:
        raw = raw.upper()
    assert matching.normalize_email(raw) == f"{user}@{host}"


def test_gmail_dots_and_plus_tags_are_not_folded():
    # documented choice: Shopify keeps these apart, so the identity map does too
    assert matching.normalize_email("Jane.Doe@Gmail.com") == "jane.doe@gmail.com"
    assert matching.normalize_email("janedoe@gmail.com") != matching.normalize_email("jane.doe@gmail.com")
    assert matching.normalize_email("jane+shop@gmail.com") == "jane+shop@gmail.com"


def test_not_an_email_gives_no_key():
    for raw in ("", None, "jane", "jane@", "@x.com", "a b@x.com", "jane@localhost"):
        assert matching.normalize_email(raw) is None


def test_phones_become_e164_in_the_customers_country():
    assert matching.normalize_phone("(514) 555-0123", "CA") == "+15145550123"
    assert matching.normalize_phone("+1 514 555 0123") == "+15145550123"
    assert matching.normalize_phone("01 42 68 53 00", "FR") == "+33142685300"
    assert matching.normalize_phone("0142685300", None, default_region="FR") == "+33142685300"
    # not a valid number: no key, so a typo never matches a stranger
    assert matching.normalize_phone("555", "US") is None
    assert matching.normalize_phone("call me", "US") is None


@given(st.sampled_from(["+1 (514) 555-0123", "514.555.0123", "514-555-0123", "+15145550123", " 5145550123 "]))
def test_every_spelling_of_one_phone_is_one_key(raw):
    assert matching.normalize_phone(raw, "CA") == "+15145550123"


def test_name_and_address_fold_accents_case_punctuation_and_street_words():
    a = Person(name="Zoë  O'Brien", address=Address(line1="12 Main Street", postal_code="h2x 1y4", country="CA"))
    b = Person(name="zoe o brien", address=Address(line1="12, MAIN ST.", postal_code="H2X1Y4", country="ca"))
    assert matching.address_key(a) == matching.address_key(b) is not None
    c = Person(name="Zoe O Brien", address=Address(line1="14 Main Street", postal_code="H2X1Y4", country="CA"))
    assert matching.address_key(c) != matching.address_key(a)
    assert matching.address_key(Person(name="Zoe", address=Address(line1="12 Main St"))) is None  # no postcode/city


@given(st.text(max_size=30), st.text(max_size=30), st.text(max_size=30))
def test_keys_never_fail_and_come_in_rule_order(name, email, phone):
    person = Person(name=name, email=email, phone=phone, address=Address(line1=name, city=phone))
    found = matching.keys(person)
    rules = [rule for _, rule in found]
    assert rules == [r for r in matching.RULES if r in rules]
    assert all(key.startswith(("email:", "phone:", "address:")) for key, _ in found)


def test_people_from_shopify_payloads():
    customer = {"id": 7, "email": " Jane@Example.com", "phone": "+15145550123", "first_name": "Jane",
                "last_name": "Doe", "default_address": {"address1": "1 Rue X", "zip": "75001", "country_code": "FR"}}
    person = matching.person_from_customer(customer)
    assert person.name == "Jane Doe" and person.address.postal_code == "75001"
    assert [r for _, r in matching.keys(person)] == ["email", "phone", "name_address"]
    assert matching.customer_id({"admin_graphql_api_id": "gid://shopify/Customer/42"}) == "42"
    guest = matching.person_from_order({"email": "g@example.com", "billing_address": {"name": "Gus Guest",
                                                                                       "phone": "514 555 0199"}})
    assert guest.email == "g@example.com" and guest.name == "Gus Guest" and guest.phone == "514 555 0199"
    assert matching.person_from_order({}).anonymous
