"""PII/PHI discovery: which sensitive-data tags a column probably deserves, and why.

Pure functions, no database: the sync feeds in a column's name, its PostgreSQL type and (for some
columns) a sample of its values, and gets back suggestions a steward will confirm or reject, each
with its findings (which detector spoke, on the name or on the values, the form that matched and
the share of the sample behind it, never a value). A suggestion is only a hint, but every false
positive costs a steward's time and every confirmed tag raises the dataset's classification, so the
detectors are deliberately conservative:

- Names are split into snake_case/camelCase tokens and matched as whole tokens (`ip_count` holds
  the token `ip` but also `count`, which disqualifies it; `zipcode` and `tip` are never `ip`).
- A name hint only counts when the column's type can hold the data (`phone_count integer` is not a
  phone number, `email_verified boolean` is not an email address).
- A value detector speaks only when at least `threshold` (60% by default) of the non-empty sampled
  values match a validated shape: Luhn for card numbers, python-stdnum for IBANs and national
  identifiers, libphonenumber's metadata for phone numbers, the issuing rules for US SSNs, the
  `ipaddress` module for IP addresses, a known given name plus a family-name structure for people.

The parts: `model` (findings, suggestions, value kinds), `names` (name hints), `values`,
`national_ids` and `people` (value detectors), `suggest` (the two combined), `evaluate` (precision
and recall on labelled columns; docs/discovery.md).
"""

from .model import (
    ARRAY,
    BOOLEAN,
    DATE,
    DEFAULT_MIN_VALUES,
    DEFAULT_THRESHOLD,
    EVIDENCE_MAX,
    JSON,
    NETWORK,
    NUMBER,
    OTHER,
    TEXT,
    Finding,
    Suggestion,
    dominant_mask,
    mask,
    value_kind,
)
from .names import hints_birth, name_hints, name_tokens
from .national_ids import is_national_id, national_id_kind
from .people import is_person_name, person_name_languages
from .suggest import configured_phone_regions, should_sample, suggest_tags
from .values import (
    DEFAULT_PHONE_REGIONS,
    birth_range,
    iban_valid,
    is_card_number,
    is_email,
    is_ip_address,
    is_phone,
    is_plausible_birth_date,
    is_ssn,
    luhn_valid,
    phone_region,
)

__all__ = [
    "ARRAY",
    "BOOLEAN",
    "DATE",
    "DEFAULT_MIN_VALUES",
    "DEFAULT_PHONE_REGIONS",
    "DEFAULT_THRESHOLD",
    "EVIDENCE_MAX",
    "JSON",
    "NETWORK",
    "NUMBER",
    "OTHER",
    "TEXT",
    "Finding",
    "Suggestion",
    "birth_range",
    "configured_phone_regions",
    "dominant_mask",
    "hints_birth",
    "iban_valid",
    "is_card_number",
    "is_email",
    "is_ip_address",
    "is_national_id",
    "is_person_name",
    "is_phone",
    "is_plausible_birth_date",
    "is_ssn",
    "luhn_valid",
    "mask",
    "name_hints",
    "name_tokens",
    "national_id_kind",
    "person_name_languages",
    "phone_region",
    "should_sample",
    "suggest_tags",
    "value_kind",
]
