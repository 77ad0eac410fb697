"""The labelled columns PII discovery is measured on (docs/discovery.md).

`data/pii_columns.json` is what the measurement reads; this module wrote it and writes it again:

    python -m tests.catalog.pii_fixture

Over 200 columns from the schemas discovery meets (HR, CRM, payments, health, logs, e-commerce,
marketing, support, IoT), each with its PostgreSQL type, 30 values as the sync sees them (cast to
text; NULLs as null) and the tags a careful steward would put on it. Values come from Faker and
`random`, both seeded per column, so a column's values do not change when another is added. Phone
numbers are made from libphonenumber's example numbers (real numbers are valid; Faker's are random
digits in a national layout); one column keeps Faker's, as messy data. Traps (`trap` in the file)
are columns that look sensitive and are not.

`data/pii_columns_old.json` is the first labelled table (`LABELLED` in test_pii.py, seed 42) in the
same form, so that one command measures both.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import zlib
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import phonenumbers
from faker import Faker
from stdnum.de import idnr
from stdnum.gb import nhs
from stdnum.iso7064 import mod_11_10

DATA = Path(__file__).with_name("data")
NEW = DATA / "pii_columns.json"
OLD = DATA / "pii_columns_old.json"
ROWS = 30

Gen = Callable[[Faker, random.Random, int], Any]
_FAKERS: dict[str, Faker] = {}


def _faker(locale: str) -> Faker:
    if locale not in _FAKERS:
        _FAKERS[locale] = Faker(locale)
    return _FAKERS[locale]


# --- value makers ------------------------------------------------------------------------------------


def phone(regions: str, style: str = "mixed") -> Gen:
    """Valid numbers of `regions` (libphonenumber's example numbers, last digits changed)."""
    formats = {
        "e164": [phonenumbers.PhoneNumberFormat.E164],
        "intl": [phonenumbers.PhoneNumberFormat.INTERNATIONAL],
        "national": [phonenumbers.PhoneNumberFormat.NATIONAL],
        "mixed": [
            phonenumbers.PhoneNumberFormat.E164,
            phonenumbers.PhoneNumberFormat.INTERNATIONAL,
            phonenumbers.PhoneNumberFormat.NATIONAL,
        ],
    }[style]

    def make(fk: Faker, r: random.Random, i: int) -> str:
        region = r.choice(regions.split())
        kind = r.choice([phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE])
        example = phonenumbers.example_number_for_type(region, kind)
        assert example is not None, region
        base = str(example.national_number)
        for _ in range(50):
            national = base[:-4] + f"{r.randint(0, 9999):04d}"
            number = phonenumbers.parse("+" + str(example.country_code) + national, None)
            if phonenumbers.is_valid_number(number):
                return phonenumbers.format_number(number, r.choice(formats))
        return phonenumbers.format_number(example, formats[0])

    return make


def nino(fk: Faker, r: random.Random, i: int) -> str:
    first, second = r.choice("ABCEGHJKLMNPRSTWXYZ"), r.choice("ABCEGHJKLMNPRSTWXYZ")
    if first + second in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}:
        first = "A"
    digits = f"{r.randint(0, 999999):06d}"
    sep = r.choice(["", " "])
    return sep.join([first + second, digits[:2], digits[2:4], digits[4:], r.choice("ABCD")])


def steuer_id(fk: Faker, r: random.Random, i: int) -> str:
    while True:
        body = str(r.randint(1, 9)) + "".join(str(r.randint(0, 9)) for _ in range(9))
        number = body + mod_11_10.calc_check_digit(body)
        if idnr.is_valid(number):
            return r.choice([number, f"{number[:2]} {number[2:5]} {number[5:8]} {number[8:]}"])


def nhs_number(fk: Faker, r: random.Random, i: int) -> str:
    while True:
        body = "".join(str(r.randint(0, 9)) for _ in range(9))
        check = 11 - sum(int(d) * (10 - k) for k, d in enumerate(body)) % 11
        number = body + str(0 if check == 11 else check)
        if check != 10 and nhs.is_valid(number):
            return f"{number[:3]} {number[3:6]} {number[6:]}"


def luhn_ok(digits: str) -> bool:
    total = 0
    for k, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if k % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def order_number(fk: Faker, r: random.Random, i: int) -> str:
    """16-digit order numbers: one in ten passes Luhn by chance."""
    return "4" + "".join(str(r.randint(0, 9)) for _ in range(15))


def person(locale: str) -> Gen:
    return lambda fk, r, i: _faker(locale).name()


def romanized(locale: str) -> Gen:
    return lambda fk, r, i: _faker(locale).romanized_name()


def pick(*choices: Any) -> Gen:
    return lambda fk, r, i: r.choice(choices)


