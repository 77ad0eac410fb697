"""PII/PHI discovery: which sensitive-data tags a column probably deserves, and why.

Pure functions, no database: the sync feeds in a column's name, its PostgreSQL type and (for some
columns) a sample of its values, and gets back suggestions a steward will confirm or reject. A
suggestion is only a hint, but every false positive costs a steward's time and every confirmed tag
raises the dataset's classification, so the detectors are deliberately conservative:

- Names are split into snake_case/camelCase tokens and matched as whole tokens (`ip_count` holds
  the token `ip` but also `count`, which disqualifies it; `zipcode` and `tip` are never `ip`).
- A name hint only counts when the column's type can hold the data (`phone_count integer` is not a
  phone number, `email_verified boolean` is not an email address).
- A value detector speaks only when at least `threshold` (60% by default) of the non-empty sampled
  values match a validated shape: Luhn for card numbers, mod-97 for IBANs, the issuing rules for
  US SSNs, the `ipaddress` module for IP addresses.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from governance.models import SensitiveTag

DEFAULT_THRESHOLD = 0.6
# Fewer non-empty samples than this are not enough to call a column by its values alone.
DEFAULT_MIN_VALUES = 5
EVIDENCE_MAX = 255


class Finding(NamedTuple):
    """One reason behind a suggestion, in a form a steward can read and a sync can compare.

    Never carries a value: `shape` describes the form that matched (`name@domain.tld`, `NNN-NN-NNNN`,
    `token "email" in the name`), `matched`/`sampled` the share of the sample behind it.
    """

    detector: str  # which detector spoke: "name", "email", "phone", "person_name", ...
    basis: str  # "name" (the column's name) or "values" (sampled values)
    shape: str
    matched: int = 0
    sampled: int = 0

    @property
    def share(self) -> float:
        return round(self.matched / self.sampled, 4) if self.sampled else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "detector": self.detector,
            "basis": self.basis,
            "shape": self.shape,
            "matched": self.matched,
            "sampled": self.sampled,
            "share": self.share,
        }


class Suggestion(NamedTuple):
    """One suggested tag: (tag, confidence in 0..1, evidence shown to the steward, its findings)."""

    tag: str
    confidence: float
    evidence: str
    findings: tuple[Finding, ...] = ()


# --- types --------------------------------------------------------------------------------------

TEXT = "text"
NUMBER = "number"
DATE = "date"
NETWORK = "network"
BOOLEAN = "boolean"
JSON = "json"
ARRAY = "array"
OTHER = "other"

# pg_type.typcategory (domains inherit their base type's category) to the kinds the rules use.
_CATEGORY_KINDS = {"S": TEXT, "N": NUMBER, "D": DATE, "I": NETWORK, "B": BOOLEAN, "A": ARRAY}


def value_kind(data_type: str, type_category: str = "") -> str:
    """What a column can hold, from `format_type()` output and `pg_type.typcategory`.

    The category is authoritative when given (it sees through domains and `citext`); the type name
    is a fallback for callers that only have the name.
    """
    if type_category:
        if type_category in _CATEGORY_KINDS:
            return _CATEGORY_KINDS[type_category]
        if data_type.split("(")[0].strip().lower() in {"json", "jsonb"}:
            return JSON
        return OTHER
    base = data_type.split("(")[0].strip().lower()
    if base.endswith("[]"):
        return ARRAY
    if base in {"text", "character varying", "varchar", "character", "char", "bpchar", "citext", "name"}:
        return TEXT
    if base in {"smallint", "integer", "bigint", "numeric", "decimal", "real", "double precision", "int", "int4"}:
        return NUMBER
    if base in {"date"} or base.startswith(("timestamp", "time")):
        return DATE
    if base in {"inet", "cidr"}:
        return NETWORK
    if base in {"boolean", "bool"}:
        return BOOLEAN
    if base in {"json", "jsonb"}:
        return JSON
    return OTHER


# --- names --------------------------------------------------------------------------------------

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
_IP_VETO = _words("country city region geo location asn isp version range block allowlist blocklist")
_DOB_VETO = _words("place country city town name certificate weight order rate")
_ADDRESS_VETO = _words(
    "email mail ip ipv4 ipv6 mac wallet web url uri server remote host memory contract bitcoin btc eth crypto "
    "smtp network net node bluetooth hardware file path archive bucket"
)

_RULES: tuple[_NameRule, ...] = (
    _NameRule(SensitiveTag.EMAIL.value, frozenset({TEXT}), 0.8, _match_email, veto=_EMAIL_VETO),
    _NameRule(SensitiveTag.PHONE.value, frozenset({TEXT, NUMBER}), 0.75, _match_phone, veto=_PHONE_VETO),
    _NameRule(SensitiveTag.SSN.value, frozenset({TEXT, NUMBER}), 0.85, _match_ssn),
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


_RULE_BY_TAG = {rule.tag: rule for rule in _RULES}


def _vetoed(tag: str, tokens: tuple[str, ...]) -> bool:
    """The name says the column is *about* the data (a count, a flag, a version, a type...).

    Applies to value detectors too: `build_version` values like 1.4.2.0 are valid IPv4 addresses,
    and `card_last4` holds digits, but neither column holds what its values resemble.
    """
    token_set = set(tokens)
    if _is_count(tokens):
        return True
    if tag == SensitiveTag.PHI.value:
        return bool(token_set & _PHI_VETO)
    return bool(token_set & (_ABOUT_THE_DATA | _RULE_BY_TAG[tag].veto))


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
        if phrase is None or _vetoed(rule.tag, tokens):
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


# --- values -------------------------------------------------------------------------------------

_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)


def is_email(value: str) -> bool:
    return len(value) <= 254 and bool(_EMAIL_RE.match(value.strip()))


_PHONE_CHARS_RE = re.compile(r"^\+?[\d\s().\-/]+$")
_PHONE_EXT_RE = re.compile(r"\s*(?:x|ext\.?|extension)\s*\d{1,6}$", re.IGNORECASE)
# A national number written in groups: "(555) 123-4567", "555.123.4567", "020 7946 0958", "06 12 34 56 78".
_PHONE_NATIONAL_RE = re.compile(r"^(?:\(\d{2,5}\)\s?|\d{2,5}[\s.\-/])(?:\d{2,4}[\s.\-]){0,4}\d{2,5}$")
_SSN_SHAPE_RE = re.compile(r"^\d{3}[- ]\d{2}[- ]\d{4}$")
_DATE_SHAPE_RE = re.compile(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}$|^\d{1,2}[-/.]\d{1,2}[-/.]\d{4}$")


def is_phone(value: str) -> bool:
    """E.164 ("+14155552671", "+44 20 7946 0958") or a grouped national number.

    Bare digit strings are accepted only as national numbers with a trunk prefix ("0612345678"):
    otherwise every order number would be a phone number. SSN-, date- and IP-shaped values are not
    phone numbers even though they are digits and separators.
    """
    text = _PHONE_EXT_RE.sub("", value.strip())
    if not text or not _PHONE_CHARS_RE.match(text):
        return False
    digits = re.sub(r"\D", "", text)
    if text.startswith("+"):
        return 8 <= len(digits) <= 15 and digits[0] != "0"
    if text.startswith("00") and text[2:3] in {" ", *"123456789"}:
        return 8 <= len(digits) - 2 <= 15
    if _SSN_SHAPE_RE.match(text) or _DATE_SHAPE_RE.match(text) or is_ip_address(text):
        return False
    if not 10 <= len(digits) <= 12:
        return False
    if text.isdigit():
        return text.startswith("0") and len(text) in (10, 11)
    return bool(_PHONE_NATIONAL_RE.match(text))


_SSN_RE = re.compile(r"^(\d{3})([- ])(\d{2})\2(\d{4})$")


def is_ssn(value: str) -> bool:
    """A US social security number written ddd-dd-dddd (or with spaces), as the SSA issues them:
    area not 000, 666 or 900-999; group not 00; serial not 0000.

    Nine bare digits are not accepted: ZIP+4 codes and account numbers look the same.
    """
    m = _SSN_RE.match(value.strip())
    if not m:
        return False
    area, group, serial = m.group(1), m.group(3), m.group(4)
    return area not in {"000", "666"} and not area.startswith("9") and group != "00" and serial != "0000"


def luhn_valid(digits: str) -> bool:
    """The Luhn mod-10 checksum that every payment card number carries."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_CARD_SHAPE_RE = re.compile(r"^\d(?:[ -]?\d){12,18}$")


