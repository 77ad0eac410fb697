"""A labelled set of S3 objects for measuring PII discovery on S3 samples (test_s3_quality.py).

Five objects in the three formats the sync reads (CSV, JSON lines gzip'd or not, Parquet), from
realistic schemas (HR, CRM, payments, access logs, health), 55 fields. Each field is labelled with
the tags a careful steward would confirm, whatever its name says; traps are fields whose values or
names look sensitive and are not (versions shaped like IPv4, order numbers of card length, company
and city names, ten-digit byte counts), sensitive fields behind generic names (`user`, `client`,
`actor`, `payer`), and identifiers written as bare digits (a BSN in CSV, an NHS number as a JSON
number, a German IdNr in a Parquet int64 column, US phone numbers without separators).
Values are generated from a fixed seed: the same set every run.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ROWS = 60

FIRST = ["Anna", "Jürgen", "Sofía", "Chloé", "Mohammed", "Wei", "Olga", "Kenji", "Aoife", "Lars", "Priya", "Tomasz"]
LAST = ["Schmidt", "García", "Dubois", "Okafor", "Nakamura", "Kowalski", "O'Brien", "Larsen", "Rossi", "Chen", "Singh"]
COMPANIES = ["Acme Ltd", "Globex GmbH", "Initech SA", "Umbrella plc", "Hooli Inc", "Vandelay Industries"]
CITIES = ["Berlin", "Madrid", "Lyon", "Lagos", "Osaka", "Gdansk", "Dublin", "Oslo", "Turin", "Shanghai"]


def _luhn_complete(digits: str) -> str:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d)
        if i % 2 == 0:
            n *= 2
            n -= 9 if n > 9 else 0
        total += n
    return digits + str((10 - total % 10) % 10)


def _iban(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    number = int("".join(str(int(c, 36)) for c in rearranged))
    return f"{country}{98 - number % 97:02d}{bban}"


def _not_luhn(rng: random.Random) -> str:
    while True:
        digits = "".join(str(rng.randint(0, 9)) for _ in range(16))
        if _luhn_complete(digits[:-1]) != digits and digits[0] != "0":
            return digits


def valid_digits(rng: random.Random, length: int, is_valid: Callable[[str], bool]) -> str:
    """Bare digits (no leading zero) that pass a national identifier's checksum (python-stdnum)."""
    while True:
        digits = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(length - 1))
        if is_valid(digits):
            return digits


def bsn(rng: random.Random, i: int = 0) -> str:
    from stdnum.nl import bsn as check

    return valid_digits(rng, 9, check.is_valid)


def nhs(rng: random.Random, i: int = 0) -> str:
    from stdnum.gb import nhs as check

    return valid_digits(rng, 10, check.is_valid)


def idnr(rng: random.Random, i: int = 0) -> int:
    from stdnum.de import idnr as check

    return int(valid_digits(rng, 11, check.is_valid))


def bare_us_phone(rng: random.Random, i: int) -> str:
    return f"{rng.choice(['212', '415', '617'])}555{rng.randint(0, 9999):04d}"


def big_count(rng: random.Random, i: int) -> int:
    return rng.randint(100_000_000, 9_999_999_999)  # identifier-long numbers that are not identifiers


Gen = Callable[[random.Random, int], Any]


@dataclass(frozen=True)
class Field:
    name: str
    gen: Gen
    tags: frozenset[str]


def f(name: str, gen: Gen, *tags: str) -> Field:
    return Field(name, gen, frozenset(tags))


def person(rng: random.Random, i: int) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def email(rng: random.Random, i: int) -> str:
    return f"{rng.choice(FIRST).lower()}.{i}@{rng.choice(['example.org', 'mail.example.com', 'corp.example'])}"


def phone(rng: random.Random, i: int) -> str:
    return rng.choice([f"+44 7700 9{i:05d}", f"+1 415-555-{i:04d}", f"+49 30 9018{i:03d}", f"+33 6 12 34 {i:02d} 56"])


def ssn(rng: random.Random, i: int) -> str:
    area = rng.randint(1, 665)
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def card(rng: random.Random, i: int) -> str:
    return _luhn_complete("4" + "".join(str(rng.randint(0, 9)) for _ in range(14)))


def iban(rng: random.Random, i: int) -> str:
    if i % 2:
        return _iban("DE", "".join(str(rng.randint(0, 9)) for _ in range(18)))
    return _iban("GB", "WEST" + "".join(str(rng.randint(0, 9)) for _ in range(14)))


def ip(rng: random.Random, i: int) -> str:
    return f"203.0.113.{rng.randint(1, 254)}" if i % 3 else f"2001:db8::{rng.randint(1, 65535):x}"


def dob(rng: random.Random, i: int) -> str:
    return (dt.date(1950, 1, 1) + dt.timedelta(days=rng.randint(0, 18_000))).isoformat()


def day(rng: random.Random, i: int) -> str:
    return (dt.date(2024, 1, 1) + dt.timedelta(days=rng.randint(0, 365))).isoformat()