def fk_(method: str, locale: str = "en_US", *args: Any) -> Gen:
    return lambda fk, r, i: getattr(_faker(locale), method)(*args)


def date_between(start: str, end: str) -> Gen:
    low, high = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return lambda fk, r, i: (low + dt.timedelta(days=r.randint(0, (high - low).days))).isoformat()


def stamp(start: str = "2024-01-01") -> Gen:
    low = dt.datetime.fromisoformat(start)
    return lambda fk, r, i: (low + dt.timedelta(seconds=r.randint(0, 30_000_000))).strftime("%Y-%m-%d %H:%M:%S+00")


def num(low: int, high: int) -> Gen:
    return lambda fk, r, i: str(r.randint(low, high))


def money(low: int, high: int) -> Gen:
    return lambda fk, r, i: f"{r.randint(low * 100, high * 100) / 100:.2f}"


def hexstr(n: int) -> Gen:
    return lambda fk, r, i: "".join(r.choice("0123456789abcdef") for _ in range(n))


def boolean(fk: Faker, r: random.Random, i: int) -> str:
    return r.choice(["true", "false"])


def hashed_email(fk: Faker, r: random.Random, i: int) -> str:
    return hashlib.sha256(_faker("en_US").email().encode()).hexdigest()


def masked_card(fk: Faker, r: random.Random, i: int) -> str:
    return r.choice(["****", "XXXX-XXXX-XXXX-", "**** **** **** "]) + f"{r.randint(0, 9999):04d}"


def uuid(fk: Faker, r: random.Random, i: int) -> str:
    return _faker("en_US").uuid4()


def version4(fk: Faker, r: random.Random, i: int) -> str:
    return f"{r.randint(1, 12)}.{r.randint(0, 20)}.{r.randint(0, 9)}.{r.randint(0, 250)}"


def user_agent(fk: Faker, r: random.Random, i: int) -> str:
    return _faker("en_US").user_agent()


PRODUCTS_LIKE_PEOPLE = (
    "Mercedes Sprinter", "Kia Ceed", "Victoria Sponge", "Margarita Pizza", "Jack Daniels Honey", "Ruby Red Grapefruit",
    "Blue Widget", "Ultra Phone Pro", "Luna Lamp 40W", "Alexa Echo Dot", "Tesla Model 3", "Lincoln Navigator",
    "Stella Artois 6-pack", "Mario Kart 8", "Florence Vase Large", "Grace Armchair Oak", "Chester Sofa",
    "Henry Hoover HVR160", "Oscar Mayer Bacon", "Jordan Retro 4", "Aston Martin DB11", "Rosa Candle Set",
)  # fmt: skip
CITIES = (
    "Charlotte", "Florence", "Victoria", "Austin", "Madison", "San Jose", "Saint Paul", "Virginia Beach",
    "Alice Springs", "Santa Clara", "Port Elizabeth", "Fort Worth", "Jackson Hole", "Carson City", "Lyon",
    "Hamburg", "Sevilla", "Rotterdam", "Kraków", "Porto", "Bologna", "Salt Lake City", "Palm Springs",
)  # fmt: skip
FAKER_LOCALE_NAMES = ["en_US", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "pt_PT", "pt_BR", "sv_SE"]


def mixed_people(fk: Faker, r: random.Random, i: int) -> str:
    return _faker(r.choice(FAKER_LOCALE_NAMES)).name()


# --- the columns ------------------------------------------------------------------------------------
# (table, column, SQL type, generator, expected tags, trap?)

E, P, N, S = "email", "phone", "person_name", "ssn"
C, IB, IP, D, A, PHI, NID = "card_number", "iban", "ip_address", "date_of_birth", "address", "phi", "national_id"

