"""Name hints: what a column's name says it holds, given what its type can hold.

Names are split into snake_case/camelCase tokens and matched as whole tokens (`ip_count` holds the
token `ip` but also `count`, which disqualifies it; `zipcode` and `tip` are never `ip`), and a hint
only counts when the column's type can hold the data (`phone_count integer` is not a phone number).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from governance.models import SensitiveTag

from .model import ARRAY, DATE, JSON, NETWORK, NUMBER, TEXT, value_kind

_TOKEN_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")

# Run-together spellings, expanded so that the rules below see the same tokens as for snake_case.
_COMPOUNDS: dict[str, tuple[str, ...]] = {
    "emailaddress": ("email", "address"),
    "mailaddress": ("mail", "address"),
    "phonenumber": ("phone", "number"),
    "phoneno": ("phone", "no"),
    "telephonenumber": ("telephone", "number"),
    "mobilenumber": ("mobile", "number"),
    "cellphone": ("cell", "phone"),
    "firstname": ("first", "name"),
    "lastname": ("last", "name"),
    "fullname": ("full", "name"),
    "givenname": ("given", "name"),
    "familyname": ("family", "name"),
    "middlename": ("middle", "name"),
    "maidenname": ("maiden", "name"),
    "birthdate": ("birth", "date"),
    "dateofbirth": ("date", "of", "birth"),
    "birthday": ("birth", "day"),
    "ipaddress": ("ip", "address"),
    "ipaddr": ("ip", "addr"),
    "zipcode": ("zip", "code"),
    "postcode": ("post", "code"),
    "postalcode": ("postal", "code"),
    "streetaddress": ("street", "address"),
    "cardnumber": ("card", "number"),
    "creditcard": ("credit", "card"),
    "ccnumber": ("cc", "number"),
    "ccnum": ("cc", "num"),
    "socialsecurity": ("social", "security"),
    "medicalrecord": ("medical", "record"),
    "codicefiscale": ("codice", "fiscale"),
    "steuerid": ("steuer", "id"),
    "nationalid": ("national", "id"),
}


def name_tokens(name: str) -> tuple[str, ...]:
    """Lower-case tokens of a column name: `clientIPAddress` -> (client, ip, address),
    `address_line1` -> (address, line, 1), `DateOfBirth` -> (date, of, birth)."""
    out: list[str] = []
    for raw in _TOKEN_RE.findall(name):
        token = raw.lower()
        out.extend(_COMPOUNDS.get(token, (token,)))
    return tuple(out)


def _adjacent(tokens: Sequence[str], *seq: str) -> bool:
    n = len(seq)
    return any(tuple(tokens[i : i + n]) == seq for i in range(len(tokens) - n + 1))


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Tokens that turn a sensitive-sounding name into a fact *about* the data, not the data itself.
_ABOUT_THE_DATA = _words(
    "count counts cnt total totals is has flag flags kind status verified valid validated hash hashed md5 sha "
    "sha1 sha256 length len enabled consent optin pct percent ratio rate avg sum min max format regex pattern "
    "type types template domain provider"
)
# Identifiers of rows elsewhere: `email_id` points at an email row, it is not an address.
_REFERENCE = frozenset({"id", "ids", "uuid", "key", "fk", "ref", "idx"})


def _is_count(tokens: Sequence[str]) -> bool:
    """`num_phones`, `n_emails`, `number_of_cards`: a count, whatever it counts."""
    if len(tokens) < 2:
        return False
    return tokens[0] in {"num", "n", "nb", "nr"} or _adjacent(tokens, "number", "of")


@dataclass(frozen=True)
class _NameRule:
    tag: str
    kinds: frozenset[str]
    confidence: float
    # Returns the matched phrase (shown as evidence) or None.
    match: Callable[[tuple[str, ...]], str | None]
    veto: frozenset[str] = frozenset()
    references_ok: bool = False


def _match_email(t: tuple[str, ...]) -> str | None:
    if "email" in t or "emails" in t:
        return "email"
    if _adjacent(t, "e", "mail"):
        return "e_mail"
    return None


def _match_phone(t: tuple[str, ...]) -> str | None:
    s = set(t)
    for word in ("phone", "telephone", "phonenumber", "msisdn", "tel", "fax"):
        if word in s:
            return word
    numberish = s & {"number", "no", "num", "nr", "phone"}
    if "mobile" in s and (len(t) == 1 or numberish):
        return "mobile"
    if "cell" in s and numberish:
        return "cell"
    return None


def _match_ssn(t: tuple[str, ...]) -> str | None:
    if "ssn" in t:
        return "ssn"
    if _adjacent(t, "social", "security"):
        return "social_security"
    return None


# Tokens that name a national identifier outright (`bsn`, `nino`, `pesel`) and pairs that do
# (`national_id`, `national_insurance_number`, `codice_fiscale`, `steuer_id`).
_NATIONAL_ID_WORDS = _words("nino bsn nir nie dni pesel cpf idnr personnummer nationalid")
_NATIONAL_ID_PAIRS = (
    ("national", "id"),
    ("national", "identifier"),
    ("national", "insurance"),
    ("codice", "fiscale"),
    ("fiscal", "code"),
    ("steuer", "id"),
    ("tax", "identification"),
    ("citizen", "id"),
    ("personal", "identity"),
    ("nhs", "number"),
    ("nhs", "no"),
)


def _match_national_id(t: tuple[str, ...]) -> str | None:
    for word in sorted(_NATIONAL_ID_WORDS):
        if word in t:
            return word
    for pair in _NATIONAL_ID_PAIRS:
        if _adjacent(t, *pair):
            return "_".join(pair)
    return None


def _match_card(t: tuple[str, ...]) -> str | None:
    s = set(t)
    numberish = s & {"number", "no", "num", "nr"}
    if "pan" in s:
        return "pan"
    if _adjacent(t, "credit", "card"):
        return "credit_card"
    if "card" in s and numberish:
        return "card_number"
    if "cc" in s and numberish:
        return "cc_number"
    return None


def _match_iban(t: tuple[str, ...]) -> str | None:
    return "iban" if "iban" in t else None


def _match_ip(t: tuple[str, ...]) -> str | None:
    s = set(t)
    if "ip" in s:
        return "ip_address" if s & {"address", "addr"} else "ip"
    for word in ("ipv4", "ipv6"):
        if word in s:
            return word
    if _adjacent(t, "remote", "addr") or _adjacent(t, "remote", "address"):
        return "remote_addr"
    return None


def _match_dob(t: tuple[str, ...]) -> str | None:
    s = set(t)
    if "dob" in s:
        return "dob"
    if _adjacent(t, "date", "of", "birth"):
        return "date_of_birth"
    if "birth" in s and s & {"date", "dt", "day", "on"}:
        return "birth_date"
    if "born" in s and s & {"on", "date", "at"}:
        return "born_on"
    return None


_NAME_QUALIFIERS = _words(
    "first last full given family middle maiden legal person contact customer client employee patient birth "
    "holder cardholder recipient beneficiary spouse guardian emergency"
)


def _match_person_name(t: tuple[str, ...]) -> str | None:
    for word in ("surname", "forename"):
        if word in t:
            return word
    for qualifier in sorted(_NAME_QUALIFIERS):
        if _adjacent(t, qualifier, "name") or _adjacent(t, qualifier, "names"):
            return f"{qualifier}_name"
    return None


def _match_address(t: tuple[str, ...]) -> str | None:
    s = set(t)
    if _adjacent(t, "post", "code"):
        return "postcode"
    for word in ("address", "addr", "street", "postcode", "postal", "zip", "zipcode"):
        if word in s:
            return word
    return None


_PHI_WORDS = _words(
    "diagnosis diagnoses icd mrn prescription prescriptions medication medications allergy allergies symptom symptoms"
)


def _match_phi(t: tuple[str, ...]) -> str | None:
    s = set(t)
    for word in sorted(_PHI_WORDS):
        if word in s:
            return word
    if _adjacent(t, "medical", "record") or _adjacent(t, "medical", "records"):
        return "medical_record"
    if _adjacent(t, "blood", "type"):
        return "blood_type"
    if s & {"condition", "conditions"} and (
        len(t) == 1 or s & {"medical", "health", "chronic", "patient", "preexisting", "existing", "underlying"}
    ):
        return "condition"
    return None


_EMAIL_VETO = _words("subject body campaign sent opened open click clicks bounce bounced bounces opt unsubscribed")
_PHONE_VETO = _words("country model brand os app version device platform browser ext extension prefix area")
_CARD_VETO = _words(
    "last first bin mask masked expiry exp expires expiration brand network issuer token tokenized fingerprint "
    "country holder cardholder 4 6"
)
_IP_VETO = _words(
    "country city region geo location asn isp version range block allowlist blocklist firmware build release sdk"
)
_DOB_VETO = _words("place country city town name certificate weight order rate")
_ADDRESS_VETO = _words(
    "email mail ip ipv4 ipv6 mac wallet web url uri server remote host memory contract bitcoin btc eth crypto "
    "smtp network net node bluetooth hardware file path archive bucket"
)

_RULES: tuple[_NameRule, ...] = (
    _NameRule(SensitiveTag.EMAIL.value, frozenset({TEXT}), 0.8, _match_email, veto=_EMAIL_VETO),
    _NameRule(SensitiveTag.PHONE.value, frozenset({TEXT, NUMBER}), 0.75, _match_phone, veto=_PHONE_VETO),
    _NameRule(SensitiveTag.SSN.value, frozenset({TEXT, NUMBER}), 0.85, _match_ssn),
    _NameRule(SensitiveTag.NATIONAL_ID.value, frozenset({TEXT, NUMBER}), 0.8, _match_national_id, references_ok=True),
    _NameRule(SensitiveTag.CARD_NUMBER.value, frozenset({TEXT, NUMBER}), 0.75, _match_card, veto=_CARD_VETO),
    _NameRule(SensitiveTag.IBAN.value, frozenset({TEXT}), 0.85, _match_iban),
    _NameRule(SensitiveTag.IP_ADDRESS.value, frozenset({TEXT, NETWORK}), 0.7, _match_ip, veto=_IP_VETO),
    _NameRule(SensitiveTag.DATE_OF_BIRTH.value, frozenset({DATE, TEXT}), 0.8, _match_dob, veto=_DOB_VETO),
    _NameRule(SensitiveTag.PERSON_NAME.value, frozenset({TEXT}), 0.7, _match_person_name),
    _NameRule(SensitiveTag.ADDRESS.value, frozenset({TEXT, JSON}), 0.65, _match_address, veto=_ADDRESS_VETO),
    _NameRule(SensitiveTag.PHI.value, frozenset({TEXT, JSON, ARRAY}), 0.75, _match_phi, references_ok=True),
)

# Postal codes are often stored as numbers (`zip_code integer`); other address parts never are.
_NUMERIC_ADDRESS_WORDS = frozenset({"zip", "zipcode", "postcode", "postal"})
# PHI keeps only the count-like vetoes: `blood_type` and `diagnosis_status` are still health data.
_PHI_VETO = frozenset({"count", "counts", "cnt", "total", "totals", "is", "has", "flag", "pct", "percent", "ratio"})


RULE_BY_TAG = {rule.tag: rule for rule in _RULES}


def vetoed(tag: str, tokens: tuple[str, ...]) -> bool:
    """The name says the column is *about* the data (a count, a flag, a version, a type...).

    Applies to value detectors too: `build_version` values like 1.4.2.0 are valid IPv4 addresses,
    and `card_last4` holds digits, but neither column holds what its values resemble.
    """
    token_set = set(tokens)
    if _is_count(tokens):
        return True
    if tag == SensitiveTag.PHI.value:
        return bool(token_set & _PHI_VETO)
    return bool(token_set & (_ABOUT_THE_DATA | RULE_BY_TAG[tag].veto))


def name_hints(name: str, data_type: str = "text", type_category: str = "") -> list[tuple[str, str]]:
    """(tag, matched phrase) for every rule the column name satisfies, given what its type can hold."""
    tokens = name_tokens(name)
    if not tokens:
        return []
    kind = value_kind(data_type, type_category)
    token_set = set(tokens)
    hints: list[tuple[str, str]] = []
    for rule in _RULES:
        phrase = rule.match(tokens)
        if phrase is None or vetoed(rule.tag, tokens):
            continue
        if not rule.references_ok and token_set & _REFERENCE:
            continue
        allowed = rule.kinds
        if rule.tag == SensitiveTag.ADDRESS.value and token_set & _NUMERIC_ADDRESS_WORDS:
            allowed = allowed | {NUMBER}
        if kind not in allowed:
            continue
        hints.append((rule.tag, phrase))
    return hints


def hints_birth(name: str) -> bool:
    """The name says "birth" in a way that makes its dates worth sampling."""
    return _match_dob(name_tokens(name)) is not None