def choice(*options: Any) -> Gen:
    return lambda rng, i: rng.choice(options)


def number(rng: random.Random, i: int) -> int:
    return rng.randint(1, 100_000)


OBJECTS: dict[str, list[Field]] = {
    "hr/employees.csv": [
        f("employee_id", lambda r, i: 1000 + i),
        f("first_name", lambda r, i: r.choice(FIRST), "person_name"),
        f("last_name", lambda r, i: r.choice(LAST), "person_name"),
        f("work_email", email, "email"),
        f("mobile", phone, "phone"),
        f("date_of_birth", dob, "date_of_birth"),
        f("ssn", ssn, "ssn"),
        f("salary", number),
        f("department", choice("Sales", "Finance", "Engineering", "Legal")),
        f("manager", person, "person_name"),
        f("hire_date", day),
        f("home_address", lambda r, i: f"{r.randint(1, 200)} {r.choice(['High St', 'Rue de la Paix'])}", "address"),
        f("city", lambda r, i: r.choice(CITIES)),
        f("salary_iban", iban, "iban"),
        f("citizen_ref", bsn, "national_id"),
        f("callback", bare_us_phone, "phone"),
    ],
    "crm/contacts.jsonl": [
        f("contact.name", person, "person_name"),
        f("contact.email", email, "email"),
        f("contact.phone", phone, "phone"),
        f("company", lambda r, i: r.choice(COMPANIES)),
        f("website", lambda r, i: f"https://{r.choice(['acme', 'globex'])}.example/{i}"),
        f("notes", choice("called back", "wants a demo", "renewal in May", "")),
        f("country", choice("DE", "FR", "ES", "JP")),
        f("user", person, "person_name"),
        f("created_at", lambda r, i: f"{day(r, i)}T10:{i % 60:02d}:00Z"),
        f("last_login_ip", ip, "ip_address"),
        f("app_version", lambda r, i: f"1.{r.randint(0, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}"),
        f("ref_code", lambda r, i: _not_luhn(r)),
        f("member", lambda r, i: int(nhs(r)), "national_id"),
    ],
    "payments/transactions.parquet": [
        f("transaction_id", lambda r, i: f"tx-{r.getrandbits(64):016x}"),
        f("account_iban", iban, "iban"),
        f("card", card, "card_number"),
        f("card_last4", lambda r, i: f"{r.randint(0, 9999):04d}"),
        f("amount", lambda r, i: round(r.uniform(1, 500), 2)),
        f("currency", choice("EUR", "GBP", "USD")),
        f("reference", lambda r, i: f"INV-2024-{i:04d}"),
        f("payer", person, "person_name"),
        f("order_number", lambda r, i: _not_luhn(r)),
        f("merchant_phone", phone, "phone"),
        f("booked_on", day),
        f("payer_tax_id", idnr, "national_id"),
        f("bytes_transferred", big_count),
    ],
    "logs/access.jsonl.gz": [
        f("ts", lambda r, i: f"{day(r, i)}T12:00:{i % 60:02d}Z"),
        f("client", ip, "ip_address"),
        f("path", lambda r, i: r.choice(["/", "/login", "/api/v1/orders", "/static/app.js"])),
        f("user_agent", choice("Mozilla/5.0 (X11; Linux x86_64)", "curl/8.5.0")),
        f("status", choice(200, 302, 404, 500)),
        f("bytes", number),
        f("request_id", lambda r, i: f"{r.getrandbits(128):032x}"),
        f("actor", email, "email"),
    ],
    "health/visits.csv": [
        f("visit_id", lambda r, i: i),
        f("patient_name", person, "person_name"),
        f("diagnosis", choice("type 2 diabetes", "asthma", "hypertension"), "phi"),
        f("visit_date", day),
        f("ward", choice("A1", "B2", "C3")),
    ],
}


def body(key: str, fields: list[Field], seed: int = 14) -> bytes:
    """The object's bytes: one row per ROWS, values generated from `seed`."""
    rng = random.Random(seed)  # fixed: the labelled set must not change between runs
    rows = [{fld.name: fld.gen(rng, i) for fld in fields} for i in range(ROWS)]
    if key.endswith(".csv"):
        out = io.StringIO()
        import csv

        writer = csv.DictWriter(out, fieldnames=[fld.name for fld in fields])
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().encode()
    if key.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buffer)
        return buffer.getvalue()
    lines = []
    for row in rows:
        nested: dict[str, Any] = {}
        for name, value in row.items():
            head, _, tail = name.partition(".")
            if tail:
                nested.setdefault(head, {})[tail] = value
            else:
                nested[name] = value
        lines.append(json.dumps(nested, ensure_ascii=False))
    data = ("\n".join(lines) + "\n").encode()
    return gzip.compress(data) if key.endswith(".gz") else data


def labels() -> dict[tuple[str, str], frozenset[str]]:
    return {(key.split("/")[0], fld.name): fld.tags for key, fields in OBJECTS.items() for fld in fields}