COLUMNS: list[tuple[str, str, str, Gen, set[str], str]] = [
    # --- HR ---
    ("hr.employees", "employee_id", "text", lambda fk, r, i: f"E{10000 + i}", set(), ""),
    ("hr.employees", "first_name", "text", fk_("first_name", "en_GB"), {N}, ""),
    ("hr.employees", "last_name", "text", fk_("last_name", "en_GB"), {N}, ""),
    ("hr.employees", "work_email", "text", fk_("company_email"), {E}, ""),
    ("hr.employees", "personal_phone", "text", phone("GB", "national"), {P}, ""),
    ("hr.employees", "birth_date", "date", date_between("1960-01-01", "2002-12-31"), {D}, ""),
    ("hr.employees", "hire_date", "date", date_between("1995-01-01", "2024-12-31"), set(), "ISO dates, not births"),
    ("hr.employees", "ni_number", "text", nino, {NID}, ""),
    ("hr.employees", "home_address", "text", fk_("street_address", "en_GB"), {A}, ""),
    ("hr.employees", "postcode", "text", fk_("postcode", "en_GB"), {A}, ""),
    ("hr.employees", "salary", "numeric(10,2)", money(20000, 150000), set(), ""),
    ("hr.employees", "job_title", "text", fk_("job"), set(), "job titles read like words, not people"),
    ("hr.employees", "department", "text", pick("Finance", "Sales", "Legal", "Engineering", "People"), set(), ""),
    ("hr.employees", "manager", "text", fk_("name", "en_GB"), {N}, "generic name, names in values"),
    ("hr.employees", "payroll_iban", "text", fk_("iban", "en_GB"), {IB}, ""),
    ("hr.employees", "is_active", "boolean", boolean, set(), ""),
    ("hr.employees", "email_verified", "boolean", boolean, set(), "email in the name, a flag"),
    ("hr.employees", "phone_count", "integer", num(0, 3), set(), "phone in the name, a count"),
    ("hr.employees_de", "steuer_id", "text", steuer_id, {NID}, ""),
    ("hr.employees_de", "vorname_nachname", "text", person("de_DE"), {N}, "German column name"),
    ("hr.employees_de", "bankverbindung", "text", fk_("iban", "de_DE"), {IB}, "German column name"),
    ("hr.employees_de", "telefon", "text", phone("DE", "national"), {P}, "German column name"),
    ("hr.employees_de", "abteilung", "text", pick("Vertrieb", "Einkauf", "Personal", "IT"), set(), ""),
    ("hr.employees_fr", "nir", "text", fk_("ssn", "fr_FR"), {NID}, ""),
    ("hr.employees_fr", "collaborateur", "text", person("fr_FR"), {N}, "French column name"),
    ("hr.employees_fr", "portable", "text", phone("FR", "national"), {P}, "French column name"),
    ("hr.employees_fr", "ville", "text", fk_("city", "fr_FR"), set(), "French city names"),
    ("hr.employees_nl", "bsn", "text", fk_("ssn", "nl_NL"), {NID}, ""),
    ("hr.employees_nl", "medewerker", "text", person("nl_NL"), {N}, "Dutch column name"),
    ("hr.employees_es", "dni", "text", fk_("nif", "es_ES"), {NID}, ""),
    ("hr.employees_es", "nie", "text", fk_("nie", "es_ES"), {NID}, ""),
    ("hr.employees_es", "empleado", "text", person("es_ES"), {N}, "Spanish column name"),
    ("hr.employees_it", "codice_fiscale", "text", fk_("ssn", "it_IT"), {NID}, ""),
    ("hr.employees_it", "dipendente", "text", person("it_IT"), {N}, "Italian column name"),
    ("hr.employees_pl", "pesel", "text", fk_("pesel", "pl_PL"), {NID}, ""),
    ("hr.employees_pl", "pracownik", "text", person("pl_PL"), {N}, "Polish column name"),
    ("hr.employees_br", "cpf", "text", fk_("cpf", "pt_BR"), {NID}, ""),
    ("hr.employees_br", "funcionario", "text", person("pt_BR"), {N}, "Portuguese column name"),
    ("hr.employees_pt", "colaborador", "text", person("pt_PT"), {N}, "Portuguese column name"),
    ("hr.employees_us", "ssn", "char(11)", fk_("ssn"), {S}, ""),
    ("hr.employees_us", "tax_ref", "text", fk_("ssn"), {S}, "SSNs under another name"),
    ("hr.employees_us", "zip", "text", fk_("zipcode"), {A}, ""),
    ("hr.employees_us", "zip_plus4", "text", fk_("zipcode_plus4"), {A}, "ZIP+4 looks like digits and a dash"),
    ("hr.leave", "leave_type", "text", pick("annual", "sick", "parental", "unpaid"), set(), ""),
    ("hr.leave", "start_date", "date", date_between("2023-01-01", "2025-12-31"), set(), ""),
    ("hr.leave", "approved_by", "text", mixed_people, {N}, "generic name, names in values"),
    ("hr.leave", "days", "integer", num(1, 30), set(), ""),
    ("hr.leave", "comment", "text", pick("Approved", "Pending HR", "See policy 4.2", "Carried over"), set(), ""),
    ("hr.reviews", "reviewer", "text", person("en_US"), {N}, "generic name, names in values"),
    ("hr.reviews", "rating", "smallint", num(1, 5), set(), ""),
    ("hr.reviews", "review_period", "text", pick("2023-H1", "2023-H2", "2024-H1"), set(), ""),
    ("hr.candidates", "candidate", "text", person("en_IN"), {N}, "Indian names, transliterated"),
    ("hr.candidates", "cv_email", "text", fk_("free_email"), {E}, ""),
    ("hr.candidates", "source", "text", pick("LinkedIn", "Referral", "Agency", "Careers page"), set(), ""),
    ("hr.candidates", "linkedin_handle", "text", fk_("user_name"), set(), "usernames"),
    # --- CRM ---
    ("crm.contacts", "contact_id", "uuid", uuid, set(), ""),
    ("crm.contacts", "full_name", "text", mixed_people, {N}, ""),
    ("crm.contacts", "email", "text", fk_("email"), {E}, ""),
    ("crm.contacts", "mobile", "text", phone("US GB DE FR", "intl"), {P}, ""),
    ("crm.contacts", "contact", "text", fk_("email", "de_DE"), {E}, "generic name, emails in values"),
    ("crm.contacts", "owner", "text", mixed_people, {N}, "generic name, names in values"),
    ("crm.contacts", "company", "text", fk_("company"), set(), "company names"),
    ("crm.contacts", "account", "text", fk_("company", "de_DE"), set(), "company names"),
    ("crm.contacts", "city", "text", pick(*CITIES), set(), "city names that are given names"),
    ("crm.contacts", "country", "char(2)", pick("US", "GB", "DE", "FR", "NL"), set(), ""),
    ("crm.contacts", "street", "text", fk_("street_address"), {A}, ""),
    ("crm.contacts", "lead_score", "integer", num(0, 100), set(), ""),
    ("crm.contacts", "email_hash", "text", hashed_email, set(), "hashed emails"),
    ("crm.contacts", "email_domain", "text", fk_("free_email_domain"), set(), "domains only"),
    ("crm.contacts", "phone_country_code", "text", pick("+1", "+44", "+49", "+33"), set(), "a prefix, not a number"),
    ("crm.contacts", "created_at", "timestamp with time zone", stamp(), set(), ""),
    ("crm.contacts", "created_by", "text", person("en_US"), {N}, "generic name, names in values"),
    ("crm.contacts", "updated_by", "text", fk_("user_name"), set(), "usernames like jdoe42"),
    ("crm.contacts", "assignee", "text", person("sv_SE"), {N}, "Swedish names"),
    ("crm.contacts", "tags", "text", pick("vip", "churn-risk", "newsletter", "partner"), set(), ""),
    ("crm.contacts", "preferred_language", "text", pick("en", "de", "fr", "es"), set(), ""),
    ("crm.contacts", "opt_in", "boolean", boolean, set(), ""),
    ("crm.deals", "deal_name", "text", pick("Q3 renewal", "Expansion", "Pilot", "Upsell seats"), set(), ""),
    ("crm.deals", "amount", "numeric(12,2)", money(1000, 90000), set(), ""),
    ("crm.deals", "stage", "text", pick("lead", "qualified", "proposal", "won", "lost"), set(), ""),
    ("crm.deals", "sales_rep", "text", person("en_GB"), {N}, "generic name, names in values"),
    ("crm.deals", "close_date", "date", date_between("2024-01-01", "2026-06-30"), set(), ""),
    ("crm.deals", "label", "text", pick(*PRODUCTS_LIKE_PEOPLE), set(), "products that look like people"),
    ("crm.activities", "activity_type", "text", pick("call", "email", "meeting"), set(), ""),
    ("crm.activities", "subject", "text", pick("Follow-up", "Intro call", "Contract", "Demo"), set(), ""),
    ("crm.activities", "participant", "text", person("it_IT"), {N}, "generic name, names in values"),
    ("crm.activities", "callback_number", "text", phone("US", "national"), {P}, ""),
    ("crm.activities", "duration_min", "integer", num(5, 90), set(), ""),
    ("crm.activities", "value", "text", phone("NL ES IT", "e164"), {P}, "generic name, phones in values"),
    ("crm.leads", "name", "text", person("pt_PT"), {N}, "the bare word name"),
    ("crm.leads", "lead_email", "citext", fk_("email", "fr_FR"), {E}, ""),
    ("crm.leads", "utm_source", "text", pick("google", "newsletter", "partner", "direct"), set(), ""),
    ("crm.leads", "landing_page", "text", fk_("uri_path"), set(), ""),
    ("crm.leads", "author", "text", person("ru_RU"), {N}, "Cyrillic names"),
    ("crm.leads", "editor", "text", person("el_GR"), {N}, "Greek names"),
    ("crm.leads", "sender", "text", romanized("ja_JP"), {N}, "romanised Japanese names"),
    ("crm.leads", "recipient", "text", romanized("zh_CN"), {N}, "romanised Chinese names"),
    ("crm.leads", "reach", "text", phone("GB DE FR", "mixed"), {P}, "phones under another name"),
    ("crm.leads", "messy_phone", "text", fk_("phone_number"), {P}, "Faker's random US numbers: messy data"),
    # --- payments ---
    ("payments.cards", "card_number", "text", fk_("credit_card_number"), {C}, ""),
    ("payments.cards", "pan_token", "text", hexstr(32), set(), "tokens, not cards"),
    ("payments.cards", "card_last4", "char(4)", num(1000, 9999), set(), ""),
    ("payments.cards", "masked_pan", "text", masked_card, set(), "masked cards"),
    ("payments.cards", "card_brand", "text", pick("visa", "mastercard", "amex"), set(), ""),
    ("payments.cards", "expiry", "text", lambda fk, r, i: f"{r.randint(1, 12):02d}/{r.randint(25, 31)}", set(), ""),
    ("payments.cards", "cardholder_name", "text", mixed_people, {N}, ""),
    ("payments.cards", "col_17", "text", fk_("credit_card_number"), {C}, "cards under a meaningless name"),
    ("payments.cards", "fingerprint", "text", hexstr(16), set(), ""),
    ("payments.transfers", "iban", "text", fk_("iban", "de_DE"), {IB}, ""),
    ("payments.transfers", "payout_account", "text", fk_("iban", "nl_NL"), {IB}, "IBANs under another name"),
    ("payments.transfers", "extra", "text", fk_("iban", "fr_FR"), {IB}, "generic name, IBANs in values"),
    ("payments.transfers", "bic", "text", fk_("swift8"), set(), ""),
    ("payments.transfers", "beneficiary_name", "text", person("de_DE"), {N}, ""),
    ("payments.transfers", "reference", "text", lambda fk, r, i: f"INV-{r.randint(100000, 999999)}", set(), ""),
    ("payments.transfers", "amount", "numeric(12,2)", money(1, 5000), set(), ""),
    ("payments.transfers", "currency", "char(3)", pick("EUR", "GBP", "USD"), set(), ""),
    ("payments.transfers", "iban_valid", "boolean", boolean, set(), "iban in the name, a flag"),
    ("payments.transfers", "executed_at", "timestamp with time zone", stamp(), set(), ""),
    ("payments.orders", "order_number", "text", order_number, set(), "order ids, some pass Luhn"),
    ("payments.orders", "order_id", "bigint", num(10**9, 10**10), set(), ""),
    ("payments.orders", "customer", "text", person("fr_FR"), {N}, "generic name, names in values"),
    ("payments.orders", "billing_email", "text", fk_("email", "es_ES"), {E}, ""),
    ("payments.orders", "shipping_address", "text", fk_("address"), {A}, ""),
    ("payments.orders", "status", "text", pick("paid", "refunded", "pending"), set(), ""),
    ("payments.orders", "tracking_code", "text", lambda fk, r, i: f"1Z999AA1{r.randint(10**9, 10**10 - 1)}", set(), ""),
    ("payments.orders", "invoice_date", "date", date_between("2020-01-01", "2025-12-31"), set(), ""),
    ("payments.orders", "total", "numeric(10,2)", money(5, 900), set(), ""),
    ("payments.orders", "coupon", "text", pick("WELCOME10", "SPRING24", "VIP-ANNA"), set(), ""),
    ("payments.refunds", "reason", "text", pick("damaged", "late", "wrong size", "duplicate"), set(), ""),
    ("payments.refunds", "handled_by", "text", person("es_ES"), {N}, "generic name, names in values"),
    ("payments.refunds", "refund_ref", "text", lambda fk, r, i: f"RF{r.randint(10**8, 10**9 - 1)}", set(), ""),
    # --- health ---
    ("health.patients", "patient_id", "bigint", num(1, 10**6), set(), ""),
    ("health.patients", "mrn", "text", lambda fk, r, i: f"MRN-{r.randint(10**5, 10**6)}", {PHI}, ""),
    ("health.patients", "patient_name", "text", person("en_US"), {N}, ""),
    ("health.patients", "dob", "date", date_between("1930-01-01", "2012-12-31"), {D}, ""),
    ("health.patients", "nhs_number", "text", nhs_number, {NID}, ""),
    ("health.patients", "gp_practice", "text", pick("Riverside Surgery", "Park Lane Clinic", "High St Medical"), set(),
     ""),
    ("health.patients", "emergency_contact_name", "text", person("en_GB"), {N}, ""),
    ("health.patients", "emergency_contact_phone", "text", phone("GB", "mixed"), {P}, ""),
    ("health.patients", "blood_type", "text", pick("A+", "O-", "B+", "AB+"), {PHI}, ""),
    ("health.patients", "allergies", "text", pick("penicillin", "none", "peanuts", "latex"), {PHI}, ""),
    ("health.patients", "insurance_plan", "text", pick("Gold", "Silver", "Bronze"), set(), ""),
    ("health.patients", "admission_date", "date", date_between("2018-01-01", "2025-12-31"), set(), ""),
    ("health.encounters", "diagnosis", "text", pick("Influenza", "Migraine", "Asthma", "Fracture"), {PHI}, ""),
    ("health.encounters", "icd10_code", "text", pick("J11.1", "G43.9", "J45.9", "S52.5"), {PHI}, ""),
    ("health.encounters", "medication", "text", pick("Amoxicillin 500mg", "Ibuprofen 400mg"), {PHI}, ""),
    ("health.encounters", "attending_physician", "text", lambda fk, r, i: "Dr. " + _faker("en_US").name_nonbinary(),
     {N}, "names with a title"),
    ("health.encounters", "ward", "text", pick("Cardiology", "Oncology", "A&E", "Maternity"), set(), ""),
    ("health.encounters", "bed", "text", lambda fk, r, i: f"{r.choice('ABC')}-{r.randint(1, 40)}", set(), ""),
    ("health.encounters", "visit_count", "integer", num(1, 20), set(), ""),
    ("health.encounters", "symptoms", "text", pick("fever, cough", "headache", "shortness of breath"), {PHI}, ""),
    ("health.encounters", "discharge_summary_id", "uuid", uuid, set(), ""),
    ("health.encounters", "diagnosis_count", "integer", num(0, 5), set(), "a count"),
    ("health.lab", "specimen_id", "text", lambda fk, r, i: f"SP{r.randint(10**6, 10**7)}", set(), ""),
    ("health.lab", "result_value", "numeric(8,3)", money(0, 200), set(), ""),
    ("health.lab", "unit", "text", pick("mg/dL", "mmol/L", "g/L"), set(), ""),
    ("health.lab", "technician", "text", person("nl_NL"), {N}, "generic name, names in values"),
    # --- logs ---
    ("logs.http", "client_ip", "inet", fk_("ipv4_public"), {IP}, ""),
    ("logs.http", "src", "text", fk_("ipv6"), {IP}, "IPv6 under a short name"),
    ("logs.http", "forwarded_for", "text", fk_("ipv4"), {IP}, ""),
    ("logs.http", "remote_addr", "text", fk_("ipv4_private"), {IP}, ""),
    ("logs.http", "ip_count", "integer", num(0, 50), set(), ""),
    ("logs.http", "ip_range", "cidr", lambda fk, r, i: f"10.{r.randint(0, 255)}.0.0/16", set(), "networks, not hosts"),
    ("logs.http", "build_version", "text", version4, set(), "versions that parse as IPv4"),
    ("logs.http", "app_version", "text", lambda fk, r, i: f"{r.randint(1, 9)}.{r.randint(0, 20)}.{r.randint(0, 9)}",
     set(), ""),
    ("logs.http", "user_agent", "text", user_agent, set(), ""),
    ("logs.http", "path", "text", fk_("uri_path"), set(), ""),
    ("logs.http", "status", "smallint", pick("200", "404", "500", "302"), set(), ""),
    ("logs.http", "latency_ms", "integer", num(1, 2000), set(), ""),
    ("logs.http", "request_id", "uuid", uuid, set(), ""),
    ("logs.http", "trace_id", "text", hexstr(32), set(), ""),
    ("logs.http", "user", "text", fk_("user_name"), set(), "usernames in a generic column"),
    ("logs.http", "logged_at", "timestamp with time zone", stamp(), set(), ""),
    ("logs.auth", "username", "text", fk_("user_name"), set(), ""),
    ("logs.auth", "login_email", "text", fk_("email"), {E}, ""),
    ("logs.auth", "source_ip", "text", fk_("ipv4"), {IP}, ""),
    ("logs.auth", "outcome", "text", pick("success", "bad_password", "locked"), set(), ""),
    ("logs.auth", "mfa_method", "text", pick("totp", "sms", "none"), set(), ""),
    ("logs.auth", "session_id", "text", hexstr(24), set(), ""),
    ("logs.auth", "device", "text", pick("iPhone 15", "Pixel 8", "MacBook Pro", "ThinkPad X1"), set(), ""),
    ("logs.audit", "actor", "text", mixed_people, {N}, "generic name, names in values"),
    ("logs.audit", "action", "text", pick("create", "update", "delete", "export"), set(), ""),
    ("logs.audit", "target", "text", lambda fk, r, i: f"dataset/{r.randint(1, 500)}", set(), ""),
    ("logs.audit", "message", "text", pick("Exported 120 rows", "Role changed", "Password reset"), set(), ""),
    ("logs.app", "level", "text", pick("INFO", "WARN", "ERROR"), set(), ""),
    ("logs.app", "logger", "text", pick("app.http", "app.db", "celery.worker"), set(), ""),
    ("logs.app", "hostname", "text", lambda fk, r, i: f"web-{r.randint(1, 9)}.internal", set(), ""),
    ("logs.app", "host_ip", "text", fk_("ipv4_private"), {IP}, ""),
    ("logs.app", "pid", "integer", num(100, 65000), set(), ""),
    ("logs.app", "server_name", "text", pick("Apollo Node", "Grace Node", "Ada Node"), set(),
     "hosts named after people"),
    # --- e-commerce ---
    ("shop.products", "sku", "text", lambda fk, r, i: f"SKU-{r.randint(10000, 99999)}", set(), ""),
    ("shop.products", "product_name", "text", pick(*PRODUCTS_LIKE_PEOPLE), set(), "products that look like people"),
    ("shop.products", "title", "text", pick(*PRODUCTS_LIKE_PEOPLE), set(), "products that look like people"),
    ("shop.products", "brand", "text", pick("Ford", "Ralph Lauren", "Tommy Hilfiger", "Calvin Klein", "Hugo Boss"),
     set(), "brands that are people's names"),
    ("shop.products", "ean", "text", fk_("ean13"), set(), ""),
    ("shop.products", "price", "numeric(8,2)", money(1, 500), set(), ""),
    ("shop.products", "colour", "text", fk_("color_name"), set(), ""),
    ("shop.products", "weight_g", "integer", num(10, 5000), set(), ""),
    ("shop.reviews", "reviewer_name", "text", person("en_US"), {N}, ""),
    ("shop.reviews", "stars", "smallint", num(1, 5), set(), ""),
    ("shop.reviews", "nickname", "text", fk_("user_name"), set(), "usernames"),
    ("shop.stores", "store_name", "text", pick("Victoria Station Shop", "Alexander Mall", "Charlotte Outlet"),
     set(), ""),
    ("shop.stores", "location", "text", pick(*CITIES), set(), "city names that are given names"),
    ("shop.stores", "store_phone", "text", phone("US GB", "national"), {P}, ""),
    ("shop.stores", "manager_email", "text", fk_("company_email"), {E}, ""),
    ("shop.stores", "opened_on", "date", date_between("1990-01-01", "2020-12-31"), set(), "ISO dates, not births"),
    ("shop.carts", "cart_id", "uuid", uuid, set(), ""),
    ("shop.carts", "items", "integer", num(1, 12), set(), ""),
    ("shop.carts", "abandoned", "boolean", boolean, set(), ""),
    ("shop.carts", "visitor_ip", "inet", fk_("ipv4_public"), {IP}, ""),
    # --- marketing ---
    ("marketing.subscribers", "subscriber", "text", fk_("email", "it_IT"), {E}, "generic name, emails in values"),
    ("marketing.subscribers", "email_subject", "text", pick("Your order has shipped", "Spring sale"), set(), ""),
    ("marketing.subscribers", "num_emails", "integer", num(0, 40), set(), "a count"),
    ("marketing.subscribers", "bounce_rate", "numeric(5,2)", money(0, 1), set(), ""),
    ("marketing.subscribers", "birthday", "date", date_between("1950-01-01", "2005-12-31"), {D}, ""),
    ("marketing.subscribers", "signup_date", "date", date_between("2016-01-01", "2025-12-31"), set(), "not births"),
    ("marketing.subscribers", "campaign", "text", pick("BF-2024", "Spring", "Retargeting"), set(), ""),
    ("marketing.subscribers", "sms_number", "text", phone("FR DE", "e164"), {P}, ""),
    ("marketing.subscribers", "referrer", "text", fk_("url"), set(), ""),
    ("marketing.segments", "segment", "text", pick("high value", "lapsed", "new"), set(), ""),
    ("marketing.segments", "persona", "text", pick("Budget Betty", "Power Paul", "Family Fiona"), set(),
     "marketing personas"),
    # --- support ---
    ("support.tickets", "ticket_id", "bigint", num(1, 10**6), set(), ""),
    ("support.tickets", "requester", "text", person("es_ES"), {N}, "generic name, names in values"),
    ("support.tickets", "requester_email", "text", fk_("email", "nl_NL"), {E}, ""),
    ("support.tickets", "agent", "text", person("de_DE"), {N}, "generic name, names in values"),
    ("support.tickets", "priority", "text", pick("low", "normal", "high", "urgent"), set(), ""),
    ("support.tickets", "channel", "text", pick("email", "phone", "chat"), set(), "the word email as a value"),
    ("support.tickets", "csat", "smallint", num(1, 5), set(), ""),
    ("support.tickets", "opened_at", "timestamp with time zone", stamp(), set(), ""),
    ("support.tickets", "caller_id", "text", phone("US GB DE FR NL ES IT", "e164"), {P}, ""),
    ("support.tickets", "queue", "text", pick("Billing", "Tech", "Returns"), set(), ""),
    # --- IoT and infrastructure ---
    ("iot.devices", "device_id", "text", hexstr(12), set(), ""),
    ("iot.devices", "mac_address", "text", fk_("mac_address"), set(), ""),
    ("iot.devices", "firmware", "text", version4, set(), "versions that parse as IPv4"),
    ("iot.devices", "gateway", "inet", fk_("ipv4_private"), {IP}, ""),
    ("iot.devices", "serial_number", "text", lambda fk, r, i: f"SN{r.randint(10**9, 10**10)}", set(), ""),
    ("iot.devices", "imei", "text", lambda fk, r, i: "35" + "".join(str(r.randint(0, 9)) for _ in range(13)), set(),
     "15-digit device ids"),
    ("iot.devices", "installed_by", "text", person("pl_PL"), {N}, "generic name, names in values"),
    ("iot.readings", "temperature", "numeric(5,2)", money(-20, 40), set(), ""),
    ("iot.readings", "read_at", "timestamp with time zone", stamp(), set(), ""),
    ("iot.readings", "lat", "numeric(9,6)", fk_("latitude"), set(), ""),
    ("infra.hosts", "fqdn", "text", fk_("hostname"), set(), ""),
    ("infra.hosts", "private_ip", "inet", fk_("ipv4_private"), {IP}, ""),
    ("infra.hosts", "os_version", "text", pick("Debian 12", "Ubuntu 24.04", "RHEL 9.4"), set(), ""),
    ("infra.hosts", "ssh_key_fingerprint", "text", hexstr(40), set(), ""),
    ("infra.hosts", "owner_team", "text", pick("platform", "data", "payments"), set(), ""),
    # --- known limits: kept in so that the figures say what discovery still gets wrong ---
    ("logs.app", "v", "text", version4, set(),
     "known limit: versions that parse as IPv4, under a name that says nothing"),
    ("shop.merchants", "display_name", "text", pick("Calvin Klein", "Ralph Lauren", "Tommy Hilfiger", "Hugo Boss",
     "Acme Ltd"), set(), "known limit: brands named after people"),
    ("support.tickets", "body", "text", lambda fk, r, i: f"Customer {_faker('en_US').name()} called about the invoice.",
     {N}, "known limit: names inside free text"),
    ("crm.contacts", "greeting", "text", fk_("first_name"), {N}, "known limit: given names alone, under a name that "
     "says nothing"),
    ("hr.employees_jp", "shimei", "text", person("ja_JP"), {N}, "known limit: names in kanji"),
    ("hr.employees_pl", "komorka", "text", phone("PL", "national"), {P}, "a region outside PII_PHONE_REGIONS: "
     "found, but read as Spanish numbers"),
]  # fmt: skip

