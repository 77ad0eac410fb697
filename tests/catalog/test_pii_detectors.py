"""The wider detectors: phone numbers through libphonenumber, national identifiers through
python-stdnum, person names from values; and findings that explain without giving a value away."""

from __future__ import annotations

import json

import pytest

from governance.catalog import pii
from governance.catalog.pii import people
from tests.catalog.pii_fixture import NEW

# --- phone numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "region"),
    [
        ("+1 415 555 2671", "+"),
        ("+44 20 7946 0958", "+"),
        ("+33 6 12 34 56 78", "+"),
        ("0049 30 1234567", "+"),
        ("+49 30 1234567 ext. 12", "+"),
        ("(415) 555-2671", "US"),
        ("020 7946 0958", "GB"),
        ("06 12 34 56 78", "DE"),  # also a number in Germany's 06123 area, whose format comes first
        ("030 123456", "DE"),
        ("612 34 56 78", "ES"),
    ],
)
def test_phone_numbers_valid_per_libphonenumber(value, region):
    assert pii.phone_region(value) == region


@pytest.mark.parametrize(
    "value",
    [
        "+1 123 456 7890",  # no US area code starts with 1
        "+999 1234 5678",  # no such country code
        "123 456 7890",  # bare national digits valid nowhere
        "12345-6789",  # ZIP+4
        "123-45-6789",  # SSN-shaped
        "2024-01-15",
        "1234567890",  # bare digits without a trunk prefix: an order number
    ],
)
def test_not_phone_numbers_per_libphonenumber(value):
    assert not pii.is_phone(value)


def test_national_numbers_count_only_in_the_configured_regions(settings):
    polish = ["22 123 45 67", "22 234 56 78", "22 345 67 89", "22 456 78 90", "22 567 89 01"] * 4
    assert pii.phone_region("22 123 45 67", regions=("PL",)) == "PL"
    assert not pii.is_phone("22 123 45 67", regions=("US",))
    settings.PII_PHONE_REGIONS = []
    assert pii.suggest_tags(name="komorka", data_type="text", samples=polish) == []
    settings.PII_PHONE_REGIONS = ["PL"]
    [found] = pii.suggest_tags(name="komorka", data_type="text", samples=polish)
    assert found.tag == "phone"
    assert found.findings[0].shape == "national format of PL (valid per phonenumbers)"


# --- national identifiers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("AB 12 34 56 C", "gb_nino"),
        ("AB123456C", "gb_nino"),
        ("943 476 5919", "gb_nhs"),
        ("36 574 261 809", "de_idnr"),
        ("2 95 10 99 126 111 93", "fr_nir"),
        ("111222333", "nl_bsn"),
        ("54362315K", "es_dni"),
        ("X2482300W", "es_nie"),
        ("RCCMNL83S18D969H", "it_codice_fiscale"),
        ("44051401359", "pl_pesel"),
        ("390.533.447-05", "br_cpf"),
    ],
)
def test_national_identifiers(value, kind):
    assert pii.national_id_kind(value) == kind


@pytest.mark.parametrize(
    "value",
    [
        "ZZ123456C",  # ZZ is never issued (Faker's placeholder)
        "QQ123456C",  # Q is never a prefix letter
        "AB123456E",  # suffix is A-D
        "943 476 5918",  # NHS check digit off by one
        "36 574 261 808",  # Steuer-IdNr check digit off
        "111222334",  # BSN fails the 11-proof
        "54362315A",  # DNI with the wrong letter
        "RCCMNL83S18D969A",  # codice fiscale with the wrong check character
        "390.533.447-06",  # CPF check digits off
        "ORD-123456",
        "4111111111111111",
    ],
)
def test_not_national_identifiers(value):
    assert not pii.is_national_id(value)


def test_national_id_column_by_values_and_by_name():
    bsns = ["111222333", "123456782", "999999990"] * 5
    [by_values] = pii.suggest_tags(name="ref", data_type="text", samples=bsns)
    assert by_values.tag == "national_id"
    assert by_values.findings == (pii.Finding("national_id", "values", "Dutch BSN (9 digits, 11-proof)", 15, 15),)
    [by_name] = pii.suggest_tags(name="nino", data_type="text", samples=["pending"] * 10)
    assert by_name.tag == "national_id" and by_name.confidence == 0.5, "values contradict the name"
    assert [f.basis for f in by_name.findings] == ["name", "values"]
    assert by_name.findings[1].matched == 0 and by_name.findings[1].sampled == 10
    assert pii.suggest_tags(name="national_id_type", data_type="text", samples=["passport"] * 10) == []