def is_card_number(value: str) -> bool:
    """13-19 digits, optionally grouped with spaces or dashes, passing Luhn.

    Also required: a first digit of 2-6 (the major networks' ranges), and not one repeated digit, so
    that "0000 0000 0000 0000" and 16-digit ids starting with 1, 7, 8 or 9 are not cards. A random
    digit string passes Luhn one time in ten, which the 60% threshold absorbs.
    """
    text = value.strip()
    if not _CARD_SHAPE_RE.match(text):
        return False
    digits = re.sub(r"[ -]", "", text)
    if digits[0] not in "23456" or len(set(digits)) == 1:
        return False
    return luhn_valid(digits)


_IBAN_RE = re.compile(r"^[A-Z]{2}\d{2}[A-Z0-9]{11,30}$")


def iban_valid(value: str) -> bool:
    """ISO 13616: country code, two check digits, up to 30 alphanumerics; mod 97 of the rearranged
    number (letters as 10..35) equals 1."""
    text = re.sub(r"\s+", "", value).upper()
    if not _IBAN_RE.match(text):
        return False
    rearranged = text[4:] + text[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def is_ip_address(value: str) -> bool:
    """An IPv4 or IPv6 host address. `inet` values cast to text carry a /32 or /128 suffix, which is
    still one host; a wider prefix (10.0.0.0/8) is a network, not somebody's address."""
    text = value.strip()
    if not text or len(text) > 64:
        return False
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    if "/" not in text:
        return False
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        return False
    return iface.network.prefixlen == iface.max_prefixlen


_ISO_DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[ T].*)?$")