# --- the first labelled table, in the same form ---------------------------------------------------------


def _text(value: Any) -> str | None:
    """A Python value as PostgreSQL's text cast writes it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date | Decimal | int):
        return str(value)
    return str(value)


def build_new() -> list[dict[str, Any]]:
    out = []
    for table, column, sql_type, gen, tags, trap in COLUMNS:
        seed = zlib.crc32(f"{table}.{column}".encode())
        rng = random.Random(seed)
        Faker.seed(seed)
        for fk in _FAKERS.values():
            fk.seed_instance(seed)
        fk = _faker("en_US")
        values = [_text(gen(fk, rng, i)) for i in range(ROWS)]
        out.append({"table": table, "column": column, "type": sql_type, "tags": sorted(tags), "trap": trap,
                    "values": values})  # fmt: skip
    return out


def build_old() -> list[dict[str, Any]]:
    from tests.catalog.test_pii import LABELLED

    rng = random.Random(42)
    rows = [tuple(gen(rng, i) for _, _, gen, _ in LABELLED) for i in range(40)]
    return [
        {"table": "labelled.people_mix", "column": name, "type": sql_type, "tags": sorted(tags), "trap": "",
         "values": [_text(row[k]) for row in rows]}
        for k, (name, sql_type, _, tags) in enumerate(LABELLED)
    ]  # fmt: skip


def write(path: Path, columns: list[dict[str, Any]]) -> None:
    lines = ",\n".join(json.dumps(c, ensure_ascii=False) for c in columns)
    path.write_text(f"[\n{lines}\n]\n", encoding="utf-8")


def main() -> None:
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    django.setup()
    DATA.mkdir(exist_ok=True)
    write(NEW, build_new())
    write(OLD, build_old())
    print(f"{NEW}: {len(COLUMNS)} columns; {OLD}")


if __name__ == "__main__":
    main()