def test_random_digit_ids_are_not_national_identifiers():
    ids = [f"{n:011d}" for n in range(10_000_000_000, 10_000_000_000 + 300 * 7919, 7919)]
    assert pii.suggest_tags(name="shipment", data_type="text", samples=ids) == []


def test_cpf_numbers_are_not_phone_numbers():
    cpfs = ["390.533.447-05", "187.244.670-14", "084.704.729-68", "900.593.240-66", "111.444.777-35"] * 3
    assert [s.tag for s in pii.suggest_tags(name="documento", data_type="text", samples=cpfs)] == ["national_id"]


# --- person names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "Ada Lovelace",
        "Hans-Peter Müller",
        "Jean-Luc Lefèvre",
        "María José García López",
        "Giuseppe di Marco",
        "Jan van der Berg",
        "Agnieszka Wiśniewska",
        "João dos Santos",
        "Lovelace, Ada",
        "ADA LOVELACE",
        "Dr. Grace Hopper",
        "Martin Luther King Jr.",
        "Seán O'Brien",
        "Анна Петрова",
        "Петров Иван Сергеевич",
        "Γιώργος Παπαδόπουλος",
        "Hiroshi Tanaka",
        "Priya Sharma",
    ],
)
def test_person_names_in_several_locales(value):
    assert pii.is_person_name(value), value


@pytest.mark.parametrize(
    "value",
    [
        "jdoe42",  # a handle
        "ada.lovelace",
        "ada lovelace",  # lower case: a handle or a slug
        "Ada",  # one word: could be anything
        "Blue Widget",  # no given name
        "Mercedes Sprinter Pro",  # product words
        "Victoria Park",
        "Alice Springs",
        "Saint Paul",
        "Ryan Ltd",
        "Johnson and Brown",
        "Luna Lamp 40W",
        "Grace Node 3",
        "Called back, left a message.",
        "Ada Lovelace Byron King Noel Milbanke",  # too many words
    ],
)
def test_not_person_names(value):
    assert not pii.is_person_name(value), value


def test_given_names_come_from_faker_lists_lazily_and_once():
    people._name_lists.cache_clear()
    assert people.given_name_languages("Giuseppe") >= {"it"}
    assert people.given_name_languages("giuseppe") == people.given_name_languages("GIUSEPPE")
    assert people._name_lists.cache_info().misses == 1
    assert not people.given_name_languages("Widget")


def test_person_names_in_generic_columns():
    names = ["Ada Lovelace", "Hans Müller", "Marie Curie", "Agnieszka Nowak", "João Silva", "Sofia Rossi"] * 4
    for column in ("user", "owner", "contact", "created_by", "assignee", "label"):
        [found] = pii.suggest_tags(name=column, data_type="text", samples=names)
        assert found.tag == "person_name" and found.confidence == 0.9
        assert (
            found.evidence == "100% of 24 sampled values look like person names (a known given name and a family name)"
        )
        [finding] = found.findings
        assert finding.detector == "person_name" and finding.basis == "values"
        assert finding.shape.startswith("Given-name Family-name, given names known in ")
        assert (finding.matched, finding.sampled) == (24, 24)


def test_person_name_traps():
    handles = ["jdoe42", "ada_l", "grace.h", "alan1912", "kthompson"] * 4
    assert pii.suggest_tags(name="user", data_type="text", samples=handles) == []
    products = ["Mercedes Sprinter", "Kia Ceed", "Grace Armchair Oak", "Victoria Sponge", "Chester Sofa"] * 4
    assert pii.suggest_tags(name="product_name", data_type="text", samples=products) == [], "the name says products"
    cities = ["Charlotte", "Florence", "Virginia Beach", "Alice Springs", "Saint Paul", "Carson City"] * 4
    assert pii.suggest_tags(name="location", data_type="text", samples=cities) == []
    companies = ["Ryan Ltd", "Meyer Group", "Garcia Inc", "Johnson and Brown", "Kim Holdings"] * 4
    assert pii.suggest_tags(name="account", data_type="text", samples=companies) == []
    mostly_products = ["Blue Widget", "Ultra Phone Pro", "Luna Lamp 40W", "Ada Lovelace"] * 5
    assert pii.suggest_tags(name="label", data_type="text", samples=mostly_products) == [], "25% is below 60%"


