"""PII discovery: the detectors one by one, then precision and recall on a labelled table synced from
a real target database."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

import pytest
from psycopg2 import sql
from psycopg2.extras import execute_values

from governance.catalog import pii
from governance.models import ColumnTag, Dataset
from governance.services.sync import datasource_sync

# --- checksums and shapes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "4111111111111111",  # Visa test number
        "5500005555555559",  # Mastercard
        "378282246310005",  # Amex, 15 digits
        "6011111111111117",  # Discover
        "30569309025904",  # Diners, 14 digits
        "4222222222222",  # Visa, 13 digits
    ],
)
def test_luhn_accepts_real_card_numbers(number):
    assert pii.luhn_valid(number)
    assert pii.is_card_number(number)


def test_card_numbers_with_separators_and_the_luhn_edge_cases():
    assert pii.is_card_number("4111 1111 1111 1111")
    assert pii.is_card_number("4111-1111-1111-1111")
    assert not pii.is_card_number("4111111111111112"), "one digit off fails Luhn"
    assert not pii.is_card_number("1234567812345670"), "passes Luhn, but no network issues cards starting with 1"
    assert not pii.is_card_number("0000000000000000"), "passes Luhn, but is a placeholder"
    assert not pii.is_card_number("411111111111"), "12 digits is too short"
    assert not pii.is_card_number("41111111111111111111"), "20 digits is too long"
    assert not pii.is_card_number("4111 1111 1111 111a")
    assert not pii.luhn_valid("")
    assert not pii.luhn_valid("4111-1111")


def test_iban_mod_97():
    assert pii.iban_valid("DE89370400440532013000")
    assert pii.iban_valid("DE89 3704 0044 0532 0130 00")
    assert pii.iban_valid("gb82 west 1234 5698 7654 32"), "case and spacing do not matter"
    assert pii.iban_valid("NL91ABNA0417164300")
    assert not pii.iban_valid("DE89370400440532013001"), "check digits no longer match"
    assert not pii.iban_valid("DE8937040044"), "too short"
    assert not pii.iban_valid("1289370400440532013000"), "no country code"


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("123-45-6789", True),
        ("123 45 6789", True),
        ("665-01-0001", True),
        ("000-12-3456", False),  # area 000 is never issued
        ("666-12-3456", False),  # nor 666
        ("900-12-3456", False),  # nor 900-999 (ITINs live there)
        ("999-12-3456", False),
        ("123-00-6789", False),  # group 00
        ("123-45-0000", False),  # serial 0000
        ("123456789", False),  # bare digits: ZIP+4 and account numbers look the same
        ("123-45 6789", False),  # mixed separators
        ("1234-56-789", False),
    ],
)
def test_ssn_rules(value, valid):
    assert pii.is_ssn(value) is valid


@pytest.mark.parametrize(
    "value",
    ["+14155552671", "+1 415 555 2671", "+44 20 7946 0958", "(415) 555-2671", "415-555-2671", "415.555.2671",
     "020 7946 0958", "06 12 34 56 78", "0612345678", "+49 30 1234567 ext. 12", "0049 30 1234567"],
)  # fmt: skip
def test_phone_numbers(value):
    assert pii.is_phone(value)


@pytest.mark.parametrize(
    "value",
    ["123-45-6789", "2024-01-15", "15.01.2024", "192.168.100.200", "12345678", "4111111111111111", "1234567890",
     "+0123456789", "42", "1,234,567.89", "SW1A 1AA"],
)  # fmt: skip
def test_not_phone_numbers(value):
    assert not pii.is_phone(value)


def test_ip_addresses():
    for value in ("192.0.2.1", "10.1.2.3/32", "2001:db8::1", "::1", "fe80::1/128"):
        assert pii.is_ip_address(value), value
    for value in ("10.0.0.0/8", "1.2.3", "999.1.1.1", "hello", "", "12345"):
        assert not pii.is_ip_address(value), value


def test_emails():
    assert pii.is_email("ada.lovelace+tag@example.co.uk")
    assert pii.is_email("o'brien@example.com")
    for value in ("foo@bar", "@example.com", "a b@example.com", "example.com", "a@@b.com"):
        assert not pii.is_email(value), value


def test_birth_dates_are_plausible_only_between_1900_and_ten_years_ago():
    today = dt.date(2025, 6, 1)
    assert pii.is_plausible_birth_date("1980-02-29", today)
    assert pii.is_plausible_birth_date("2015-06-01 00:00:00+00", today)
    assert not pii.is_plausible_birth_date("2015-06-02", today), "younger than ten"
    assert not pii.is_plausible_birth_date("1899-12-31", today)
    assert not pii.is_plausible_birth_date("2024-13-01", today)
    assert pii.birth_range(dt.date(2024, 2, 29)) == (dt.date(1900, 1, 1), dt.date(2014, 2, 28))


# --- names -----------------------------------------------------------------------------------------


def test_name_tokens():
    assert pii.name_tokens("clientIPAddress") == ("client", "ip", "address")
    assert pii.name_tokens("address_line1") == ("address", "line", "1")
    assert pii.name_tokens("DateOfBirth") == ("date", "of", "birth")
    assert pii.name_tokens("EMAIL") == ("email",)
    assert pii.name_tokens("emailaddress") == ("email", "address")
    assert pii.name_tokens('Contact "Info"; --') == ("contact", "info")


@pytest.mark.parametrize(
    ("name", "data_type", "tags"),
    [
        ("email", "text", {"email"}),
        ("emailAddress", "character varying(255)", {"email"}),
        ("email_verified", "boolean", set()),
        ("email_subject", "text", set()),
        ("num_emails", "integer", set()),
        ("phone", "text", {"phone"}),
        ("phone_count", "integer", set()),
        ("phone", "bigint", {"phone"}),
        ("mobile", "text", {"phone"}),
        ("mobile_app_version", "text", set()),
        ("ssn", "text", {"ssn"}),
        ("social_security_number", "character(11)", {"ssn"}),
        ("card_number", "text", {"card_number"}),
        ("cc_number", "bigint", {"card_number"}),
        ("card_last4", "text", set()),
        ("card_type", "text", set()),
        ("iban", "text", {"iban"}),
        ("ip", "inet", {"ip_address"}),
        ("client_ip", "text", {"ip_address"}),
        ("ip_count", "integer", set()),
        ("tip_amount", "numeric(8,2)", set()),
        ("zipcode", "text", {"address"}),
        ("zip_code", "integer", {"address"}),
        ("street", "text", {"address"}),
        ("street", "integer", set()),
        ("mac_address", "text", set()),
        ("ip_address", "inet", {"ip_address"}),
        ("date_of_birth", "date", {"date_of_birth"}),
        ("dob", "date", {"date_of_birth"}),
        ("birth_country", "text", set()),
        ("created_on", "date", set()),
        ("first_name", "text", {"person_name"}),
        ("surname", "text", {"person_name"}),
        ("product_name", "text", set()),
        ("username", "text", set()),
        ("diagnosis", "text", {"phi"}),
        ("icd10_code", "text", {"phi"}),
        ("medical_record_id", "bigint", set()),  # PHI kinds are text/json/arrays
        ("mrn", "text", {"phi"}),
        ("payment_condition", "text", set()),
        ("medical_condition", "text", {"phi"}),
        ("diagnosis_count", "integer", set()),
    ],
)
def test_name_hints(name, data_type, tags):
    assert {tag for tag, _ in pii.name_hints(name, data_type)} == tags


def test_type_category_sees_through_domains_and_citext():
    assert pii.name_hints("email", '"Sales EU".email_domain', "S") == [("email", "email")]
    assert pii.name_hints("email", "citext", "S") == [("email", "email")]
    assert pii.name_hints("email", "jsonb", "U") == []


def test_should_sample():
    assert pii.should_sample("notes", "text")
    assert pii.should_sample("src", "inet", "I")
    assert pii.should_sample("birth_date", "date", "D")
    assert not pii.should_sample("created_on", "date", "D")
    assert not pii.should_sample("amount", "numeric(12,2)", "N")


# --- suggestions -----------------------------------------------------------------------------------


def _cards(n: int, rng: random.Random) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        number = "4" + "".join(str(rng.randint(0, 9)) for _ in range(15))
        if pii.luhn_valid(number):
            out.append(number)
    return out


def test_value_detector_evidence_and_threshold():
    rng = random.Random(7)
    samples = _cards(164, rng) + [f"ORD-{i:06d}" for i in range(36)]
    [suggestion] = pii.suggest_tags(name="payload", data_type="text", samples=samples)
    assert suggestion.tag == "card_number"
    assert suggestion.evidence == "82% of 200 sampled values look like card numbers (Luhn)"
    assert suggestion.confidence == 0.82
    assert pii.suggest_tags(name="payload", data_type="text", samples=samples, threshold=0.9) == []


def test_threshold_counts_only_non_empty_samples():
    samples = ["a@example.com"] * 6 + [None, "", "  "] * 10 + ["n/a"] * 4
    [suggestion] = pii.suggest_tags(name="contact", data_type="text", samples=samples)
    assert suggestion.evidence.startswith("60% of 10 sampled values")
    assert pii.suggest_tags(name="contact", data_type="text", samples=["a@example.com"] * 4) == [], "too few"
    assert pii.suggest_tags(name="contact", data_type="text", samples=["a@example.com"] * 4, min_values=3)


def test_order_numbers_failing_luhn_are_not_cards():
    rng = random.Random(3)
    ids: list[str] = []
    while len(ids) < 100:
        number = "4" + "".join(str(rng.randint(0, 9)) for _ in range(15))
        if not pii.luhn_valid(number):
            ids.append(number)
    assert pii.suggest_tags(name="order_id", data_type="text", samples=ids) == []


def test_name_and_values_agree_or_disagree():
    [agree] = pii.suggest_tags(name="email", data_type="text", samples=["x@example.com"] * 20)
    assert agree.confidence > 0.9
    assert agree.evidence == "name matches 'email'; 100% of 20 sampled values look like email addresses"
    [disagree] = pii.suggest_tags(name="email", data_type="text", samples=["redacted"] * 20)
    assert disagree.tag == "email" and disagree.confidence == 0.5
    assert "but only 0% of 20 sampled values" in disagree.evidence


def test_value_detectors_respect_name_vetoes():
    versions = ["1.4.2.0", "2.0.1.3", "10.2.0.1"] * 5
    assert pii.suggest_tags(name="build_version", data_type="text", samples=versions) == []
    assert pii.suggest_tags(name="src", data_type="text", samples=versions)[0].tag == "ip_address"


def test_person_names_from_names_and_from_values():
    people = ["Ada Lovelace", "Alan Turing", "Grace Hopper"] * 10
    [by_values] = pii.suggest_tags(name="label", data_type="text", samples=people)
    assert by_values.tag == "person_name" and by_values.confidence == 0.9
    assert [s.tag for s in pii.suggest_tags(name="full_name", data_type="text", samples=people)] == ["person_name"]
    products = ["Blue Widget", "Red Gadget", "Acme Ltd"] * 10
    assert pii.suggest_tags(name="label", data_type="text", samples=products) == []


def test_date_of_birth_is_conservative():
    births = ["1975-03-02", "1990-12-31", "1961-07-14"] * 10
    assert pii.suggest_tags(name="created_on", data_type="date", samples=births) == []
    [dob] = pii.suggest_tags(name="birth_date", data_type="date", samples=births)
    assert dob.confidence == 0.95 and "100% of 30 sampled values are dates in a plausible birth range" in dob.evidence
    future = ["2090-01-01"] * 30
    [odd] = pii.suggest_tags(name="dob", data_type="date", samples=future)
    assert odd.confidence == 0.5 and "but only 0%" in odd.evidence


def test_evidence_fits_the_column():
    [s] = pii.suggest_tags(name="email_" + "x" * 300, data_type="text", samples=["a@b.co"] * 10)
    assert len(s.evidence) <= 255


# --- precision and recall on a labelled table --------------------------------------------------------


def _phone(rng: random.Random) -> str:
    n = rng.randint(100, 199)
    return rng.choice(
        [f"+1 415 555 {n:04d}", f"(212) 555-{n:04d}", f"+44 20 7946 {n:04d}", f"06 12 34 {n % 100:02d} 78"]
    )


def _ssn(rng: random.Random) -> str:
    return f"{rng.randint(1, 665):03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def _iban(rng: random.Random) -> str:
    bban = "".join(str(rng.randint(0, 9)) for _ in range(18))
    digits = "".join(str(int(c, 36)) for c in bban + "DE00")
    return f"DE{98 - int(digits) % 97:02d}{bban}"


def _not_luhn(rng: random.Random) -> str:
    while True:
        number = "4" + "".join(str(rng.randint(0, 9)) for _ in range(15))
        if not pii.luhn_valid(number):
            return number


FIRST = ["Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken"]
LAST = ["Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson"]

# (column, SQL type, value generator, the tags a careful human would put on it)
LABELLED: list[tuple[str, str, Any, set[str]]] = [
    # Sensitive, and the name says so.
    ("email", "text", lambda r, i: f"user{i}@example.com", {"email"}),
    ("phone", "text", lambda r, i: _phone(r), {"phone"}),
    ("mobile_number", "varchar(30)", lambda r, i: _phone(r), {"phone"}),
    ("ssn", "char(11)", lambda r, i: _ssn(r), {"ssn"}),
    ("cc_number", "text", lambda r, i: _cards(1, r)[0], {"card_number"}),
    ("iban", "text", lambda r, i: _iban(r), {"iban"}),
    ("client_ip", "inet", lambda r, i: f"203.0.113.{i % 250 + 1}", {"ip_address"}),
    ("date_of_birth", "date", lambda r, i: dt.date(1950, 1, 1) + dt.timedelta(r.randint(0, 18000)), {"date_of_birth"}),
    ("first_name", "text", lambda r, i: r.choice(FIRST), {"person_name"}),
    ("last_name", "text", lambda r, i: r.choice(LAST), {"person_name"}),
    ("surname", "varchar(100)", lambda r, i: r.choice(LAST), {"person_name"}),
    ("street_address", "text", lambda r, i: f"{i} High Street", {"address"}),
    ("zip_code", "integer", lambda r, i: r.randint(10000, 99999), {"address"}),
    ("postcode", "text", lambda r, i: "SW1A 1AA", {"address"}),
    ("diagnosis", "text", lambda r, i: r.choice(["Influenza", "Migraine", "Asthma"]), {"phi"}),
    ("icd10_code", "text", lambda r, i: r.choice(["J11.1", "G43.9", "J45.9"]), {"phi"}),
    ("medical_record_number", "text", lambda r, i: f"MRN-{i:06d}", {"phi"}),
    ("prescription", "text", lambda r, i: "Amoxicillin 500mg", {"phi"}),
    # Sensitive, and only the values say so.
    ("contact", "text", lambda r, i: f"c{i}@example.org", {"email"}),
    ("reach", "text", lambda r, i: _phone(r), {"phone"}),
    ("tax_ref", "text", lambda r, i: _ssn(r), {"ssn"}),
    ("col_17", "text", lambda r, i: _cards(1, r)[0], {"card_number"}),
    ("payout_account", "text", lambda r, i: _iban(r), {"iban"}),
    ("src", "inet", lambda r, i: f"2001:db8::{i + 1:x}", {"ip_address"}),
    ("last_seen_from", "text", lambda r, i: f"198.51.100.{i + 1}", {"ip_address"}),
    # Not sensitive, though a careless detector would say so.
    ("ip_count", "integer", lambda r, i: r.randint(0, 9), set()),
    ("phone_count", "integer", lambda r, i: r.randint(0, 3), set()),
    ("email_verified", "boolean", lambda r, i: r.random() < 0.5, set()),
    ("email_subject", "text", lambda r, i: f"Your order #{i} has shipped", set()),
    ("order_number", "text", lambda r, i: _not_luhn(r), set()),
    ("mobile_app_version", "text", lambda r, i: f"3.{i % 10}.1", set()),
    ("build_version", "text", lambda r, i: f"1.{i % 5}.2.{i}", set()),
    ("card_last4", "char(4)", lambda r, i: f"{r.randint(0, 9999):04d}", set()),
    ("card_type", "text", lambda r, i: r.choice(["visa", "mastercard"]), set()),
    ("birth_country", "char(2)", lambda r, i: r.choice(["FR", "DE", "US"]), set()),
    ("username", "text", lambda r, i: f"user{i}", set()),
    ("product_name", "text", lambda r, i: r.choice(["Blue Widget", "Red Gadget"]), set()),
    ("mac_address", "text", lambda r, i: f"00:1a:2b:3c:4d:{i:02x}", set()),
    ("created_on", "date", lambda r, i: dt.date(1980, 1, 1) + dt.timedelta(days=i * 300), set()),
    ("notes", "text", lambda r, i: "Called back, left a message.", set()),
    ("amount", "numeric(12,2)", lambda r, i: Decimal(r.randint(100, 99999)) / 100, set()),
    ("tracking_code", "text", lambda r, i: f"1Z999AA1{r.randint(10**9, 10**10 - 1)}", set()),
    ("ip_range", "cidr", lambda r, i: f"10.{i}.0.0/16", set()),
    ("company_name", "text", lambda r, i: r.choice(["Acme Ltd", "Globex GmbH"]), set()),
]  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_precision_and_recall_on_a_labelled_table(target_db, make_source, gov_admin, classifications):
    rng = random.Random(42)
    rows = [tuple(gen(rng, i) for _, _, gen, _ in LABELLED) for i in range(40)]
    target_db.run("CREATE SCHEMA labelled")
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(sql_type)) for name, sql_type, _, _ in LABELLED
    )
    target_db.run(sql.SQL("CREATE TABLE labelled.people_mix ({})").format(columns))
    with target_db.conn.cursor() as cur:
        execute_values(cur, "INSERT INTO labelled.people_mix VALUES %s", rows)

    datasource_sync(source=make_source(target_db.name), actor=gov_admin)

    dataset = Dataset.objects.get(schema="labelled", name="people_mix")
    assert dataset.columns.count() == len(LABELLED)
    suggested = set(ColumnTag.objects.filter(column__dataset=dataset).values_list("column__name", "tag"))
    expected = {(name, tag) for name, _, _, tags in LABELLED for tag in tags}
    true_positives = suggested & expected
    precision = len(true_positives) / len(suggested) if suggested else 0.0
    recall = len(true_positives) / len(expected)
    print(
        f"\nPII discovery on {len(LABELLED)} labelled columns: precision {precision:.3f} "
        f"({len(true_positives)}/{len(suggested)}), recall {recall:.3f} ({len(true_positives)}/{len(expected)})"
    )
    print(f"  false positives: {sorted(suggested - expected)}")
    print(f"  missed:          {sorted(expected - suggested)}")
    assert precision >= 0.9, sorted(suggested - expected)
    assert recall >= 0.9, sorted(expected - suggested)
