"""Value detectors: does one sampled value have a validated sensitive shape?

Libraries where they beat hand-written rules: `phonenumbers` (Google's libphonenumber metadata:
which numbers each country really issues) for phone numbers, `python-stdnum` for IBANs (mod-97 and
each country's BBAN length and format) and for the list of SSNs that were published as examples.
Hand-written rules stay where they are stricter than the library: an SSN must be written with
separators (stdnum accepts nine bare digits, as ZIP+4 codes and account numbers are written), and a
card number must start with a major network's digit and not be one repeated digit.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Sequence

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum.us import ssn as stdnum_ssn

_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)


def is_email(value: str) -> bool:
    return len(value) <= 254 and bool(_EMAIL_RE.match(value.strip()))


# --- phone numbers ---------------------------------------------------------------------------------

# Regions whose national formats count without a + or 00 prefix (setting PII_PHONE_REGIONS). A
# national number is only ever "valid in one of these": the longer the list, the more digit strings
# look like someone's number, so it is short and covers the regions the portal is used in most.
DEFAULT_PHONE_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR", "NL", "ES", "IT")

_PHONE_CHARS_RE = re.compile(r"^\+?[\d\s().\-/]+$")
_PHONE_EXT_RE = re.compile(r"\s*(?:x|ext\.?|extension)\s*\d{1,6}$", re.IGNORECASE)
# A national number written in groups: "(555) 123-4567", "555.123.4567", "020 7946 0958", "06 12 34 56 78".
_PHONE_NATIONAL_RE = re.compile(r"^(?:\(\d{2,5}\)\s?|\d{2,5}[\s.\-/])(?:\d{2,4}[\s.\-]){0,4}\d{2,8}$")
_SSN_SHAPE_RE = re.compile(r"^\d{3}[- ]\d{2}[- ]\d{4}$")
_ZIP4_SHAPE_RE = re.compile(r"^\d{5}-\d{4}$")
_DATE_SHAPE_RE = re.compile(r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}$|^\d{1,2}[-/.]\d{1,2}[-/.]\d{4}$")


def phone_region(value: str, regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> str | None:
    """ "+" for a valid international number, the region for a valid national one, else None.

    International: `+` or `00`, then a number libphonenumber calls valid for its country code.
    National: grouped like a phone number ("(415) 555-2671", "020 7946 0958", "030 123456"; 9-12
    digits) or 10-11 bare digits with a trunk prefix ("0612345678"), valid in one of `regions` and
    written with that region's national digits (its trunk prefix included). Bare digits without a trunk prefix
    are never phone numbers (every order number would be); SSN-, ZIP+4-, date- and IP-shaped values
    neither.
    """
    text = _PHONE_EXT_RE.sub("", value.strip())
    if not text or not _PHONE_CHARS_RE.match(text):
        return None
    if text.startswith(("+", "00")):
        international = "+" + text[2:].lstrip() if text.startswith("00") else text
        try:
            number = phonenumbers.parse(international, None)
        except phonenumbers.NumberParseException:
            return None
        return "+" if phonenumbers.is_valid_number(number) else None
    if _SSN_SHAPE_RE.match(text) or _ZIP4_SHAPE_RE.match(text) or _DATE_SHAPE_RE.match(text) or is_ip_address(text):
        return None
    digits = re.sub(r"\D", "", text)
    if text.isdigit():
        if not (text.startswith("0") and len(text) in (10, 11)):
            return None
    elif not (9 <= len(digits) <= 12 and _PHONE_NATIONAL_RE.match(text)):
        return None
    for region in regions:
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            continue
        # Well-formed as well as valid: written as the region writes its numbers, trunk prefix
        # included ("512 348 244" parses as a German number, but Germans write 0512 348244).
        national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        if phonenumbers.is_valid_number(number) and re.sub(r"\D", "", national) == digits:
            return region
    return None


def is_phone(value: str, regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> bool:
    """A phone number libphonenumber calls valid: international, or national in one of `regions`."""
    return phone_region(value, regions) is not None


def phone_shape(values: Sequence[str], regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> str:
    found = sorted({r for r in (phone_region(v, regions) for v in values) if r})
    parts = []
    if "+" in found:
        parts.append("+CC international format")
    national = [r for r in found if r != "+"]
    if national:
        parts.append(f"national format of {', '.join(national)}")
    return f"{' or '.join(parts) or 'phone number'} (valid per phonenumbers)"


# --- identifiers with checksums ----------------------------------------------------------------------

_SSN_RE = re.compile(r"^(\d{3})([- ])(\d{2})\2(\d{4})$")


def is_ssn(value: str) -> bool:
    """A US social security number written ddd-dd-dddd (or with spaces), as the SSA issues them:
    area not 000, 666 or 900-999; group not 00; serial not 0000; not one of the numbers published
    as examples (python-stdnum's list, e.g. the wallet-card number 078-05-1120).

    Nine bare digits are not accepted: ZIP+4 codes and account numbers look the same.
    """
    text = value.strip()
    m = _SSN_RE.match(text)
    if not m:
        return False
    area, group, serial = m.group(1), m.group(3), m.group(4)
    if area in {"000", "666"} or area.startswith("9") or group == "00" or serial == "0000":
        return False
    return bool(stdnum_ssn.is_valid(area + group + serial))


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


def card_shape(values: Sequence[str]) -> str:
    lengths = sorted({len(re.sub(r"[ -]", "", v)) for v in values})
    span = f"{lengths[0]}" if len(lengths) == 1 else f"{lengths[0]}-{lengths[-1]}"
    return f"{span} digits starting 2-6, Luhn-valid" if lengths else "Luhn-valid card number"


# Country code, check digits, 11-30 alphanumerics: a cheap look before the library's full check.
_IBAN_SHAPE_RE = re.compile(r"^[A-Z]{2}\d{2}[A-Z0-9]{11,30}$")


def iban_valid(value: str) -> bool:
    """ISO 13616 through python-stdnum: a known country code, that country's BBAN length and format,
    and mod 97 of the rearranged number equal to 1. Case and spacing do not matter."""
    text = re.sub(r"\s+", "", value).upper()
    return bool(_IBAN_SHAPE_RE.match(text)) and bool(stdnum_iban.is_valid(text))


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


def ip_shape(values: Sequence[str]) -> str:
    versions = sorted({ipaddress.ip_interface(v.strip()).version for v in values})
    return " and ".join(f"IPv{n}" for n in versions) + " host address" if versions else "IP host address"


# --- dates ---------------------------------------------------------------------------------------

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