def test_a_named_person_column_takes_single_words_and_shows_contradictions():
    [first] = pii.suggest_tags(name="first_name", data_type="text", samples=["Ada", "Grace", "Alan"] * 5)
    assert first.confidence > 0.9
    assert first.findings[1].shape == "Capitalised name or Given-name Family-name"
    [odd] = pii.suggest_tags(name="first_name", data_type="text", samples=["a@example.com", "42"] * 5)
    assert odd.confidence == 0.5 and "but only 0% of 10 sampled values look like names" in odd.evidence


# --- findings ------------------------------------------------------------------------------------------


def test_every_suggestion_explains_itself_by_findings_that_match_its_evidence():
    [email] = pii.suggest_tags(name="email", data_type="text", samples=["x@example.com"] * 20)
    assert email.findings == (
        pii.Finding("name", "name", 'token "email" in the name'),
        pii.Finding("email", "values", "name@domain.tld", 20, 20),
    )
    [ssn] = pii.suggest_tags(name="tax_ref", data_type="text", samples=["123-45-6789", "234-56-7890"] * 5)
    assert ssn.findings == (pii.Finding("ssn", "values", "NNN-NN-NNNN, within the SSA's issuing rules", 10, 10),)
    [card] = pii.suggest_tags(name="payload", data_type="text", samples=["4111 1111 1111 1111"] * 5)
    assert card.findings[0].shape == "16 digits starting 2-6, Luhn-valid"
    [iban] = pii.suggest_tags(name="extra", data_type="text", samples=["DE89370400440532013000"] * 5)
    assert iban.findings[0].shape == "IBAN, mod-97 valid"
    [contradicted] = pii.suggest_tags(name="email", data_type="text", samples=["redacted"] * 20)
    assert contradicted.findings[1] == pii.Finding("email", "values", "name@domain.tld", 0, 20)
    assert contradicted.findings[1].share == 0.0


def test_a_mask_is_shown_only_when_it_cannot_be_a_value():
    assert pii.dominant_mask(["123-45-6789", "987-65-4321"]) == "NNN-NN-NNNN"
    assert pii.dominant_mask(["AAAA", "ABCD", "WXYZ"]) is None, "the mask is itself a sampled value"
    assert pii.dominant_mask(["A1", "B2"]) is None, "too little masked to say nothing"


def _labelled() -> list[dict]:
    return json.loads(NEW.read_text(encoding="utf-8"))


def test_no_finding_or_evidence_contains_a_sampled_value():
    """Over the whole labelled fixture: whatever was suggested, its shapes and evidence hold none of
    the column's values (nor a value's longest word, for names and addresses)."""
    checked = 0
    for col in _labelled():
        samples = col["values"] if pii.should_sample(col["column"], col["type"]) else None
        for s in pii.suggest_tags(name=col["column"], data_type=col["type"], samples=samples):
            texts = [s.evidence, *(f.shape for f in s.findings)]
            for value in {v.strip() for v in col["values"] if v and len(v.strip()) >= 4}:
                longest = max(value.split(), key=len)
                for text in texts:
                    assert value not in text, (col["column"], s.tag, text)
                    if len(longest) >= 5 and not longest.isdigit():
                        assert longest not in text, (col["column"], s.tag, text)
            checked += 1
    assert checked > 90


def test_evidence_and_findings_agree_on_every_labelled_column():
    for col in _labelled():
        samples = col["values"] if pii.should_sample(col["column"], col["type"]) else None
        for s in pii.suggest_tags(name=col["column"], data_type=col["type"], samples=samples):
            assert len(s.evidence.split("; ")) == len(s.findings), (col["column"], s)
            for part, finding in zip(s.evidence.split("; "), s.findings, strict=True):
                if finding.basis == "name":
                    assert part.startswith("name matches ")
                else:
                    assert f"% of {finding.sampled} sampled values" in part