def birth_range(today: dt.date | None = None) -> tuple[dt.date, dt.date]:
    """Dates a living customer or employee may plausibly be born on: 1900 to ten years ago."""
    today = today or dt.date.today()
    try:
        latest = today.replace(year=today.year - 10)
    except ValueError:  # 29 February
        latest = today.replace(year=today.year - 10, day=28)
    return dt.date(1900, 1, 1), latest


def is_plausible_birth_date(value: str, today: dt.date | None = None) -> bool:
    m = _ISO_DATE_RE.match(value.strip())
    if not m:
        return False
    try:
        day = dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return False
    low, high = birth_range(today)
    return low <= day <= high


@dataclass(frozen=True)
class _ValueRule:
    tag: str
    description: str  # "... look like {description}"
    test: Callable[[str], bool]


# Detectors that may suggest a tag from the values alone. Dates of birth are not among them (any
# date column would do), nor are person names, addresses or PHI (free text is too varied for a
# value test to be right often enough): those come from name hints only.
_VALUE_RULES: tuple[_ValueRule, ...] = (
    _ValueRule(SensitiveTag.EMAIL.value, "email addresses", is_email),
    _ValueRule(SensitiveTag.PHONE.value, "phone numbers", is_phone),
    _ValueRule(SensitiveTag.SSN.value, "US social security numbers", is_ssn),
    _ValueRule(SensitiveTag.CARD_NUMBER.value, "card numbers (Luhn)", is_card_number),
    _ValueRule(SensitiveTag.IBAN.value, "IBANs (mod-97)", iban_valid),
    _ValueRule(SensitiveTag.IP_ADDRESS.value, "IP addresses", is_ip_address),
)


def should_sample(name: str, data_type: str, type_category: str = "") -> bool:
    """Whether the sync should read values of this column: text-like and network columns always
    (that is where unlabelled PII hides), date columns only when the name speaks of birth."""
    kind = value_kind(data_type, type_category)
    if kind in {TEXT, NETWORK}:
        return True
    return kind == DATE and hints_birth(name)


def _non_empty(samples: Iterable[str | None]) -> list[str]:
    return [s.strip() for s in samples if s is not None and s.strip()]


def _ratio_text(hits: int, total: int) -> str:
    return f"{round(100 * hits / total)}% of {total} sampled values"


def suggest_tags(
    *,
    name: str,
    data_type: str,
    type_category: str = "",
    samples: Sequence[str | None] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    min_values: int = DEFAULT_MIN_VALUES,
    today: dt.date | None = None,
) -> list[Suggestion]:
    """Every tag discovery suggests for one column, strongest first.

    `samples` are the column's values cast to text (None when the column was not sampled). A name
    hint alone suggests its tag; values that contradict it (an `email` column whose values are not
    addresses) lower the confidence but do not drop the hint, because a steward should see it.
    Values alone suggest a tag when at least `threshold` of at least `min_values` non-empty samples
    match, unless the name says the column is about such data rather than the data itself
    (`build_version` values such as 1.4.2.0 are valid IPv4 addresses). Person names are never
    inferred from values: any capitalised word pair would match, and
    product, city and company names are as common as people's names in real tables.
    """
    values = _non_empty(samples or [])
    enough = len(values) >= max(1, min_values)
    found: dict[str, tuple[float, list[str]]] = {}
    # Stopgap for the findings seam (the detector rewrite fills them properly): name and value findings.
    reasons: dict[str, list[Finding]] = {}

    for tag, phrase in name_hints(name, data_type, type_category):
        rule = next(r for r in _RULES if r.tag == tag)
        found[tag] = (rule.confidence, [f"name matches {phrase!r}"])
        reasons[tag] = [Finding("name", "name", f'token "{phrase}" in the name')]

    if enough:
        tokens = name_tokens(name)
        for vrule in _VALUE_RULES:
            if _vetoed(vrule.tag, tokens):
                continue
            hits = sum(1 for v in values if vrule.test(v))
            ratio = hits / len(values)
            text = f"{_ratio_text(hits, len(values))} look like {vrule.description}"
            finding = Finding(vrule.tag, "values", vrule.description, hits, len(values))
            if ratio >= threshold:
                if vrule.tag in found:
                    conf, evidence = found[vrule.tag]
                    found[vrule.tag] = (min(0.99, max(conf, ratio) + 0.1), [*evidence, text])
                else:
                    found[vrule.tag] = (round(ratio, 2), [text])
                reasons.setdefault(vrule.tag, []).append(finding)
            elif vrule.tag in found:
                conf, evidence = found[vrule.tag]
                found[vrule.tag] = (round(min(conf, 0.5), 2), [*evidence, f"but only {text}"])
                reasons.setdefault(vrule.tag, []).append(finding)
        if SensitiveTag.DATE_OF_BIRTH.value in found:
            hits = sum(1 for v in values if is_plausible_birth_date(v, today))
            ratio = hits / len(values)
            conf, evidence = found[SensitiveTag.DATE_OF_BIRTH.value]
            text = f"{_ratio_text(hits, len(values))} are dates in a plausible birth range"
            reasons[SensitiveTag.DATE_OF_BIRTH.value].append(
                Finding("date_of_birth", "values", "plausible birth date", hits, len(values))
            )
            if ratio >= threshold:
                found[SensitiveTag.DATE_OF_BIRTH.value] = (min(0.99, conf + 0.15), [*evidence, text])
            else:
                found[SensitiveTag.DATE_OF_BIRTH.value] = (round(min(conf, 0.5), 2), [*evidence, f"but only {text}"])

    out = [
        Suggestion(tag, round(conf, 2), "; ".join(ev)[:EVIDENCE_MAX], tuple(reasons.get(tag, ())))
        for tag, (conf, ev) in found.items()
    ]
    out.sort(key=lambda s: (-s.confidence, s.tag))
    return out
